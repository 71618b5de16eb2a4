"""A tiny end-to-end VQ-VAE run: train, checkpoint, resume, export, evaluate, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

from brainvq.cli import main
from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.evaluate import evaluate_vqvae
from brainvq.models.vqvae import VQVAEConfig
from brainvq.models.weights import load_vqvae
from brainvq.train.common import TrainerConfig
from brainvq.train.vqvae import VQVAETrainConfig, train_vqvae

LEARNING_EPOCHS = 10


def tiny_cfg(root: Path, out: Path, epochs: int = 2) -> VQVAETrainConfig:
    return VQVAETrainConfig(
        data=DataConfig(root=str(root), image_size=64),
        model=VQVAEConfig(
            image_size=64, num_codes=16, code_dim=8, stem_channels=8, hidden_channels=16, top_num_codes=16
        ),
        trainer=TrainerConfig(epochs=epochs, batch_size=4, lr=3e-3, progress=False, seed=1),
        out_dir=str(out),
    )


def learning_cfg(root: Path, out: Path, epochs: int = LEARNING_EPOCHS) -> VQVAETrainConfig:
    """:func:`tiny_cfg` with enough steps past the LR warm-up (60 at batch 2) to really learn."""
    cfg = tiny_cfg(root, out, epochs=epochs)
    cfg.trainer.batch_size, cfg.trainer.lr = 2, 3e-2
    return cfg


def best_constant_ssim(images: torch.Tensor) -> float:
    """SSIM of the best constant image (black, or the mean grey) against ``images``: a
    reconstruction that learned nothing about the content scores about this."""
    return max(float(ssim_fn(torch.full_like(images, c), images, data_range=1.0)) for c in (0.0, float(images.mean())))


def test_train_evaluate_resume(tiny_oasis: Path, tmp_path: Path):
    out = tmp_path / "run"
    summary = train_vqvae(learning_cfg(tiny_oasis, out))
    assert summary["epochs_run"] == LEARNING_EPOCHS
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
    # quality floor: clearly better than a constant image (black scores ~0.5 on these blobs)
    test_images = as_tensor(load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", progress=False))
    assert ev["ssim_mean"] > best_constant_ssim(test_images) + 0.05
    assert ev["codebook_usage"] * 16 >= 2 and ev["codebook_perplexity"] > 1.5  # more than one code in use
    for fig in (
        "reconstructions.png",
        "code_maps.png",
        "codebook_usage.png",
        "vqvae_training_curves.png",
    ):
        assert (out / "figures" / fig).stat().st_size > 1000
    assert json.loads((out / "eval_metrics.json").read_text())["ssim_mean"] == pytest.approx(ev["ssim_mean"])

    # resume continues from last.ckpt up to the new epoch budget
    # resume continues from last.ckpt up to the new epoch budget (test_resume.py checks the state)
    resumed = train_vqvae(learning_cfg(tiny_oasis, out, epochs=LEARNING_EPOCHS + 1), resume=True)
    assert resumed["epochs_run"] == LEARNING_EPOCHS + 1
    steps = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps == (LEARNING_EPOCHS + 1) * 6  # 12 train slices / batch 2 = 6 steps per epoch, none repeated


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
