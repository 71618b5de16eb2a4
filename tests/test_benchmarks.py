"""Every benchmark in benchmarks/ runs end to end at a tiny setting, so none of them can rot."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _bench_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the benchmarks import each other's helpers
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the benchmarks set it process-wide
    sys.modules.pop("bench_vqvae", None)


def test_bench_prior_tiny(tmp_path: Path) -> None:
    out = tmp_path / "prior.json"
    args = ["--seconds", "0", "--min-steps", "3", "--grid", "8", "--batch-size", "2", "--peak-size", "128"]
    r = load("bench_prior").main([*args, "--threads", "1", "--single-level", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["ratio_brainvq_over_reference"] == pytest.approx(r["ratio_brainvq_over_reference"])
    assert r["compile"] == {"compile": "eager"}  # the suite trains eagerly (conftest: BRAINVQ_COMPILE=0)
    for name in ("reference", "brainvq", "single_level"):
        res = r[name]
        assert res["steps"] >= 3
        assert res["images_per_second"] > 0 and math.isfinite(res["images_per_second"])
        assert 0 < res["fraction_of_matmul_peak"] and res["train_gflop_per_image"] > 0
    # same weights, same batches, same (eager) path: the same bits step by step
    same = r["same_steps_bits_per_code"]
    assert same["steps"] >= 3 and same["max_abs_difference"] < 1e-4
    # the small bottom PixelCNN plus a top one on 1/16 of the codes costs less than 8 5x5 layers on the full grid
    assert r["ratio_two_over_single"]["train_gflop_per_image"] < 1


def test_prior_flops_are_per_image_and_scale_with_the_grid() -> None:
    bench = load("bench_prior")
    small = bench.build_priors(16, 4, single_level=True)["single_level"]
    large = bench.build_priors(32, 4, single_level=True)["single_level"]
    one = bench.train_flops_per_image(small, bench.random_batches(small, 1, 1, 0)[0])
    two = bench.train_flops_per_image(small, bench.random_batches(small, 2, 1, 0)[0])
    four_times = bench.train_flops_per_image(large, bench.random_batches(large, 1, 1, 0)[0])
    assert two == pytest.approx(one)  # per image, whatever the batch
    assert four_times == pytest.approx(4 * one, rel=0.05)  # convolutions scale with the grid's area
    assert all(p.grad is None for p in small.parameters())  # counting leaves no gradients behind


def test_bench_sampling_levels_tiny(tmp_path: Path) -> None:
    r = load("bench_sampling_levels").main(
        ["--grid", "8", "--n", "2", "--naive-rows", "1", "--full-batch", "3", "--threads", "1", "--single-level"]
        + ["--out", str(tmp_path / "s.json")]
    )
    cvn = r["cached_vs_naive"]
    assert cvn["identical_codes"] and cvn["top"]["identical_codes"]
    assert cvn["bottom"]["naive_rows_drawn"] == 1 and cvn["bottom"]["grid"] == 8
    assert cvn["bottom"]["naive_seconds_per_slice_extrapolated"] == pytest.approx(
        8 * cvn["bottom"]["naive_seconds_per_slice_measured_rows"]
    )
    full = r["full_cached_two_level"]
    assert full["batch"] == 3 and full["image_size"] == 32
    assert full["seconds_per_slice"] == pytest.approx(
        full["top_seconds_per_slice"] + full["bottom_seconds_per_slice"] + full["decode_seconds_per_slice"]
    )
    assert r["single_level_cached"]["seconds_per_slice_codes_only"] > 0


def test_bench_sampling_tiny(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    r = load("bench_sampling").main(["--grid", "4", "--n", "2", "--layers", "2", "--out", str(tmp_path / "s.json")])
    assert r["identical_samples"] and r["naive_seconds"] > 0 and r["cached_seconds"] > 0


@pytest.mark.filterwarnings("ignore:.*resized to 256x256")
def test_bench_vqvae_tiny(tmp_path: Path, tiny_oasis: Path) -> None:
    torch.set_num_threads(1)
    r = load("bench_vqvae").main(
        ["--data", str(tiny_oasis), "--seconds", "0.01", "--batch-size", "2", "--peak-size", "128", "--threads", "1"]
        + ["--out", str(tmp_path / "v.json")]
    )
    for name in ("brainvq", "baseline"):
        assert r[name]["steps"] >= 1 and r[name]["train_gflop_per_image"] > 0
        assert 0 <= r[name]["val_ssim_after_same_time"] <= 1


def test_baseline_vqvae_is_single_level_and_downsamples_by_four() -> None:
    from brainvq.errors import ConfigError
    from brainvq.models.vqvae import VQVAEConfig

    baseline = load("baseline_vqvae").BaselineVQVAE
    model = baseline().eval()
    assert not model.config.hierarchical and not hasattr(model, "top_encoder")
    out = model(torch.rand(1, 1, 256, 256))
    assert out.top_codes is None and out.codes.shape == (1, 64, 64)
    small = dict(image_size=64, num_codes=16, code_dim=8, top_downsample=0)
    out = baseline(VQVAEConfig(**small, downsample=4)).eval()(torch.rand(1, 1, 64, 64))
    assert out.reconstruction.shape == (1, 1, 64, 64) and out.codes.shape == (1, 16, 16)
    with pytest.raises(ConfigError, match="single level"):
        baseline(VQVAEConfig(downsample=4))  # two levels by default
    with pytest.raises(ConfigError, match="exactly 4"):
        baseline(VQVAEConfig(**small, downsample=8))


@pytest.mark.parametrize("model", ["vqvae", "prior"])
def test_profile_step_tiny(tmp_path: Path, model: str) -> None:
    args = ["--model", model, "--threads", "1", "--steps", "1", "--size", "32", "--batch-size", "2"]
    r = load("profile_step").main([*args, "--out", str(tmp_path / "p.json")])
    assert r["seconds_per_step_profiled"] > 0 and r["top_operators_self_seconds_per_step"]
    parts = r["forward_seconds_per_step_by_part"]
    expected = {"encoder", "quantizer", "top_decoder"} if model == "vqvae" else {"top PixelCNN", "bottom PixelCNN"}
    assert expected <= set(parts) and all(v > 0 for v in parts.values())
    sizes = r["convolution_seconds_per_step_by_input_size"]
    assert "8x8" in sizes  # the 32x32 image's latent grid (VQ-VAE) / the bottom code grid (prior)
