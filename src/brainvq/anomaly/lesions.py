"""Synthetic lesions for the anomaly benchmark: smooth-edged textured ellipses in white or grey matter."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from brainvq.data.brainmask import LESION_BRAIN, LESION_TISSUE, brain_mask
from brainvq.errors import ConfigError


@dataclass
class LesionConfig:
    """Size, contrast and texture of the synthetic lesions."""

    min_radius: float = 3.0  # pixels (256x256 slices)
    max_radius: float = 25.0
    min_contrast: float = 0.2  # intensity change at the lesion centre, images in [0,1]
    max_contrast: float = 0.4
    edge: float = 1.5  # width of the smooth edge, pixels
    noise: float = 0.05  # std of the smoothed noise texture
    noise_sigma: float = 1.5  # correlation length of that texture, pixels

    def __post_init__(self) -> None:
        if not 0 < self.min_radius <= self.max_radius:
            raise ConfigError("need 0 < min_radius <= max_radius")
        if not 0 < self.min_contrast <= self.max_contrast:
            raise ConfigError("need 0 < min_contrast <= max_contrast")

    def to_dict(self) -> dict:
        return asdict(self)


def tissue_masks(
    img: np.ndarray, seg: np.ndarray | None = None, threshold: float = LESION_TISSUE.threshold
) -> dict[str, np.ndarray]:
    """Grey and white matter masks of one slice (H,W) in [0,1].

    From the OASIS segmentation (class 2 grey, 3 white matter) when given; otherwise from
    intensity inside the brain: in T1 white matter is the brightest tissue, so the brightest
    40 % of brain pixels count as white matter and the next 35 % as grey matter.
    """
    if seg is not None:
        return {"grey": seg == 2, "white": seg == 3}
    brain = brain_mask(img, LESION_TISSUE.but(threshold=threshold))
    if not brain.any():
        return {"grey": brain, "white": brain}
    lo, hi = np.quantile(img[brain], [0.25, 0.6])
    return {"grey": brain & (img > lo) & (img <= hi), "white": brain & (img > hi)}


def add_lesion(
    img: np.ndarray,
    rng: np.random.Generator,
    cfg: LesionConfig,
    seg: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One lesion in ``img`` (H,W) float in [0,1]: returns (lesioned image, bool mask, parameters)."""
    tissues = tissue_masks(img, seg)
    tissue = str(rng.choice(["white", "grey"]))
    where = tissues[tissue] if tissues[tissue].any() else tissues["white"] | tissues["grey"]
    if not where.any():
        raise ConfigError("slice has no brain tissue to place a lesion in")
    ys, xs = np.nonzero(where)
    k = rng.integers(len(ys))
    cy, cx = float(ys[k]), float(xs[k])
    ry, rx = rng.uniform(cfg.min_radius, cfg.max_radius, size=2)
    angle = rng.uniform(0, np.pi)
    kind = str(rng.choice(["hyper", "hypo"]))
    contrast = rng.uniform(cfg.min_contrast, cfg.max_contrast) * (1 if kind == "hyper" else -1)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
    dist = (np.sqrt(u**2 + v**2) - 1.0) * min(ry, rx)  # ~ signed distance to the rim in pixels
    alpha = 1.0 / (1.0 + np.exp(dist / cfg.edge))
    brain = brain_mask(img, LESION_BRAIN)
    alpha *= brain
    texture = ndimage.gaussian_filter(rng.normal(0, 1, img.shape), cfg.noise_sigma)
    texture *= cfg.noise / (texture.std() + 1e-8)
    out = np.clip(img + alpha * (contrast + texture), 0.0, 1.0)
    mask = (alpha > 0.5) & brain
    params = {
        "tissue": tissue,
        "kind": kind,
        "centre_y": cy,
        "centre_x": cx,
        "radius_y": float(ry),
        "radius_x": float(rx),
        "contrast": float(contrast),
        "area_px": int(mask.sum()),
    }
    return out.astype(np.float32), mask, params


def lesion_set(
    images: np.ndarray, seed: int, cfg: LesionConfig, segs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One lesion in each of ``images`` (N,H,W) in [0,1], reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out, masks, params = [], [], []
    for i, img in enumerate(images):
        o, m, p = add_lesion(img, rng, cfg, None if segs is None else segs[i])
        out.append(o)
        masks.append(m)
        params.append(p)
    return np.stack(out), np.stack(masks), params
