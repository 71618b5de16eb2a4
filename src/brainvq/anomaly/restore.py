"""Restoration: redraw the codes the prior finds unlikely and compare the input with the result."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from brainvq.anomaly import model_api as api
from brainvq.anomaly.scoring import (
    AnomalyConfig,
    Thresholds,
    brain_mask,
    flag_codes,
    image_score,
    pixel_map,
    residual_map,
    threshold_from,
)
from brainvq.data.errors import ConfigError
from brainvq.models.hierarchical import Prior
from brainvq.models.vqvae import VQVAE


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
    prior: Prior, codes: Tensor, top: Tensor | None, cond: Tensor | None, thr: Thresholds, cfg: AnomalyConfig
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-code NLL of both levels and the codes above their thresholds:
    (nll, top nll ((B,0,0) for one level), flagged, top flagged)."""
    nll = api.code_nll(prior, codes, cond, top).cpu()
    tnll = api.top_nll(prior, top, cond)
    flagged = flag_codes(nll, thr.bottom, cfg.dilate)
    if tnll is not None and thr.top is not None:
        tnll = tnll.cpu()
        top_flagged = flag_codes(tnll, thr.top, 0)
    else:
        tnll = tnll.cpu() if tnll is not None else torch.zeros(len(codes), 0, 0)
        top_flagged = torch.zeros(tnll.shape, dtype=torch.bool)
    return nll, tnll, flagged, top_flagged


@torch.no_grad()
def detect_batch(
    vqvae: VQVAE,
    prior: Prior,
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
    top, codes = api.encode(vqvae, x)
    cond = api.conditions(prior, positions, x)  # what the prior needs (+ each image's intensity scale)
    nll, tnll, flagged, top_flagged = _flag(prior, codes, top, cond, thr, cfg)
    if api.needs_intensity_scale(prior) and (flagged.any() or top_flagged.any()):
        # a bright lesion raises the slice's intensity scale: measure it again without the
        # pixels under flagged codes and score once more with it
        covered = flagged if not top_flagged.numel() else flagged | api.top_to_bottom(top_flagged, codes.shape[-1])
        cond = api.conditions(prior, positions, x, exclude=pixel_map(covered, size) > 0)
        nll, tnll, flagged, top_flagged = _flag(prior, codes, top, cond, thr, cfg)
    tops, samples = api.resample(
        prior,
        codes,
        flagged,
        cond,
        cfg.n_samples,
        generator,
        cfg.temperature,
        top,
        top_flagged if top is not None else None,
    )
    restoration = api.decode(vqvae, samples, tops).mean(0).cpu()
    reconstruction = api.decode(vqvae, codes, top).cpu()
    if top_flagged.numel():
        flagged = flagged | api.top_to_bottom(top_flagged, codes.shape[-1])
    brain = brain_mask(x, cfg.brain_threshold, cfg.erode)
    region = brain & (pixel_map(flagged, size) > 0) if cfg.only_flagged else brain
    amap = residual_map(x, restoration, region, cfg.smooth_sigma)
    bmap = residual_map(x, reconstruction, brain, cfg.smooth_sigma)
    return AnomalyResult(
        nll=nll,
        nll_pixels=pixel_map(nll, size),
        flagged=flagged.cpu(),
        top_nll=tnll,
        top_nll_pixels=pixel_map(tnll, size) if tnll.numel() else torch.zeros(len(x), 1, size, size),
        top_flagged=top_flagged,
        reconstruction=reconstruction,
        restoration=restoration,
        brain=brain,
        anomaly_map=amap,
        baseline_map=bmap,
        score=image_score(amap, brain, cfg.top_fraction),
        baseline_score=image_score(bmap, brain, cfg.top_fraction),
    )


def detect(
    vqvae: VQVAE,
    prior: Prior,
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
    if api.is_conditional(prior) and positions is None:
        raise ConfigError("this prior is conditioned on slice position: positions are required")
    gen = torch.Generator().manual_seed(cfg.seed)
    parts = []
    for s in tqdm(range(0, len(images), cfg.batch_size), desc="anomaly", disable=not progress, leave=False):
        sl = slice(s, s + cfg.batch_size)
        cond = positions[sl] if positions is not None else None
        parts.append(detect_batch(vqvae, prior, images[sl], cond, threshold, cfg, gen))
    return AnomalyResult.concat(parts)


@torch.no_grad()
def calibrate(
    vqvae: VQVAE,
    prior: Prior,
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
        cond = api.conditions(prior, positions[s : s + batch_size] if positions is not None else None, x)
        top, codes = api.encode(vqvae, x)
        nll.append(api.code_nll(prior, codes, cond, top).cpu())
        t = api.top_nll(prior, top, cond)
        if t is not None:
            tnll.append(t.cpu())
    top_thr = threshold_from(torch.cat(tnll), top_quantile) if tnll and top_quantile is not None else None
    return Thresholds(threshold_from(torch.cat(nll), quantile), top_thr)
