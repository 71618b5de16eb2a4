"""What a prior is conditioned on besides codes: the slice position and, optionally, the slice's
intensity scale.

The intensity scale of a slice is the 95th percentile of its brain intensities (pixels above
:data:`~brainvq.data.brainmask.TISSUE_PIXELS`). Real OASIS-1 slices differ in overall brightness
from subject to subject; a top-level prior that has to infer it from the codes it has drawn so
far drew the two hemispheres at different brightness (docs/experiments/
2026-11-26-prior-intensity-scale.md). A prior conditioned on it is told the scale up front: from the image itself when an
image is scored or completed, and drawn from :class:`ScaleDistribution` (the training slices'
scales at that slice position) when a new slice is sampled.

Conditions travel as one tensor: ``(B,)`` slice positions, or ``(B, 2)`` rows of
``(position, intensity scale)`` (:func:`slice_conditions`). A prior that is not conditioned on
the intensity scale reads only the first column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from brainvq.data.brainmask import TISSUE_PIXELS, brain_mask
from brainvq.errors import ConfigError

MIN_BRAIN_PIXELS = 50  # fewer brain pixels than this: the slice's maximum is its scale
SCALE_QUANTILE = 0.95
_CHUNK = 128  # images per torch.nanquantile call (bounds the memory of its sort)


def intensity_scale(images: Tensor, exclude: Tensor | None = None) -> Tensor:
    """(N,1,H,W) or (N,H,W) images in [0, 1] -> (N,) 95th percentile of each slice's brain pixels.

    ``exclude``: a boolean mask of the images' shape whose pixels do not count (e.g. the pixels
    under codes an anomaly detector flagged, so a bright lesion does not raise the scale)."""
    flat = images.reshape(len(images), -1).float()
    skip = torch.zeros_like(flat, dtype=torch.bool) if exclude is None else exclude.reshape(flat.shape).bool()
    out = []
    for part, drop in zip(flat.split(_CHUNK), skip.split(_CHUNK), strict=True):
        brain = brain_mask(part, TISSUE_PIXELS) & ~drop
        q = torch.nanquantile(torch.where(brain, part, torch.nan), SCALE_QUANTILE, dim=1)
        few = brain.sum(1) < MIN_BRAIN_PIXELS
        out.append(torch.where(few, part.max(1).values, q))
    return torch.cat(out) if out else torch.zeros(0)


def slice_conditions(positions: Tensor, scales: Tensor | None = None) -> Tensor:
    """Positions (B,) alone, or stacked with intensity scales into (B, 2) rows."""
    positions = torch.as_tensor(positions, dtype=torch.float32)
    if scales is None:
        return positions
    scales = torch.as_tensor(scales, dtype=torch.float32, device=positions.device)
    if scales.shape != positions.shape or positions.ndim != 1:
        raise ConfigError(
            f"positions and scales must both be (B,), got {tuple(positions.shape)} and {tuple(scales.shape)}"
        )
    return torch.stack([positions, scales], dim=1)


@dataclass
class ScaleDistribution:
    """The intensity scales of the training slices: how a prior normalises a scale, and what a
    new slice at a given position draws from (saved in the prior's config)."""

    mean: float
    std: float
    edges: list[float]  # slice-position bin edges (bins + 1), quantiles of the training positions
    quantiles: list[list[float]]  # per bin: the scale at equally spaced quantile levels 0..1

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ConfigError(f"intensity-scale std must be > 0, got {self.std}")
        if len(self.edges) != len(self.quantiles) + 1 or not self.quantiles:
            raise ConfigError("intensity-scale distribution: need one quantile row per position bin")
        if len({len(q) for q in self.quantiles}) != 1 or len(self.quantiles[0]) < 2:
            raise ConfigError("intensity-scale distribution: quantile rows must share one length >= 2")

    @classmethod
    def fit(cls, positions: Tensor, scales: Tensor, bins: int = 8, levels: int = 33) -> ScaleDistribution:
        """From the training slices' positions and scales (N,): ``bins`` position bins holding
        equally many slices, ``levels`` quantiles of the scale in each."""
        pos = np.asarray(torch.as_tensor(positions, dtype=torch.float64))
        sc = np.asarray(torch.as_tensor(scales, dtype=torch.float64))
        if pos.shape != sc.shape or pos.ndim != 1 or len(pos) < 2:
            raise ConfigError("fit the intensity-scale distribution on at least 2 slices (positions and scales (N,))")
        bins = max(1, min(bins, len(pos) // 2))
        edges = np.quantile(pos, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, pos, side="right") - 1, 0, bins - 1)
        rows = []
        for b in range(bins):
            in_bin = sc[which == b]
            rows.append(np.quantile(in_bin if len(in_bin) else sc, np.linspace(0, 1, levels)).tolist())
        return cls(float(sc.mean()), float(max(sc.std(), 1e-6)), edges.tolist(), rows)

    def to_dict(self) -> dict:
        return asdict(self)

    def normalise(self, scales: Tensor) -> Tensor:
        """Scales -> [0, 1]: standardised, clipped at 3 standard deviations, mapped onto [0, 1]."""
        return ((scales - self.mean) / self.std).clamp(-3, 3) / 6 + 0.5

    def sample(self, positions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One scale per position (B,), drawn from the training scales of its position bin
        (inverse CDF, interpolated between the stored quantiles)."""
        positions = torch.as_tensor(positions, dtype=torch.float64).cpu()
        edges = torch.tensor(self.edges, dtype=torch.float64)
        table = torch.tensor(self.quantiles, dtype=torch.float64)  # (bins, levels)
        which = (torch.searchsorted(edges, positions, right=True) - 1).clamp(0, len(table) - 1)
        u = torch.rand(len(positions), generator=generator, dtype=torch.float64) * (table.shape[1] - 1)
        lo = u.floor().long().clamp_max(table.shape[1] - 2)
        frac = u - lo
        rows = table[which]
        low, high = rows.gather(1, lo[:, None])[:, 0], rows.gather(1, lo[:, None] + 1)[:, 0]
        return (low + frac * (high - low)).float()
