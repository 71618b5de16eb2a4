"""Sharpening a trained VQ-VAE's decoder with an adversarial loss (``brainvq sharpen``).

A VQ-VAE trained on pixel MSE decodes every code grid to the *mean* of the slices that share
it: fine detail (sulcal edges, tissue texture, the scanner's background) is averaged away, and
the judges tell its reconstructions from real slices by that alone. This stage keeps the encoder
and both codebooks frozen (so every code grid, and any prior trained on them, stays valid) and
fine-tunes only the decoder with an L1 reconstruction loss plus a patch discriminator's hinge
loss, the recipe of VQGAN (Esser et al. 2021) without its perceptual network (that would have
to be downloaded). The adversarial term is weighted adaptively by the ratio of the two losses'
gradients at the decoder's last layer, as in VQGAN. Every run logs ``val/grid``
(:func:`grid_pattern`): the fine detail that repeats every 4 pixels, the grid that adversarial
training grows in the depth-to-space head's 4 x 4 sub-pixels. Feature matching, a moving average
of the weights and a penalty on that grid were measured and made the decoder's reconstructions
easier to tell from real slices; they were removed after brainvq commit 4f37c69
(docs/experiments/2026-11-29-generation-decoder-levers.md).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

from brainvq.checkpoint import save_weights
from brainvq.data.brainmask import TISSUE_PIXELS, brain_mask
from brainvq.data.sources import DataConfig
from brainvq.errors import ConfigError
from brainvq.io import to_plain, write_json
from brainvq.models.discriminator import PatchDiscriminator
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.models.weights import load_vqvae
from brainvq.train.common import (
    TrainerConfig,
    build_trainer,
    restore_best,
    resume_path,
    schedule_report,
    write_run_config,
)
from brainvq.train.vqvae import slice_loaders


@dataclasses.dataclass
class SharpenConfig:
    """A sharpening run; saved as ``config.yaml`` in the run folder."""

    vqvae: str = "runs/vqvae/vqvae.safetensors"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # 4 epochs: on the OASIS-1 subset the decoder's reconstructions then read 0.78 under the
    # brain-region protocol against 0.95 after 2 (docs/experiments/2026-11-29-brain-region-two-decoders.md)
    trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(epochs=4, batch_size=16, lr=2e-4))
    out_dir: str = "runs/sharpen"
    flip: bool = True
    # Defaults: the best of four settings measured on the OASIS-1 subset (docs/experiments/2026-11-26-sharpen-decoder.md)
    adversarial_weight: float = 1.0  # multiplies the adaptive weight
    adversarial_start: int = 50  # batches of discriminator-only training before the decoder sees it
    disc_channels: int = 32
    disc_layers: int = 3
    refine_channels: int = 8  # add a full-resolution refiner to the decoder (0: fine-tune the decoder as is)

    #: measured worse and removed (docs/experiments/2026-11-29-generation-decoder-levers.md): an
    #: old config.yaml holding one loads at its former default (off) and is refused otherwise
    REMOVED_FIELDS: ClassVar[dict] = {
        name: (0.0, "measured worse on the OASIS-1 subset")
        for name in ("feature_matching_weight", "grid_weight", "weight_average_decay")
    }

    def validate(self) -> None:
        if self.adversarial_weight < 0:
            raise ConfigError(f"adversarial_weight must be >= 0, got {self.adversarial_weight}")
        if self.adversarial_start < 0:
            raise ConfigError(f"adversarial_start must be >= 0, got {self.adversarial_start}")


def _high_pass(images: torch.Tensor) -> torch.Tensor:
    """Images (B,1,H,W) minus their 5x5 Gaussian blur (sigma 1)."""
    k = torch.exp(-0.5 * torch.arange(-2, 3, dtype=images.dtype, device=images.device) ** 2)
    k = k / k.sum()
    return images - F.conv2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), (k[:, None] * k[None, :])[None, None])


def detail_energy(images: torch.Tensor, threshold: float = TISSUE_PIXELS.threshold) -> torch.Tensor:
    """Mean absolute difference between images (B,1,H,W) and their 5x5 Gaussian blur (sigma 1)
    inside the brain (pixels above ``threshold``): the finest-scale detail, per image (B,)."""
    mask = brain_mask(images, TISSUE_PIXELS.but(threshold=threshold)).to(images.dtype)
    return (_high_pass(images).abs() * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp_min(1)


def grid_pattern(images: torch.Tensor, period: int = 4) -> torch.Tensor:
    """How much of the images' (B,1,H,W) fine detail repeats every ``period`` pixels, per image (B,):
    the RMS over the period x period pixel phases of the high-pass image's mean at each phase,
    over the high-pass image's RMS. A decoder ending in a depth-to-space upsampling by ``period``
    can paint such a grid; real slices have almost none."""
    hp = _high_pass(images)
    h, w = hp.shape[-2:]
    hp = hp[:, 0, : h - h % period, : w - w % period]
    phases = hp.unflatten(1, (-1, period)).unflatten(3, (-1, period)).mean((1, 3))  # (B, period, period)
    return ((phases.pow(2).mean((1, 2)) + 1e-12) / (hp.pow(2).mean((1, 2)) + 1e-12)).sqrt()


class SharpenModule(L.LightningModule):
    """Decoder (trainable) + frozen encoder and codebooks + patch discriminator; manual optimisation."""

    def __init__(
        self,
        model: dict,
        lr: float,
        adversarial_weight: float,
        adversarial_start: int,
        disc_channels: int,
        disc_layers: int,
        kind: str = "vqvae",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain values only: loads with weights_only=True
        self.automatic_optimization = False
        self.model = VQVAE(VQVAEConfig(**model))
        self.disc = PatchDiscriminator(disc_channels, disc_layers)

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.model.decoder.parameters())

    def on_fit_start(self) -> None:
        self.model.requires_grad_(False)
        self.model.decoder.requires_grad_(True)

    def _decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.model.eval()  # frozen quantisers must not update their EMA codebooks
            top, codes = self.model.encode_levels(x)
            return self.model.decoder_input(codes, top)

    def _last_layer_grad_norm(self, loss: torch.Tensor) -> torch.Tensor:
        """The norm of ``loss``'s gradient at the decoder's last layer."""
        last = self.model.decoder.last_layer.weight
        return torch.autograd.grad(loss, last, retain_graph=True)[0].norm()

    def _adaptive(self, rec_norm: torch.Tensor, term: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale`` x the ratio of the reconstruction loss's gradient norm (``rec_norm``) to
        ``term``'s at the decoder's last layer (VQGAN's adaptive weight), detached."""
        return (rec_norm / (self._last_layer_grad_norm(term) + 1e-4)).clamp(0, 1e4).detach() * scale

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        opt_g, opt_d = self.optimizers()
        x = batch["image"]
        self.model.decoder.train()
        rec = self.model.decoder(self._decoder_input(x)).float()
        l1 = F.l1_loss(rec, x.float())
        adv = -self.disc(rec).float().mean()
        weight = torch.zeros((), device=x.device)
        h = self.hparams
        if h.adversarial_weight > 0 and self.trainer.fit_loop.total_batch_idx >= h.adversarial_start:
            weight = self._adaptive(self._last_layer_grad_norm(l1), adv, h.adversarial_weight)
        loss_g = l1 + weight * adv
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        real, fake = self.disc(x).float(), self.disc(rec.detach()).float()
        loss_d = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.log_dict(
            {
                "train/l1": l1,
                "train/adversarial": adv,
                "train/adaptive_weight": weight,
                "train/disc": loss_d,
            },
            on_step=True,
            on_epoch=True,
            batch_size=len(x),
        )
        self.log("loss", loss_g, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return {"loss": (loss_g + loss_d).detach()}  # checked for NaN by FiniteLossGuard

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch["image"]
        rec = self.model.decoder(self._decoder_input(x)).float().clamp(0, 1)
        ratio = detail_energy(rec).sum() / detail_energy(x.float()).sum().clamp_min(1e-8)
        logs = {
            "val/ssim": ssim_fn(rec, x, data_range=1.0),
            "val/l1": F.l1_loss(rec, x),
            "val/detail_ratio": ratio,
            "val/detail_gap": (ratio - 1).abs(),
            "val/grid": grid_pattern(rec).mean(),
        }
        self.log_dict(logs, on_epoch=True, batch_size=len(x), sync_dist=True)
        self.log("val_ssim", logs["val/ssim"], prog_bar=True, on_epoch=True, batch_size=len(x), logger=False)
        self.log("detail", ratio, prog_bar=True, on_epoch=True, batch_size=len(x), logger=False)

    def configure_optimizers(self):  # noqa: D102
        lr = self.hparams.lr
        return (
            torch.optim.Adam(self.trainable(), lr=lr, betas=(0.5, 0.9)),
            torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.9)),
        )


