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
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from brainvq.checkpoint import atomic_write, load_vqvae, save_weights
from brainvq.data.dataset import as_tensor
from brainvq.data.errors import CheckpointError, ConfigError
from brainvq.data.sources import DataConfig, load_split
from brainvq.models.conditioning import ScaleDistribution, intensity_scale, slice_conditions
from brainvq.models.hierarchical import (
    HierarchicalPriorConfig,
    Prior,
    is_hierarchical,
    prior_device,
    prior_from_config,
)
from brainvq.models.pixelcnn import PixelCNNConfig
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.train.common import (
    LRSchedule,
    TrainerConfig,
    build_trainer,
    restore_best,
    resume_path,
    schedule_report,
    to_plain,
    write_json,
    write_run_config,
)


@dataclasses.dataclass
class PriorTrainConfig:
    """A prior run: which VQ-VAE, which data, which PixelCNN; saved as ``config.yaml``."""

    vqvae: str = "runs/vqvae/vqvae.safetensors"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: PixelCNNConfig = dataclasses.field(default_factory=PixelCNNConfig)  # a single-level VQ-VAE's prior
    # a two-level VQ-VAE's priors (code counts and grids are filled in from the VQ-VAE)
    # the top level is also conditioned on the slice's intensity scale (README, "Conditioning the
    # prior on the intensity scale"); the bottom level and a single-level prior are not (not measured)
    top_model: PixelCNNConfig = dataclasses.field(
        default_factory=lambda: PixelCNNConfig(hidden=64, n_layers=8, kernel_size=5, scale_conditional=True)
    )
    bottom_model: PixelCNNConfig = dataclasses.field(
        default_factory=lambda: PixelCNNConfig(hidden=32, n_layers=4, kernel_size=3)
    )
    trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(epochs=20, batch_size=16, lr=3e-3))
    out_dir: str = "runs/prior"
    flip: bool = True  # also train on the codes of left-right flipped slices (brains are near-symmetric)
    # which weights to keep: "last" (the end of the schedule) or "best" (each level at its lowest
    # validation bits). "last" because the lowest-bits top level drew worse anatomy (README, "Which
    # epoch of the prior to keep"): its validation bits rise from epoch ~6 while its samples improve.
    keep: str = "last"

    def uses_intensity_scale(self, vq_cfg: VQVAEConfig) -> bool:
        """Whether a level of the prior for this VQ-VAE is conditioned on the slice's intensity scale."""
        if not vq_cfg.hierarchical:
            return self.model.scale_conditional
        return self.top_model.scale_conditional or self.bottom_model.scale_conditional

    def validate(self) -> None:
        if self.keep not in KEEP_CHOICES:
            raise ConfigError(f"keep must be one of {', '.join(KEEP_CHOICES)}, got {self.keep!r}")


KEEP_CHOICES = ("last", "best")
CODE_CACHE_FORMAT = "codes-2"  # 2: with intensity scales; older caches are rebuilt


