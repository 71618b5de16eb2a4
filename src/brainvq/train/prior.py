"""Training the PixelCNN prior on the VQ-VAE's code grids (``brainvq train-prior``)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from brainvq.checkpoint import atomic_write, load_vqvae, save_weights
from brainvq.data.dataset import as_tensor
from brainvq.data.errors import CheckpointError
from brainvq.data.sources import DataConfig, load_split
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.vqvae import VQVAE
from brainvq.train.common import (
    LRSchedule,
    TrainerConfig,
    build_trainer,
    resume_path,
    to_plain,
    write_json,
    write_run_config,
)


@dataclasses.dataclass
class PriorTrainConfig:
    """A prior run: which VQ-VAE, which data, which PixelCNN; saved as ``config.yaml``."""

    vqvae: str = "runs/vqvae/vqvae.safetensors"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: PixelCNNConfig = dataclasses.field(default_factory=PixelCNNConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(epochs=20, batch_size=16, lr=3e-3))
    out_dir: str = "runs/prior"
    flip: bool = True  # also train on the codes of left-right flipped slices (brains are near-symmetric)


@dataclasses.dataclass
class CodeSet:
    """The code grids of one split with the slice positions the prior conditions on."""

    codes: torch.Tensor  # (N,h,w) int64
    positions: torch.Tensor  # (N,) float32


@torch.no_grad()
def encode_split(
    vqvae: VQVAE,
    data: DataConfig,
    split: str,
    *,
    flip: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> CodeSet:
    """Encode a whole split with the frozen VQ-VAE (eval mode: the codebook never changes)."""
    vqvae.eval()
    sl = load_split(data, split, progress=progress)
    images = as_tensor(sl)
    if flip:
        images = torch.cat([images, images.flip(-1)])
    positions = torch.from_numpy(np.asarray(sl.positions, dtype=np.float32))
    positions = torch.cat([positions, positions]) if flip else positions
    device = next(vqvae.parameters()).device
    codes = [
        vqvae.encode(images[i : i + batch_size].to(device)).cpu()
        for i in tqdm(
            range(0, len(images), batch_size),
            desc=f"encode {split}",
            disable=not progress,
            leave=False,
        )
    ]
    return CodeSet(torch.cat(codes), positions)


def cached_codes(
    vqvae_path: Path,
    data: DataConfig,
    split: str,
    cache_dir: Path,
    *,
    flip: bool = False,
    progress: bool = True,
) -> CodeSet:
    """:func:`encode_split`, cached as ``codes_{split}.pt`` keyed by the VQ-VAE file and data root."""
    stat = Path(vqvae_path).stat()
    key = f"{Path(vqvae_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{Path(data.root).resolve()}|{data.image_size}|{flip}"
    path = Path(cache_dir) / f"codes_{split}{'_flip' if flip else ''}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                return CodeSet(blob["codes"], blob["positions"])
        except Exception:  # noqa: BLE001 - a bad cache is simply rebuilt
            pass
    vqvae = load_vqvae(vqvae_path, "cuda" if torch.cuda.is_available() else "cpu")
    codes = encode_split(vqvae, data, split, flip=flip, progress=progress)
    atomic_write(
        path,
        lambda tmp: torch.save({"key": key, "codes": codes.codes, "positions": codes.positions}, tmp),
    )
    return codes


class PriorModule(L.LightningModule):
    """Cross-entropy over K codes; logs bits per code on validation and test codes."""

    def __init__(
        self,
        model: dict,
        lr: float,
        total_steps: int,
        max_minutes: float | None = None,
        kind: str = "prior",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = GatedPixelCNN(PixelCNNConfig(**model))

    def _bits(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        codes, pos = batch
        logits = self.model(codes, pos if self.model.config.conditional else None)
        return F.cross_entropy(logits.float(), codes) / math.log(2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        bits = self._bits(batch)
        self.log(
            "train/bits_per_code",
            bits,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch[0]),
        )
        return bits * math.log(2)  # nats: the usual cross-entropy scale for the optimiser

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        name = ("val", "test")[dataloader_idx]
        bits = self._bits(batch)
        n = batch[0][0].numel()
        self.log(
            f"{name}/bits_per_code",
            bits,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch[0]),
            sync_dist=True,
            add_dataloader_idx=False,
        )
        self.log(
            f"{name}/bits_per_image",
            bits * n,
            on_epoch=True,
            batch_size=len(batch[0]),
            sync_dist=True,
            add_dataloader_idx=False,
        )

    def configure_optimizers(self):  # noqa: D102
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr, weight_decay=1e-5)
        total = self.hparams.total_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(total, self.hparams.max_minutes))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_prior(cfg: PriorTrainConfig, resume: bool | str | None = None) -> dict:
    """Encode all splits once, train the prior on the whole training split, export weights."""
    out = Path(cfg.out_dir)
    if not Path(cfg.vqvae).is_file():
        raise CheckpointError(f"{cfg.vqvae}: VQ-VAE weights not found (train one with `brainvq train-vqvae`)")
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    prog = cfg.trainer.progress
    train = cached_codes(Path(cfg.vqvae), cfg.data, "train", out / "codes", flip=cfg.flip, progress=prog)
    val = cached_codes(Path(cfg.vqvae), cfg.data, "validate", out / "codes", progress=prog)
    test = cached_codes(Path(cfg.vqvae), cfg.data, "test", out / "codes", progress=prog)
    vq_cfg = load_vqvae(cfg.vqvae).config
    cfg.model = dataclasses.replace(cfg.model, num_codes=vq_cfg.num_codes, grid_size=vq_cfg.grid_size)
    write_run_config(out, cfg)
    t = cfg.trainer
    kw = {"num_workers": t.num_workers, "persistent_workers": t.num_workers > 0}
    train_dl = DataLoader(
        TensorDataset(train.codes, train.positions),
        batch_size=t.batch_size,
        shuffle=True,
        drop_last=len(train.codes) > t.batch_size,
        **kw,
    )
    eval_dls = [DataLoader(TensorDataset(s.codes, s.positions), batch_size=t.batch_size * 2, **kw) for s in (val, test)]
    module = PriorModule(to_plain(cfg.model), t.lr, t.epochs * len(train_dl), t.max_minutes)
    trainer = build_trainer(t, out, monitor="val/bits_per_code", mode="min")
    t0 = time.time()
    trainer.fit(module, train_dl, eval_dls, ckpt_path=resume_path(out, resume), weights_only=True)
    summary = {
        "out_dir": str(out),
        "wall_seconds": time.time() - t0,
        "epochs_run": trainer.current_epoch,
        "n_train_codes": len(train.codes),
        "n_val_codes": len(val.codes),
        "n_test_codes": len(test.codes),
    }
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path
        if best:
            module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        module.model.eval()
        with torch.no_grad():
            bits = torch.cat(
                [
                    module.model.nll_bits(c, p if module.model.config.conditional else None)
                    for c, p in zip(test.codes.split(128), test.positions.split(128), strict=True)
                ]
            )
        summary.update(
            weights=str(save_weights(module.model, out / "prior.safetensors", "prior", to_plain(cfg.model))),
            test_bits_per_code=float(bits.mean()),
            test_bits_per_image=float(bits.mean() * test.codes[0].numel()),
        )
        write_json(out / "train_summary.json", summary)
    return summary
