"""NIfTI volumes (``.nii``/``.nii.gz``) sliced axially into 2D slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from brainvq.data.slices import SliceSet
from brainvq.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` / ``.nii.gz`` file names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_axial_slices(path: str | Path, size: int = 256, min_foreground: float = 0.02) -> np.ndarray:
    """Axial slices (bottom to top) of a volume as (S,size,size) uint8.

    The volume is reoriented to RAS (nibabel canonical), each axial slice is padded to a
    square and resampled to ``size``; intensities are scaled by the volume's 99.5th
    percentile of non-zero voxels. Slices with less than ``min_foreground`` non-zero
    pixels (outside the head) are dropped.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        vol = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many types for bad files
        raise DataError(f"{path}: cannot read NIfTI volume: {exc}") from None
    if vol.ndim == 4:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {vol.shape}")
    vol = np.nan_to_num(vol)
    vol -= min(vol.min(), 0.0)
    nz = vol[vol > 0]
    if nz.size == 0:
        raise DataError(f"{path}: volume is empty (all zeros)")
    vol = np.clip(vol / np.percentile(nz, 99.5), 0, 1)
    # RAS: axis 0 = left->right, axis 1 = posterior->anterior, axis 2 = inferior->superior.
    # Display convention: anterior at the top, patient's left on the image right.
    slices = np.transpose(vol, (2, 1, 0))[:, ::-1, :]
    s, h, w = slices.shape
    side = max(h, w)
    pad = (
        (0, 0),
        ((side - h) // 2, side - h - (side - h) // 2),
        ((side - w) // 2, side - w - (side - w) // 2),
    )
    square = torch.from_numpy(np.ascontiguousarray(np.pad(slices, pad)))[:, None]
    out = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    out = (out.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    keep = (out > 0).mean(axis=(1, 2)) >= min_foreground
    if not keep.any():
        raise DataError(f"{path}: no axial slice has brain/head content")
    return out[keep]


def load_nifti(paths: list[Path], size: int = 256) -> SliceSet:
    """Slices of one or more volumes; each volume is a case, position = index / (S-1)."""
    if not paths:
        raise DataError("no NIfTI volumes given")
    stacks, cases, idx, names = [], [], [], []
    for case, p in enumerate(paths):
        sl = nifti_axial_slices(p, size)
        stacks.append(sl)
        cases.append(np.full(len(sl), case, dtype=np.int64))
        idx.append(np.arange(len(sl), dtype=np.int64))
        stem = p.name.split(".nii")[0]
        names += [f"{stem}_slice_{i}" for i in range(len(sl))]
    slice_idx = np.concatenate(idx)
    counts = np.concatenate([np.full(len(s), max(len(s) - 1, 1)) for s in stacks])
    return SliceSet(
        images=np.concatenate(stacks),
        names=names,
        case_ids=np.concatenate(cases),
        slice_indices=slice_idx,
        positions=(slice_idx / counts).astype(np.float32),
        source=",".join(map(str, paths)),
    )
