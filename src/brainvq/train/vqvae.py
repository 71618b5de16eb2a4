"""Training the VQ-VAE with Lightning (``brainvq train-vqvae``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

from brainvq.checkpoint import save_weights
from brainvq.data.dataset import SliceDataset
from brainvq.data.sources import DataConfig, load_split
from brainvq.io import to_plain, write_json
from brainvq.models.vqvae import VQVAE
from brainvq.models.vqvae_config import VQVAEConfig, upgrade_saved_config
from brainvq.train.common import (
    TrainerConfig,
    build_trainer,
    restore_best,
    resume_path,
    schedule_report,
    scheduled_adamw,
    write_run_config,
)


@dataclasses.dataclass
class VQVAETrainConfig:
    """Everything a VQ-VAE run needs; saved as ``config.yaml`` in the run folder."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: VQVAEConfig = dataclasses.field(default_factory=VQVAEConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    out_dir: str = "runs/vqvae"
    flip: bool = True  # random left-right flips


def upgrade_saved_run_config(saved: dict) -> dict:
    """A run's saved :class:`VQVAETrainConfig` dict from an earlier brainvq -> today's fields,
    with the architecture it trained (so ``--config ... --resume`` fits its checkpoint)."""
    if isinstance(saved.get("model"), dict):
        return {**saved, "model": upgrade_saved_config(saved["model"])}
    return saved


class VQVAEModule(L.LightningModule):
    """Trains the VQ-VAE on its own loss (:meth:`~brainvq.models.vqvae.VQVAE.loss_terms`); logs
    SSIM, PSNR, codebook usage and perplexity."""

    def __init__(
        self,
        model: dict,
        lr: float,
        total_steps: int,
        max_minutes: float | None = None,
        kind: str = "vqvae",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts/numbers only: loads with weights_only=True
        self.model = VQVAE(VQVAEConfig(**model))
        self._train_usage: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor):  # noqa: D102
        return self.model(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        out = self.model(x, with_loss=True)
        loss, terms = out.loss, out.losses
        logs = {"train/mse": terms["mse"], "train/batch_perplexity": out.perplexity}
        if "top_preview_mse" in terms:
            logs.update(
                {"train/top_preview_mse": terms["top_preview_mse"], "train/top_batch_perplexity": out.top_perplexity}
            )
        self.log_dict(
            {"train/loss": loss, **logs},
            prog_bar=False,
            on_step=True,
            on_epoch=True,
            batch_size=len(x),
        )
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def _quantizers(self) -> dict[str, torch.nn.Module]:
        """Log-name prefix -> quantiser ("" for the bottom level, "top_" for the top level)."""
        q = {"": self.model.quantizer}
        if self.model.config.hierarchical:
            q["top_"] = self.model.top_quantizer
        return q

    def on_train_epoch_start(self) -> None:
        for q in self._quantizers().values():
            q.reset_usage()

    def on_train_epoch_end(self) -> None:
        for prefix, q in self._quantizers().items():
            stats = q.usage_stats()
            self.log_dict(
                {f"train/{prefix}codebook_usage": stats["usage"], f"train/{prefix}perplexity": stats["perplexity"]},
                sync_dist=False,
            )

    def on_validation_epoch_start(self) -> None:
        for prefix, q in self._quantizers().items():
            self._train_usage[prefix] = q.usage.clone()
            q.reset_usage()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch["image"]
        out = self.model(x)
        rec = out.reconstruction.float().clamp(0, 1)
        mse = F.mse_loss(rec, x)
        ssim = ssim_fn(rec, x, data_range=1.0)
        self.log_dict(
            {
                "val/mse": mse,
                "val/ssim": ssim,
                "val/psnr": 10 * torch.log10(1 / mse.clamp_min(1e-10)),
            },
            prog_bar=False,
            on_epoch=True,
            batch_size=len(x),
            sync_dist=True,
        )
        self.log(
            "val_ssim",
            ssim,
            prog_bar=True,
            on_epoch=True,
            batch_size=len(x),
            sync_dist=True,
            logger=False,
        )

    def on_validation_epoch_end(self) -> None:
        for prefix, q in self._quantizers().items():
            stats = q.usage_stats()
            self.log_dict(
                {f"val/{prefix}codebook_usage": stats["usage"], f"val/{prefix}perplexity": stats["perplexity"]}
            )
            if not prefix:
                self.log("usage", stats["usage"], prog_bar=True, logger=False)
            if prefix in self._train_usage:
                q.usage.copy_(self._train_usage[prefix])

    def configure_optimizers(self):  # noqa: D102
        return scheduled_adamw(self, self.model.parameters())


def slice_loaders(
    data: DataConfig, t: TrainerConfig, flip: bool, progress: bool = True
) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled, optionally flipped) and validation loaders of image slices."""
    train = load_split(data, "train", progress=progress)
    val = load_split(data, "validate", progress=progress)
    kw = {"num_workers": t.num_workers, "persistent_workers": t.num_workers > 0}
    return (
        DataLoader(
            SliceDataset(train, flip=flip),
            batch_size=t.batch_size,
            shuffle=True,
            drop_last=len(train) > t.batch_size,
            **kw,
        ),
        DataLoader(SliceDataset(val), batch_size=t.batch_size * 2, shuffle=False, **kw),
    )


def vqvae_loaders(cfg: VQVAETrainConfig, progress: bool = True) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled, flipped) and validation loaders; the model's image size follows the data's."""
    if cfg.model.image_size != cfg.data.image_size:
        cfg.model = dataclasses.replace(cfg.model, image_size=cfg.data.image_size)
    return slice_loaders(cfg.data, cfg.trainer, cfg.flip, progress)


def train_vqvae(cfg: VQVAETrainConfig, resume: bool | str | None = None) -> dict:
    """Train, keep the best checkpoint by validation SSIM, export ``vqvae.safetensors``.

    Returns a summary (paths, wall time, best validation SSIM).
    """
    out = Path(cfg.out_dir)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    train_dl, val_dl = vqvae_loaders(cfg, progress=cfg.trainer.progress)
    write_run_config(out, cfg)
    total = cfg.trainer.epochs * len(train_dl)
    module = VQVAEModule(to_plain(cfg.model), cfg.trainer.lr, total, cfg.trainer.max_minutes)
    module.model.to(memory_format=torch.channels_last)
    trainer = build_trainer(cfg.trainer, out, monitor="val/ssim", mode="max")
    t0 = time.time()
    trainer.fit(module, train_dl, val_dl, ckpt_path=resume_path(out, resume), weights_only=True)
    wall = time.time() - t0
    summary = {"out_dir": str(out), "wall_seconds": wall, **schedule_report(trainer, cfg.trainer, "VQ-VAE")}
    if trainer.is_global_zero:
        score = restore_best(trainer, module)
        weights = save_weights(module.model, out / "vqvae.safetensors", "vqvae", to_plain(cfg.model))
        summary.update(weights=str(weights), best_val_ssim=score)
        write_json(out / "train_summary.json", summary)
    return summary
