"""Anatomy judges that need no masks: lateral ventricles, left-right symmetry, intensity tissue classes.

All work on images in [0, 1] given as (N,1,H,W) or (N,H,W), torch or numpy, and on the brain mask
each image defines itself (:data:`~brainvq.data.brainmask.JUDGE_BRAIN`: pixels above a low
threshold after light smoothing, largest blob, holes filled).

- ventricles: the dark-CSF area in the central part of the brain, as a fraction of the brain
  area. "Dark" is relative to the slice's own brain intensities (below ``dark_ratio`` x their 95th
  percentile, i.e. 0.4 x the white-matter intensity of a T1 slice); "central" is the ellipse
  around the brain's centroid with ``central_extent`` of its second-moment radii. Compared per
  slice-position bin; baseline: validation vs test.
- symmetry: Pearson correlation between a slice and its mirror image about the brain's midline
  (the line through the mask's centroid along its principal long axis), inside the union of the
  mask and its mirror. Real range: 5th-95th percentile of a real set.
- tissue by intensity: CSF / grey / white matter classes from two global intensity thresholds found
  by 1-D k-means on real brain pixels (T1: CSF dark, GM mid, WM bright). An approximation for data
  without tissue masks, such as the OASIS-1 subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from brainvq.data.brainmask import JUDGE_BRAIN, MaskRule, brain_mask
from brainvq.data.slices import position_bins


@dataclass
class AnatomyConfig:
    """Thresholds of the anatomy judges (defaults chosen for skull-stripped T1 slices)."""

    foreground: float = JUDGE_BRAIN.threshold  # brain-mask intensity threshold (as in ShapeThresholds)
    dark_ratio: float = 0.4  # CSF: below this x the 95th percentile of the slice's brain intensities
    central_extent: float = 0.6  # central ellipse: this x the brain's second-moment radii
    min_blob: float = 0.004  # ventricles: dark blobs of at least this share of the brain area
    symmetry_smooth: float = 2.0  # px, smoothing for the central (anatomy-scale) symmetry score
    position_bins: int = 4
    symmetry_range: tuple[float, float] = (5.0, 95.0)  # percentiles of the real scores
    symmetry_min_inside: float = 0.75  # accept when at least this share lies in the real range (real: ~0.8-0.9)
    ventricle_max_ratio: float = 2.0  # accept when |set - reference| <= this x |validation - test|
    tissue_max_ratio: float = 2.0

    @property
    def brain(self) -> MaskRule:
        """The judges' brain mask (:data:`~brainvq.data.brainmask.JUDGE_BRAIN`) at this ``foreground``."""
        return JUDGE_BRAIN.but(threshold=self.foreground)


def as_numpy_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,1,H,W) or (N,H,W) torch/numpy in [0,1] (or uint8 0..255) -> float32 (N,H,W) in [0,1]."""
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    scale = 1 / 255.0 if a.dtype == np.uint8 else 1.0
    return a.reshape(len(a), *a.shape[-2:]).astype(np.float32) * scale


def _moments(mask: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Centroid (cy, cx), eigenvalues (ascending) and eigenvectors (columns, (y,x)) of the mask."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([ys - cy, xs - cx])) if len(ys) > 2 else np.eye(2)
    w, v = np.linalg.eigh(cov)
    return float(cy), float(cx), w, v


def ventricle_mask(img: np.ndarray, cfg: AnatomyConfig | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Dark-CSF pixels in the central brain region that belong to dark blobs of at least
    ``min_blob`` x the brain area (ventricles are large connected dark regions; scattered sulcal
    CSF is not counted)."""
    cfg = cfg or AnatomyConfig()
    mask = brain_mask(img, cfg.brain) if mask is None else mask
    if mask.sum() < 50:
        return np.zeros_like(mask)
    cy, cx, w, v = _moments(mask)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    d = np.stack([yy - cy, xx - cx], -1) @ v  # coordinates along the principal axes
    radii = 2 * np.sqrt(np.clip(w, 1e-6, None)) * cfg.central_extent  # uniform ellipse: var = r^2 / 4
    central = ((d / radii) ** 2).sum(-1) <= 1.0
    inner = mask & central & ndimage.binary_erosion(mask, iterations=3)
    dark = inner & (img < cfg.dark_ratio * np.percentile(img[mask], 95))
    labels, n = ndimage.label(dark)
    if n == 0:
        return dark
    sizes = np.bincount(labels.ravel())
    big = np.flatnonzero(sizes >= cfg.min_blob * mask.sum())
    return np.isin(labels, big[big > 0])


