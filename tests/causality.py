"""Reusable causality check for autoregressive priors over code grids.

Any prior (the gated PixelCNN today, a hierarchical prior with extra conditioning inputs
later) is checked through its *real* forward pass: ``forward`` is any callable mapping a
(B,H,W) code grid to (B,K,H,W) logits, e.g. ``lambda c: model(c, cond)`` or
``lambda c: model(c, cond, top=top)``; ``embed`` is the module that embeds the codes
(its output is the input whose gradient is measured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def input_influence(
    forward: Callable[[Tensor], Tensor], embed: nn.Module, codes: Tensor, positions: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], Tensor]:
    """For each (i, j): |d logits[0, :, i, j] / d embedded codes| summed over channels, as a
    (B,H,W) map. Runs ``forward`` once, capturing ``embed``'s output with a forward hook."""
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        captured.append(output)

    handle = embed.register_forward_hook(hook)
    try:
        logits = forward(codes)
    finally:
        handle.remove()
    assert len(captured) == 1, f"forward embedded the codes {len(captured)} times, expected once"
    emb = captured[0]
    assert emb.requires_grad, "embedding output does not require grad (is the model frozen?)"
    b, h, w = codes.shape
    assert logits.shape[0] == b and logits.shape[-2:] == (h, w), tuple(logits.shape)
    maps = {}
    for i, j in positions:
        (grad,) = torch.autograd.grad(logits[0, :, i, j].sum(), emb, retain_graph=True)
        # the embedding is (B,H,W,C) for nn.Embedding; accept (B,C,H,W) too
        grad = grad.abs()
        maps[(i, j)] = grad.sum(-1) if grad.shape[1:3] == (h, w) else grad.sum(1)
    return maps


def random_positions(grid: int, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """The four corners plus ``n`` random positions of a ``grid`` x ``grid`` code grid."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, grid, (n, 2), generator=g).tolist()
    corners = [(0, 0), (0, grid - 1), (grid - 1, 0), (grid - 1, grid - 1)]
    return corners + [(int(i), int(j)) for i, j in picks]


def assert_causal(
    forward: Callable[[Tensor], Tensor],
    embed: nn.Module,
    codes: Tensor,
    positions: Iterable[tuple[int, int]],
) -> None:
    """The logits at (i, j) get exactly zero gradient from the code at (i, j) and from every
    later code in raster order, and from every other sample of the batch; positions after
    (0, 0) do depend on some earlier code (so a model that ignores its input fails too)."""
    b, h, w = codes.shape
    for (i, j), infl in input_influence(forward, embed, codes, positions).items():
        later = torch.arange(h * w).reshape(h, w) >= i * w + j  # itself and everything after it
        leaks = (infl[0] != 0) & later
        assert not leaks.any(), f"logits at {(i, j)} depend on codes at {leaks.nonzero().tolist()}"
        if b > 1:
            assert (infl[1:] == 0).all(), f"logits of sample 0 at {(i, j)} depend on other samples"
        if (i, j) != (0, 0):
            assert infl[0][~later].sum() > 0, f"logits at {(i, j)} ignore all earlier codes"
