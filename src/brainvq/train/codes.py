"""Code extraction, its own stage: every split encoded once by the frozen VQ-VAE and cached;
the prior trains on what this writes (``OUT/codes/codes_{split}.pt``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from brainvq.checkpoint import codebook_fingerprint
from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.io import atomic_write
from brainvq.models.conditioning import intensity_scale, slice_conditions
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.models.weights import load_vqvae

CODE_CACHE_FORMAT = "codes-2"  # 2: with intensity scales; older caches are rebuilt


@dataclasses.dataclass
class CodeSet:
    """The code grids of one split with what the prior conditions on (slice positions, intensity scales)."""

    codes: torch.Tensor  # (N,h,w) int64 (the bottom level of a two-level VQ-VAE)
    positions: torch.Tensor  # (N,) float32
    top: torch.Tensor | None = None  # (N,ht,wt) int64 top-level codes of a two-level VQ-VAE
    scales: torch.Tensor | None = None  # (N,) float32 intensity scales (models.conditioning.intensity_scale)

    def conditions(self) -> torch.Tensor:
        """(N,) positions, or (N,2) (position, intensity scale) rows when the scales are known."""
        return slice_conditions(self.positions, self.scales)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(codes, conditions[, top]): what a training batch holds."""
        cond = self.conditions()
        return (self.codes, cond) if self.top is None else (self.codes, cond, self.top)


@torch.no_grad()
def encode_split(
    vqvae: VQVAE,
    data: DataConfig,
    split: str,
    *,
    flip: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> CodeSet:
    """Encode a whole split with the frozen VQ-VAE (eval mode: the codebook never changes)."""
    vqvae.eval()
    sl = load_split(data, split, progress=progress)
    images = as_tensor(sl)
    positions = torch.from_numpy(np.asarray(sl.positions, dtype=np.float32))
    scales = intensity_scale(images)
    if flip:  # a mirror image has the same position and the same scale
        images = torch.cat([images, images.flip(-1)])
        positions, scales = torch.cat([positions, positions]), torch.cat([scales, scales])
    device = next(vqvae.parameters()).device
    tops, codes = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=f"encode {split}", disable=not progress, leave=False):
        top, bottom = vqvae.encode_levels(images[i : i + batch_size].to(device))
        codes.append(bottom.cpu())
        if top is not None:
            tops.append(top.cpu())
    return CodeSet(torch.cat(codes), positions, torch.cat(tops) if tops else None, scales)


def cached_codes(
    vqvae_path: Path,
    data: DataConfig,
    split: str,
    cache_dir: Path,
    *,
    flip: bool = False,
    progress: bool = True,
    vqvae: VQVAE | None = None,
) -> CodeSet:
    """:func:`encode_split`, cached as ``codes_{split}.pt`` keyed by the VQ-VAE file and data root
    (``vqvae``: that file's model, already loaded; else it is loaded only if the cache misses)."""
    stat = Path(vqvae_path).stat()
    key = (
        f"{CODE_CACHE_FORMAT}|{Path(vqvae_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|"
        f"{Path(data.root).resolve()}|{data.image_size}|{flip}"
    )
    path = Path(cache_dir) / f"codes_{split}{'_flip' if flip else ''}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                return CodeSet(blob["codes"], blob["positions"], blob.get("top"), blob["scales"])
        except Exception:  # noqa: BLE001 - a bad cache is simply rebuilt
            pass
    vqvae = vqvae if vqvae is not None else load_vqvae(vqvae_path, _device())
    codes = encode_split(vqvae, data, split, flip=flip, progress=progress)
    atomic_write(
        path,
        lambda tmp: torch.save(
            {"key": key, **{f.name: getattr(codes, f.name) for f in dataclasses.fields(codes)}}, tmp
        ),
    )
    return codes


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclasses.dataclass
class ExtractedCodes:
    """The three splits' code sets and what they were encoded with."""

    train: CodeSet
    val: CodeSet
    test: CodeSet
    vqvae: VQVAEConfig
    fingerprint: str  # checkpoint.codebook_fingerprint of the VQ-VAE: what its codes mean


def extract_codes(
    vqvae_path: str | Path, data: DataConfig, cache_dir: Path, *, flip: bool = True, progress: bool = True
) -> ExtractedCodes:
    """Encode (or read from the cache) the training split (with mirror images when ``flip``),
    the validation and the test split, loading the VQ-VAE once."""
    vqvae = load_vqvae(vqvae_path, _device())
    sets = [
        cached_codes(Path(vqvae_path), data, split, cache_dir, flip=f, progress=progress, vqvae=vqvae)
        for split, f in (("train", flip), ("validate", False), ("test", False))
    ]
    return ExtractedCodes(*sets, vqvae.config, codebook_fingerprint(vqvae))
