"""Training glue shared by the VQ-VAE and the prior: run folders, configs, Lightning trainer."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from brainvq.checkpoint import load_training_checkpoint
from brainvq.errors import ConfigError
from brainvq.io import atomic_write, remove_stale_temp_files, to_plain
from brainvq.runtime import PRECISIONS, cpu_info, keep_freed_memory, resolve_precision

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainerConfig:
    """Loop settings common to every model (hardware, duration, precision, seed)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    max_minutes: float | None = None  # stop after this wall time (checkpoint kept)
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = "auto"  # e.g. 1, 2, "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. ddp; on CPU with devices=2: ddp with gloo
    # auto (bf16-mixed on CPUs with bf16 units and bf16-capable GPUs, else 32-true; see
    # brainvq.runtime.resolve_precision) | 32-true | bf16-mixed | 16-mixed | bf16-true
    precision: str = "auto"
    num_workers: int = 0
    threads: int | None = None  # torch intra-op threads on CPU (None: torch default)
    progress: bool = True

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")


def precision_record(cfg: TrainerConfig) -> dict:
    """The precision a run asked for (e.g. ``auto``) and the one it trains in."""
    return {"requested": cfg.precision, "resolved": resolve_precision(cfg.precision, cfg.accelerator)}


def write_run_config(out_dir: Path, config: Any, name: str = "config.yaml") -> Path:
    """Record the full config (with seed) and the environment beside the run's outputs; a
    config with a :class:`TrainerConfig` (``config.trainer``) also records its precision,
    requested and resolved (:func:`precision_record`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = config if isinstance(config, TrainerConfig) else getattr(config, "trainer", None)
    environment = {
        "torch": str(torch.__version__),
        "lightning": str(L.__version__),
        "cuda": torch.cuda.is_available(),
        "cpu": cpu_info(),
        **({"precision": precision_record(trainer)} if isinstance(trainer, TrainerConfig) else {}),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    doc = {"config": to_plain(config), "environment": environment}
    path = out_dir / name
    atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(doc, sort_keys=False)))
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: a kill mid-write
    never leaves a truncated ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class FiniteLossGuard(Callback):
    """Stop the run with a clear message on a NaN/inf training loss (checkpoints stay as they were)."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"training loss became {float(loss)} at epoch {trainer.current_epoch}, batch {batch_idx}; "
                "stopped. The last good checkpoint is kept; try a lower --lr or fp32 precision."
            )


class RandomStateCheckpoint(Callback):
    """Keep torch's random state in the checkpoint and restore it on resume, so a resumed run
    draws the same shuffles, flips and codebook restarts as a run that was never stopped
    (``seed_everything`` alone would restart the random stream from the seed)."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "torch" in state_dict:
            torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def planned_steps(trainer: L.Trainer, epochs: int, steps_per_batch: int = 1) -> int:
    """Optimiser steps that ``epochs`` epochs take on this rank (DDP shards the training loader,
    so a rank runs ``1 / world size`` of its batches); ``steps_per_batch`` counts each optimiser
    a manually optimised module steps per batch."""
    return epochs * int(trainer.num_training_batches) * steps_per_batch


def schedule_report(
    trainer: L.Trainer, cfg: TrainerConfig, what: str, steps_per_batch: int = 1, cap: str = "--max-minutes"
) -> dict:
    """Whether the planned schedule ran to its end; warns clearly when the time cap (the option
    ``cap``) cut it short. Call after ``trainer.fit``."""
    planned = planned_steps(trainer, cfg.epochs, steps_per_batch)
    done = trainer.global_step >= planned
    # epochs as steps run over steps per epoch: a run cut inside an epoch reads e.g. 3.46 of 4
    epochs_run = round(trainer.global_step * cfg.epochs / max(1, planned), 2)
    report = {
        "planned_epochs": cfg.epochs,
        "epochs_run": epochs_run,
        "planned_steps": planned,
        "steps_run": trainer.global_step,
        "schedule_completed": done,
    }
    if not done:
        report["warning"] = (
            f"{what} training was cut short after {trainer.global_step} of {planned} steps "
            f"({epochs_run:g} of {cfg.epochs} epochs) by {cap} {cfg.max_minutes:g}; "
            "quality is below what the planned schedule would reach"
        )
        log.warning(report["warning"])
        if trainer.is_global_zero:
            print(f"WARNING: {report['warning']}", file=sys.stderr)
    return report


def restore_best(trainer: L.Trainer, module: L.LightningModule) -> float | None:
    """Load the best checkpoint's weights (if one was saved) into ``module``; its monitored score."""
    best = trainer.checkpoint_callback.best_model_path
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    score = trainer.checkpoint_callback.best_model_score
    return None if score is None else float(score)


