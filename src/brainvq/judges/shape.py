"""Is a generated slice brain-shaped? A geometric check compared against real slices.

A slice passes when its foreground (pixels above a low threshold after light smoothing,
holes filled) is one dominant connected blob that stays inside the image, that blob is
roughly elliptical (convex and close to the ellipse with the same second moments), and its
area is plausible for the slice's axial position (within the range seen on real slices
near that position).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from brainvq.data.brainmask import SHAPE_FOREGROUND, brain_mask
from brainvq.data.slices import position_bins


@dataclass
class ShapeThresholds:
    """The criteria's limits; the defaults pass almost every real OASIS-like slice."""

    foreground: float = SHAPE_FOREGROUND.threshold  # intensity threshold in [0, 1]
    largest_fraction: float = 0.95  # share of foreground pixels in the largest blob
    solidity: float = 0.85  # area / convex-hull area
    ellipse_overlap: float = 0.85  # IoU of the blob with its moment-matched ellipse
    border: int = 2  # the blob must stay this many pixels away from the image edge
    area_margin: float = 0.15  # relative slack around the real area range
    n_bins: int = 8


def _as_numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    a = a.reshape(len(a), *a.shape[-2:]).astype(np.float32)
    return a / 255.0 if a.max() > 1.5 else a


def _convex_area(mask: np.ndarray) -> float:
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask ^ ndimage.binary_erosion(mask))
    if len(xs) < 3:
        return float(mask.sum())
    try:
        return float(ConvexHull(np.stack([xs, ys], 1)).volume) + 0.5 * len(xs)
    except QhullError:
        return float(mask.sum())


def _ellipse_iou(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    if len(xs) < 5:
        return 0.0
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([ys - cy, xs - cx]))
    try:
        inv = np.linalg.inv(cov * 4.0)  # a uniform ellipse has variance r^2 / 4 per axis
    except np.linalg.LinAlgError:
        return 0.0
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.stack([yy - cy, xx - cx], -1)
    ell = np.einsum("...i,ij,...j->...", d, inv, d) <= 1.0
    inter = (ell & mask).sum()
    return float(inter / max((ell | mask).sum(), 1))


def shape_stats(images: torch.Tensor | np.ndarray, thresholds: ShapeThresholds | None = None) -> list[dict]:
    """Per image: foreground area fraction, components, largest share, solidity, ellipse IoU."""
    t = thresholds or ShapeThresholds()
    out = []
    for img in _as_numpy(images):
        fg = brain_mask(img, SHAPE_FOREGROUND.but(threshold=t.foreground))
        labels, n = ndimage.label(fg)
        if n == 0:
            out.append(
                {
                    "area": 0.0,
                    "n_components": 0,
                    "largest_fraction": 0.0,
                    "solidity": 0.0,
                    "ellipse_iou": 0.0,
                    "inside": False,
                }
            )
            continue
        sizes = np.bincount(labels.ravel())[1:]
        big = labels == (np.argmax(sizes) + 1)
        out.append(
            {
                "area": float(big.mean()),
                "n_components": int(n),
                "largest_fraction": float(sizes.max() / sizes.sum()),
                "solidity": float(big.sum() / max(_convex_area(big), 1.0)),
                "ellipse_iou": _ellipse_iou(big),
                "inside": not (
                    big[: t.border].any()
                    or big[-t.border :].any()
                    or big[:, : t.border].any()
                    or big[:, -t.border :].any()
                ),
            }
        )
    return out


@dataclass
class AreaModel:
    """Plausible brain area per axial-position bin, fitted on real slices."""

    lows: np.ndarray
    highs: np.ndarray
    n_bins: int

    @classmethod
    def fit(
        cls,
        real_images: torch.Tensor | np.ndarray,
        positions: np.ndarray,
        thresholds: ShapeThresholds | None = None,
    ) -> AreaModel:
        t = thresholds or ShapeThresholds()
        areas = np.array([s["area"] for s in shape_stats(real_images, t)])
        bins = position_bins(positions, t.n_bins)
        lows, highs = np.zeros(t.n_bins), np.ones(t.n_bins)
        for b in range(t.n_bins):
            a = areas[bins == b]
            if len(a):
                lo, hi = np.percentile(a, [2, 98])
                lows[b], highs[b] = lo * (1 - t.area_margin), hi * (1 + t.area_margin)
        return cls(lows, highs, t.n_bins)

    def plausible(self, areas: np.ndarray, positions: np.ndarray) -> np.ndarray:
        bins = position_bins(positions, self.n_bins)
        return (areas >= self.lows[bins]) & (areas <= self.highs[bins])


@dataclass
class ShapeReport:
    """Fraction of images passing every criterion, and per criterion."""

    fraction_ok: float
    n: int
    per_criterion: dict[str, float] = field(default_factory=dict)
    per_image_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def to_dict(self) -> dict:
        return {
            "fraction_brain_shaped": self.fraction_ok,
            "n": self.n,
            **{f"pass_{k}": v for k, v in self.per_criterion.items()},
        }


def brain_shape_check(
    images: torch.Tensor | np.ndarray,
    positions: np.ndarray,
    area_model: AreaModel,
    thresholds: ShapeThresholds | None = None,
) -> ShapeReport:
    """Apply the criteria to every image (positions are the conditioned slice positions)."""
    t = thresholds or ShapeThresholds()
    stats = shape_stats(images, t)
    get = lambda k: np.array([s[k] for s in stats])  # noqa: E731
    crit = {
        "one_blob": get("largest_fraction") >= t.largest_fraction,
        "convex": get("solidity") >= t.solidity,
        "elliptical": get("ellipse_iou") >= t.ellipse_overlap,
        "inside_image": get("inside").astype(bool),
        "area": area_model.plausible(get("area"), np.asarray(positions)),
    }
    ok = np.logical_and.reduce(list(crit.values()))
    return ShapeReport(
        float(ok.mean()) if len(ok) else 0.0,
        len(ok),
        {k: float(v.mean()) for k, v in crit.items()},
        ok,
    )
