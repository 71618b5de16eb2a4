"""A tiny end-to-end VQ-VAE run: train, checkpoint, resume, export, evaluate, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from brainvq.checkpoint import load_vqvae
from brainvq.cli import main
from brainvq.data.sources import DataConfig
from brainvq.evaluate import evaluate_vqvae
from brainvq.models.vqvae import VQVAEConfig
from brainvq.train.common import TrainerConfig
from brainvq.train.vqvae import VQVAETrainConfig, train_vqvae


def tiny_cfg(root: Path, out: Path, epochs: int = 2) -> VQVAETrainConfig:
    return VQVAETrainConfig(
        data=DataConfig(root=str(root), image_size=64),
        model=VQVAEConfig(
            image_size=64, num_codes=16, code_dim=8, stem_channels=8, hidden_channels=16, top_num_codes=16
        ),
        trainer=TrainerConfig(epochs=epochs, batch_size=4, lr=3e-3, progress=False, seed=1),
        out_dir=str(out),
    )


def test_train_evaluate_resume(tiny_oasis: Path, tmp_path: Path):
    out = tmp_path / "run"
    summary = train_vqvae(tiny_cfg(tiny_oasis, out, epochs=2))
    assert summary["epochs_run"] == 2 and 0 < summary["best_val_ssim"] <= 1
    for name in (
        "config.yaml",
        "vqvae.safetensors",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
        "train_summary.json",
    ):
        assert (out / name).is_file(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["config"]["trainer"]["seed"] == 1 and cfg["config"]["model"]["num_codes"] == 16
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries

    # the exported weights and the best checkpoint give identical reconstructions
    x = torch.rand(2, 1, 64, 64)
    a = load_vqvae(out / "vqvae.safetensors")(x)
    b = load_vqvae(out / "checkpoints" / "best.ckpt")(x)
    assert torch.equal(a.codes, b.codes) and torch.allclose(a.reconstruction, b.reconstruction)

    ev = evaluate_vqvae(
        out / "vqvae.safetensors",
        DataConfig(root=str(tiny_oasis), image_size=64),
        out,
        progress=False,
    )
    assert ev["n_images"] == 4 and ev["ssim_min"] <= ev["ssim_p05"] <= ev["ssim_mean"] <= 1
    assert 0 < ev["codebook_usage"] <= 1 and ev["codebook_perplexity"] >= 1
    for fig in (
        "reconstructions.png",
        "code_maps.png",
        "codebook_usage.png",
        "vqvae_training_curves.png",
    ):
        assert (out / "figures" / fig).stat().st_size > 1000
    assert json.loads((out / "eval_metrics.json").read_text())["ssim_mean"] == pytest.approx(ev["ssim_mean"])

    # resume continues from last.ckpt up to the new epoch budget
    resumed = train_vqvae(tiny_cfg(tiny_oasis, out, epochs=3), resume=True)
    assert resumed["epochs_run"] == 3
    steps = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps == 3 * 3  # 12 train slices / batch 4 = 3 steps per epoch, none repeated


def test_cli_train_and_evaluate(tiny_oasis: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "cli"
    args = [
        "--data",
        str(tiny_oasis),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--no-progress",
        "--num-codes",
        "16",
        "--code-dim",
        "8",
        "--stem-channels",
        "8",
        "--hidden-channels",
        "16",
    ]
    assert main(["train-vqvae", *args, "--image-size", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 1
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tiny_oasis),
                "--image-size",
                "64",
                "--run",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 4 and (out / "eval_metrics.json").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "nowhere"),
                "--weights",
                str(tmp_path / "w.safetensors"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq evaluate: error:") and "\n" not in err and "not found" in err
    with pytest.raises(SystemExit):
        main(["train-vqvae", "--epochs", "-1"])
