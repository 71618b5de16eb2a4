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
#: metadata key of :func:`content_hash`, which a file written by :func:`save_weights` is checked against
CONTENT_HASH = "content_sha256"


def content_hash(state: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """A hash of the metadata (but this hash) and every tensor's name, dtype, shape and bytes:
    a flipped bit in the file changes it."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != CONTENT_HASH}, sort_keys=True).encode())
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
    meta[CONTENT_HASH] = content_hash(state, meta)
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta))
    return Path(path)


def read_weights(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file written by :func:`save_weights` (or a training checkpoint); returns
    (state, config). A file that cannot be read, is corrupt (its :func:`content_hash` differs
    from the one written with it) or holds NaN or infinite values stops with one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        open(path, "rb").close()
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied, cannot read the weights file") from None
    if path.suffix in (".ckpt", ".pt", ".pth"):
        state, config = _read_lightning(path, kind)
        _check_finite(state, path)
        return state, config
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if CONTENT_HASH in meta and meta[CONTENT_HASH] != content_hash(state, meta):
        raise CheckpointError(f"{path}: corrupt weights file (its contents differ from what was written)")
    _check_finite(state, path)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {meta.get('kind', 'unknown')!r} model, expected {kind!r}")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: missing or broken architecture config in metadata") from None
    return state, config


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    for name, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values; the weights are unusable")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors weights file ({} for a training checkpoint or a file
    without any); the file must already have been read by :func:`read_weights`."""
    if Path(path).suffix in (".ckpt", ".pt", ".pth"):
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_training_checkpoint(path: str | Path) -> dict:
    """A Lightning training checkpoint, read without executing code; a corrupt, truncated or
    unsafe file is a one-line :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; none may execute code
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
        raise CheckpointError(
            f"{path}: cannot load checkpoint safely (corrupt, truncated or not a weights-only file): {first}"
        ) from None


def _read_lightning(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    ckpt = load_training_checkpoint(path)
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