def build_trainer(
    cfg: TrainerConfig, out_dir: Path, monitor: str, mode: str, extra_callbacks: list[Callback] | None = None
) -> L.Trainer:
    """A Lightning trainer with best/last checkpoints, CSV + TensorBoard logs and progress bars
    (``extra_callbacks`` run before the checkpoint callbacks, so their state is saved with them).
    It trains in ``cfg.precision`` resolved by :func:`~brainvq.runtime.resolve_precision`."""
    cfg.validate()
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    if precision != cfg.precision:
        log.info("precision %s: training in %s", cfg.precision, precision)
    keep_freed_memory()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for stale in remove_stale_temp_files(out_dir / "checkpoints"):
        log.info("removed %s, left by a run that was killed while saving", stale)
    best = ModelCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # last.ckpt from its own unmonitored callback: Lightning's save_last=True only rewrites it
    # in epochs where the monitored metric improved, so --resume would restart from the last
    # improvement rather than the latest epoch
    last = ModelCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="last",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        best,
        last,
        FiniteLossGuard(),
        RandomStateCheckpoint(),
        TrainingClock(),
        *(extra_callbacks or []),
    ]  # best first: trainer.checkpoint_callback
    if cfg.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, 10)))
    loggers = [CSVLogger(out_dir, name="logs", version="")]
    try:
        loggers.append(TensorBoardLogger(out_dir, name="tb", version="", default_hp_metric=False))
    except ModuleNotFoundError:  # tensorboard is optional
        pass
    return L.Trainer(
        max_epochs=cfg.epochs,
        # Lightning's Timer: checked after every step, so a long epoch cannot overrun the budget
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=precision,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=out_dir,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        plugins=[AtomicCheckpointIO()],
        deterministic=False,
        num_sanity_val_steps=0,
    )


def names_checkpoint(resume: bool | str | None) -> bool:
    """Whether ``--resume`` was given a checkpoint file (rather than "resume from the last one")."""
    return isinstance(resume, str) and resume not in ("auto", "last")


def last_checkpoints(out_dir: str | Path) -> list[Path]:
    """The ``last.ckpt`` files a training run left in ``out_dir`` (or in one of its phase subfolders)."""
    out = Path(out_dir)
    return [p for p in (out / "checkpoints" / "last.ckpt", *out.glob("*/checkpoints/last.ckpt")) if p.is_file()]


def resume_path(out_dir: Path, resume: bool | str | None) -> str | None:
    """``True`` -> the run's ``last.ckpt`` if present; a string -> that file; else None. The file
    is read once here, so that a truncated or corrupt one stops with one line (CheckpointError)."""
    if not resume:
        return None
    if names_checkpoint(resume):
        if not Path(resume).is_file():
            raise ConfigError(f"{resume}: checkpoint to resume from not found")
        path = Path(resume)
    else:
        path = Path(out_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            return None
    load_training_checkpoint(path)
    return str(path)


def cosine_lr(progress: float, step: int, warmup: int = 50) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% as ``progress`` goes 0 -> 1."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, max(0.0, progress))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


class LRSchedule:
    """LambdaLR multiplier whose progress is the larger of steps done / total steps and, when
    a wall-time budget is set, time spent / budget: a run cut short by ``--max-minutes``
    still ends with a decayed learning rate.

    The time spent is :attr:`elapsed`, which :class:`TrainingClock` copies from Lightning's Timer
    (the ``max_time`` guard) before every step. The Timer's clock is saved in checkpoints and a
    resume continues it, so the schedule counts training time only, never the hours between a
    kill and its resume (LambdaLR saves and restores this object's attributes)."""

    def __init__(self, total_steps: int, max_minutes: float | None = None) -> None:
        self.total_steps = max(1, total_steps)
        self.max_seconds = max_minutes * 60 if max_minutes else None
        self.elapsed = 0.0  # seconds of training so far

    def __call__(self, step: int) -> float:
        progress = step / self.total_steps
        if self.max_seconds:
            progress = max(progress, self.elapsed / self.max_seconds)
        return cosine_lr(progress, step)


def scheduled_adamw(module: L.LightningModule, params: Any, fused: bool | None = None) -> dict:
    """What a training module's ``configure_optimizers`` returns: AdamW (weight decay 1e-5) over
    ``params`` at ``hparams.lr``, stepped by an :class:`LRSchedule` over ``hparams.total_steps``
    (per rank once a trainer is attached: DDP shards the training batches) and ``hparams.max_minutes``."""
    hp = module.hparams
    opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=1e-5, fused=fused)
    total = int(module.trainer.estimated_stepping_batches) if module._trainer is not None else hp.total_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(total, hp.max_minutes))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TrainingClock(Callback):
    """Before every training step, gives each :class:`LRSchedule` the training time so far from
    the trainer's Timer (present when ``max_time`` is set)."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:  # noqa: D102
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None:
            return
        elapsed = timer.time_elapsed("train")
        for config in trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", ()):
                if isinstance(schedule, LRSchedule):
                    schedule.elapsed = elapsed
