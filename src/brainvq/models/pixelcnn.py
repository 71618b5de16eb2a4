"""Gated PixelCNN prior over VQ-VAE code grids (van den Oord et al. 2016).

A vertical stack (everything above, via ``(k//2+1) x k`` convolutions) and a horizontal
stack (the current row to the left, via ``1 x (k//2+1)`` convolutions) with no blind spot:
the vertical features reach the horizontal stack shifted down by one row. The first layer
is a type-A layer (the horizontal stack excludes the current code), all later layers are
type B. Units are gated, ``tanh(a) * sigmoid(b)``, with residual connections in the
horizontal stack.

Conditioning follows the conditional gated PixelCNN: a vector computed from the
normalised axial slice position is projected into every gate of both stacks. A learned
location map (one vector per grid cell) and fixed Fourier features of the cell's row and
column are mixed with it, so the gates also get location-dependent conditioning, and the
same map adds a per-cell bias to the output layer. This is what lets the prior learn where
the brain is (its global shape), not only local texture: a purely local model, once it has
drawn brain texture, tends to continue it to the image edges. Positions in the grid are
known in advance, so this never leaks future codes. A prior may also be conditioned on the
slice's intensity scale (:mod:`brainvq.models.conditioning`), embedded like the position and
added to its embedding.

The layers expose a row-level step (:meth:`GatedLayer.vertical_row`) that the cached sampler
uses, with the horizontal convolutions as matrices, to generate without recomputing the grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainvq.errors import ConfigError
from brainvq.models.conditioning import ScaleDistribution


@dataclass
class PixelCNNConfig:
    """Architecture of the prior (saved with its weights)."""

    num_codes: int = 256  # K
    grid_size: int = 64  # H == W of the code grid (the VQ-VAE's latent grid)
    hidden: int = 32
    n_layers: int = 8
    kernel_size: int = 5  # odd
    conditional: bool = True
    cond_dim: int = 32
    location_dim: int = 16
    coord_freqs: int = 4  # fixed sin/cos features of row and column at this many frequencies
    # conditioning on a coarser, already known code grid (the top level of a two-level VQ-VAE)
    top_codes: int = 0  # its K; 0 = no such conditioning
    top_grid: int = 0  # its side; must divide grid_size
    top_dim: int = 32
    # conditioning on the slice's intensity scale (cond rows (position, scale)); needs conditional.
    # scale_distribution (ScaleDistribution.to_dict()) is fitted on the training slices by train-prior.
    scale_conditional: bool = False
    scale_distribution: dict | None = None

    def __post_init__(self) -> None:
        if self.scale_conditional and not self.conditional:
            raise ConfigError("scale_conditional needs conditional=True (the scale is added to the position embedding)")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd and >= 3, got {self.kernel_size}")
        for name in ("num_codes", "grid_size", "hidden", "n_layers", "cond_dim", "location_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.top_codes:
            if self.top_grid < 1 or self.grid_size % self.top_grid:
                raise ConfigError(f"top_grid must divide grid_size {self.grid_size}, got {self.top_grid}")
            if self.top_dim < 1:
                raise ConfigError(f"top_dim must be >= 1, got {self.top_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def _coordinate_features(grid: int, freqs: int) -> Tensor:
    """(1, 4*freqs, grid, grid): sin and cos of row and column coordinates at octave frequencies."""
    t = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    f = 2.0 ** torch.arange(freqs, dtype=torch.float32) * math.pi
    ang = t[None, :] * f[:, None]  # (freqs, grid)
    rows = torch.cat([ang.sin(), ang.cos()])[:, :, None].expand(-1, grid, grid)
    cols = torch.cat([ang.sin(), ang.cos()])[:, None, :].expand(-1, grid, grid)
    return torch.cat([rows, cols])[None]


def _fourier(values: Tensor) -> Tensor:
    """(B,) values in [0, 1] -> (B, 16) sin and cos at 8 octave frequencies."""
    freqs = 2 ** torch.arange(8, device=values.device, dtype=torch.float32) * math.pi
    return torch.cat([torch.sin(values[:, None] * freqs), torch.cos(values[:, None] * freqs)], dim=1)


def _check_values() -> bool:
    """Whether to check input values (code ranges, finite conditions): always, except inside a
    compiled training loss (:mod:`brainvq.train.compiled`), where reading a value would break the
    graph; the codes there come from brainvq's own encoder."""
    return not torch.compiler.is_compiling()


