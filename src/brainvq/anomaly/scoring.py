"""Per-code NLL maps, the flagging threshold and anomaly maps/scores (the brain mask they are taken
in: :data:`~brainvq.data.brainmask.ANOMALY_BRAIN`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from brainvq.data.brainmask import ANOMALY_BRAIN
from brainvq.errors import ConfigError


@dataclass
class AnomalyConfig:
    """How codes are flagged and restored and how the anomaly map is made."""

    quantile: float = 0.995  # per-code NLL threshold = this quantile of the validation codes' NLL
    top_quantile: float | None = 0.995  # two levels: the same for the top codes (None: never redraw top codes)
    dilate: int = 1  # grow the flagged code mask by this many codes (lesion rims, raster-order context)
    n_samples: int = 4  # restorations averaged per image
    temperature: float = 1.0
    smooth_sigma: float = 2.0  # Gaussian smoothing of the residual, pixels
    only_flagged: bool = False  # keep the residual only where codes were redrawn (upsampled flag mask)
    brain_threshold: float = ANOMALY_BRAIN.threshold  # intensity above which (after hole filling) a pixel is brain
    erode: int = ANOMALY_BRAIN.erode  # erode the brain mask by this many pixels (the rim reconstructs badly)
    top_fraction: float = 0.01  # image score: mean of this top fraction of the brain's map values
    batch_size: int = 32  # slices per sampler call (x n_samples grids); larger batches amortise per-position overhead
    seed: int = 0

    def __post_init__(self) -> None:
        for q in (self.quantile, self.top_quantile):
            if q is not None and not 0 < q < 1:
                raise ConfigError(f"quantile must be in (0, 1), got {q}")
        if self.n_samples < 1 or self.batch_size < 1:
            raise ConfigError("n_samples and batch_size must be >= 1")
        if self.dilate < 0 or self.erode < 0 or self.smooth_sigma < 0:
            raise ConfigError("dilate, erode and smooth_sigma must be >= 0")
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Thresholds:
    """Per-code NLL thresholds (nats) of the bottom grid and, for two levels, of the top grid
    (None: top codes are never flagged)."""

    bottom: float
    top: float | None = None

    @classmethod
    def checked(cls, bottom: float, top: float | None = None) -> Thresholds:
        """Thresholds a user gave: each a finite number >= 0 (NaN would flag nothing, a negative
        one every code), else a one-line ConfigError."""
        for value in (bottom, top):
            if value is not None and not 0 <= value < math.inf:
                raise ConfigError(f"an NLL threshold must be a finite number >= 0 (nats), got {value}")
        return cls(bottom, top)

    def to_dict(self) -> dict:
        return {"nll_threshold": self.bottom, "top_nll_threshold": self.top}

    @classmethod
    def of(cls, value: float | Thresholds) -> Thresholds:
        return value if isinstance(value, Thresholds) else cls(float(value))


def pixel_map(code_map: Tensor, size: int) -> Tensor:
    """(B,h,w) per-code values -> (B,1,size,size), bilinear."""
    return F.interpolate(code_map[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)


def threshold_from(nll: Tensor, quantile: float) -> float:
    """The ``quantile`` of the per-code NLL values (e.g. of the validation split)."""
    flat = nll.flatten().float()
    if flat.numel() > 2_000_000:  # torch.quantile's input limit; a strided subsample is plenty
        flat = flat[:: flat.numel() // 2_000_000 + 1]
    return float(torch.quantile(flat, quantile))


def flag_codes(nll: Tensor, threshold: float, dilate: int = 1) -> Tensor:
    """Codes whose NLL exceeds ``threshold``, dilated by ``dilate`` codes: (B,h,w) bool."""
    flagged = nll > threshold
    if dilate > 0:
        k = 2 * dilate + 1
        flagged = F.max_pool2d(flagged[:, None].float(), k, stride=1, padding=dilate)[:, 0] > 0
    return flagged


def residual_map(x: Tensor, restored: Tensor, brain: Tensor, sigma: float = 2.0) -> Tensor:
    """|x - restored|, Gaussian-smoothed and set to 0 outside the brain: (B,1,H,W)."""
    res = (x.cpu().float() - restored.cpu().float()).abs().numpy()
    if sigma > 0:
        res = ndimage.gaussian_filter(res, sigma=(0, 0, sigma, sigma))
    return torch.from_numpy(res) * brain


def image_score(amap: Tensor, brain: Tensor, top_fraction: float = 0.01) -> Tensor:
    """Mean of the highest ``top_fraction`` of each image's map values inside the brain: (B,)."""
    scores = []
    for m, b in zip(amap, brain, strict=True):
        vals = m[b]
        if vals.numel() == 0:
            scores.append(0.0)
            continue
        k = max(1, int(round(top_fraction * vals.numel())))
        scores.append(float(vals.topk(k).values.mean()))
    return torch.tensor(scores)
