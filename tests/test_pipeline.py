"""Recipes: stage budgets of the demo and the quality recipes, and a whole tiny pipeline run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from brainvq.data.sources import DataConfig
from brainvq.errors import ConfigError
from brainvq.pipeline import TimeBudget, run_pipeline
from brainvq.recipes import RECIPES, Recipe, get_recipe
from tests.test_untested_paths import _Clock


def test_demo_recipe_budgets_leave_room_within_15_minutes_in_fp32():
    demo = get_recipe("demo")
    assert demo.precision == "auto"  # fp32 without bf16 units: the budgets below must hold in fp32
    # both trainers are capped; dataset, evaluation, sampling and judging get the other ~6 minutes
    assert demo.vqvae_minutes + demo.prior_minutes <= 9
    assert demo.samples <= 64  # sampling and judging are bounded by the number of samples
    assert demo.total_minutes == 15 and demo.vqvae_minutes + demo.prior_minutes + demo.reserve_minutes <= 15


def test_quality_recipes():
    cpu, gpu = get_recipe("quality-cpu"), get_recipe("quality-gpu")
    assert cpu.precision == "auto" and cpu.vqvae_minutes + cpu.prior_minutes <= 50  # of 60 in all
    assert cpu.samples >= 256 and gpu.samples >= 256  # enough for the judges' standard errors
    planned = cpu.vqvae_minutes + cpu.prior_top_minutes + cpu.prior_minutes
    assert cpu.total_minutes == 60 and planned + cpu.reserve_minutes <= 60
    assert gpu.accelerator == "gpu"
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        get_recipe("fast")


def test_quality_cpu_long_plans_inside_two_hours():
    long = get_recipe("quality-cpu-long")
    planned = long.vqvae_minutes + long.generation_decoder_minutes + long.prior_top_minutes + long.prior_minutes
    assert long.total_minutes == 120 and planned + long.reserve_minutes <= 120 and long.samples >= 256


def test_a_stage_key_names_the_precision_auto_resolves_to(monkeypatch: pytest.MonkeyPatch):
    """A run folder resumed where ``auto`` resolves to another precision trains again."""
    from brainvq.pipeline import _budget
    from brainvq.runs import config_key

    recipe = get_recipe("demo")
    monkeypatch.setenv("BRAINVQ_PRECISION", "32-true")
    fp32 = _budget(recipe)
    monkeypatch.setenv("BRAINVQ_PRECISION", "bf16-mixed")
    bf16 = _budget(recipe)
    assert (fp32["precision"], fp32["precision_used"], bf16["precision_used"]) == ("auto", "32-true", "bf16-mixed")
    assert config_key(fp32) != config_key(bf16)


def test_tiny_pipeline_trains_two_decoders_reports_cut_schedules_and_opens_with_the_verdict(
    tiny_oasis: Path, tmp_path: Path
):
    """A recipe with sharpen epochs trains a generation decoder beside the VQ-VAE: reconstruction
    numbers stay the VQ-VAE's (MSE) decoder's, generated slices are drawn by the generation decoder."""
    from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, read_metadata
    from brainvq.models.hierarchical import TOP_LEVEL
    from brainvq.models.weights import load_prior, load_vqvae
    from tests.test_train_vqvae import tiny_cfg

    tiny = tiny_cfg(tiny_oasis, tmp_path / "unused")
    recipe = Recipe(
        "tiny",
        vqvae_epochs=2,
        vqvae_minutes=5.0,
        prior_epochs=50,
        prior_minutes=1e-5,  # the prior is cut after its first step
        samples=4,
        prior_batch_size=4,
        judges=False,
        generation_decoder_epochs=1,
        generation_decoder_minutes=5.0,
        total_minutes=6.0,  # 5.5 min for 10 min of caps: the VQ-VAE's cap shrinks, and its 2 epochs still fit
        reserve_minutes=0.5,
        top_temperature=0.9,
        prior_bottom_hidden=8,
    )
    summary = run_pipeline(
        DataConfig(root=str(tiny_oasis), image_size=64),
        tmp_path / "run",
        recipe,
        progress=False,
        vqvae_model=tiny.model,
    )
    assert list(summary)[0] == "verdict"
    budget = summary["time_budget"]
    assert list(budget["stages"]) == ["VQ-VAE", "generation decoder", "prior"] and budget["total_minutes"] == 6.0
    vq_cap = budget["stages"]["VQ-VAE"]["given_minutes"]["vqvae"]
    assert 2.5 < vq_cap < 3.0 and any("VQ-VAE training got 5" in w for w in summary["warnings"])
    vq_run = yaml.safe_load((tmp_path / "run" / "vqvae" / "config.yaml").read_text())
    assert vq_run["config"]["trainer"]["max_minutes"] == pytest.approx(
        vq_cap, abs=0.01
    )  # the trainer got the shrunk cap
    run = tmp_path / "run"
    mse, drawer = run / "vqvae" / "vqvae.safetensors", run / "generation_decoder" / "vqvae.safetensors"
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert list(stages) == ["vqvae", "evaluate", "generation_decoder", "prior", "generation"]
    trained = summary["generation_decoder"]
    assert trained["schedule_completed"] and trained["weights"] == str(drawer) and trained["epochs_run"] == 1
    assert "sharpen" not in summary and not (run / "sharpen").exists()
    assert json.loads((run / "generation_decoder" / "train_summary.json").read_text())["sharpened_from"] == str(mse)
    assert summary["reconstruction_test"]["weights"] == str(mse)  # reconstructions: the MSE decoder's
    assert summary["generation"]["decoder"] == {"drew": "generation", "weights": str(drawer)}
    assert summary["generation"]["top_temperature"] == stages["generation"]["config"]["top_temperature"] == 0.9
    assert any("top grid sampled at temperature 0.9" in line for line in summary["verdict"])
    hw = summary["hardware"]  # where it ran and in what precision (auto, 32-true in tests), bf16 units detected
    assert (hw["precision_requested"], hw["precision"]) == ("auto", "32-true") and hw["bf16_used"] is False
    assert isinstance(hw["cpu"]["bf16_units"], bool)
    recon, gen = load_vqvae(mse), load_vqvae(drawer)
    assert recon.config.refine_channels == 0 and gen.config.refine_channels > 0  # the VQ-VAE left as trained
    assert codebook_fingerprint(recon) == codebook_fingerprint(gen)
    assert read_metadata(run / "prior" / "prior.safetensors")[VQVAE_FINGERPRINT] == codebook_fingerprint(recon)
    prior = load_prior(run / "prior" / "prior.safetensors")  # the recipe's bottom width, the default top
    assert prior.bottom.config.hidden == 8 and prior.top.config.hidden == TOP_LEVEL["hidden"]
    assert stages["prior"]["config"]["prior_bottom_hidden"] == 8
    assert summary["prior"]["schedule_completed"] is False and summary["vqvae"]["schedule_completed"] is True
    assert any("prior training was cut short" in w for w in summary["warnings"])
    assert summary["verdict"][0].startswith("WARNING: prior training was cut short")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["verdict"] == summary["verdict"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.index("Verdict") < page.index("Training curves") < page.index("Configuration")
    assert "cut short" in page and (tmp_path / "run" / "generation" / "samples" / "real_vs_generated.png").is_file()
    assert f"drawn by the generation decoder ({drawer})" in page and "generation_decoder training curves" in page


def test_recipes_are_named_by_their_keys():
    assert all(name == r.name for name, r in RECIPES.items())


def test_recipe_training_the_prior_level_by_level_refuses_a_one_level_vqvae_before_training(tmp_path: Path):
    from brainvq.models.vqvae import VQVAEConfig

    assert RECIPES["quality-cpu"].prior_top_epochs is not None
    with pytest.raises(ConfigError, match="top_epochs applies to the prior of a two-level VQ-VAE"):
        run_pipeline(
            DataConfig(root=str(tmp_path / "no-data")),
            tmp_path / "out",
            RECIPES["quality-cpu"],
            vqvae_model=VQVAEConfig(top_downsample=0),
        )
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_time_budget_shrinks_the_caps_only_when_earlier_stages_ran_late(monkeypatch: pytest.MonkeyPatch):
    clock = _Clock()
    monkeypatch.setattr("brainvq.pipeline.time.time", clock)
    budget = TimeBudget(15.0, 5.0, start=clock.now - 60)  # the dataset took 1 min
    assert budget.caps("VQ-VAE", {"vqvae": 4.0}, later_minutes=4.5) == {"vqvae": 4.0}  # 9 min left for 8.5
    clock.now += 6 * 60  # the VQ-VAE stage and its evaluation took 6 min: 7 min used, 3 left before the reserve
    given = budget.caps("prior", {"prior_top": 1.5, "prior": 4.5})
    assert given == pytest.approx({"prior_top": 0.75, "prior": 2.25})  # both phases scaled alike
    assert budget.stages["prior"]["given_minutes"] == {"prior_top": 0.75, "prior": 2.25}
    assert budget.stages["VQ-VAE"]["given_minutes"] == {"vqvae": 4.0}
    assert len(budget.warnings) == 1 and "prior training got 50% of its planned time cap" in budget.warnings[0]
    clock.now += 7 * 60  # 14 min in all: inside the budget
    assert budget.finish()["took_minutes"] == pytest.approx(14.0) and len(budget.warnings) == 1
    clock.now += 2 * 60
    assert budget.finish()["took_minutes"] == pytest.approx(16.0)
    assert "the run took 16.0 min, over its 15-minute budget" in budget.warnings[-1]


def test_time_budget_keeps_a_floor_and_is_off_without_a_total(monkeypatch: pytest.MonkeyPatch):
    clock = _Clock()
    monkeypatch.setattr("brainvq.pipeline.time.time", clock)
    late = TimeBudget(15.0, 5.0, start=clock.now - 14 * 60)  # nothing left: each stage keeps 10 %
    assert late.caps("prior", {"prior": 4.0}) == pytest.approx({"prior": 0.4})
    free = TimeBudget(None, 0.0, start=clock.now - 10 * 3600)
    assert free.caps("prior", {"prior": 4.0}) == {"prior": 4.0} and not free.warnings
    assert free.finish()["total_minutes"] is None and not free.warnings


_TINY_RUN = """
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from brainvq.data.sources import DataConfig
from brainvq.pipeline import run_pipeline
from brainvq.recipes import Recipe
from tests.test_train_vqvae import tiny_cfg

