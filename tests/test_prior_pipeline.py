"""Tiny end-to-end prior run: encode all splits, train, export, sample, evaluate generation."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, read_metadata
from brainvq.cli import main
from brainvq.data.sources import DataConfig
from brainvq.errors import ConfigError
from brainvq.models.pixelcnn import PixelCNNConfig
from brainvq.models.weights import load_prior, load_vqvae
from brainvq.train.common import TrainerConfig
from brainvq.train.prior import PriorTrainConfig, train_prior
from brainvq.train.vqvae import VQVAETrainConfig, train_vqvae
from tests.test_train_vqvae import learning_cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from tests.conftest import write_oasis

    root = tmp_path_factory.mktemp("prior")
    data = write_oasis(root / "oasis", {"train": [1, 2, 3, 4], "validate": [5], "test": [441, 442]}, n_slices=6)
    vq: VQVAETrainConfig = learning_cfg(data, root / "vq")
    train_vqvae(vq)
    cfg = PriorTrainConfig(
        vqvae=str(root / "vq" / "vqvae.safetensors"),
        data=DataConfig(root=str(data), image_size=64),
        model=PixelCNNConfig(hidden=8, n_layers=3, kernel_size=3, cond_dim=8, location_dim=4),
        trainer=TrainerConfig(epochs=4, batch_size=4, lr=1e-2, progress=False),  # 48 steps, past most of the warm-up
        out_dir=str(root / "prior"),
    )
    summary = train_prior(cfg)
    assert summary["n_train_codes"] == 2 * 24  # whole training split, plus its left-right flips
    assert summary["n_test_codes"] == 12
    assert summary["compile"] == "eager"  # tests train eagerly (conftest: BRAINVQ_COMPILE=0)
    # quality floors: better than uniform over K codes, and better than the training codes'
    # frequencies alone (what a prior that ignores all context would reach)
    bits = summary["test_bits_per_code"]
    assert bits < math.log2(vq.model.num_codes)
    codes = root / "prior" / "codes"
    train_codes = torch.load(codes / "codes_train_flip.pt", weights_only=True)["codes"].flatten()
    test_codes = torch.load(codes / "codes_test.pt", weights_only=True)["codes"].flatten()
    freq = torch.bincount(train_codes, minlength=vq.model.num_codes).double() + 0.5
    unigram_bits = float(-(freq / freq.sum()).log2()[test_codes].mean())
    assert bits < unigram_bits, (bits, unigram_bits)
    return data, root / "vq" / "vqvae.safetensors", root / "prior"


def test_prior_outputs(trained: tuple[Path, Path, Path]):
    _, vq, prior_dir = trained
    for name in (
        "prior.safetensors",
        "config.yaml",
        "checkpoints/last.ckpt",
        "codes/codes_train_flip.pt",
        "logs/metrics.csv",
    ):
        assert (prior_dir / name).is_file(), name
    model = load_prior(prior_dir / "prior.safetensors")
    fingerprint = read_metadata(prior_dir / "prior.safetensors")[VQVAE_FINGERPRINT]  # which VQ-VAE's codes
    assert fingerprint == codebook_fingerprint(load_vqvae(vq))
    bottom, top = model.bottom.config, model.top.config  # the tiny VQ-VAE has two levels
    assert bottom.grid_size == 16 and bottom.num_codes == 16  # taken from the VQ-VAE
    assert (top.grid_size, top.num_codes, bottom.top_grid, bottom.top_codes) == (4, 16, 4, 16)
    # the default: the top level is also conditioned on the intensity scale, fitted on the training
    # slices (whose scales lie in the distribution's quantiles); the bottom level is not
    assert top.scale_conditional and not bottom.scale_conditional
    dist = model.top.scale_distribution
    scales = torch.load(prior_dir / "codes" / "codes_train_flip.pt", weights_only=True)["scales"]
    assert scales.shape == (48,) and ((scales > 0.05) & (scales <= 1)).all()
    assert min(min(q) for q in dist.quantiles) == pytest.approx(float(scales.min()), abs=1e-6)
    assert max(max(q) for q in dist.quantiles) == pytest.approx(float(scales.max()), abs=1e-6)
    log = (prior_dir / "logs" / "metrics.csv").read_text()
    assert "test/bits_per_code" in log and "val/bits_per_code" in log  # reported every epoch
    codes = torch.load(prior_dir / "codes" / "codes_train_flip.pt", weights_only=True)
    assert codes["codes"].shape == (48, 16, 16) and codes["codes"].dtype == torch.int64
    # the exported weights are those at the end of training
    summary = json.loads((prior_dir / "train_summary.json").read_text())
    assert summary["schedule_completed"]
    last = torch.load(prior_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    exported = model.state_dict()
    assert exported.keys() == {k.removeprefix("model.") for k in last if k.startswith("model.")}
    for k, v in exported.items():
        assert torch.equal(v, last[f"model.{k}"]), k


def test_sample_and_evaluate_cli(trained: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture):
    data, vq, prior_dir = trained
    out = tmp_path / "samples"
    args = [
        "sample",
        "--vqvae",
        str(vq),
        "--prior",
        str(prior_dir / "prior.safetensors"),
        "--out",
        str(out),
        "--n",
        "3",
        "--no-progress",
    ]
    assert main([*args, "--position", "0.6", "--seed", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["positions"] == pytest.approx([0.6] * 3)
    assert len(list((out / "images").glob("*.png"))) == 3 and (out / "sample_grid.png").is_file()
    first = torch.load(out / "sample_codes.pt", weights_only=True)["codes"]
    assert main([*args, "--position", "0.6", "--seed", "5"]) == 2  # the folder holds a run's outputs
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--position", "0.6", "--seed", "5", "--overwrite"]) == 0  # same seed, same samples
    capsys.readouterr()
    assert torch.equal(first, torch.load(out / "sample_codes.pt", weights_only=True)["codes"])
    with pytest.raises(SystemExit) as refused:  # argparse's own error: usage and one line
        main([*args, "--temperature", "-1"])
    assert refused.value.code == 2
    assert "temperature must be > 0" in capsys.readouterr().err

    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(data),
                "--image-size",
                "64",
                "--weights",
                str(vq),
                "--prior",
                str(prior_dir / "prior.safetensors"),
                "--samples",
                "4",
                "--out",
                str(ev),
                "--no-progress",
                "--no-generation-metrics",  # the judges are covered by test_report and test_judges_generation
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    gen = result["generation"]
    generated = gen["generated"]
    assert generated["n"] == 4
    # a slice is brain-shaped only if it passes every criterion
    assert generated["fraction_brain_shaped"] <= min(v for k, v in generated.items() if k.startswith("pass_"))
    assert gen["real_test"]["n"] == 12
    assert (ev / "figures" / "completions.png").is_file()
    assert "metrics" not in gen
    assert set(gen["timings"]) == {"generation_s", "total_s"}  # sampling time reported, no metrics time
    assert 0 <= gen["timings"]["generation_s"] <= gen["timings"]["total_s"]


def test_levels_trained_in_turn(trained: tuple[Path, Path, Path], tmp_path: Path):
    """top_epochs: the top level trains alone first (checkpoints in OUT/top), then the bottom level
    with the top level frozen; the summary reports both schedules; resuming a finished run
    changes nothing."""
    data, vq, _ = trained
    cfg = PriorTrainConfig(
        vqvae=str(vq),
        data=DataConfig(root=str(data), image_size=64),
        trainer=TrainerConfig(epochs=2, batch_size=8, lr=1e-2, progress=False),
        out_dir=str(tmp_path / "prior"),
        top_epochs=3,
    )
    summary = train_prior(cfg)
    out = tmp_path / "prior"
    steps_per_epoch = 48 // 8
    top = summary["top_level"]
    assert (top["planned_epochs"], top["steps_run"], top["schedule_completed"]) == (3, 3 * steps_per_epoch, True)
    assert (summary["planned_epochs"], summary["steps_run"]) == (2, 2 * steps_per_epoch)  # the bottom level's
    assert summary["schedule_completed"] and "warning" not in summary
    assert summary["top_best_val_bits_per_code"] > 0 and summary["bottom_best_val_bits_per_code"] > 0

    def level_state(ckpt: Path, level: str) -> dict[str, torch.Tensor]:
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        return {k.removeprefix(f"model.{level}."): v for k, v in state.items() if k.startswith(f"model.{level}.")}

    def assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)

    top_end = level_state(out / "top" / "checkpoints" / "last.ckpt", "top")
    bottom_end = out / "checkpoints" / "last.ckpt"
    assert_equal(level_state(bottom_end, "top"), top_end)  # the bottom phase left the top level alone
    model = load_prior(out / "prior.safetensors")
    assert_equal(model.top.state_dict(), top_end)
    assert_equal(model.bottom.state_dict(), level_state(bottom_end, "bottom"))
    # the bottom level starts where the top phase left it (frozen there: test_hierarchy) and did train
    start = level_state(out / "top" / "checkpoints" / "last.ckpt", "bottom")
    assert any(not torch.equal(v, start[k]) for k, v in model.bottom.state_dict().items())
    assert 0 <= summary["top_best_epoch"] < 3 and 0 <= summary["bottom_best_epoch"] < 2
    top_log = (out / "top" / "logs" / "metrics.csv").read_text()
    assert "val/top_bits_per_code" in top_log and "val/bottom_bits_per_code" not in top_log
    assert "val/bits_per_code" in (out / "logs" / "metrics.csv").read_text()  # the whole prior, once both trained

    again = train_prior(cfg, resume=True)  # both phases found finished: nothing retrains
    assert again["top_level"]["steps_run"] == top["steps_run"] and again["steps_run"] == summary["steps_run"]
    assert again["test_bits_per_code"] == pytest.approx(summary["test_bits_per_code"])

    # resuming from checkpoints another kind of run left is refused, with the way out
    with pytest.raises(ConfigError, match="resumes each level from its own last checkpoint"):
        train_prior(cfg, resume=str(bottom_end))
    joint = dataclasses.replace(cfg, top_epochs=None)
    with pytest.raises(ConfigError, match="'bottom' training phase cannot resume the 'all' phase"):
        train_prior(joint, resume=True)
    shutil.rmtree(out / "top")  # the top level trains afresh (another seed: other weights) ...
    other = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, seed=1))
    with pytest.raises(ConfigError, match="trained on another top level than this run's"):
        train_prior(other, resume=True)  # ... so the old bottom checkpoint no longer fits
