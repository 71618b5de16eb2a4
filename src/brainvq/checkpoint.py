"""Saving and loading model weights without ever executing code from a file.

Weights are stored as safetensors with the model kind and its architecture config in the
file's metadata; Lightning training checkpoints are read with ``torch.load(...,
weights_only=True)``. Every failure is a :class:`CheckpointError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from brainvq.errors import CheckpointError
from brainvq.io import atomic_write

#: a prior's metadata key for :func:`codebook_fingerprint` of the VQ-VAE whose codes it learned
VQVAE_FINGERPRINT = "vqvae_codebooks"


def codebook_fingerprint(vqvae: nn.Module) -> str:
    """A short hash of a VQ-VAE's codebooks: what its codes mean. Fine-tuning the decoder
    (``brainvq sharpen``) keeps it; another training run gives another."""
    digest = hashlib.sha256()
    for key, value in sorted(vqvae.state_dict().items()):
        if key.endswith("codebook"):
            digest.update(key.encode())
            digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_weights(
    model: nn.Module, path: str | Path, kind: str, config: dict, extra: dict[str, str] | None = None
) -> Path:
    """Write ``model``'s state dict, ``kind``, ``config`` and ``extra`` metadata (strings) to a
    safetensors file (atomically)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {**(extra or {}), "kind": kind, "config": json.dumps(config), "format": "brainvq-1"}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta))
    return Path(path)


def read_weights(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file written by :func:`save_weights`; returns (state, config)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix in (".ckpt", ".pt", ".pth"):
        return _read_lightning(path, kind)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {meta.get('kind', 'unknown')!r} model, expected {kind!r}")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: missing or broken architecture config in metadata") from None
    return state, config


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors weights file ({} for a training checkpoint or a file
    without any); the file must already have been read by :func:`read_weights`."""
    if Path(path).suffix in (".ckpt", ".pt", ".pth"):
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def _read_lightning(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; none may execute code
        raise CheckpointError(
            f"{path}: cannot load checkpoint safely (corrupt, truncated or not a weights-only file): {str(exc).splitlines()[0]}"
        ) from None
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if hp.get("kind") != kind or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a brainvq {kind} training checkpoint")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return state, hp["model"]


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load ``state`` strictly, turning shape/key mismatches into a one-line CheckpointError."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(f"{path}: weights do not match the architecture ({' '.join(first[:2])[:300]})") from None
