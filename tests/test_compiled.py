"""The prior's training loss through torch.compile: same values and gradients as eager, an eager
fallback when compiling fails, and a switch to leave it off."""

from __future__ import annotations

import copy

import pytest
import torch

from brainvq.models.levels import Codes, prior_bits
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.train import compiled
from brainvq.train.compiled import CompiledLoss


def _tiny() -> tuple[GatedPixelCNN, tuple[Codes, torch.Tensor]]:
    torch.manual_seed(0)
    prior = GatedPixelCNN(PixelCNNConfig(num_codes=8, grid_size=4, hidden=8, n_layers=2, cond_dim=8, location_dim=4))
    codes = torch.randint(0, 8, (3, 4, 4))
    return prior, (Codes(None, codes), torch.rand(3))


def _grads(prior: GatedPixelCNN, loss: torch.Tensor) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, list(prior.parameters()), allow_unused=True))


def test_compiled_loss_matches_eager_values_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINVQ_COMPILE", "1")
    prior, batch = _tiny()
    twin = copy.deepcopy(prior)
    loss = CompiledLoss(prior_bits, prior)
    got = loss(prior, *batch)
    if loss.state == compiled.EAGER:  # e.g. no C++ compiler on this machine: the fallback test covers it
        pytest.skip(f"torch.compile cannot compile here: {loss.error}")
    assert loss.state == compiled.COMPILED and loss.record() == {"compile": "compiled"}
    want = prior_bits(twin, *batch)
    assert got["loss"].item() == pytest.approx(want["loss"].item(), rel=1e-5)
    for g, w in zip(_grads(prior, got["loss"]), _grads(twin, want["loss"]), strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in prior.parameters())  # the compile probe left .grad alone


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("BRAINVQ_COMPILE", "1")

    def broken(fn, **kw):
        def run(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    prior, batch = _tiny()
    loss = CompiledLoss(prior_bits, prior)
    got = loss(prior, *batch)
    assert loss.state == compiled.EAGER
    assert loss.record() == {"compile": "eager", "compile_error": "RuntimeError: no C++ compiler found"}
    assert "training eagerly" in caplog.text
    assert got["loss"].item() == pytest.approx(prior_bits(prior, *batch)["loss"].item())


@pytest.mark.parametrize("how", ["env", "flag"])
def test_compile_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setenv("BRAINVQ_COMPILE", "0" if how == "env" else "1")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile was called"))
    prior, batch = _tiny()
    loss = CompiledLoss(prior_bits, prior, enabled=how == "env")
    loss(prior, *batch)
    assert loss.state == compiled.EAGER and loss.record() == {"compile": "eager"}