def _gate(x: Tensor) -> Tensor:
    """Gated unit over the channel dimension (dim 1): (B,2C,...) -> (B,C,...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class HorizontalMatrices(NamedTuple):
    """A gated layer's horizontal convolutions as matrices over a channels-last window of columns
    (:meth:`GatedLayer.horizontal_matrices`)."""

    w_in: Tensor  # (2C, kw*C): ``h_conv`` on the window flattened (columns, then channels)
    b_in: Tensor  # (2C,)
    w_out: Tensor  # (C, C): ``h_out``
    b_out: Tensor  # (C,)


class GatedLayer(nn.Module):
    """One gated layer with its vertical and horizontal convolutions."""

    def __init__(self, hidden: int, k: int, cond_ch: int, first: bool) -> None:
        super().__init__()
        self.k, self.first = k, first
        self.v_conv = nn.Conv2d(hidden, 2 * hidden, (k // 2 + 1, k))
        self.h_conv = nn.Conv2d(hidden, 2 * hidden, (1, k // 2 + 1))
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.h_out = nn.Conv2d(hidden, hidden, 1)
        self.v_cond = nn.Conv2d(cond_ch, 2 * hidden, 1)
        self.h_cond = nn.Conv2d(cond_ch, 2 * hidden, 1)

    # --- whole grid --------------------------------------------------------------------
    def forward(self, v: Tensor, h: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """v, h: (B,C,H,W) stacks; s: (B,cond_ch,H,W) conditioning map."""
        p = self.k // 2
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))  # row i sees rows <= i
        v_new = _gate(v_pre + self.v_cond(s))
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # shift down: row i gets rows < i
        h_in = F.pad(h, (p + 1, 0))[..., :-1] if self.first else F.pad(h, (p, 0))  # type A / type B
        h_pre = self.h_conv(h_in) + self.v_to_h(v_down)
        out = self.h_out(_gate(h_pre + self.h_cond(s)))
        return v_new, out if self.first else h + out

    # --- incremental steps used by the cached sampler -------------------------------------
    def vertical_row(self, v_rows: Tensor, s_row: Tensor) -> tuple[Tensor, Tensor]:
        """Vertical output of the last row of ``v_rows`` (B,C,k//2+1,W, zero-padded on top).

        Returns (gated row (B,C,1,W), pre-activation row (B,2C,1,W) for the row below).
        """
        p = self.k // 2
        v_pre = self.v_conv(F.pad(v_rows, (p, p, 0, 0)))
        return _gate(v_pre + self.v_cond(s_row)), v_pre

    def horizontal_row_bias(self, v_pre_above: Tensor, s_row: Tensor) -> Tensor:
        """What the horizontal stack adds at each position of a row that does not depend on the
        row's own codes: the vertical stack's view of the rows above (``v_pre_above``, the
        pre-activation of the row above, (B,2C,1,W)) and the conditioning (B,cond,1,W) -> (B,W,2C)."""
        return (self.v_to_h(v_pre_above) + self.h_cond(s_row))[:, :, 0].transpose(1, 2)

    def horizontal_matrices(self) -> HorizontalMatrices:
        """The horizontal convolutions as matrices (a linear map on a few hundred numbers costs a
        fraction of a convolution call on CPU)."""
        w = self.h_conv.weight  # (2C, C, 1, kw)
        w_in = w[:, :, 0].permute(0, 2, 1).reshape(w.shape[0], -1)  # (2C, kw*C), window flattened (kw, C)
        return HorizontalMatrices(w_in, self.h_conv.bias, self.h_out.weight[:, :, 0, 0], self.h_out.bias)

    def horizontal_position(self, window: Tensor, bias: Tensor, h: Tensor | None, m: HorizontalMatrices) -> Tensor:
        """The horizontal stack's output at one position of each grid, as :meth:`forward` computes it:
        ``window`` (B, kw*C) the layer's input columns left of the position (type A) or ending at it
        (type B), channels last and flattened; ``bias`` (B,2C) its :meth:`horizontal_row_bias`;
        ``h`` (B,C) the layer's input at the position (the residual; ignored by the type-A layer)."""
        out = F.linear(_gate(F.linear(window, m.w_in, m.b_in) + bias), m.w_out, m.b_out)
        return out if self.first else h + out


class OutputHead(nn.Sequential):
    """The prior's output layer, ReLU, 1x1, ReLU, 1x1: features (B,C,H,W) -> code logits (B,K,H,W).
    A ``Sequential`` so its state-dict keys are those of every saved prior (``head.1.*``, ``head.3.*``)."""

    def __init__(self, hidden: int, num_codes: int) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(hidden, 2 * hidden, 1), nn.ReLU(), nn.Conv2d(2 * hidden, num_codes, 1))

    @property
    def hidden_conv(self) -> nn.Conv2d:
        return self[1]

    @property
    def out_conv(self) -> nn.Conv2d:
        return self[3]

    def rows(self, x: Tensor) -> Tensor:
        """The same layer on (N,C) feature rows: logits (N,K)."""
        first, last = self.hidden_conv, self.out_conv
        x = F.linear(torch.relu(x), first.weight[:, :, 0, 0], first.bias)
        return F.linear(torch.relu(x), last.weight[:, :, 0, 0], last.bias)