def ventricle_fraction(img: np.ndarray, cfg: AnatomyConfig | None = None, mask: np.ndarray | None = None) -> float:
    """Ventricle area (:func:`ventricle_mask`) as a fraction of the brain area (NaN: no brain)."""
    cfg = cfg or AnatomyConfig()
    mask = brain_mask(img, cfg.brain) if mask is None else mask
    if mask.sum() < 50:
        return float("nan")
    return float(ventricle_mask(img, cfg, mask).sum() / mask.sum())


def _reflection(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset (for ``ndimage.affine_transform``) of the mirror about the line through
    the mask's centroid along its long axis (the image vertical when the mask is nearly round)."""
    cy, cx, w, v = _moments(mask)
    axis = v[:, 1] if w[1] > 1.05 * w[0] else np.array([1.0, 0.0])
    reflect = 2 * np.outer(axis, axis) - np.eye(2)  # reflection about the axis direction, (y,x)
    centre = np.array([cy, cx])
    return reflect, centre - reflect @ centre


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64) - a.mean(), b.astype(np.float64) - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _one_minus_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float(1 - (a & b).sum() / union) if union else 0.0


SYMMETRY_NAMES: tuple[str, ...] = (
    "symmetry",
    "symmetry_central",
    "outline_asymmetry",
    "ventricle_asymmetry",
    "hemisphere_gap_median",
    "hemisphere_gap_p95",
)