@dataclasses.dataclass
class CodeSet:
    """The code grids of one split with what the prior conditions on (slice positions, intensity scales)."""

    codes: torch.Tensor  # (N,h,w) int64 (the bottom level of a two-level VQ-VAE)
    positions: torch.Tensor  # (N,) float32
    top: torch.Tensor | None = None  # (N,ht,wt) int64 top-level codes of a two-level VQ-VAE
    scales: torch.Tensor | None = None  # (N,) float32 intensity scales (models.conditioning.intensity_scale)

    def conditions(self) -> torch.Tensor:
        """(N,) positions, or (N,2) (position, intensity scale) rows when the scales are known."""
        return slice_conditions(self.positions, self.scales)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(codes, conditions[, top]): what a training batch holds."""
        cond = self.conditions()
        return (self.codes, cond) if self.top is None else (self.codes, cond, self.top)


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
    positions = torch.from_numpy(np.asarray(sl.positions, dtype=np.float32))
    scales = intensity_scale(images)
    if flip:  # a mirror image has the same position and the same scale
        images = torch.cat([images, images.flip(-1)])
        positions, scales = torch.cat([positions, positions]), torch.cat([scales, scales])
    device = next(vqvae.parameters()).device
    tops, codes = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=f"encode {split}", disable=not progress, leave=False):
        top, bottom = vqvae.encode_levels(images[i : i + batch_size].to(device))
        codes.append(bottom.cpu())
        if top is not None:
            tops.append(top.cpu())
    return CodeSet(torch.cat(codes), positions, torch.cat(tops) if tops else None, scales)


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
    key = (
        f"{CODE_CACHE_FORMAT}|{Path(vqvae_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|"
        f"{Path(data.root).resolve()}|{data.image_size}|{flip}"
    )
    path = Path(cache_dir) / f"codes_{split}{'_flip' if flip else ''}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                return CodeSet(blob["codes"], blob["positions"], blob.get("top"), blob["scales"])
        except Exception:  # noqa: BLE001 - a bad cache is simply rebuilt
            pass
    vqvae = load_vqvae(vqvae_path, "cuda" if torch.cuda.is_available() else "cpu")
    codes = encode_split(vqvae, data, split, flip=flip, progress=progress)
    atomic_write(
        path,
        lambda tmp: torch.save(
            {"key": key, **{f.name: getattr(codes, f.name) for f in dataclasses.fields(codes)}}, tmp
        ),
    )
    return codes


def prior_bits(m: Prior, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """Mean bits per code of a batch (codes, conditions[, top]) as :meth:`CodeSet.tensors` gives it:
    ``loss`` (what is optimised) and the values to log. For a two-level prior ``loss`` is the sum of
    both levels' mean bits per code and ``bits_per_code`` the total bits per image over the number
    of bottom codes."""
    codes, cond = batch[0], batch[1]  # cond: positions (B,) or (position, intensity scale) rows (B,2)
    cond = cond if m.config.conditional else None
    if not is_hierarchical(m):
        bits = F.cross_entropy(m(codes, cond).float(), codes) / math.log(2)
        return {"loss": bits, "bits_per_code": bits, "bits_per_image": bits * codes[0].numel()}
    top = batch[2]
    top_logits, logits = m(top, codes, cond)
    top_bits = F.cross_entropy(top_logits.float(), top) / math.log(2)
    bottom_bits = F.cross_entropy(logits.float(), codes) / math.log(2)
    image = top_bits * top[0].numel() + bottom_bits * codes[0].numel()
    return {
        "loss": top_bits + bottom_bits,
        "bits_per_code": image / codes[0].numel(),
        "bits_per_image": image,
        "top_bits_per_code": top_bits,
        "bottom_bits_per_code": bottom_bits,
    }


class PriorModule(L.LightningModule):
    """Cross-entropy over K codes; logs bits per code on validation and test codes.

    For a two-level prior the loss is the sum of both levels' mean bits per code, and
    ``bits_per_code`` is the total bits per image divided by the number of bottom codes (so it
    compares directly with a single-level prior on the same bottom grid)."""

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
        self.model = prior_from_config(model)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        bits = prior_bits(self.model, batch)
        self.log(
            "train/bits_per_code",
            bits["bits_per_code"],
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch[0]),
        )
        for name in ("top_bits_per_code", "bottom_bits_per_code"):
            if name in bits:
                self.log(f"train/{name}", bits[name], on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return bits["loss"] * math.log(2)  # nats: the usual cross-entropy scale for the optimiser

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        split = ("val", "test")[dataloader_idx]
        bits = prior_bits(self.model, batch)
        for name, value in bits.items():
            if name == "loss":
                continue
            self.log(
                f"{split}/{name}",
                value,
                on_epoch=True,
                prog_bar=name == "bits_per_code",
                batch_size=len(batch[0]),
                sync_dist=True,
                add_dataloader_idx=False,
            )

    def configure_optimizers(self):  # noqa: D102
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr, weight_decay=1e-5)
        total = self.hparams.total_steps
        if self._trainer is not None:  # per rank: DDP shards the training batches
            total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(total, self.hparams.max_minutes))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class BestPerLevel(Callback):
    """Tracks each level of a two-level prior at its own best validation epoch (``keep="best"``
    loads them; ``"last"``, the default, only reports them).

    The top PixelCNN's validation bits are lowest after a few epochs (on the OASIS-1 subset at
    epoch 6-8 of 20) while the bottom one still improves at the end, so one checkpoint chosen by
    the total would mix the two. The states are saved in the training checkpoints, so
    ``--resume`` keeps them."""

    LEVELS = ("top", "bottom")

    def __init__(self) -> None:
        self.best: dict[str, dict] = {}  # level -> {"bits", "epoch", "state"}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for level in self.LEVELS:
            value = trainer.callback_metrics.get(f"val/{level}_bits_per_code")
            if value is None:
                continue
            if level not in self.best or float(value) < self.best[level]["bits"]:
                state = getattr(pl_module.model, level).state_dict()
                self.best[level] = {
                    "bits": float(value),
                    "epoch": trainer.current_epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in state.items()},
                }

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best", {})

    def info(self) -> dict:
        """Each level's best epoch and its validation bits."""
        out = {}
        for level, best in self.best.items():
            out[f"{level}_best_epoch"] = best["epoch"]
            out[f"{level}_best_val_bits_per_code"] = best["bits"]
        return out

    def restore(self, prior: Prior) -> dict:
        """Load each level's best state into ``prior``; returns :meth:`info`."""
        if not is_hierarchical(prior):
            return {}
        for level, best in self.best.items():
            getattr(prior, level).load_state_dict(best["state"])
        return self.info()


def keep_weights(keep: str, trainer: L.Trainer, module: PriorModule, per_level: BestPerLevel) -> dict:
    """Leave ``module`` at the end of training (``keep="last"``) or load each level's best
    validation state into it (``"best"``); what was kept, and each level's best epoch."""
    if keep == "best":
        restore_best(trainer, module)
        return {"kept": "best", **per_level.restore(module.model)}
    return {"kept": "last", **per_level.info()}  # empty for a single-level prior: nothing was tracked


