"""Two-level prior for a two-level VQ-VAE (VQ-VAE-2, Razavi et al. 2019).

A gated PixelCNN over the coarse top grid (e.g. 16x16), conditioned on the slice position, whose
receptive field covers the whole grid: it decides the anatomy of the slice. A second gated
PixelCNN over the fine bottom grid (e.g. 64x64) is conditioned on the position and on the top
codes (:attr:`PixelCNNConfig.top_codes`); it only has to draw local detail consistent with them,
so it can be small. Sampling draws the top grid first, then the bottom grid given it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from brainvq.data.errors import ConfigError
from brainvq.models.conditioning import ScaleDistribution, intensity_scale, slice_conditions
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig


@dataclass
class HierarchicalPriorConfig:
    """Architectures of the two PixelCNNs (saved with the weights)."""

    top: PixelCNNConfig = dataclasses.field(default_factory=PixelCNNConfig)
    bottom: PixelCNNConfig = dataclasses.field(default_factory=PixelCNNConfig)

    def __post_init__(self) -> None:
        if isinstance(self.top, dict):
            self.top = PixelCNNConfig(**self.top)
        if isinstance(self.bottom, dict):
            self.bottom = PixelCNNConfig(**self.bottom)
        t, b = self.top, self.bottom
        if b.top_codes != t.num_codes or b.top_grid != t.grid_size:
            raise ConfigError(
                f"the bottom prior must be conditioned on the top grid (K={t.num_codes}, {t.grid_size}x{t.grid_size}), "
                f"got top_codes={b.top_codes}, top_grid={b.top_grid}"
            )
        if t.top_codes:
            raise ConfigError("the top prior cannot itself be conditioned on top codes")
        if t.conditional != b.conditional:
            raise ConfigError("both levels must agree on slice-position conditioning")

    @property
    def conditional(self) -> bool:
        return self.top.conditional

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_grids(
        cls,
        num_codes: int,
        grid_size: int,
        top_codes: int,
        top_grid: int,
        *,
        conditional: bool = True,
        top: dict | None = None,
        bottom: dict | None = None,
    ) -> HierarchicalPriorConfig:
        """Default architectures for the given code grids; ``top``/``bottom`` override fields.

        The top PixelCNN gets enough layers for its vertical stack to see every row above
        (receptive field >= the grid); the bottom one is small (4 layers, 3x3 kernels).
        """
        top = dict(top or {})
        k = top.get("kernel_size", 5)
        top.setdefault("n_layers", max(8, math.ceil((top_grid - 1) / (k // 2))))
        top.setdefault("hidden", 64)
        bottom = {"hidden": 32, "n_layers": 4, "kernel_size": 3, **(bottom or {})}
        return cls(
            top=PixelCNNConfig(num_codes=top_codes, grid_size=top_grid, conditional=conditional, **top),
            bottom=PixelCNNConfig(
                num_codes=num_codes,
                grid_size=grid_size,
                conditional=conditional,
                top_codes=top_codes,
                top_grid=top_grid,
                **bottom,
            ),
        )


class HierarchicalPrior(nn.Module):
    """``top``: PixelCNN over top grids; ``bottom``: PixelCNN over bottom grids given the top grid."""

    def __init__(self, config: HierarchicalPriorConfig) -> None:
        super().__init__()
        self.config = config
        self.top = GatedPixelCNN(config.top)
        self.bottom = GatedPixelCNN(config.bottom)

    def forward(self, top: Tensor, codes: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(top logits (B,Kt,ht,wt), bottom logits (B,K,h,w)); each code sees only codes before it
        on its own level (raster order), plus, for the bottom level, the whole top grid."""
        return self.top(top, cond), self.bottom(codes, cond, top)

    def nll_bits(self, top: Tensor, codes: Tensor, cond: Tensor | None = None) -> dict[str, Tensor]:
        """Per sample (B,): bits per top code, bits per bottom code, and total bits per image."""
        top_bits = self.top.nll_bits(top, cond)
        bottom_bits = self.bottom.nll_bits(codes, cond, top)
        image = top_bits * top[0].numel() + bottom_bits * codes[0].numel()
        return {"top": top_bits, "bottom": bottom_bits, "image": image}


Prior = GatedPixelCNN | HierarchicalPrior


def prior_from_config(config: dict) -> Prior:
    """A prior from its saved config dict: two levels when it has ``top`` and ``bottom`` entries."""
    if "top" in config and "bottom" in config:
        return HierarchicalPrior(HierarchicalPriorConfig(**config))
    return GatedPixelCNN(PixelCNNConfig(**config))


def is_hierarchical(prior: nn.Module) -> bool:
    return isinstance(prior, HierarchicalPrior)


def prior_device(prior: nn.Module) -> torch.device:
    return next(prior.parameters()).device


def _levels(prior: nn.Module) -> list[GatedPixelCNN]:
    return [prior.top, prior.bottom] if is_hierarchical(prior) else [prior]


def scale_distribution(prior: nn.Module) -> ScaleDistribution | None:
    """The training slices' intensity scales a prior draws from (None when no level is conditioned on them)."""
    return next((m.scale_distribution for m in _levels(prior) if m.scale_distribution is not None), None)


def conditions_for(
    prior: nn.Module,
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
