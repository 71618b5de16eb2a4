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

from torch import Tensor, nn

from brainvq.errors import ConfigError
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

# Default architectures of the two levels (one source: HierarchicalPriorConfig.for_grids and
# brainvq.train.prior.PriorTrainConfig both start from these). The top PixelCNN decides the
# anatomy and sees the whole top grid; the bottom one only draws local detail given it.
TOP_LEVEL = {"hidden": 64, "n_layers": 8, "kernel_size": 5}
BOTTOM_LEVEL = {"hidden": 32, "n_layers": 4, "kernel_size": 3}


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
        """Default architectures (:data:`TOP_LEVEL`, :data:`BOTTOM_LEVEL`) for the given code grids;
        ``top``/``bottom`` override fields.

        The top PixelCNN gets enough layers for its vertical stack to see every row above
        (receptive field >= the grid); the bottom one is small (4 layers, 3x3 kernels).
        """
        top = dict(top or {})
        k = top.get("kernel_size", TOP_LEVEL["kernel_size"])
        top.setdefault("n_layers", max(TOP_LEVEL["n_layers"], math.ceil((top_grid - 1) / (k // 2))))
        levels = {
            "top": PixelCNNConfig(conditional=conditional, **{**TOP_LEVEL, **top}),
            "bottom": PixelCNNConfig(conditional=conditional, **{**BOTTOM_LEVEL, **(bottom or {})}),
        }
        return prior_config_for_grids({"top": (top_codes, top_grid), "bottom": (num_codes, grid_size)}, levels)


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


Prior = GatedPixelCNN | HierarchicalPrior


def prior_from_config(config: dict) -> Prior:
    """A prior from its saved config dict: two levels when it has ``top`` and ``bottom`` entries."""
    if "top" in config and "bottom" in config:
        return HierarchicalPrior(HierarchicalPriorConfig(**config))
    return GatedPixelCNN(PixelCNNConfig(**config))


def prior_config_for_grids(
    grids: dict[str, tuple[int, int]], levels: dict[str, PixelCNNConfig]
) -> PixelCNNConfig | HierarchicalPriorConfig:
    """The config of a prior for code grids ``grids`` (level -> (code count, grid side), as
    :meth:`~brainvq.models.vqvae.VQVAEConfig.code_grids` gives them): each level's architecture
    from ``levels`` with its code count and grid side set. One level ("bottom") gives a
    single PixelCNN; with a "top" level the bottom one is conditioned on the top grid."""
    k, g = grids["bottom"]
    if "top" not in grids:
        return dataclasses.replace(levels["bottom"], num_codes=k, grid_size=g)
    top_k, top_g = grids["top"]
    return HierarchicalPriorConfig(
        top=dataclasses.replace(levels["top"], num_codes=top_k, grid_size=top_g, top_codes=0, top_grid=0),
        bottom=dataclasses.replace(levels["bottom"], num_codes=k, grid_size=g, top_codes=top_k, top_grid=top_g),
    )
