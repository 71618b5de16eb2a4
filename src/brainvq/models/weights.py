"""Models from their weights files: a VQ-VAE or a prior rebuilt from the architecture config
stored beside its weights (:mod:`brainvq.checkpoint` reads the files without executing code)."""

from __future__ import annotations

from pathlib import Path

import torch

from brainvq.checkpoint import load_state, read_weights
from brainvq.errors import CheckpointError
from brainvq.models.hierarchical import prior_from_config
from brainvq.models.vqvae import VQVAE
from brainvq.models.vqvae_config import VQVAEConfig, upgrade_saved_config


def load_vqvae(path: str | Path, device: str | torch.device = "cpu"):
    """A :class:`~brainvq.models.vqvae.VQVAE` from ``vqvae.safetensors`` or a training ``.ckpt``."""
    state, config = read_weights(path, "vqvae")
    config = upgrade_saved_config(config)
    try:
        model = VQVAE(VQVAEConfig(**config))
    except TypeError as exc:
        raise CheckpointError(f"{path}: architecture config not understood: {exc}") from None
    load_state(model, state, path)
    return model.to(device).eval()


def load_prior(path: str | Path, device: str | torch.device = "cpu"):
    """A prior from ``prior.safetensors`` or a ``.ckpt``: a :class:`~brainvq.models.pixelcnn.GatedPixelCNN`
    (single level, also every prior saved before 0.2) or a
    :class:`~brainvq.models.hierarchical.HierarchicalPrior` (two levels)."""
    state, config = read_weights(path, "prior")
    try:
        model = prior_from_config(config)
    except TypeError as exc:
        raise CheckpointError(f"{path}: architecture config not understood: {exc}") from None
    load_state(model, state, path)
    return model.to(device).eval()