root, out = sys.argv[1], Path(sys.argv[2])
recipe = Recipe("tiny", vqvae_epochs=2, vqvae_minutes=30, prior_epochs=6, prior_minutes=30, samples=2,
                prior_batch_size=4, judges=False)
run_pipeline(DataConfig(root=root, image_size=64), out, recipe, progress=False,
             vqvae_model=tiny_cfg(Path(root), out / "unused").model)
"""


def _tiny_run(root: Path, out: Path, kill_when: Path | None = None) -> int:
    """The tiny pipeline in a fresh process (one thread); SIGKILLed once ``kill_when`` exists."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", _TINY_RUN, str(root), str(out)], cwd=repo, env=os.environ.copy())
    while kill_when is not None and proc.poll() is None:
        if kill_when.is_file():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    return proc.wait(timeout=600)


def test_a_killed_pipeline_continues_where_it_stopped(tiny_oasis: Path, tmp_path: Path):
    """SIGKILL during the prior's training, then the same command again: the VQ-VAE is reused,
    the prior resumes from its last checkpoint, and the weights equal an uninterrupted run's."""
    from safetensors.torch import load_file

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    assert _tiny_run(tiny_oasis, killed, kill_when=killed / "prior" / "checkpoints" / "last.ckpt") == -9
    stages = json.loads((killed / "stages.json").read_text())["stages"]
    assert stages["vqvae"]["status"] == "done" and stages["prior"]["status"] == "started"
    assert not (killed / "prior" / "prior.safetensors").exists()
    vq_written = (killed / "vqvae" / "vqvae.safetensors").stat().st_mtime_ns
    assert _tiny_run(tiny_oasis, killed) == 0
    assert (killed / "vqvae" / "vqvae.safetensors").stat().st_mtime_ns == vq_written  # not trained again
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["timings"]["vqvae_s"] == 0.0 and summary["timings"]["prior_s"] > 0
    assert summary["prior"]["epochs_run"] == 6 and summary["time_budget"]["carried_minutes"] > 0
    assert _tiny_run(tiny_oasis, whole) == 0
    assert json.loads((whole / "summary.json").read_text())["time_budget"]["carried_minutes"] == 0  # a fresh run
    for name in ("vqvae/vqvae.safetensors", "prior/prior.safetensors"):
        resumed, straight = load_file(killed / name), load_file(whole / name)
        assert resumed.keys() == straight.keys()
        assert all(torch.equal(resumed[k], straight[k]) for k in straight), name


