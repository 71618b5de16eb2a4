"""What a prior does with code grids, the same way for one level and for two.

A single-level prior is one gated PixelCNN over the VQ-VAE's code grid; a two-level prior
(:class:`~brainvq.models.hierarchical.HierarchicalPrior`) is a PixelCNN over the coarse top grid
and one over the bottom grid that also sees the whole top grid. Code grids travel as
:class:`Codes` (``top`` is None for one level); per-level results are keyed by level name
("top", "bottom"). These functions are where the two kinds differ, so that their callers
(:class:`~brainvq.models.pair.ModelPair`, training) need not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from brainvq.errors import ConfigError
from brainvq.models.conditioning import ScaleDistribution, intensity_scale, slice_conditions
from brainvq.models.hierarchical import HierarchicalPrior, Prior
from brainvq.models.pixelcnn import GatedPixelCNN
from brainvq.models.sampling import complete, sample_cached, sample_naive

LEVELS = ("all", "top", "bottom")  # what bits are computed (and a training phase optimises) for


@dataclass
class Codes:
    """The code grids of a batch: ``top`` (B,ht,wt) int64, None for a single-level model, and
    ``bottom`` (B,h,w) int64. Extra leading dimensions (e.g. (n,B,h,w) restorations) are allowed.
    Also holds other per-level grids of the same shapes, e.g. boolean masks of flagged codes."""

    top: Tensor | None
    bottom: Tensor

    def __len__(self) -> int:
        return len(self.bottom)

    def map(self, fn: Callable[[Tensor], Tensor]) -> Codes:
        """``fn`` applied to each level's grids."""
        return Codes(None if self.top is None else fn(self.top), fn(self.bottom))

    def to(self, device: str | torch.device) -> Codes:
        return self.map(lambda t: t.to(device))

    def cpu(self) -> Codes:
        return self.map(lambda t: t.cpu())

    def __getitem__(self, index: slice | Tensor) -> Codes:
        return self.map(lambda t: t[index])

    @staticmethod
    def cat(parts: list[Codes]) -> Codes:
        """The batches ``parts`` (all with or all without top grids) as one."""
        top = None if parts[0].top is None else torch.cat([p.top for p in parts])
        return Codes(top, torch.cat([p.bottom for p in parts]))


def prior_levels(prior: Prior) -> dict[str, GatedPixelCNN]:
    """Each level's PixelCNN, top first: ``{"top", "bottom"}`` for two levels, ``{"bottom"}`` for one."""
    if isinstance(prior, HierarchicalPrior):
        return {"top": prior.top, "bottom": prior.bottom}
    return {"bottom": prior}


def _context(codes: Codes, level: str) -> Tensor | None:
    """The top grids a level's PixelCNN is conditioned on: the bottom level of two levels sees them."""
    return codes.top if level == "bottom" else None


def prior_device(prior: Prior) -> torch.device:
    return next(prior.parameters()).device


def check_level(prior: Prior, level: str) -> None:
    """Refuse a level (:data:`LEVELS`) that is unknown or that ``prior`` does not have on its own."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level != "all" and len(prior_levels(prior)) < 2:
        raise ConfigError(f"level={level!r} needs a two-level prior")


def scale_distribution(prior: Prior) -> ScaleDistribution | None:
    """The training slices' intensity scales a prior draws from (None when no level is conditioned on them)."""
    return next((m.scale_distribution for m in prior_levels(prior).values() if m.scale_distribution is not None), None)


