"""Decoder sharpening: only the decoder changes, codes (and so priors) stay valid, output reloads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from scipy import ndimage

from brainvq.cli import build_parser, main
from brainvq.config import from_dict
from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.errors import ConfigError
from brainvq.models.discriminator import PatchDiscriminator
from brainvq.models.weights import load_vqvae
from brainvq.train.common import TrainerConfig
from brainvq.train.sharpen import SharpenConfig, detail_energy, grid_pattern, train_sharpen
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
    args += ["--out", str(tmp_path / "s"), "--epochs", "1", "--batch-size", "4", "--no-progress"]
    args += ["--adversarial-start", "1"]
    assert main(args) == 0
    exported = load_vqvae(tmp_path / "s" / "vqvae.safetensors")
    assert exported.config.image_size == 64
    recorded = (tmp_path / "s" / "config.yaml").read_text()
    assert "adversarial_start: 1" in recorded and "grid_weight" not in recorded
    # a checkpoint left by a run with a removed option (here a weight average) is refused on --resume
    last = tmp_path / "s" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    torch.save({**ckpt, "current_model_state": ckpt["state_dict"]}, last)
    resumed = SharpenConfig(
        vqvae=str(base / "vqvae.safetensors"),
        data=DataConfig(root=str(tiny_oasis), image_size=64),
        trainer=TrainerConfig(epochs=2, batch_size=4, progress=False),
        out_dir=str(tmp_path / "s"),
    )
    with pytest.raises(ConfigError, match="weight_average_decay, which brainvq no longer has"):
        train_sharpen(resumed, resume=True)
    ckpt["hyper_parameters"]["grid_weight"] = 0.5
    torch.save(ckpt, last)
    with pytest.raises(ConfigError, match="grid_weight, which brainvq no longer has"):
        train_sharpen(resumed, resume=True)
    assert (tmp_path / "s" / "config.yaml").read_text() == recorded  # refused before touching the run
    with pytest.raises(ConfigError, match="32px"):
        train_sharpen(
            SharpenConfig(vqvae=str(base / "vqvae.safetensors"), data=DataConfig(root=str(tiny_oasis), image_size=32))
        )
    with pytest.raises(ConfigError, match="adversarial_weight"):
        train_sharpen(SharpenConfig(adversarial_weight=-1))


@pytest.mark.parametrize("flag", ["--feature-matching-weight", "--grid-weight", "--weight-average-decay"])
def test_removed_sharpen_flags_are_gone(flag: str):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sharpen", flag, "0.5"])


def test_an_old_sharpen_config_loads_at_the_removed_defaults_and_is_refused_otherwise():
    old = {"adversarial_start": 7, "feature_matching_weight": 0.0, "grid_weight": 0, "weight_average_decay": 0.0}
    assert from_dict(SharpenConfig, old) == SharpenConfig(adversarial_start=7)
    for name in ("feature_matching_weight", "grid_weight", "weight_average_decay"):
        with pytest.raises(ConfigError, match=f"SharpenConfig.{name}: 0.5 is no longer supported") as err:
            from_dict(SharpenConfig, {**old, name: 0.5})
        assert "\n" not in str(err.value) and "4f37c69" in str(err.value)


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
