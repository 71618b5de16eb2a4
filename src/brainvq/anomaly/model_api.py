"""Every call the anomaly package makes into the VQ-VAE and the prior, in one place.

Today the generator is single-level: one code grid and one position-conditioned
PixelCNN. A hierarchical generator (a coarse top grid with its own prior and a bottom
prior that also takes the top codes) only needs these functions extended: encode to both
grids, score and resample the bottom grid given the top codes (``top=``), decode both.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from brainvq.models.pixelcnn import GatedPixelCNN
from brainvq.models.vqvae import VQVAE
from brainvq.sample.generate import load_models
from brainvq.sample.sampler import sample_cached

Models = tuple[VQVAE, GatedPixelCNN]


def load(vqvae_path: str | Path, prior_path: str | Path) -> Models:
    """Both models, checked to belong together (ConfigError / CheckpointError otherwise)."""
    return load_models(vqvae_path, prior_path)


def device(vqvae: VQVAE) -> torch.device:
    return next(vqvae.parameters()).device


def image_size(vqvae: VQVAE) -> int:
    return vqvae.config.image_size


def is_conditional(prior: GatedPixelCNN) -> bool:
    """True when the prior needs a slice position for every image."""
    return bool(prior.config.conditional)


def _cond(prior: GatedPixelCNN, cond: Tensor | None) -> Tensor | None:
    return cond.to(prior.location.device) if is_conditional(prior) and cond is not None else None


@torch.no_grad()
def encode(vqvae: VQVAE, x: Tensor) -> Tensor:
    """Images (B,1,H,W) in [0,1] -> code grid (B,h,w) int64."""
    return vqvae.encode(x.to(device(vqvae)))


@torch.no_grad()
def decode(vqvae: VQVAE, codes: Tensor) -> Tensor:
    """Code grid (..., h, w) -> images (..., 1, H, W) in [0,1] (extra leading dims kept)."""
    lead = codes.shape[:-2]
    out = vqvae.decode(codes.reshape(-1, *codes.shape[-2:]).to(device(vqvae)))
    return out.reshape(*lead, *out.shape[1:])


@torch.no_grad()
def code_nll(prior: GatedPixelCNN, codes: Tensor, cond: Tensor | None) -> Tensor:
    """Negative log-likelihood in nats of every code given the codes before it in raster
    order (and the slice position): (B,h,w)."""
    prior.eval()
    codes = codes.to(prior.location.device)
    logits = prior(codes, _cond(prior, cond))
    return F.cross_entropy(logits.float(), codes, reduction="none")


@torch.no_grad()
def resample(
    prior: GatedPixelCNN,
    codes: Tensor,
    flagged: Tensor,
    cond: Tensor | None,
    n: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """``n`` restorations of each grid: flagged codes drawn again, all others kept: (n,B,h,w).

    The prior is autoregressive in raster order, so a redrawn code is conditioned on every
    code before it (kept or already redrawn) but not on the codes after it; the codes after
    it stay as they were. The cached sampler only does per-position work near flagged codes.
    """
    b = codes.shape[0]
    rep = codes.repeat(n, 1, 1)
    keep = ~flagged.to(torch.bool).repeat(n, 1, 1)
    c = _cond(prior, cond)
    c = c.repeat(n) if c is not None else None
    out = sample_cached(prior, n * b, c, temperature, generator, prefix=rep, prefix_mask=keep)
    return out.reshape(n, b, *codes.shape[1:])