def conditions_for(
    prior: Prior,
    positions: Tensor | None,
    images: Tensor | None = None,
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
) -> Tensor | None:
    """What ``prior`` is conditioned on for these slices: None (unconditional), the positions
    (B,), or (position, intensity scale) rows (B,2) when a level also needs the scale, measured
    on ``images`` (B,1,H,W) when given (scoring, completion) and otherwise drawn from the
    training scales at each position with ``generator`` (sampling new slices); pixels in the
    boolean mask ``exclude`` do not count towards a measured scale."""
    if not prior.config.conditional:
        return None
    if positions is None:
        raise ConfigError("this prior is conditioned on slice position: give positions")
    positions = torch.as_tensor(positions, dtype=torch.float32).cpu()
    if positions.ndim == 0 or positions.shape[-1:] == (1,):
        positions = positions.reshape(-1)
    if positions.ndim != 1:
        raise ConfigError(f"positions must have shape (B,), got {tuple(positions.shape)}")
    dist = scale_distribution(prior)
    if dist is None:
        return positions
    if images is not None:
        if len(images) != len(positions):
            raise ConfigError(f"{len(images)} images but {len(positions)} positions")
        skip = None if exclude is None else exclude.cpu()
        return slice_conditions(positions, intensity_scale(images.detach().float().cpu(), skip))
    return slice_conditions(positions, dist.sample(positions, generator))


def _used(prior: Prior, cond: Tensor | None) -> Tensor | None:
    """``cond`` on the prior's device, or None for an unconditional prior."""
    return cond.to(prior_device(prior)) if prior.config.conditional and cond is not None else None


def _mean_cross_entropy(logits: Tensor, codes: Tensor) -> Tensor:
    """Mean cross-entropy (nats) of logits (B,K,H,W) for codes (B,H,W), over rows of K logits: the
    softmax then runs along contiguous memory (in a compiled training step its backward was the
    slowest fused kernel over the (B,K,H,W) layout: a 4 % faster step, docs/benchmarks.md)."""
    flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).float()
    return F.cross_entropy(flat, codes.reshape(-1))


def prior_bits(prior: Prior, codes: Codes, cond: Tensor | None, level: str = "all") -> dict[str, Tensor]:
    """Mean bits per code of a batch: ``loss`` (what training optimises) and the values it logs.

    One level: ``bits_per_code`` (= ``loss``) and ``bits_per_image``. Two levels: also each level's
    mean bits per code (``top_bits_per_code``, ``bottom_bits_per_code``); ``loss`` is their sum and
    ``bits_per_code`` the total bits per image over the number of bottom codes (so it compares
    with a single-level prior on the same bottom grid). ``level="top"`` or ``"bottom"`` computes
    (and optimises) that level alone. ``cond``: positions (B,) or (position, scale) rows (B,2)."""
    check_level(prior, level)
    levels = prior_levels(prior)
    cond = cond if prior.config.conditional else None
    bits = {
        name: _mean_cross_entropy(model(getattr(codes, name), cond, _context(codes, name)), getattr(codes, name))
        / math.log(2)
        for name, model in levels.items()
        if level in ("all", name)
    }
    if len(levels) == 1:
        b = bits["bottom"]
        return {"loss": b, "bits_per_code": b, "bits_per_image": b * codes.bottom[0].numel()}
    out = {f"{name}_bits_per_code": b for name, b in bits.items()}
    if level != "all":
        return {"loss": out[f"{level}_bits_per_code"], **out}
    image = bits["top"] * codes.top[0].numel() + bits["bottom"] * codes.bottom[0].numel()
    per_code = image / codes.bottom[0].numel()
    return {"loss": bits["top"] + bits["bottom"], "bits_per_code": per_code, "bits_per_image": image, **out}


@torch.no_grad()
def prior_nll(prior: Prior, codes: Codes, cond: Tensor | None) -> dict[str, Tensor]:
    """Negative log-likelihood in nats of every code given the codes before it on its level
    (raster order), the conditions and, for the bottom level of two, the whole top grid:
    ``{"top": (B,ht,wt), "bottom": (B,h,w)}`` (no "top" for one level), on the prior's device."""
    cond = _used(prior, cond)
    out = {}
    for name, model in prior_levels(prior).items():
        model.eval()
        dev = model.location.device
        grid, top = getattr(codes, name).to(dev), _context(codes, name)
        logits = model(grid, cond, None if top is None else top.to(dev))
        out[name] = F.cross_entropy(logits.float(), grid, reduction="none")
    return out


