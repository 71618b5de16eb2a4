"""``torch.compile`` for a training loss, with an eager fallback.

The compiled loss is built on the first training step, so its compile time falls inside the
stage's time budget (the time caps run on wall time). That first step also runs a backward
pass through the compiled graph (``torch.autograd.grad``, which leaves ``.grad`` untouched),
so a failure to compile either direction (no C++ compiler, an unsupported operator) shows up
there: brainvq then logs one warning and trains eagerly, with the same results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILED, EAGER, PENDING = "compiled", "eager", "pending"


def compile_allowed() -> bool:
    """False when the environment sets ``BRAINVQ_COMPILE=0`` (every loss then trains eagerly)."""
    return os.environ.get("BRAINVQ_COMPILE", "1") != "0"


class CompiledLoss:
    """``fn(*args) -> {"loss": Tensor, ...}`` run through ``torch.compile`` (static shapes: training
    batches have one size, the last partial batch is dropped), falling back to ``fn`` itself
    if compiling fails (or not at all when ``enabled`` is false or :func:`compile_allowed` says
    no). ``state`` says which is in use: "pending" before the first call, then
    "compiled" or "eager"."""

    def __init__(self, fn: Callable[..., dict[str, torch.Tensor]], module: nn.Module, enabled: bool = True) -> None:
        self.fn, self.module = fn, module
        self.state = PENDING if enabled and compile_allowed() else EAGER
        self.error: str | None = None
        self._compiled: Callable[..., dict[str, torch.Tensor]] | None = None

    def __call__(self, *args: Any) -> dict[str, torch.Tensor]:
        if self.state == PENDING:
            self._build(args)
        if self.state == COMPILED:
            return self._compiled(*args)
        return self.fn(*args)

    def _build(self, args: tuple) -> None:
        params = [p for p in self.module.parameters() if p.requires_grad]
        try:
            compiled = torch.compile(self.fn, dynamic=False)
            loss = compiled(*args)["loss"]
            if params and loss.requires_grad:  # compile the backward too, without touching .grad
                torch.autograd.grad(loss, params, allow_unused=True)
        except Exception as exc:  # noqa: BLE001 -- any compiler failure: train eagerly instead
            self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            log.warning("torch.compile failed (%s); training eagerly (same results, slower)", self.error)
            self.state = EAGER
            return
        self._compiled, self.state = compiled, COMPILED

    def record(self) -> dict[str, Any]:
        """What a run summary records: which path trained, and why compiling failed if it did."""
        return {"compile": self.state, **({"compile_error": self.error} if self.error else {})}
