"""Restoration: redraw the codes the prior finds unlikely and compare the input with the result."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from brainvq.anomaly.scoring import (
    AnomalyConfig,
    Thresholds,
    flag_codes,
    image_score,
    pixel_map,
    residual_map,
    threshold_from,
)
from brainvq.data.brainmask import ANOMALY_BRAIN, brain_mask
from brainvq.errors import ConfigError
from brainvq.models.levels import Codes
from brainvq.models.pair import ModelPair


@dataclass
class AnomalyResult:
    """Everything computed for a batch of N images (all on the CPU)."""

    nll: Tensor  # (N,h,w) per-code NLL of the bottom codes (given the top codes), nats
    nll_pixels: Tensor  # (N,1,H,W) per-code NLL upsampled to the image
    flagged: Tensor  # (N,h,w) bool, bottom codes that were redrawn (incl. those under redrawn top codes)
    top_nll: Tensor  # (N,ht,wt) per-code NLL of the top codes, nats ((N,0,0) for a single level)
    top_nll_pixels: Tensor  # (N,1,H,W) the same upsampled to the image (zeros for a single level)
    top_flagged: Tensor  # (N,ht,wt) bool, top codes that were redrawn ((N,0,0) for a single level)
    reconstruction: Tensor  # (N,1,H,W) plain VQ-VAE reconstruction (the baseline's reference)
    restoration: Tensor  # (N,1,H,W) mean of the decoded restorations
    brain: Tensor  # (N,1,H,W) bool
    anomaly_map: Tensor  # (N,1,H,W) smoothed |input - restoration| inside the brain
    baseline_map: Tensor  # (N,1,H,W) smoothed |input - reconstruction| inside the brain
    score: Tensor  # (N,) image-level score from anomaly_map
    baseline_score: Tensor  # (N,) the same from baseline_map

    @staticmethod
    def concat(parts: list[AnomalyResult]) -> AnomalyResult:
        return AnomalyResult(*(torch.cat([getattr(p, f) for p in parts]) for f in AnomalyResult.__dataclass_fields__))


def _flag(
    pair: ModelPair, codes: Codes, cond: Tensor | None, thr: Thresholds, cfg: AnomalyConfig
) -> tuple[Tensor, Tensor, Codes]:
    """Per-code NLL of both levels and the codes above their thresholds:
    (nll, top nll ((B,0,0) for one level), flagged codes of each level ((B,0,0) top for one level))."""
    maps = pair.nll(codes, cond)
    nll, tnll = maps["bottom"].cpu(), maps.get("top")
    flagged = flag_codes(nll, thr.bottom, cfg.dilate)
    tnll = tnll.cpu() if tnll is not None else torch.zeros(len(nll), 0, 0)
    if tnll.numel() and thr.top is not None:
        top_flagged = flag_codes(tnll, thr.top, 0)
    else:  # one level, or top codes never flagged
        top_flagged = torch.zeros(tnll.shape, dtype=torch.bool)
    return nll, tnll, Codes(top_flagged, flagged)


def _conditions(pair: ModelPair, positions: Tensor | None, x: Tensor, exclude: Tensor | None = None) -> Tensor | None:
    """What the prior is conditioned on for images ``x`` (each one's own intensity scale, without the
    pixels in ``exclude``, when it needs it); None when the positions are unknown."""
    return None if positions is None else pair.conditions(positions, images=x, exclude=exclude)


@torch.no_grad()
def detect_batch(
    pair: ModelPair,
    x: Tensor,
    positions: Tensor | None,
    threshold: float | Thresholds,
    cfg: AnomalyConfig,
    generator: torch.Generator | None = None,
) -> AnomalyResult:
    """Score, flag, restore and map one batch of images (B,1,H,W) in [0,1].

    Two levels: top codes above the top threshold are redrawn first, then the bottom codes
    above the bottom threshold and all bottom codes under a redrawn top code. A prior conditioned
    on the intensity scale gets each image's scale, measured again without the pixels under
    flagged codes once they are known."""
    thr = Thresholds.of(threshold)
    x = x.float().cpu()
    size = x.shape[-1]
    codes = pair.encode(x)
    cond = _conditions(pair, positions, x)  # what the prior needs (+ each image's intensity scale)
    nll, tnll, flags = _flag(pair, codes, cond, thr, cfg)
    if pair.uses_intensity_scale and (flags.bottom.any() or flags.top.any()):
        # a bright lesion raises the slice's intensity scale: measure it again without the
        # pixels under flagged codes and score once more with it
        cond = _conditions(pair, positions, x, exclude=pixel_map(pair.covered(flags), size) > 0)
        nll, tnll, flags = _flag(pair, codes, cond, thr, cfg)
    restored = pair.resample(codes, flags, cond, cfg.n_samples, generator=generator, temperature=cfg.temperature)
    restoration = pair.decode(restored).mean(0).cpu()
    reconstruction = pair.decode(codes).cpu()
    flagged = pair.covered(flags)
    brain = brain_mask(x, ANOMALY_BRAIN.but(threshold=cfg.brain_threshold, erode=cfg.erode))
    region = brain & (pixel_map(flagged, size) > 0) if cfg.only_flagged else brain
    amap = residual_map(x, restoration, region, cfg.smooth_sigma)
    bmap = residual_map(x, reconstruction, brain, cfg.smooth_sigma)
    return AnomalyResult(
        nll=nll,
        nll_pixels=pixel_map(nll, size),
        flagged=flagged.cpu(),
        top_nll=tnll,
        top_nll_pixels=pixel_map(tnll, size) if tnll.numel() else torch.zeros(len(x), 1, size, size),
        top_flagged=flags.top,
        reconstruction=reconstruction,
        restoration=restoration,
        brain=brain,
        anomaly_map=amap,
        baseline_map=bmap,
        score=image_score(amap, brain, cfg.top_fraction),
        baseline_score=image_score(bmap, brain, cfg.top_fraction),
    )


def detect(
    pair: ModelPair,
    images: Tensor,
    positions: Tensor | None,
    threshold: float | Thresholds,
    cfg: AnomalyConfig,
    *,
    progress: bool = False,
) -> AnomalyResult:
    """:func:`detect_batch` over all ``images`` (N,1,H,W) in batches of ``cfg.batch_size``;
    one seeded generator for the whole run, so results repeat for a seed and batch size."""
    if len(images) == 0:
        raise ConfigError("no images to score")
    if pair.conditional and positions is None:
        raise ConfigError("this prior is conditioned on slice position: positions are required")
    gen = torch.Generator().manual_seed(cfg.seed)
    parts = []
    for s in tqdm(range(0, len(images), cfg.batch_size), desc="anomaly", disable=not progress, leave=False):
        sl = slice(s, s + cfg.batch_size)
        cond = positions[sl] if positions is not None else None
        parts.append(detect_batch(pair, images[sl], cond, threshold, cfg, gen))
    return AnomalyResult.concat(parts)


@torch.no_grad()
def calibrate(
    pair: ModelPair,
    images: Tensor,
    positions: Tensor | None,
    quantile: float,
    batch_size: int = 32,
    top_quantile: float | None = None,
) -> Thresholds:
    """Per-code NLL thresholds: the ``quantile`` of the NLL of every bottom code of ``images``
    (healthy validation slices) and, for two levels, the ``top_quantile`` of the top codes' NLL."""
    if len(images) == 0:
        raise ConfigError("no validation images to choose the threshold on")
    nll, tnll = [], []
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size]
        cond = _conditions(pair, positions[s : s + batch_size] if positions is not None else None, x)
        maps = pair.nll(pair.encode(x), cond)
        nll.append(maps["bottom"].cpu())
        if "top" in maps:
            tnll.append(maps["top"].cpu())
    top_thr = threshold_from(torch.cat(tnll), top_quantile) if tnll and top_quantile is not None else None
    return Thresholds(threshold_from(torch.cat(nll), quantile), top_thr)
