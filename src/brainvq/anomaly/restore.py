"""Restoration: redraw the codes the prior finds unlikely and compare the input with the result."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from brainvq.anomaly import model_api as api
from brainvq.anomaly.scoring import (
    AnomalyConfig,
    brain_mask,
    flag_codes,
    image_score,
    pixel_map,
    residual_map,
    threshold_from,
)
from brainvq.data.errors import ConfigError
from brainvq.models.pixelcnn import GatedPixelCNN
from brainvq.models.vqvae import VQVAE


@dataclass
class AnomalyResult:
    """Everything computed for a batch of N images (all on the CPU)."""

    nll: Tensor  # (N,h,w) per-code NLL, nats
    nll_pixels: Tensor  # (N,1,H,W) per-code NLL upsampled to the image
    flagged: Tensor  # (N,h,w) bool, codes that were redrawn
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


@torch.no_grad()
def detect_batch(
    vqvae: VQVAE,
    prior: GatedPixelCNN,
    x: Tensor,
    cond: Tensor | None,
    threshold: float,
    cfg: AnomalyConfig,
    generator: torch.Generator | None = None,
) -> AnomalyResult:
    """Score, flag, restore and map one batch of images (B,1,H,W) in [0,1]."""
    x = x.float().cpu()
    codes = api.encode(vqvae, x)
    nll = api.code_nll(prior, codes, cond).cpu()
    flagged = flag_codes(nll, threshold, cfg.dilate)
    samples = api.resample(prior, codes, flagged, cond, cfg.n_samples, generator, cfg.temperature)
    restoration = api.decode(vqvae, samples).mean(0).cpu()
    reconstruction = api.decode(vqvae, codes).cpu()
    brain = brain_mask(x, cfg.brain_threshold, cfg.erode)
    region = brain & (pixel_map(flagged, x.shape[-1]) > 0) if cfg.only_flagged else brain
    amap = residual_map(x, restoration, region, cfg.smooth_sigma)
    bmap = residual_map(x, reconstruction, brain, cfg.smooth_sigma)
    return AnomalyResult(
        nll=nll,
        nll_pixels=pixel_map(nll, x.shape[-1]),
        flagged=flagged.cpu(),
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
    prior: GatedPixelCNN,
    images: Tensor,
    positions: Tensor | None,
    threshold: float,
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
    vqvae: VQVAE, prior: GatedPixelCNN, images: Tensor, positions: Tensor | None, quantile: float, batch_size: int = 32
) -> float:
    """Per-code NLL threshold: the ``quantile`` of the NLL of every code of ``images`` (healthy validation slices)."""
    if len(images) == 0:
        raise ConfigError("no validation images to choose the threshold on")
    nll = []
    for s in range(0, len(images), batch_size):
        cond = positions[s : s + batch_size] if positions is not None and api.is_conditional(prior) else None
        nll.append(api.code_nll(prior, api.encode(vqvae, images[s : s + batch_size]), cond).cpu())
    return threshold_from(torch.cat(nll), quantile)