def _check_resume_removed(ckpt: str | Path | None) -> None:
    """Refuse to resume a checkpoint of a run that used an option removed after brainvq commit
    4f37c69 (``SharpenConfig.REMOVED_FIELDS``): a weight average (the checkpoint's ``state_dict``
    holds the averaged weights), feature matching or the grid penalty."""
    if ckpt is None:
        return
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    used = ["weight_average_decay"] if "current_model_state" in saved else []
    hparams = saved.get("hyper_parameters", {})
    used += [k for k, (off, _) in SharpenConfig.REMOVED_FIELDS.items() if hparams.get(k, off) != off]
    if used:
        raise ConfigError(
            f"{ckpt}: saved by a run with {', '.join(used)}, which brainvq no longer has (commit 4f37c69 "
            "does); train into a new --out"
        )


def train_sharpen(cfg: SharpenConfig, resume: bool | str | None = None) -> dict:
    """Fine-tune the decoder of ``cfg.vqvae``; export ``vqvae.safetensors`` (same architecture, same
    codes) from the epoch whose reconstructions' fine detail is closest to the real slices'."""
    cfg.validate()
    out = Path(cfg.out_dir)
    ckpt = resume_path(out, resume)
    _check_resume_removed(ckpt)  # before anything in ``out`` changes
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    base = load_vqvae(cfg.vqvae)
    if base.config.image_size != cfg.data.image_size:
        raise ConfigError(
            f"{cfg.vqvae}: VQ-VAE is for {base.config.image_size}px slices but the data is {cfg.data.image_size}px"
        )
    t = cfg.trainer
    train_dl, val_dl = slice_loaders(cfg.data, t, cfg.flip, progress=t.progress)
    write_run_config(out, cfg)
    model_cfg = to_plain(base.config)
    if cfg.refine_channels and not base.config.refine_channels:
        model_cfg["refine_channels"] = cfg.refine_channels  # a new, zero-initialised refiner
    module = SharpenModule(
        model_cfg, t.lr, cfg.adversarial_weight, cfg.adversarial_start, cfg.disc_channels, cfg.disc_layers
    )
    missing, unexpected = module.model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("decoder.refine.") for k in missing):
        raise ConfigError(f"{cfg.vqvae}: weights do not fit the model to sharpen ({(missing + unexpected)[:3]})")
    trainer = build_trainer(t, out, monitor="val/detail_gap", mode="min")
    t0 = time.time()
    trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt, weights_only=True)
    wall = time.time() - t0
    summary = {
        "out_dir": str(out),
        "sharpened_from": cfg.vqvae,
        "wall_seconds": wall,
        **schedule_report(trainer, t, "Decoder sharpening", steps_per_batch=2),  # decoder + discriminator
    }
    if trainer.is_global_zero:
        score = restore_best(trainer, module)
        weights = save_weights(module.model, out / "vqvae.safetensors", "vqvae", model_cfg)
        summary.update(weights=str(weights), best_val_detail_gap=score)
        write_json(out / "train_summary.json", summary)
    return summary
