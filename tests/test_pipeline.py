"""Recipes: stage budgets of the demo and the quality recipes, and a whole tiny pipeline run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainvq.data.errors import ConfigError
from brainvq.data.sources import DataConfig
from brainvq.pipeline import RECIPES, Recipe, get_recipe, run_pipeline


def test_demo_recipe_budgets_leave_room_within_15_minutes_in_fp32():
    demo = get_recipe("demo")
    assert demo.precision == "32-true"  # the default must hold without bf16 units
    # both trainers are capped; dataset, evaluation, sampling and judging get the other ~6 minutes
    assert demo.vqvae_minutes + demo.prior_minutes <= 9
    assert demo.samples <= 64  # sampling and judging are bounded by the number of samples


def test_quality_recipes():
    cpu, gpu = get_recipe("quality-cpu"), get_recipe("quality-gpu")
    assert cpu.precision == "32-true" and cpu.vqvae_minutes + cpu.prior_minutes <= 50  # of 60 in all
    assert cpu.samples >= 256 and gpu.samples >= 256  # enough for the judges' standard errors
    assert gpu.accelerator == "gpu"
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        get_recipe("fast")


def test_tiny_pipeline_sharpens_reports_cut_schedules_and_opens_with_the_verdict(tiny_oasis: Path, tmp_path: Path):
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
        sharpen_epochs=1,
        sharpen_minutes=5.0,
    )
    summary = run_pipeline(
        DataConfig(root=str(tiny_oasis), image_size=64),
        tmp_path / "run",
        recipe,
        progress=False,
        vqvae_model=tiny.model,
    )
    assert list(summary)[0] == "verdict"
    sharpened = tmp_path / "run" / "sharpen" / "vqvae.safetensors"
    assert summary["sharpen"]["schedule_completed"] and summary["reconstruction_test"]["weights"] == str(sharpened)
    assert summary["prior"]["schedule_completed"] is False and summary["vqvae"]["schedule_completed"] is True
    assert any("prior training was cut short" in w for w in summary["warnings"])
    assert summary["verdict"][0].startswith("WARNING: prior training was cut short")
    saved = json.loads((tmp_path / "run" / "demo_summary.json").read_text())
    assert saved["verdict"] == summary["verdict"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.index("Verdict") < page.index("Training curves") < page.index("Configuration")
    assert "cut short" in page and (tmp_path / "run" / "generation" / "samples" / "real_vs_generated.png").is_file()


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
