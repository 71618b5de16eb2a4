"""Paths no other test reached: wall-clock stop, LR schedule, code-cache invalidation,
prior/VQ-VAE mismatch, ``complete()`` arguments, unknown YAML keys, ``demo``, ``report``,
and a bf16-autocast training step."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import Timer

from brainvq.checkpoint import save_weights
from brainvq.cli import main
from brainvq.config import load_yaml_config
from brainvq.data.sources import DataConfig
from brainvq.errors import ConfigError
from brainvq.models.pair import ModelPair
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import complete, sample_cached
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.train import common
from brainvq.train.codes import cached_codes, encode_split
from brainvq.train.common import LRSchedule, TrainerConfig, cosine_lr, schedule_report
from brainvq.train.prior import PriorModule
from brainvq.train.vqvae import VQVAEModule, VQVAETrainConfig, train_vqvae
from tests.test_train_vqvae import tiny_cfg

TINY_VQ = {"image_size": 64, "num_codes": 16, "code_dim": 8, "stem_channels": 8, "hidden_channels": 16}
TINY_PRIOR = {"hidden": 8, "n_layers": 2, "kernel_size": 3, "cond_dim": 4, "location_dim": 2}


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- wall-clock stop and LR schedule --------------------------------------------------------
def test_schedule_report_warns_when_the_time_limit_cut_the_plan(capsys: pytest.CaptureFixture):
    cfg = TrainerConfig(epochs=20, max_minutes=4.0)

    def trainer(step: int) -> SimpleNamespace:  # 46 batches per epoch on this rank
        return SimpleNamespace(global_step=step, num_training_batches=46, is_global_zero=True)

    cut = schedule_report(trainer(69), cfg, "prior")
    assert cut["schedule_completed"] is False and "after 69 of 920 steps (1.5 of 20 epochs)" in cut["warning"]
    assert "WARNING: prior training was cut short" in capsys.readouterr().err
    done = schedule_report(trainer(920), cfg, "prior")
    assert done["schedule_completed"] is True and "warning" not in done and done["epochs_run"] == 20
    two = schedule_report(trainer(920), cfg, "sharpening", steps_per_batch=2)  # two optimisers per batch
    assert two["planned_steps"] == 1840 and two["schedule_completed"] is False and two["epochs_run"] == 10


def test_max_minutes_stops_a_real_run_inside_its_first_epoch(tiny_oasis: Path, tmp_path: Path):
    cfg = tiny_cfg(tiny_oasis, tmp_path / "run", epochs=50)
    cfg.trainer.max_minutes = 1e-5  # less than one step: Lightning's timer stops after the first step
    summary = train_vqvae(cfg)
    assert summary["steps_run"] == 1 < 3 == summary["planned_steps"] // 50  # 3 steps per epoch
    assert summary["schedule_completed"] is False and "cut short" in summary["warning"]
    assert (tmp_path / "run" / "vqvae.safetensors").is_file()
    # the LR schedule was given the Timer's training time (what a resume continues from)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lr_schedulers"][0]["lr_lambdas"][0]["elapsed"] > 0


def test_cosine_lr_warms_up_then_decays_to_five_percent():
    assert cosine_lr(0.0, 0) == pytest.approx(1 / 50)
    assert cosine_lr(0.0, 24) == pytest.approx(25 / 50)
    assert cosine_lr(0.0, 50) == pytest.approx(1.0)
    assert cosine_lr(0.5, 500) == pytest.approx(0.05 + 0.95 * 0.5)
    assert cosine_lr(1.0, 1000) == pytest.approx(0.05)
    assert cosine_lr(3.0, 1000) == pytest.approx(0.05)  # clamped past the end
    values = [cosine_lr(p / 10, 100) for p in range(11)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_lr_schedule_progress_is_the_larger_of_steps_and_wall_time():
    by_steps = LRSchedule(total_steps=1000)
    assert by_steps(0) == pytest.approx(cosine_lr(0.0, 0))
    by_steps.elapsed = 3600.0  # no time budget: time does not count
    assert by_steps(500) == pytest.approx(cosine_lr(0.5, 500))
    timed = LRSchedule(total_steps=1000, max_minutes=10)
    timed.elapsed = 7.5 * 60  # 75 % of the time budget but only 10 % of the steps
    assert timed(100) == pytest.approx(cosine_lr(0.75, 100))
    timed.elapsed = 17.5 * 60
    assert timed(120) == pytest.approx(0.05)  # a run cut short ends with a decayed LR


def test_lr_schedule_counts_training_time_not_the_pause_before_a_resume(monkeypatch: pytest.MonkeyPatch):
    """The schedule's clock is Lightning's Timer, whose training time a checkpoint keeps: a run
    resumed an hour after its kill goes on from 3 of its 10 minutes, not from the floor."""
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)

    def trainer_at(elapsed_state: dict | None) -> tuple[SimpleNamespace, torch.optim.lr_scheduler.LambdaLR, Timer]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(total_steps=10_000, max_minutes=10))
        timer = Timer(duration=timedelta(minutes=10))
        if elapsed_state is not None:
            timer.load_state_dict(elapsed_state)
        timer.on_train_start(None, None)  # type: ignore[arg-type]
        return SimpleNamespace(callbacks=[timer], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)]), sched, timer

    def step(trainer: SimpleNamespace, sched: torch.optim.lr_scheduler.LambdaLR, n: int) -> float:
        for _ in range(n):
            common.TrainingClock().on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
            sched.optimizer.step()
            sched.step()
        return sched.get_last_lr()[0]

    first, sched, timer = trainer_at(None)
    step(first, sched, 100)
    clock.now += 3 * 60  # three minutes of training, then the kill
    step(first, sched, 1)
    saved_sched, saved_timer = sched.state_dict(), timer.state_dict()
    clock.now += 3600  # an hour passes before the resume
    again, sched2, _ = trainer_at(saved_timer)
    sched2.load_state_dict(saved_sched)
    assert step(again, sched2, 1) == pytest.approx(cosine_lr(0.3, 102), rel=1e-6)  # 3 of 10 minutes
    clock.now += 6 * 60  # and the budget still applies after the resume
    assert step(again, sched2, 1) == pytest.approx(cosine_lr(0.9, 103), rel=1e-6)


def test_training_applies_the_schedule_to_the_optimiser():
    module = VQVAEModule(dataclasses.asdict(VQVAEConfig(**TINY_VQ)), lr=1e-2, total_steps=200)
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert cfg["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-2 / 50)
    assert lrs[49] == pytest.approx(1e-2) and lrs.index(max(lrs)) == 49  # warm-up done after 50 steps
    assert lrs[50] < lrs[49]
    assert lrs[119] == pytest.approx(1e-2 * cosine_lr(119 / 200, 119))


# --- prior inputs ---------------------------------------------------------------------------
def _vqvae_file(path: Path, seed: int, **overrides) -> Path:
    torch.manual_seed(seed)
    cfg = VQVAEConfig(**{**TINY_VQ, **overrides})
    model = VQVAE(cfg)
    with torch.no_grad():  # an untrained quantiser: spread the codebook so codes differ per seed
        model.quantizer.codebook.normal_()
    return save_weights(model, path, "vqvae", cfg.to_dict())


def test_code_cache_is_reused_then_rebuilt_when_the_vqvae_changes(
    tiny_oasis: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from brainvq.models.weights import load_vqvae
    from brainvq.train import codes as prior

    data = DataConfig(root=str(tiny_oasis), image_size=64)
    vq = _vqvae_file(tmp_path / "vqvae.safetensors", seed=1)
    first = cached_codes(vq, data, "train", tmp_path / "codes", progress=False)
    assert torch.equal(first.codes, encode_split(load_vqvae(vq), data, "train", progress=False).codes)

    calls = []
    real_encode = prior.encode_split
    monkeypatch.setattr(prior, "encode_split", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
    again = cached_codes(vq, data, "train", tmp_path / "codes", progress=False)
    assert calls == [] and torch.equal(again.codes, first.codes)  # unchanged VQ-VAE: cache hit

    stat = vq.stat()
    _vqvae_file(vq, seed=2)  # retrained in place: same path, same size
    os.utime(vq, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = cached_codes(vq, data, "train", tmp_path / "codes", progress=False)
    assert calls == [1]
    assert torch.equal(rebuilt.codes, real_encode(load_vqvae(vq), data, "train", progress=False).codes)
    assert not torch.equal(rebuilt.codes, first.codes)


def test_prior_for_another_vqvae_is_rejected(tmp_path: Path):
    # single level, K=16, grid 16 (tests/test_pair.py covers two-level pairs)
    vq = _vqvae_file(tmp_path / "vqvae.safetensors", seed=0, top_downsample=0)
    cfg = PixelCNNConfig(num_codes=12, grid_size=16, **TINY_PRIOR)
    prior = save_weights(GatedPixelCNN(cfg), tmp_path / "prior.safetensors", "prior", cfg.to_dict())
    with pytest.raises(ConfigError, match="prior is for K=12, grid 16x16 but the VQ-VAE's level has K=16, grid 16x16"):
        ModelPair.load(vq, prior)
    cfg = PixelCNNConfig(num_codes=16, grid_size=8, **TINY_PRIOR)
    prior = save_weights(GatedPixelCNN(cfg), tmp_path / "prior8.safetensors", "prior", cfg.to_dict())
    with pytest.raises(ConfigError, match="grid 8x8 but the VQ-VAE's level has K=16, grid 16x16"):
        ModelPair.load(vq, prior)
    cfg = PixelCNNConfig(num_codes=16, grid_size=16, **TINY_PRIOR)
    ok = save_weights(GatedPixelCNN(cfg), tmp_path / "ok.safetensors", "prior", cfg.to_dict())
    assert ModelPair.load(vq, ok).prior.config.num_codes == 16


def test_prior_that_learned_another_vqvaes_codes_stops_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Same architecture, other codebooks: the codes mean something else, so the pair stops with
    one line; --allow-mismatched-pair samples anyway and says so in the summary. A decoder
    fine-tuned on the same codes keeps the fingerprint."""
    from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint
    from brainvq.models.weights import load_vqvae

    vq = _vqvae_file(tmp_path / "vqvae.safetensors", seed=0, top_downsample=0)
    other = _vqvae_file(tmp_path / "other.safetensors", seed=1, top_downsample=0)
    cfg = PixelCNNConfig(num_codes=16, grid_size=16, **TINY_PRIOR)
    mark = {VQVAE_FINGERPRINT: codebook_fingerprint(load_vqvae(vq))}
    prior = save_weights(GatedPixelCNN(cfg), tmp_path / "prior.safetensors", "prior", cfg.to_dict(), mark)
    assert ModelPair.load(vq, prior).pair_warning is None
    with pytest.raises(ConfigError, match="learned the codes of another VQ-VAE.*--allow-mismatched-pair"):
        ModelPair.load(other, prior)
    argv = ["sample", "--vqvae", str(other), "--prior", str(prior), "--n", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main([*argv, "--out", str(tmp_path / "s"), "--allow-mismatched-pair"]) == 0
    summary = json.loads((tmp_path / "s" / "sample_summary.json").read_text())
    assert "another VQ-VAE" in summary["warnings"][0]
    sharpened = load_vqvae(vq)
    with torch.no_grad():
        for p in sharpened.decoder.parameters():
            p.add_(0.1)
    sharp = save_weights(sharpened, tmp_path / "sharp.safetensors", "vqvae", sharpened.config.to_dict())
    assert ModelPair.load(sharp, prior).pair_warning is None
    unmarked = save_weights(GatedPixelCNN(cfg), tmp_path / "old.safetensors", "prior", cfg.to_dict())
    assert ModelPair.load(other, unmarked).pair_warning is None  # priors saved before the fingerprint load


def test_complete_checks_its_arguments():
    torch.manual_seed(0)
    model = GatedPixelCNN(PixelCNNConfig(num_codes=12, grid_size=8, **TINY_PRIOR)).eval()
    codes = torch.randint(0, 12, (2, 8, 8))
    cond = torch.tensor([0.2, 0.8])
    for bad in (-1, 9):
        with pytest.raises(ConfigError, match=r"keep_rows must be in \[0, 8\]"):
            complete(model, codes, cond, keep_rows=bad)
    with pytest.raises(ConfigError, match="codes must lie in"):
        complete(model, torch.full((2, 8, 8), 12), cond)
    with pytest.raises(ConfigError, match="prefix and prefix_mask must have shape"):
        complete(model, torch.randint(0, 12, (2, 6, 6)), cond)
    with pytest.raises(ConfigError, match="cond must have shape"):
        complete(model, codes, torch.tensor([0.2, 0.5, 0.8]))
    for bad in (0, float("inf"), float("nan")):  # every sampler refuses these, whichever path calls it
        with pytest.raises(ConfigError, match="temperature must be > 0 and finite"):
            complete(model, codes, cond, temperature=bad)
    with pytest.raises(ConfigError, match="both prefix codes and prefix_mask"):
        sample_cached(model, 2, cond, prefix=codes)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(complete(model, codes, cond, keep_rows=8, generator=g), codes)  # nothing left to sample
    assert complete(model, codes, cond, keep_rows=0, generator=g).shape == (2, 8, 8)


# --- configs --------------------------------------------------------------------------------
def test_unknown_yaml_key_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": {"num_codes": 64, "num_kodes": 32}}))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['num_kodes'\] in model"):
        load_yaml_config(VQVAETrainConfig, path)
    path.write_text(yaml.safe_dump({"trainer": {"epochs": 2}, "optimiser": "sgd"}))
    with pytest.raises(ConfigError, match=r"\['optimiser'\] in VQVAETrainConfig"):
        load_yaml_config(VQVAETrainConfig, path)
    assert main(["train-vqvae", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) ['optimiser']" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # rejected before anything was written


# --- bf16 autocast --------------------------------------------------------------------------
def _bf16_or_skip() -> None:
    try:
        ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        ok = False
    if not ok:
        pytest.skip("this CPU has no native bf16 (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False)")


def test_one_bf16_autocast_training_step():
    _bf16_or_skip()
    torch.manual_seed(0)
    vq = VQVAEModule(dataclasses.asdict(VQVAEConfig(**TINY_VQ)), lr=1e-3, total_steps=10)
    prior = PriorModule(dataclasses.asdict(PixelCNNConfig(num_codes=16, grid_size=16, **TINY_PRIOR)), 1e-3, 10)
    x = torch.rand(2, 1, 64, 64)
    for module in (vq, prior):
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        before = [p.detach().clone() for p in module.parameters()]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if module is vq:
                out = vq.model(x, with_loss=True)
                assert out.reconstruction.dtype == torch.bfloat16  # autocast really ran in bf16
                loss = out.loss
                codes = out.codes
            else:
                logits = prior.model(codes, torch.tensor([0.3, 0.7]))
                assert logits.dtype == torch.bfloat16
                loss = F.cross_entropy(logits.float(), codes)
        loss.backward()
        assert torch.isfinite(loss) and loss.dtype == torch.float32
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in module.parameters())
        opt.step()
        assert all(p.dtype == torch.float32 for p in module.parameters())  # master weights stay fp32
        assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    if isinstance(loss, torch.Tensor):
        assert math.isfinite(float(loss))