def test_the_stage_ledger_reuses_resumes_or_redoes_a_stage(tmp_path: Path):
    from brainvq.runs import StageLedger

    ledger = StageLedger.open(tmp_path / "stages.json")
    assert ledger.plan("vqvae", {"epochs": 2}) == "fresh"
    ledger.record("vqvae", {"epochs": 2}, 10.0)
    assert StageLedger.open(tmp_path / "stages.json").plan("vqvae", {"epochs": 2}) == "resume"
    ledger.record("vqvae", {"epochs": 2}, 20.0, {"epochs_run": 2})
    again = StageLedger.open(tmp_path / "stages.json")
    assert again.spent_s == 20.0 and again.plan("vqvae", {"epochs": 2}) == "reuse"
    assert again.result("vqvae") == {"epochs_run": 2}
    assert again.plan("vqvae", {"epochs": 3}) == "fresh"
    assert again.notes == ["redoing vqvae: its configuration changed (epochs)"]
    assert StageLedger.open(tmp_path / "stages.json", fresh=True).plan("vqvae", {"epochs": 2}) == "fresh"


def test_a_ledger_from_before_stage_keys_named_the_precision_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Stages recorded without ``precision_used`` (older brainvq) are reused, and so are the
    stages after them; a recorded precision other than this machine's redoes the stage."""
    from brainvq.pipeline import _budget, _Run
    from brainvq.runs import StageLedger

    monkeypatch.setenv("BRAINVQ_PRECISION", "32-true")
    recipe = get_recipe("demo")
    now = {"epochs": 2, **_budget(recipe)}
    legacy = {k: v for k, v in now.items() if k != "precision_used"}

    def run_of(ledger: StageLedger) -> _Run:
        return _Run(None, None, recipe, {}, None, ledger, 0.0, {})

    def never(resume: bool) -> dict:
        raise AssertionError("trained again")

    old = run_of(StageLedger.open(tmp_path / "old.json"))
    old.stage("vqvae", legacy, lambda resume: {"epochs_run": 2})
    old.stage("prior", {"epochs": 1}, lambda resume: {"epochs_run": 1})
    again = run_of(StageLedger.open(tmp_path / "old.json"))
    assert again.stage("vqvae", now, never) == {"epochs_run": 2}
    assert again.stage("prior", {"epochs": 1}, never) == {"epochs_run": 1}
    other = run_of(StageLedger.open(tmp_path / "bf16.json"))
    other.stage("vqvae", {**now, "precision_used": "bf16-mixed"}, lambda resume: {"epochs_run": 2})
    redone = run_of(StageLedger.open(tmp_path / "bf16.json"))
    assert redone.stage("vqvae", now, lambda resume: {"epochs_run": 3}) == {"epochs_run": 3}
    assert redone.ledger.notes == ["redoing vqvae: its configuration changed (precision_used)"]