@torch.no_grad()
def sample_codes(
    prior: Prior,
    n: int,
    cond: Tensor | float | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    top_temperature: float | None = None,
    naive: bool = False,
) -> Codes:
    """``n`` code grids drawn by the prior (cached sampler; ``naive``: the reference sampler, same
    result). Two levels: the top grid first (at ``top_temperature``, default ``temperature``),
    then the bottom grid given it."""
    sampler = sample_naive if naive else sample_cached
    levels = prior_levels(prior)
    top = None
    if "top" in levels:
        t_top = temperature if top_temperature is None else top_temperature
        top = sampler(levels["top"], n, cond, t_top, generator, progress=progress)
    return Codes(top, sampler(levels["bottom"], n, cond, temperature, generator, progress=progress, top=top))


@torch.no_grad()
def complete_codes(
    prior: Prior,
    codes: Codes,
    cond: Tensor | None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    keep_rows: int | None = None,
    top_temperature: float | None = None,
) -> Codes:
    """The first ``keep_rows`` rows (default: the upper half) of the coarsest grid kept and the
    rest drawn again. Two levels: the top grid is completed (at ``top_temperature``, default
    ``temperature``), then the whole bottom grid is drawn given it (bottom codes under new top
    codes would mean something else)."""
    levels = prior_levels(prior)
    first = next(iter(levels))
    t_first = temperature if first == "bottom" or top_temperature is None else top_temperature
    done = complete(levels[first], getattr(codes, first), cond, keep_rows, t_first, generator)
    if first == "bottom":
        return Codes(None, done)
    return Codes(done, sample_cached(levels["bottom"], len(codes), cond, temperature, generator, top=done))


def top_to_bottom(mask: Tensor, grid: int) -> Tensor:
    """A (B,ht,wt) mask over top codes -> (B,grid,grid) over the bottom codes each top code covers."""
    return F.interpolate(mask[:, None].float(), size=(grid, grid), mode="nearest")[:, 0] > 0


def covered(flagged: Codes) -> Tensor:
    """The bottom codes a per-level mask covers: flagged ones and all under a flagged top code (B,h,w)."""
    if flagged.top is None or not flagged.top.numel():
        return flagged.bottom
    return flagged.bottom | top_to_bottom(flagged.top, flagged.bottom.shape[-1]).to(flagged.bottom.device)


@torch.no_grad()
def resample_codes(
    prior: Prior,
    codes: Codes,
    flagged: Codes,
    cond: Tensor | None,
    n: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Codes:
    """``n`` restorations of each grid, flagged codes (boolean ``flagged``) drawn again and all
    others kept: grids (n,B,...).

    Two levels: the flagged top codes are drawn first, then the bottom codes given the restored
    top grid: the flagged bottom codes and every bottom code under a flagged top code (a new top
    code changes what the bottom codes beneath it mean). The prior is autoregressive in raster
    order, so a redrawn code is conditioned on every code before it (kept or already redrawn)
    but not on the codes after it; the codes after it stay as they were. The cached sampler only
    does per-position work near flagged codes."""
    b = len(codes)
    c = _used(prior, cond)
    c = c.repeat(n, *([1] * (c.ndim - 1))) if c is not None else None
    keep = ~flagged.bottom.to(torch.bool).repeat(n, 1, 1)
    levels = prior_levels(prior)
    top = None
    if "top" in levels:
        top = codes.top.repeat(n, 1, 1)
        if flagged.top is not None and flagged.top.any():
            tf = flagged.top.to(torch.bool).repeat(n, 1, 1)
            top = sample_cached(levels["top"], n * b, c, temperature, generator, prefix=top, prefix_mask=~tf)
            keep = keep & ~top_to_bottom(tf, codes.bottom.shape[-1]).to(keep.device)
    rep = codes.bottom.repeat(n, 1, 1)
    out = sample_cached(levels["bottom"], n * b, c, temperature, generator, prefix=rep, prefix_mask=keep, top=top)
    return Codes(None if top is None else top.reshape(n, b, *codes.top.shape[1:]), out.reshape(n, *codes.bottom.shape))
