"""Sampling code grids from one gated PixelCNN: naive and cached (fast) samplers.

Both samplers draw all their randomness up front, one uniform number per position, and
turn it into a code by inverting the CDF of ``softmax(logits / temperature)``. The same
generator seed therefore gives the same samples from either sampler, whatever order the
floating-point work is done in.

The cached sampler follows the idea of "Fast Generation for Convolutional Autoregressive
Models" (Ramachandran et al. 2017): every layer keeps the activations it has already
computed. A finished row is pushed through the vertical stack once (one row per layer),
and each new position runs the horizontal stack on that position only, reading its
left neighbours and the row above from the caches. The whole grid is never recomputed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from brainvq.errors import ConfigError
from brainvq.models.pixelcnn import GatedPixelCNN


def check_temperature(value: float, what: str) -> None:
    """ConfigError unless ``value`` (``what``, named in the message) is > 0 and finite."""
    if not 0 < value < math.inf:
        raise ConfigError(f"{what} must be > 0 and finite, got {value}")


def _prepare(
    model: GatedPixelCNN,
    n: int,
    cond: Tensor | float | None,
    temperature: float,
    generator: torch.Generator | None,
    prefix: Tensor | None,
    prefix_mask: Tensor | None,
    top: Tensor | None = None,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    if n < 1:
        raise ConfigError(f"number of samples must be >= 1, got {n}")
    check_temperature(temperature, "the sampling temperature")
    g = model.config.grid_size
    device = model.location.device
    cond_t = model.check_inputs(None, None if cond is None else torch.as_tensor(cond, dtype=torch.float32), n)
    if cond_t is not None and ((cond_t[:, 0] < 0) | (cond_t[:, 0] > 1)).any():
        raise ConfigError("slice positions must lie in [0, 1]")
    model.check_top(top, n)
    codes = torch.zeros(n, g, g, dtype=torch.long, device=device)
    keep = torch.zeros(n, g, g, dtype=torch.bool, device=device)
    if prefix is not None or prefix_mask is not None:
        if prefix is None or prefix_mask is None:
            raise ConfigError("completion needs both prefix codes and prefix_mask")
        if prefix.shape != (n, g, g) or prefix_mask.shape != (n, g, g):
            raise ConfigError(f"prefix and prefix_mask must have shape ({n},{g},{g})")
        model.check_inputs(prefix.long(), cond_t, n)
        keep = prefix_mask.to(device=device, dtype=torch.bool)
        codes = torch.where(keep, prefix.to(device).long(), codes)
    uniforms = torch.rand(n, g, g, generator=generator, dtype=torch.float64).to(device)
    return cond_t, codes, keep, uniforms


def _draw(logits: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Inverse-CDF draw of one code per row of ``logits`` (N,K) from uniforms ``u`` (N,)."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp_max(logits.shape[-1] - 1)


@torch.no_grad()
def sample_naive(
    model: GatedPixelCNN,
    n: int,
    cond: Tensor | float | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    prefix: Tensor | None = None,
    prefix_mask: Tensor | None = None,
    progress: bool = False,
    top: Tensor | None = None,
) -> Tensor:
    """Reference sampler: a full forward pass over the grid for every position.

    ``top``: the top-level code grids a bottom-level prior is conditioned on."""
    model.eval()
    cond_t, codes, keep, u = _prepare(model, n, cond, temperature, generator, prefix, prefix_mask, top)
    g = model.config.grid_size
    for i in tqdm(range(g), desc="sample rows (naive)", disable=not progress, leave=False):
        for j in range(g):
            if keep[:, i, j].all():
                continue
            logits = model(codes, cond_t, top)[:, :, i, j]
            new = _draw(logits, u[:, i, j], temperature)
            codes[:, i, j] = torch.where(keep[:, i, j], codes[:, i, j], new)
    return codes


@torch.no_grad()
def sample_cached(
    model: GatedPixelCNN,
    n: int,
    cond: Tensor | float | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    prefix: Tensor | None = None,
    prefix_mask: Tensor | None = None,
    progress: bool = False,
    top: Tensor | None = None,
) -> Tensor:
    """Fast sampler with per-layer activation caches; identical results to :func:`sample_naive`."""
    model.eval()
    cond_t, codes, keep, u = _prepare(model, n, cond, temperature, generator, prefix, prefix_mask, top)
    cfg = model.config
    g, c, p, n_layers = cfg.grid_size, cfg.hidden, cfg.kernel_size // 2, cfg.n_layers
    s = model.condition_map(cond_t, n, top)  # (n,cond,g,g)
    dev, dt = s.device, s.dtype
    # v_in[li]: input of layer l's vertical stack, with p zero rows on top (row r at index r+p)
    v_in = [torch.zeros(n, c, g + p, g, device=dev, dtype=dt) for _ in range(n_layers)]
    v_pre = [torch.zeros(n, 2 * c, g, g, device=dev, dtype=dt) for _ in range(n_layers)]
    zeros_pre = torch.zeros(n, 2 * c, 1, g, device=dev, dtype=dt)
    todo = ~keep.all(0)  # (g,g): positions where some grid still has to draw a code
    matrices = [layer.horizontal_matrices() for layer in model.layers]
    for i in tqdm(range(g), desc="sample rows (cached)", disable=not progress, leave=False):
        # horizontal caches of row i: h_in[li] is layer l's input with p (+1 for layer 0) zero columns on the left
        # (channels last, so a window of columns is one contiguous block of each grid's row)
        h_in = [torch.zeros(n, g + p + (1 if li == 0 else 0), c, device=dev, dtype=dt) for li in range(n_layers)]
        above = [v_pre[li][:, :, i - 1 : i] if i > 0 else zeros_pre for li in range(n_layers)]
        cols = todo[i].nonzero()[:, 0].tolist()
        # only the columns that draw a code, and the (n_layers-1)*p columns to their left that feed
        # the horizontal stack, need the per-position pass; fully kept rows only go through the vertical stack
        start = max(0, cols[0] - (n_layers - 1) * p) if cols else g
        stop = cols[-1] + 1 if cols else g
        if start > 0:  # codes left of the first computed column enter the type-A window directly
            h_in[0][:, p + 1 : p + 1 + start] = model.embed(codes[:, i, :start])
        # per row: everything a position's horizontal pass adds that does not depend on this row's codes
        # (the vertical stack's view of the rows above and the conditioning) for all columns at once
        row_bias = [
            layer.horizontal_row_bias(above[li], s[:, :, i : i + 1]) for li, layer in enumerate(model.layers)
        ]  # (n,g,2c) each
        head_bias = model.head_row_bias(s[:, :, i : i + 1])  # (n,g,c)
        for j in range(start, stop):
            if j > 0:  # the code to the left is known now: feed it to the type-A window
                h_in[0][:, p + j] = model.embed(codes[:, i, j - 1])
            h = None
            for li, (layer, mats) in enumerate(zip(model.layers, matrices, strict=True)):
                win = h_in[li][:, j : j + p + 1].reshape(n, -1)  # columns j-p-1..j-1 (layer 0) or j-p..j
                h = layer.horizontal_position(win, row_bias[li][:, j], h, mats)
                if li + 1 < n_layers:
                    h_in[li + 1][:, p + j] = h
            if not keep[:, i, j].all():
                new = _draw(model.head.rows(h + head_bias[:, j]), u[:, i, j], temperature)
                codes[:, i, j] = torch.where(keep[:, i, j], codes[:, i, j], new)
        # row i is complete: push it through the vertical stack, one row per layer
        x = model.embed(codes[:, i]).permute(0, 2, 1)  # (n,c,g)
        for li, layer in enumerate(model.layers):
            v_in[li][:, :, i + p] = x
            v_new, pre = layer.vertical_row(v_in[li][:, :, i : i + p + 1], s[:, :, i : i + 1])
            v_pre[li][:, :, i : i + 1] = pre
            x = v_new[:, :, 0]
    return codes


def complete(
    model: GatedPixelCNN,
    codes: Tensor,
    cond: Tensor | float | None = None,
    keep_rows: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    top: Tensor | None = None,
) -> Tensor:
    """Keep the first ``keep_rows`` rows of each code grid (default: the top half) and sample the rest.

    ``top``: the top-level code grids a bottom-level prior is conditioned on."""
    g = model.config.grid_size
    keep_rows = g // 2 if keep_rows is None else keep_rows
    if not 0 <= keep_rows <= g:
        raise ConfigError(f"keep_rows must be in [0, {g}], got {keep_rows}")
    mask = torch.zeros_like(codes, dtype=torch.bool)
    mask[:, :keep_rows] = True
    return sample_cached(model, len(codes), cond, temperature, generator, codes, mask, progress, top)
