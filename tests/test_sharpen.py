"""Decoder sharpening: only the decoder changes, codes (and so priors) stay valid, output reloads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from scipy import ndimage

from brainvq.cli import main
from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.errors import ConfigError
from brainvq.models.discriminator import PatchDiscriminator
from brainvq.models.weights import load_vqvae
from brainvq.train.common import TrainerConfig
from brainvq.train.sharpen import SharpenConfig, detail_energy, ema_update, grid_pattern, train_sharpen
from brainvq.train.vqvae import train_vqvae
from tests.test_train_vqvae import tiny_cfg


def test_detail_energy_orders_blurred_real_and_noisy_images(tiny_oasis: Path):
    x = as_tensor(load_split(DataConfig(root=str(tiny_oasis), image_size=64), "train", progress=False))
    blurred = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, 1.5, 1.5)))
    noisy = (x + 0.05 * torch.randn_like(x) * (x > 0.05)).clamp(0, 1)
    e_blur, e_real, e_noise = (float(detail_energy(v).mean()) for v in (blurred, x, noisy))
    assert e_blur < 0.7 * e_real < 0.7 * e_noise


def test_grid_pattern_sees_detail_repeating_every_four_pixels(tiny_oasis: Path):
    x = as_tensor(load_split(DataConfig(root=str(tiny_oasis), image_size=64), "train", progress=False))[:4]
    cell = torch.zeros(1, 1, 4, 4)
    cell[..., 0, 0] = 0.1
    gridded = x + cell.repeat(1, 1, 16, 16) * (x > 0.05)
    plain, painted = grid_pattern(x), grid_pattern(gridded)
    assert bool((painted > 2 * plain).all()), (plain, painted)
    assert torch.allclose(grid_pattern(torch.roll(gridded, (1, 2), (-2, -1))), painted, rtol=0.2)
    flat = torch.zeros(2, 1, 64, 64, requires_grad=True)
    grid_pattern(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_patch_discriminator_gives_one_logit_per_patch():
    d = PatchDiscriminator(channels=8, layers=3)
    x = torch.rand(2, 1, 64, 64)
    assert d(x).shape == (2, 1, 7, 7)
    feats = d.features(x)
    assert [f.shape[1] for f in feats] == [8, 16, 32, 1] and torch.equal(feats[-1], d(x))


def test_sharpen_changes_only_the_decoder(tiny_oasis: Path, tmp_path: Path):
    base = tmp_path / "vq"
    train_vqvae(tiny_cfg(tiny_oasis, base, epochs=1))
    before = load_vqvae(base / "vqvae.safetensors")
    cfg = SharpenConfig(
        vqvae=str(base / "vqvae.safetensors"),
        data=DataConfig(root=str(tiny_oasis), image_size=64),
        trainer=TrainerConfig(epochs=2, batch_size=4, lr=1e-3, progress=False),
        out_dir=str(tmp_path / "sharp"),
        adversarial_start=1,
        disc_channels=8,
        refine_channels=4,
    )
    summary = train_sharpen(cfg)
    assert summary["schedule_completed"] and summary["steps_run"] == summary["planned_steps"]
    assert summary["best_val_detail_gap"] is not None
    after = load_vqvae(summary["weights"])
    assert after.config == dataclasses.replace(before.config, refine_channels=4)
    b, a = before.state_dict(), after.state_dict()
    changed = {k for k in b if not torch.equal(b[k], a[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), sorted(changed)[:5]
    x = as_tensor(load_split(cfg.data, "validate", progress=False))
    assert [torch.equal(u, v) for u, v in zip(before.encode_levels(x), after.encode_levels(x), strict=True)] == [
        True,
        True,
    ]
    saved = json.loads((tmp_path / "sharp" / "train_summary.json").read_text())
    assert saved["sharpened_from"] == cfg.vqvae


def test_sharpen_cli_and_errors(tiny_oasis: Path, tmp_path: Path):
    base = tmp_path / "vq"
    train_vqvae(tiny_cfg(tiny_oasis, base, epochs=1))
    args = ["sharpen", "--data", str(tiny_oasis), "--image-size", "64", "--vqvae", str(base / "vqvae.safetensors")]
    args += ["--out", str(tmp_path / "s"), "--epochs", "2", "--batch-size", "4", "--no-progress"]
    args += ["--weight-average-decay", "0.9", "--feature-matching-weight", "1", "--grid-weight", "0.5"]
    args += ["--adversarial-start", "1"]
    assert main(args) == 0
    exported = load_vqvae(tmp_path / "s" / "vqvae.safetensors")
    assert exported.config.image_size == 64
    recorded = (tmp_path / "s" / "config.yaml").read_text()
    for line in ("weight_average_decay: 0.9", "feature_matching_weight: 1.0", "grid_weight: 0.5"):
        assert line in recorded
    # the export is the best epoch's weight average; its raw weights stay in the checkpoint for --resume
    best = torch.load(tmp_path / "s" / "checkpoints" / "best.ckpt", weights_only=True)
    averaged, raw = (
        {k.removeprefix("model."): v for k, v in best[key].items() if k.startswith("model.")}
        for key in ("state_dict", "current_model_state")
    )
    ours = exported.state_dict()
    assert all(torch.equal(ours[k], averaged[k]) for k in ours)
    assert not torch.equal(ours["decoder.head.1.weight"], raw["decoder.head.1.weight"])
    logged = (tmp_path / "s" / "logs" / "metrics.csv").read_text().splitlines()
    for name in ("train/feature_matching_epoch", "train/grid_epoch"):  # both terms took part
        column = logged[0].split(",").index(name)
        values = [float(row.split(",")[column]) for row in logged[1:] if row.split(",")[column]]
        assert len(values) == 2 and min(values) > 0, name
    resumed = SharpenConfig(
        vqvae=str(base / "vqvae.safetensors"),
        data=DataConfig(root=str(tiny_oasis), image_size=64),
        trainer=TrainerConfig(epochs=3, batch_size=4, progress=False),
        out_dir=str(tmp_path / "s"),
    )
    with pytest.raises(ConfigError, match="weight average"):
        train_sharpen(resumed, resume=True)
    assert (tmp_path / "s" / "config.yaml").read_text() == recorded  # refused before touching the run
    with pytest.raises(ConfigError, match="32px"):
        train_sharpen(
            SharpenConfig(vqvae=str(base / "vqvae.safetensors"), data=DataConfig(root=str(tiny_oasis), image_size=32))
        )
    with pytest.raises(ConfigError, match="adversarial_weight"):
        train_sharpen(SharpenConfig(adversarial_weight=-1))
    with pytest.raises(ConfigError, match="feature_matching_weight"):
        train_sharpen(SharpenConfig(feature_matching_weight=-0.5))
    with pytest.raises(ConfigError, match="grid_weight"):
        train_sharpen(SharpenConfig(grid_weight=-1))
    with pytest.raises(ConfigError, match="weight_average_decay"):
        train_sharpen(SharpenConfig(weight_average_decay=1.0))


def test_moving_average_moves_towards_the_weights_and_keeps_frozen_ones_exact():
    frozen = torch.randn(1000)
    assert torch.equal(ema_update(frozen.clone(), frozen, torch.tensor(3), decay=0.99), frozen)
    avg, cur = torch.zeros(4), torch.ones(4)
    assert torch.allclose(ema_update(avg, cur, torch.tensor(1), decay=0.9), torch.full((4,), 0.1))
    count = torch.tensor([7])
    assert torch.equal(ema_update(torch.tensor([3]), count, torch.tensor(1), decay=0.9), count)


def test_zero_initialised_refiner_leaves_the_output_unchanged():
    from brainvq.models.vqvae import VQVAE, VQVAEConfig

    small = dict(image_size=32, num_codes=8, code_dim=4, stem_channels=4, hidden_channels=8, top_num_codes=8)
    torch.manual_seed(0)
    plain = VQVAE(VQVAEConfig(**small)).eval()
    refined = VQVAE(VQVAEConfig(**small, refine_channels=4)).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("decoder.refine.") for k in missing)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(plain(x).reconstruction, refined(x).reconstruction)
    torch.nn.init.normal_(refined.decoder.refine.net[-1].weight)
    assert not torch.allclose(plain(x).reconstruction, refined(x).reconstruction)
