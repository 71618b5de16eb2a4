"""Resume really restores the state saved at the kill and continues like an uninterrupted run.

A run is "killed" in-process by an exception raised at the start of its second epoch, right
after ``last.ckpt`` of the first epoch was written (what a SIGKILL leaves behind; the
subprocess SIGKILL test in test_robustness.py covers the file-level side). The resumed run
must (a) start from exactly the weights, optimiser state, LR-scheduler state and EMA codebook
in that checkpoint and (b) end bit-identical to a run of the same seed that was never killed.
Both hold exactly (no tolerance) on CPU with one intra-op thread, which the runs here use.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from brainvq.data.sources import DataConfig
from brainvq.models.pixelcnn import PixelCNNConfig
from brainvq.train.common import TrainerConfig
from brainvq.train.prior import PriorModule, PriorTrainConfig, train_prior
from brainvq.train.vqvae import VQVAEModule, train_vqvae
from tests.test_train_vqvae import tiny_cfg

EPOCHS = 3


class _Killed(Exception):
    """Stands in for SIGKILL inside the test process."""


def _kill_at_second_epoch(monkeypatch: pytest.MonkeyPatch, module_cls: type) -> None:
    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 1:
            raise _Killed
        original(self)

    original = module_cls.on_train_epoch_start
    monkeypatch.setattr(module_cls, "on_train_epoch_start", on_train_epoch_start)


def _record_state_at_start(monkeypatch: pytest.MonkeyPatch, module_cls: type) -> dict[str, Any]:
    """Capture the module/optimiser/scheduler state when training (re)starts, after any restore."""
    seen: dict[str, Any] = {}

    def on_train_start(self) -> None:
        seen["state_dict"] = {k: v.clone() for k, v in self.state_dict().items()}
        seen["optimizer"] = _clone(self.trainer.optimizers[0].state_dict())
        seen["scheduler"] = _clone(self.trainer.lr_scheduler_configs[0].scheduler.state_dict())
        seen["global_step"] = self.trainer.global_step
        original(self)

    original = module_cls.on_train_start
    monkeypatch.setattr(module_cls, "on_train_start", on_train_start)
    return seen


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Exact (bitwise) equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: max |diff| {(a.double() - b.double()).abs().max():.3g}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif callable(a) or callable(b):  # e.g. LambdaLR's lr_lambdas entries are stateless here
        pass
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_resume(monkeypatch: pytest.MonkeyPatch, module_cls: type, train: Any, cfg_for: Any, tmp_path: Path) -> None:
    # 1. the uninterrupted reference run
    train(cfg_for(tmp_path / "straight"))
    straight = _load(tmp_path / "straight" / "checkpoints" / "last.ckpt")

    # 2. the same run, killed at the start of its second epoch
    killed_dir = tmp_path / "killed"
    with monkeypatch.context() as m:
        _kill_at_second_epoch(m, module_cls)
        with pytest.raises(_Killed):
            train(cfg_for(killed_dir))
    at_kill = _load(killed_dir / "checkpoints" / "last.ckpt")
    assert at_kill["epoch"] == 0 and at_kill["global_step"] > 0
    shutil.copy(killed_dir / "checkpoints" / "last.ckpt", tmp_path / "at_kill.ckpt")

    # 3. resume: the restored state is the checkpoint's, bit for bit
    with monkeypatch.context() as m:
        seen = _record_state_at_start(m, module_cls)
        summary = train(cfg_for(killed_dir), resume=True)
    assert summary["epochs_run"] == EPOCHS
    assert seen["global_step"] == at_kill["global_step"]
    assert_same(seen["state_dict"], at_kill["state_dict"], "weights")
    assert_same(seen["optimizer"], at_kill["optimizer_states"][0], "optimizer")
    assert_same(seen["scheduler"], at_kill["lr_schedulers"][0], "lr_scheduler")

    # 4. ... and the continued run ends exactly where the uninterrupted one did
    resumed = _load(killed_dir / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == straight["global_step"]
    assert_same(resumed["state_dict"], straight["state_dict"], "final weights")
    assert_same(resumed["optimizer_states"], straight["optimizer_states"], "final optimizer")


def test_vqvae_resume_restores_checkpoint_and_matches_uninterrupted_run(
    tiny_oasis: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def cfg_for(out: Path):
        cfg = tiny_cfg(tiny_oasis, out, epochs=EPOCHS)
        cfg.trainer.threads = 1
        return cfg

    _check_resume(monkeypatch, VQVAEModule, train_vqvae, cfg_for, tmp_path)
    # the EMA codebook is part of the restored state (buffers), not only the gradients' weights
    at_kill = _load(tmp_path / "at_kill.ckpt")["state_dict"]
    assert {"model.quantizer.codebook", "model.quantizer.ema_count", "model.quantizer.ema_sum"} <= set(at_kill)


def test_prior_resume_restores_checkpoint_and_matches_uninterrupted_run(
    tiny_oasis: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from brainvq.checkpoint import save_weights
    from brainvq.models.vqvae import VQVAE

    vq_cfg = tiny_cfg(tiny_oasis, tmp_path).model
    torch.manual_seed(0)
    vqvae = save_weights(VQVAE(vq_cfg), tmp_path / "vqvae.safetensors", "vqvae", vq_cfg.__dict__)

    def cfg_for(out: Path) -> PriorTrainConfig:
        return PriorTrainConfig(
            vqvae=str(vqvae),
            data=DataConfig(root=str(tiny_oasis), image_size=64),
            model=PixelCNNConfig(hidden=8, n_layers=2, kernel_size=3, cond_dim=4, location_dim=2),
            trainer=TrainerConfig(epochs=EPOCHS, batch_size=8, lr=3e-3, progress=False, seed=2, threads=1),
            out_dir=str(out),
        )

    _check_resume(monkeypatch, PriorModule, train_prior, cfg_for, tmp_path)