def prior_config_for(
    cfg: PriorTrainConfig, vq_cfg: VQVAEConfig, scales: ScaleDistribution | None = None
) -> PixelCNNConfig | HierarchicalPriorConfig:
    """The prior architecture for this VQ-VAE: code counts and grids taken from it; every level
    conditioned on the intensity scale gets ``scales`` (the training slices' scales)."""

    def fitted(level: PixelCNNConfig) -> PixelCNNConfig:
        if not level.scale_conditional:
            return level
        if scales is None:
            raise ConfigError("a prior conditioned on the intensity scale needs the training slices' scales")
        return dataclasses.replace(level, scale_distribution=scales.to_dict())

    if not vq_cfg.hierarchical:
        return fitted(dataclasses.replace(cfg.model, num_codes=vq_cfg.num_codes, grid_size=vq_cfg.grid_size))
    return HierarchicalPriorConfig(
        top=fitted(
            dataclasses.replace(
                cfg.top_model, num_codes=vq_cfg.top_num_codes, grid_size=vq_cfg.top_grid_size, top_codes=0, top_grid=0
            )
        ),
        bottom=fitted(
            dataclasses.replace(
                cfg.bottom_model,
                num_codes=vq_cfg.num_codes,
                grid_size=vq_cfg.grid_size,
                top_codes=vq_cfg.top_num_codes,
                top_grid=vq_cfg.top_grid_size,
            )
        ),
    )


@torch.no_grad()
def code_set_bits(prior: Prior, codes: CodeSet, batch_size: int = 128) -> dict[str, float]:
    """Mean bits per code (and per image; per level for a two-level prior) of a whole code set."""
    prior.eval()
    device = prior_device(prior)
    sums: dict[str, float] = {}
    for batch in zip(*(t.split(batch_size) for t in codes.tensors()), strict=True):
        bits = prior_bits(prior, tuple(t.to(device) for t in batch))
        for k, v in bits.items():
            if k != "loss":
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch[0])
    return {k: v / len(codes.codes) for k, v in sums.items()}


def train_prior(cfg: PriorTrainConfig, resume: bool | str | None = None) -> dict:
    """Encode all splits once, train the prior on the whole training split, export weights."""
    cfg.validate()
    out = Path(cfg.out_dir)
    if not Path(cfg.vqvae).is_file():
        raise CheckpointError(f"{cfg.vqvae}: VQ-VAE weights not found (train one with `brainvq train-vqvae`)")
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    prog = cfg.trainer.progress
    train = cached_codes(Path(cfg.vqvae), cfg.data, "train", out / "codes", flip=cfg.flip, progress=prog)
    val = cached_codes(Path(cfg.vqvae), cfg.data, "validate", out / "codes", progress=prog)
    test = cached_codes(Path(cfg.vqvae), cfg.data, "test", out / "codes", progress=prog)
    vq_cfg = load_vqvae(cfg.vqvae).config
    scales = ScaleDistribution.fit(train.positions, train.scales) if cfg.uses_intensity_scale(vq_cfg) else None
    model_cfg = prior_config_for(cfg, vq_cfg, scales)
    write_run_config(out, cfg)
    t = cfg.trainer
    kw = {"num_workers": t.num_workers, "persistent_workers": t.num_workers > 0}
    train_dl = DataLoader(
        TensorDataset(*train.tensors()),
        batch_size=t.batch_size,
        shuffle=True,
        drop_last=len(train.codes) > t.batch_size,
        **kw,
    )
    eval_dls = [DataLoader(TensorDataset(*s.tensors()), batch_size=t.batch_size * 2, **kw) for s in (val, test)]
    planned_steps = t.epochs * len(train_dl)
    module = PriorModule(to_plain(model_cfg), t.lr, planned_steps, t.max_minutes)
    per_level = BestPerLevel()
    extra = [per_level] if isinstance(model_cfg, HierarchicalPriorConfig) else []
    trainer = build_trainer(t, out, monitor="val/bits_per_code", mode="min", extra_callbacks=extra)
    t0 = time.time()
    trainer.fit(module, train_dl, eval_dls, ckpt_path=resume_path(out, resume), weights_only=True)
    summary = {
        "out_dir": str(out),
        "wall_seconds": time.time() - t0,
        **schedule_report(trainer, t, "prior"),
        "n_train_codes": len(train.codes),
        "n_val_codes": len(val.codes),
        "n_test_codes": len(test.codes),
    }
    if trainer.is_global_zero:
        summary.update(keep_weights(cfg.keep, trainer, module, per_level))
        bits = code_set_bits(module.model, test)
        summary.update(
            weights=str(save_weights(module.model, out / "prior.safetensors", "prior", to_plain(model_cfg))),
            **{f"test_{k}": v for k, v in bits.items()},
        )
        write_json(out / "train_summary.json", summary)
    return summary
