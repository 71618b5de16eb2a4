"""Known-bad image sets, each made from real slices (seeded), that a judge must reject.

Images are float (N,1,H,W) tensors in [0,1]; each maker returns a new tensor (and positions where
they change). The set names are the keys of :data:`BAD_SETS`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from brainvq.data.brainmask import JUDGE_BRAIN, brain_mask
from brainvq.judges.anatomy import as_numpy_images

#: set name -> what it is (the table's row labels).
BAD_SETS: dict[str, str] = {
    "blur": "Gaussian blur, sigma 2 px",
    "noise": "added Gaussian noise, sigma 0.05",
    "patch_shuffle": "8x8 patches shuffled inside the brain mask",
    "swapped_halves": "left and right halves from different subjects (nearest position)",
    "texture_blobs": "VQ-VAE decodes of codes drawn per cell from the real code histogram, inside a real brain mask",
    "wrong_position": "real slices paired with a position off by >= 0.3",
    "fragments": "16x16 patches shuffled over the whole image (scattered fragments)",
}


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.clip(a, 0, 1).astype(np.float32))[:, None]


def blur(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur of each image with ``sigma`` pixels."""
    return _to_tensor(np.stack([ndimage.gaussian_filter(im, sigma) for im in as_numpy_images(images)]))


def add_noise(images: torch.Tensor, sigma: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Images plus Gaussian noise of std ``sigma``, clipped to [0,1]."""
    gen = torch.Generator().manual_seed(seed)
    return (images.float() + sigma * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def shuffle_patches(images: torch.Tensor, patch: int = 8, seed: int = 0, inside_brain: bool = True) -> torch.Tensor:
    """Permute the ``patch`` x ``patch`` tiles of each image: only tiles wholly inside the brain mask
    among themselves (``inside_brain``), or all tiles of the image."""
    rng = np.random.default_rng(seed)
    out = []
    for im in as_numpy_images(images):
        h, w = (s // patch * patch for s in im.shape)
        tiles = im[:h, :w].reshape(h // patch, patch, w // patch, patch).transpose(0, 2, 1, 3).reshape(-1, patch, patch)
        if inside_brain:
            m = (
                brain_mask(im, JUDGE_BRAIN)[:h, :w]
                .reshape(h // patch, patch, w // patch, patch)
                .all(axis=(1, 3))
                .ravel()
            )
            sel = np.flatnonzero(m)
        else:
            sel = np.arange(len(tiles))
        tiles = tiles.copy()
        tiles[sel] = tiles[rng.permutation(sel)]
        new = im.copy()
        new[:h, :w] = tiles.reshape(h // patch, w // patch, patch, patch).transpose(0, 2, 1, 3).reshape(h, w)
        out.append(new)
    return _to_tensor(np.stack(out))


def swap_halves(images: torch.Tensor, positions: np.ndarray, case_ids: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Left half of each slice joined to the right half of the nearest-position slice of another
    subject (split at the image's middle column; registered slices share their midline)."""
    rng = np.random.default_rng(seed)
    ims = as_numpy_images(images)
    positions, case_ids = np.asarray(positions), np.asarray(case_ids)
    half = ims.shape[-1] // 2
    out = ims.copy()
    for i in range(len(ims)):
        others = np.flatnonzero(case_ids != case_ids[i])
        if not len(others):
            raise ValueError("swapped halves need slices of at least two subjects")
        gap = np.abs(positions[others] - positions[i])
        nearest = others[gap <= gap.min() + 1e-6]
        out[i, :, half:] = ims[rng.choice(nearest), :, half:]
    return _to_tensor(out)


def wrong_positions(positions: np.ndarray, min_shift: float = 0.3, seed: int = 0) -> np.ndarray:
    """A position in [0,1] for each input at least ``min_shift`` away from it (uniform over the allowed range)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(positions), np.float32)
    for i, p in enumerate(np.asarray(positions, np.float64)):
        lo, hi = max(0.0, p - min_shift), min(1.0, p + min_shift)
        below, above = lo, 1.0 - hi  # lengths of [0, lo) and (hi, 1]
        u = rng.uniform(0, below + above)
        out[i] = u if u < below else hi + (u - below)
    return out


@torch.no_grad()
def _draw_inside(codes: torch.Tensor, masks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``codes`` (B,h,w) with the cells inside ``masks`` (B,1,H,W) redrawn from their own histogram."""
    inside = torch.nn.functional.interpolate(masks, size=codes.shape[-2:], mode="area")[:, 0] > 0.5
    hist = torch.bincount(codes[inside], minlength=int(codes.max()) + 1).float()
    codes = codes.clone()
    codes[inside] = torch.multinomial(hist, int(inside.sum()), replacement=True, generator=gen)
    return codes


def texture_blobs(vqvae, images: torch.Tensor, seed: int = 0, chunk: int = 32) -> torch.Tensor:
    """Decodes of code grids whose cells inside each slice's brain mask are drawn independently
    from the histogram of all in-brain codes of ``images``; cells outside keep the slice's codes.
    For a two-level VQ-VAE both levels are drawn so (each from its own histogram).

    ``vqvae`` needs ``encode_levels(x) -> (top or None, codes)`` and ``decode(codes, top)``.
    """
    gen = torch.Generator().manual_seed(seed)
    levels = [vqvae.encode_levels(images[i : i + chunk].float()) for i in range(0, len(images), chunk)]
    codes = torch.cat([b for _, b in levels])
    top = None if levels[0][0] is None else torch.cat([t for t, _ in levels])
    masks = torch.from_numpy(brain_mask(as_numpy_images(images), JUDGE_BRAIN)).float()[:, None]
    codes = _draw_inside(codes, masks, gen)
    top = None if top is None else _draw_inside(top, masks, gen)
    return (
        torch.cat(
            [
                vqvae.decode(codes[i : i + chunk], None if top is None else top[i : i + chunk])
                for i in range(0, len(codes), chunk)
            ]
        )
        .clamp(0, 1)
        .float()
    )