class GatedPixelCNN(nn.Module):
    """Autoregressive categorical model of (B,H,W) code grids, optionally position-conditioned."""

    def __init__(self, config: PixelCNNConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PixelCNNConfig()
        self.embed = nn.Embedding(cfg.num_codes, cfg.hidden)
        self.location = nn.Parameter(torch.randn(1, cfg.location_dim, cfg.grid_size, cfg.grid_size) * 0.1)
        self.register_buffer("coords", _coordinate_features(cfg.grid_size, cfg.coord_freqs), persistent=False)
        cond_in = cfg.location_dim + self.coords.shape[1] + (cfg.cond_dim if cfg.conditional else 0)
        if cfg.top_codes:
            # top codes -> features at the top grid (3x3 context), repeated over the cells each covers
            self.top_embed = nn.Embedding(cfg.top_codes, cfg.top_dim)
            self.top_net = nn.Sequential(
                nn.Conv2d(cfg.top_dim, 2 * cfg.top_dim, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(2 * cfg.top_dim, cfg.top_dim, 3, padding=1),
                nn.Upsample(scale_factor=cfg.grid_size // cfg.top_grid, mode="nearest"),
            )
            cond_in += cfg.top_dim
        if cfg.conditional:
            self.cond_mlp = nn.Sequential(
                nn.Linear(2 * 8, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim)
            )
        self.scale_distribution: ScaleDistribution | None = None
        if cfg.scale_conditional:
            if cfg.scale_distribution is None:
                raise ConfigError(
                    "a prior conditioned on the intensity scale needs scale_distribution "
                    "(ScaleDistribution.fit on the training slices; train-prior does this)"
                )
            self.scale_distribution = ScaleDistribution(**cfg.scale_distribution)
            self.scale_mlp = nn.Sequential(
                nn.Linear(2 * 8, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim)
            )
        self.cond_mix = nn.Sequential(
            nn.Conv2d(cond_in, 2 * cfg.cond_dim, 1),
            nn.SiLU(),
            nn.Conv2d(2 * cfg.cond_dim, cfg.cond_dim, 1),
        )
        self.layers = nn.ModuleList(
            GatedLayer(cfg.hidden, cfg.kernel_size, cfg.cond_dim, first=i == 0) for i in range(cfg.n_layers)
        )
        self.head_cond = nn.Conv2d(cfg.cond_dim, cfg.hidden, 1)
        self.head = OutputHead(cfg.hidden, cfg.num_codes)

    # --- conditioning ---------------------------------------------------------------------
    def check_top(self, top: Tensor | None, batch: int) -> None:
        """Validate the top-level code grids this prior is conditioned on (if it is)."""
        cfg = self.config
        if not cfg.top_codes:
            if top is not None:
                raise ConfigError("this prior is not conditioned on top-level codes: do not pass top")
            return
        if top is None:
            raise ConfigError("this prior is conditioned on top-level codes: pass top (B,h,w) int64")
        if top.dtype != torch.long or top.shape != (batch, cfg.top_grid, cfg.top_grid):
            raise ConfigError(
                f"top must be int64 ({batch},{cfg.top_grid},{cfg.top_grid}), got {top.dtype} {tuple(top.shape)}"
            )
        if _check_values() and top.numel() and (int(top.min()) < 0 or int(top.max()) >= cfg.top_codes):
            raise ConfigError(f"top codes must lie in [0, {cfg.top_codes})")

    def check_inputs(self, codes: Tensor | None, cond: Tensor | None, batch: int) -> Tensor | None:
        """Validate codes/cond; returns cond as (B,1) positions or (B,2) (position, intensity scale)
        rows, float (None when unconditional)."""
        cfg = self.config
        if codes is not None:
            if codes.dtype != torch.long or codes.ndim != 3 or codes.shape[1:] != (cfg.grid_size, cfg.grid_size):
                raise ConfigError(
                    f"codes must be int64 (B,{cfg.grid_size},{cfg.grid_size}), got {codes.dtype} {tuple(codes.shape)}"
                )
            if _check_values() and codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.num_codes):
                raise ConfigError(f"codes must lie in [0, {cfg.num_codes})")
        if not cfg.conditional:
            if cond is not None:
                raise ConfigError("this prior is unconditional: do not pass a slice position")
            return None
        if cond is None:
            raise ConfigError("this prior is conditioned on slice position: pass cond (values in [0, 1])")
        given = torch.as_tensor(cond, dtype=torch.float32, device=self.location.device)
        cond = given.expand(batch) if given.ndim == 0 else given
        cond = cond[:, None] if cond.ndim == 1 else cond
        if cond.ndim != 2 or cond.shape[0] != batch or cond.shape[1] not in (1, 2):
            raise ConfigError(f"cond must have shape ({batch},) or ({batch}, 2), got {tuple(given.shape)}")
        if cfg.scale_conditional and cond.shape[1] != 2:
            raise ConfigError(
                "this prior is also conditioned on the slice's intensity scale: pass cond rows "
                "(position, scale) (brainvq.models.conditioning.slice_conditions)"
            )
        if _check_values() and not torch.isfinite(cond).all():
            raise ConfigError("slice positions and intensity scales must be finite")
        return cond

    def condition_map(self, cond: Tensor | None, batch: int, top: Tensor | None = None) -> Tensor:
        """(B,cond_dim,H,W): location map mixed with the position (and intensity-scale) embedding and
        the top-level codes; ``cond`` as returned by :meth:`check_inputs`."""
        parts = [torch.cat([self.location, self.coords.to(self.location.dtype)], 1).expand(batch, -1, -1, -1)]
        if self.config.top_codes:
            self.check_top(top, batch)
            parts.append(self.top_net(self.top_embed(top).permute(0, 3, 1, 2)))
        elif top is not None:
            self.check_top(top, batch)
        if cond is not None:
            cond = cond[:, None] if cond.ndim == 1 else cond
            embedding = self.cond_mlp(_fourier(cond[:, 0]))
            if self.scale_distribution is not None:
                embedding = embedding + self.scale_mlp(_fourier(self.scale_distribution.normalise(cond[:, 1])))
            parts.append(embedding[:, :, None, None].expand(-1, -1, *parts[0].shape[-2:]))
        return self.cond_mix(torch.cat(parts, dim=1))

    def head_row_bias(self, s_row: Tensor) -> Tensor:
        """What the output layer adds to the features at each position of a conditioning row
        (B,cond,1,W) -> (B,W,hidden) (cached sampling: logits = ``head.rows(h + bias)``)."""
        return self.head_cond(s_row)[:, :, 0].transpose(1, 2)

    # --- whole grid -----------------------------------------------------------------------
    def forward(self, codes: Tensor, cond: Tensor | None = None, top: Tensor | None = None) -> Tensor:
        """Logits (B,K,H,W); position (i,j) depends only on codes before it in raster order
        (and on the slice position and the top-level codes, which are known in advance)."""
        cond = self.check_inputs(codes, cond, codes.shape[0])
        s = self.condition_map(cond, codes.shape[0], top)
        x = self.embed(codes).permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, s)
        return self.logits(h, s)

    def logits(self, h: Tensor, s: Tensor) -> Tensor:
        """Output layer: code logits from the last horizontal features ``h`` and the conditioning map ``s``."""
        return self.head(h + self.head_cond(s))