# --- demo and report ------------------------------------------------------------------------
def test_demo_with_tiny_settings_then_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``brainvq demo`` end to end with every size shrunk (the commands and files are real),
    then ``brainvq report`` on the run folder it wrote."""
    from brainvq.data import sources, standin
    from brainvq.train import prior, vqvae
    from tests.test_judges_generation import FAST

    @dataclasses.dataclass
    class TinyStandIn(standin.StandInConfig):
        n_train_cases: int = 3
        n_val_cases: int = 2
        n_test_cases: int = 2
        slices_per_case: int = 4
        image_size: int = 64

    @dataclasses.dataclass
    class TinyData(sources.DataConfig):
        image_size: int = 64

    @dataclasses.dataclass
    class TinyVQ(vqvae.VQVAETrainConfig):
        model: VQVAEConfig = dataclasses.field(default_factory=lambda: VQVAEConfig(**TINY_VQ))
        trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(batch_size=4))

    @dataclasses.dataclass
    class TinyPrior(prior.PriorTrainConfig):
        model: PixelCNNConfig = dataclasses.field(default_factory=lambda: PixelCNNConfig(**TINY_PRIOR))
        trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(batch_size=4))

    import brainvq.evaluate

    monkeypatch.setattr(standin, "StandInConfig", TinyStandIn)
    monkeypatch.setattr(sources, "DataConfig", TinyData)
    monkeypatch.setattr(vqvae, "VQVAETrainConfig", TinyVQ)
    monkeypatch.setattr(prior, "PriorTrainConfig", TinyPrior)
    monkeypatch.setattr(
        brainvq.evaluate, "GenerationMetricsConfig", lambda seed=0: dataclasses.replace(FAST, seed=seed)
    )

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--data-dir", str(tmp_path / "standin"), "--samples", "4", "--no-progress"]
    assert main([*argv, "--vqvae-epochs", "1", "--prior-epochs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary)[:3] == ["pretrained_model", "trained_here", "verdict"]  # opens with the shipped model
    shown = summary["pretrained_model"]
    assert shown["model"] == "oasis1" and len(shown["positions"]) == 10
    assert (out / "pretrained" / "sample_grid.png").is_file() and (out / "pretrained" / "completions.png").is_file()
    assert "pretrained_s" in summary["timings"]
    assert "synthetic stand-in, not OASIS" in summary["data"]
    assert summary["prior"]["epochs_run"] == 1
    assert summary["generation"]["generated"]["n"] == 4
    assert summary["reconstruction_test"]["n_images"] == 2 * 4
    assert set(summary["timings"]) >= {"dataset_s", "vqvae_s", "prior_s", "generation_s", "total_s"}
    for name in ("vqvae/vqvae.safetensors", "prior/prior.safetensors", "generation/generation_metrics.json"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "vqvae" / "config.yaml").read_text())["config"]
    assert saved["model"]["num_codes"] == 16 and saved["trainer"]["epochs"] == 1

    (out / "report.html").unlink()
    assert main(["report", str(out), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    ssim = json.loads((out / "vqvae" / "eval_metrics.json").read_text())["ssim_mean"]
    assert f"<td>ssim_mean</td><td>{ssim:.4g}</td>" in page
    assert "Wall time" in page and page.count("data:image/png;base64,") >= 8
    assert page.index("The pretrained oasis1 model") < page.index("Verdict (what follows is what about 15 minutes")
    assert main(["report", str(tmp_path / "nowhere")]) == 2
