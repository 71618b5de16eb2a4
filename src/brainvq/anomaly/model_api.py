"""Every call the anomaly package makes into the VQ-VAE and the prior, in one place.

Works with a single-level generator (one code grid, one position-conditioned PixelCNN) and
with a two-level one (VQ-VAE-2: a coarse top grid with its own PixelCNN, and a bottom
PixelCNN that also sees the whole top grid). Code grids travel as ``(top, bottom)`` pairs;
``top`` is None for a single-level model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from brainvq.models.hierarchical import Prior, conditions_for, is_hierarchical, prior_device, scale_distribution
from brainvq.models.pixelcnn import GatedPixelCNN
from brainvq.models.vqvae import VQVAE
from brainvq.sample.generate import load_models
from brainvq.sample.sampler import sample_cached

Models = tuple[VQVAE, Prior]


def load(vqvae_path: str | Path, prior_path: str | Path, allow_mismatch: bool = False) -> Models:
    """Both models, checked to belong together (ConfigError / CheckpointError otherwise; a
    mismatch allowed by ``allow_mismatch`` is kept as ``prior.pair_warning``)."""
    return load_models(vqvae_path, prior_path, allow_mismatch=allow_mismatch)


def device(vqvae: VQVAE) -> torch.device:
    return next(vqvae.parameters()).device


def image_size(vqvae: VQVAE) -> int:
    return vqvae.config.image_size


def two_level(prior: Prior) -> bool:
    return is_hierarchical(prior)


def is_conditional(prior: Prior) -> bool:
    """True when the prior needs a slice position for every image."""
    return bool(prior.config.conditional)


def _bottom(prior: Prior) -> GatedPixelCNN:
    return prior.bottom if is_hierarchical(prior) else prior


def needs_intensity_scale(prior: Prior) -> bool:
    """True when a level of the prior is also conditioned on the slice's intensity scale."""
    return scale_distribution(prior) is not None


def conditions(prior: Prior, positions: Tensor | None, images: Tensor, exclude: Tensor | None = None) -> Tensor | None:
    """What the prior is conditioned on for these images: their positions (None when it is
    unconditional) and, for a prior that also needs it, each image's own intensity scale
    (without the pixels in ``exclude``)."""
    if not is_conditional(prior) or positions is None:
        return None
    return conditions_for(prior, positions, images=images, exclude=exclude)


def _cond(prior: Prior, cond: Tensor | None) -> Tensor | None:
    return cond.to(prior_device(prior)) if is_conditional(prior) and cond is not None else None


@torch.no_grad()
def encode(vqvae: VQVAE, x: Tensor) -> tuple[Tensor | None, Tensor]:
    """Images (B,1,H,W) in [0,1] -> (top grid (B,ht,wt) or None, bottom grid (B,h,w)), int64."""
    return vqvae.encode_levels(x.to(device(vqvae)))


@torch.no_grad()
def decode(vqvae: VQVAE, codes: Tensor, top: Tensor | None = None) -> Tensor:
    """Bottom grids (..., h, w) (and top grids (..., ht, wt)) -> images (..., 1, H, W) in [0,1]
    (extra leading dims kept)."""
    lead = codes.shape[:-2]
    dev = device(vqvae)
    t = top.reshape(-1, *top.shape[-2:]).to(dev) if top is not None else None
    out = vqvae.decode(codes.reshape(-1, *codes.shape[-2:]).to(dev), t)
    return out.reshape(*lead, *out.shape[1:])


def _nll(model: GatedPixelCNN, codes: Tensor, cond: Tensor | None, top: Tensor | None = None) -> Tensor:
    model.eval()
    dev = model.location.device
    logits = model(codes.to(dev), cond, None if top is None else top.to(dev))
    return F.cross_entropy(logits.float(), codes.to(dev), reduction="none")


@torch.no_grad()
def code_nll(prior: Prior, codes: Tensor, cond: Tensor | None, top: Tensor | None = None) -> Tensor:
    """Negative log-likelihood in nats of every bottom code given the codes before it in raster
    order, the slice position and (two levels) the whole top grid: (B,h,w)."""
    return _nll(_bottom(prior), codes, _cond(prior, cond), top if is_hierarchical(prior) else None)


@torch.no_grad()
def top_nll(prior: Prior, top: Tensor | None, cond: Tensor | None) -> Tensor | None:
    """NLL in nats of every top code given the top codes before it (and the position): (B,ht,wt);
    None for a single-level prior."""
    if not is_hierarchical(prior) or top is None:
        return None
    return _nll(prior.top, top, _cond(prior, cond))


def top_to_bottom(mask: Tensor, grid: int) -> Tensor:
    """A (B,ht,wt) mask over top codes -> (B,grid,grid) over the bottom codes each top code covers."""
    return F.interpolate(mask[:, None].float(), size=(grid, grid), mode="nearest")[:, 0] > 0


@torch.no_grad()
def resample(
    prior: Prior,
    codes: Tensor,
    flagged: Tensor,
    cond: Tensor | None,
    n: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top: Tensor | None = None,
    top_flagged: Tensor | None = None,
) -> tuple[Tensor | None, Tensor]:
    """``n`` restorations of each grid: flagged codes drawn again, all others kept:
    (top (n,B,ht,wt) or None, bottom (n,B,h,w)).

    Two levels: the flagged top codes are drawn first (``prior.top``), then the bottom codes
    given the restored top grid: the flagged bottom codes and every bottom code under a
    flagged top code (a new top code changes what the bottom codes beneath it mean).
    The prior is autoregressive in raster order, so a redrawn code is conditioned on every
    code before it (kept or already redrawn) but not on the codes after it; the codes after
    it stay as they were. The cached sampler only does per-position work near flagged codes.
    """
    b = codes.shape[0]
    c = _cond(prior, cond)
    c = c.repeat(n, *([1] * (c.ndim - 1))) if c is not None else None
    keep = ~flagged.to(torch.bool).repeat(n, 1, 1)
    top_rep = None
    if is_hierarchical(prior):
        top_rep = top.repeat(n, 1, 1)
        if top_flagged is not None and top_flagged.any():
            tf = top_flagged.to(torch.bool).repeat(n, 1, 1)
            top_rep = sample_cached(prior.top, n * b, c, temperature, generator, prefix=top_rep, prefix_mask=~tf)
            keep = keep & ~top_to_bottom(tf, codes.shape[-1]).to(keep.device)
    rep = codes.repeat(n, 1, 1)
    out = sample_cached(_bottom(prior), n * b, c, temperature, generator, prefix=rep, prefix_mask=keep, top=top_rep)
    out_top = top_rep.reshape(n, b, *top.shape[1:]) if top_rep is not None else None
    return out_top, out.reshape(n, b, *codes.shape[1:])