def symmetry_scores(img: np.ndarray, cfg: AnatomyConfig | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Left-right symmetry about the brain midline, the :data:`SYMMETRY_NAMES` (NaN: no brain):
    correlation of the slice with its mirror inside the union of the brain mask and its mirror;
    the same after smoothing by ``symmetry_smooth`` px, inside the central band of the brain
    (within ``central_extent`` x its minor radius of the midline: medial anatomy, not the outline);
    1 - IoU of the brain mask and its mirror (outline); 1 - IoU of the ventricles and their
    mirror; and the gaps between the two hemispheres' median and 95th-percentile intensities
    (the two halves of one scan share their intensity scale)."""
    cfg = cfg or AnatomyConfig()
    mask = brain_mask(img, cfg.brain) if mask is None else mask
    if mask.sum() < 50:
        return np.full(len(SYMMETRY_NAMES), np.nan)
    reflect, offset = _reflection(mask)
    flip = lambda a, order: ndimage.affine_transform(a, reflect, offset=offset, order=order)  # noqa: E731
    mirrored, mirrored_mask = flip(img, 1), flip(mask.astype(np.float32), 0) > 0.5
    region = mask | mirrored_mask
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]].astype(np.float64)
    # a point's mirror minus the point is twice its offset across the midline
    dy = reflect[0, 0] * yy + reflect[0, 1] * xx + offset[0] - yy
    dx = reflect[1, 0] * yy + reflect[1, 1] * xx + offset[1] - xx
    _, _, w, v = _moments(mask)
    normal = v[:, 0] if w[1] > 1.05 * w[0] else np.array([0.0, 1.0])
    across = (dy * normal[0] + dx * normal[1]) / 2  # signed distance to the midline
    central = region & (np.abs(across) < cfg.central_extent * 2 * np.sqrt(max(w[0], 1e-6)))
    smooth = ndimage.gaussian_filter(img, cfg.symmetry_smooth)
    vent = ventricle_mask(img, cfg, mask)
    one, other = img[mask & (across > 0)], img[mask & (across < 0)]
    gaps = (
        np.abs(np.percentile(one, [50, 95]) - np.percentile(other, [50, 95]))
        if len(one) and len(other)
        else np.full(2, np.nan)
    )
    return np.array(
        [
            _correlation(img[region], mirrored[region]),
            _correlation(smooth[central], flip(smooth, 1)[central]),
            _one_minus_iou(mask, mirrored_mask),
            _one_minus_iou(vent, flip(vent.astype(np.float32), 0) > 0.5),
            *gaps,
        ]
    )


def symmetry_score(img: np.ndarray, cfg: AnatomyConfig | None = None) -> float:
    """Correlation of a slice with its mirror image about the brain midline (NaN: no brain)."""
    return float(symmetry_scores(img, cfg)[0])


# --- tissue classes by intensity -----------------------------------------------------------------


def fit_tissue_thresholds(images: torch.Tensor | np.ndarray, cfg: AnatomyConfig | None = None) -> np.ndarray:
    """Two intensity thresholds (CSF|GM, GM|WM) from 1-D 3-means on the brain pixels of real slices."""
    cfg = cfg or AnatomyConfig()
    pix = np.concatenate([im[brain_mask(im, cfg.brain)] for im in as_numpy_images(images)])
    centres = np.percentile(pix, [15, 50, 85])
    for _ in range(50):
        cut = (centres[:-1] + centres[1:]) / 2
        which = np.digitize(pix, cut)
        new = np.array([pix[which == k].mean() if (which == k).any() else centres[k] for k in range(3)])
        if np.allclose(new, centres, atol=1e-5):
            break
        centres = new
    return (centres[:-1] + centres[1:]) / 2


def intensity_tissue_fractions(
    img: np.ndarray, thresholds: np.ndarray, cfg: AnatomyConfig | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """(3,) fractions of CSF, grey and white matter among the brain pixels (intensity classes)."""
    cfg = cfg or AnatomyConfig()
    mask = brain_mask(img, cfg.brain) if mask is None else mask
    if not mask.any():
        return np.full(3, np.nan)
    return np.bincount(np.digitize(img[mask], thresholds), minlength=3)[:3] / mask.sum()


# --- per-set judges ----------------------------------------------------------------------------


def per_image(fn, images: torch.Tensor | np.ndarray, *args) -> np.ndarray:
    """``fn(image, *args)`` for every image, stacked."""
    return np.array([fn(im, *args) for im in as_numpy_images(images)])


def by_position(values: np.ndarray, positions: np.ndarray, bins: int) -> np.ndarray:
    """Mean of ``values`` (N,) or (N,k) per equal-width position bin (NaN for empty bins)."""
    values = np.asarray(values, np.float64)
    which = position_bins(np.asarray(positions), bins)
    out = np.full((bins, *values.shape[1:]), np.nan)
    for b in range(bins):
        sel = (which == b) & ~np.isnan(values.reshape(len(values), -1)).any(1)
        if sel.any():
            out[b] = values[sel].mean(0)
    return out


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    both = ~(np.isnan(a) | np.isnan(b))
    return float(np.abs(a - b)[both].mean()) if both.any() else float("nan")


def binned_difference(
    values: np.ndarray,
    positions: np.ndarray,
    ref_values: np.ndarray,
    ref_positions: np.ndarray,
    base_values: np.ndarray,
    base_positions: np.ndarray,
    bins: int,
    max_ratio: float,
) -> dict:
    """Per-bin means of a set, a reference and a real baseline set; accept when the set's mean
    |difference| to the reference over the bins is within ``max_ratio`` x the baseline's."""
    tab, ref, base = (
        by_position(v, p, bins)
        for v, p in ((values, positions), (ref_values, ref_positions), (base_values, base_positions))
    )
    diff, floor = _mean_abs(tab, ref), _mean_abs(base, ref)
    return {
        "value": diff,
        "floor": floor,
        "ratio": diff / floor if floor > 0 else float("inf"),
        "accept": bool(diff <= max_ratio * floor),
        "per_bin": np.nan_to_num(np.atleast_2d(tab.T), nan=-1).round(4).tolist(),
        "reference_per_bin": np.nan_to_num(np.atleast_2d(ref.T), nan=-1).round(4).tolist(),
        "baseline_per_bin": np.nan_to_num(np.atleast_2d(base.T), nan=-1).round(4).tolist(),
        "per_bin_abs_diff": np.nan_to_num(np.abs(tab - ref).T, nan=-1).round(4).tolist(),
        "baseline_per_bin_abs_diff": np.nan_to_num(np.abs(base - ref).T, nan=-1).round(4).tolist(),
    }


def symmetry_range_check(scores: np.ndarray, ref_scores: np.ndarray, cfg: AnatomyConfig | None = None) -> dict:
    """Share of ``scores`` inside the reference's percentile range; accept above ``symmetry_min_inside``."""
    cfg = cfg or AnatomyConfig()
    ref = ref_scores[~np.isnan(ref_scores)]
    lo, hi = np.percentile(ref, cfg.symmetry_range)
    inside = (scores >= lo) & (scores <= hi)  # NaN (no brain) counts as outside
    frac = float(inside.mean()) if len(scores) else float("nan")
    return {
        "value": frac,
        "real_range": [float(lo), float(hi)],
        "median": float(np.nanmedian(scores)) if (~np.isnan(scores)).any() else float("nan"),
        "reference_median": float(np.median(ref)),
        "accept": bool(frac >= cfg.symmetry_min_inside),
    }
