"""Training the PixelCNN prior on the VQ-VAE's code grids (``brainvq train-prior``)."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from brainvq.checkpoint import VQVAE_FINGERPRINT, save_weights
from brainvq.data.sources import DataConfig
from brainvq.errors import CheckpointError, ConfigError
from brainvq.io import to_plain, write_json
from brainvq.models.conditioning import ScaleDistribution
from brainvq.models.hierarchical import (
    BOTTOM_LEVEL,
    TOP_LEVEL,
    HierarchicalPriorConfig,
    Prior,
    prior_config_for_grids,
    prior_from_config,
)
from brainvq.models.levels import Codes, check_level, prior_bits, prior_device
from brainvq.models.pixelcnn import PixelCNNConfig
from brainvq.models.vqvae import VQVAEConfig
from brainvq.models.weights import load_vqvae
from brainvq.train.codes import CodeSet, extract_codes
from brainvq.train.common import (
    TrainerConfig,
    build_trainer,
    names_checkpoint,
    resume_path,
    schedule_report,
    scheduled_adamw,
    write_run_config,
)
from brainvq.train.compiled import CompiledLoss


@dataclasses.dataclass
class PriorTrainConfig:
    """A prior run: which VQ-VAE, which data, which PixelCNN; saved as ``config.yaml``."""

    vqvae: str = "runs/vqvae/vqvae.safetensors"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: PixelCNNConfig = dataclasses.field(default_factory=PixelCNNConfig)  # a single-level VQ-VAE's prior
    # a two-level VQ-VAE's priors (code counts and grids are filled in from the VQ-VAE)
    # the top level is also conditioned on the slice's intensity scale; the bottom level and a
    # single-level prior are not (not measured): docs/experiments/2026-11-26-prior-intensity-scale.md
    # (architectures: brainvq.models.hierarchical.TOP_LEVEL and BOTTOM_LEVEL)
    top_model: PixelCNNConfig = dataclasses.field(
        default_factory=lambda: PixelCNNConfig(**TOP_LEVEL, scale_conditional=True)
    )
    bottom_model: PixelCNNConfig = dataclasses.field(default_factory=lambda: PixelCNNConfig(**BOTTOM_LEVEL))
    trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(epochs=20, batch_size=16, lr=3e-3))
    out_dir: str = "runs/prior"
    flip: bool = True  # also train on the codes of left-right flipped slices (brains are near-symmetric)
    # a two-level prior's top level trained on its own first, for this many epochs (capped at
    # top_max_minutes; trainer.max_minutes caps the bottom level), then the bottom level with
    # ``trainer``; None: both levels together. The top level decides the anatomy and costs about a
    # quarter of a joint step (docs/experiments/2026-11-26-prior-levels-in-turn.md)
    top_epochs: int | None = None
    top_max_minutes: float | None = None
    # torch.compile the training loss (compile time counted in the time caps; eager if it fails):
    # 1.39x the images/s of a joint step on a 2-core CPU, fp32; top level alone 1.18x, bottom
    # level alone 1.43x (docs/benchmarks.md)
    compile: bool = True

    #: the prior keeps the weights at the end of training: each level at its lowest validation
    #: bits (``keep: best``) drew worse anatomy (docs/experiments/2026-11-26-prior-which-epoch-to-keep.md);
    #: an old config.yaml with ``keep: last`` loads, one with ``keep: best`` is refused
    REMOVED_FIELDS: ClassVar[dict] = {"keep": ("last", "the prior keeps the weights at the end of training")}

    def levels(self, vq_cfg: VQVAEConfig) -> dict[str, PixelCNNConfig]:
        """The architecture of each level of the prior for this VQ-VAE (level names as
        :meth:`VQVAEConfig.code_grids`): ``model`` for one level, ``top_model`` and ``bottom_model`` for two."""
        two = {"top": self.top_model, "bottom": self.bottom_model}
        grids = vq_cfg.code_grids()
        return {name: two[name] for name in grids} if len(grids) > 1 else {"bottom": self.model}

    def uses_intensity_scale(self, vq_cfg: VQVAEConfig) -> bool:
        """Whether a level of the prior for this VQ-VAE is conditioned on the slice's intensity scale."""
        return any(level.scale_conditional for level in self.levels(vq_cfg).values())

    def validate(self) -> None:
        if self.top_epochs is not None and self.top_epochs < 1:
            raise ConfigError(
                f"top_epochs must be >= 1 (or unset to train both levels together), got {self.top_epochs}"
            )
        if self.top_max_minutes is not None and self.top_epochs is None:
            raise ConfigError("top_max_minutes needs top_epochs (the top level trained on its own)")
        if self.top_max_minutes is not None and not self.top_max_minutes > 0:
            raise ConfigError(f"top_max_minutes must be > 0, got {self.top_max_minutes}")
        self.trainer.validate()  # before any phase trains: a bad bottom schedule must not wait for the top one

    def phases(self, vq_cfg: VQVAEConfig) -> list[tuple[str, TrainerConfig]]:
        """What trains in turn, each with its schedule: ``[("all", trainer)]`` (every level together),
        or ``[("top", ...), ("bottom", trainer)]`` when a two-level prior's top level has its own."""
        if self.top_epochs is None:
            return [("all", self.trainer)]
        if "top" not in vq_cfg.code_grids():
            raise ConfigError("top_epochs applies to the prior of a two-level VQ-VAE; this VQ-VAE has one level")
        top = dataclasses.replace(self.trainer, epochs=self.top_epochs, max_minutes=self.top_max_minutes)
        return [("top", top), ("bottom", self.trainer)]


def batch_codes(batch: tuple[torch.Tensor, ...]) -> tuple[Codes, torch.Tensor]:
    """A training batch (codes, conditions[, top]) as :meth:`CodeSet.tensors` gives it -> (code grids,
    conditions: positions (B,) or (position, intensity scale) rows (B,2))."""
    return Codes(batch[2] if len(batch) > 2 else None, batch[0]), batch[1]


class PriorModule(L.LightningModule):
    """Cross-entropy over K codes; logs bits per code on validation and test codes.

    For a two-level prior the loss is the sum of both levels' mean bits per code, and
    ``bits_per_code`` is the total bits per image divided by the number of bottom codes (so it
    compares directly with a single-level prior on the same bottom grid). ``level="top"`` or
    ``"bottom"`` trains that level of a two-level prior alone (the other one is frozen); the
    bottom level is always trained on the real top codes, so the levels can train in turn."""

    def __init__(
        self,
        model: dict,
        lr: float,
        total_steps: int,
        max_minutes: float | None = None,
        kind: str = "prior",
        level: str = "all",
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = prior_from_config(model)
        check_level(self.model, level)
        self.loss = CompiledLoss(functools.partial(prior_bits, level=level), self.model, enabled=compile)
        if level != "all":
            frozen = self.model.bottom if level == "top" else self.model.top
            frozen.requires_grad_(False)  # DDP registers trainable parameters only
        self.level = level
        self.monitor = "val/bits_per_code" if level == "all" else f"val/{level}_bits_per_code"

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        bits = self.loss(self.model, *batch_codes(batch))
        shown = self.monitor.removeprefix("val/")  # the bits this phase optimises
        for name in ("bits_per_code", "top_bits_per_code", "bottom_bits_per_code"):
            if name in bits:
                self.log(
                    f"train/{name}",
                    bits[name],
                    on_step=name == shown,
                    on_epoch=True,
                    prog_bar=name == shown,
                    batch_size=len(batch[0]),
                )
        return bits["loss"] * math.log(2)  # nats: the usual cross-entropy scale for the optimiser

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        split = ("val", "test")[dataloader_idx]
        # the bottom level trains after the top one, so the whole prior is measured then
        bits = prior_bits(self.model, *batch_codes(batch), "top" if self.level == "top" else "all")
        for name, value in bits.items():
            if name == "loss":
                continue
            self.log(
                f"{split}/{name}",
                value,
                on_epoch=True,
                prog_bar=f"val/{name}" == self.monitor,
                batch_size=len(batch[0]),
                sync_dist=True,
                add_dataloader_idx=False,
            )

    def configure_optimizers(self):  # noqa: D102
        trained = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one kernel for every parameter (about 5x faster than the loop over them on CPU)
        fused = all(p.device.type in ("cpu", "cuda") for p in trained)
        return scheduled_adamw(self, trained, fused=fused)


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

    levels = {name: fitted(level) for name, level in cfg.levels(vq_cfg).items()}
    return prior_config_for_grids(vq_cfg.code_grids(), levels)


@torch.no_grad()
def code_set_bits(prior: Prior, codes: CodeSet, batch_size: int = 128) -> dict[str, float]:
    """Mean bits per code (and per image; per level for a two-level prior) of a whole code set."""
    prior.eval()
    device = prior_device(prior)
    sums: dict[str, float] = {}
    for batch in zip(*(t.split(batch_size) for t in codes.tensors()), strict=True):
        bits = prior_bits(prior, *batch_codes(tuple(t.to(device) for t in batch)))
        for k, v in bits.items():
            if k != "loss":
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch[0])
    return {k: v / len(codes.codes) for k, v in sums.items()}


def train_prior(cfg: PriorTrainConfig, resume: bool | str | None = None) -> dict:
    """Encode all splits once, train the prior on the whole training split, export weights.

    With ``cfg.top_epochs`` a two-level prior trains in two phases: the top level alone (its
    checkpoints and logs in ``OUT/top``), then the bottom level (in ``OUT``); ``resume`` resumes
    each phase from its own last checkpoint."""
    cfg.validate()
    out = Path(cfg.out_dir)
    if not Path(cfg.vqvae).is_file():
        raise CheckpointError(f"{cfg.vqvae}: VQ-VAE weights not found (train one with `brainvq train-vqvae`)")
    vq_cfg = load_vqvae(cfg.vqvae).config
    phases = cfg.phases(vq_cfg)
    if len(phases) > 1 and names_checkpoint(resume):
        raise ConfigError(
            "a prior trained level by level (top_epochs) resumes each level from its own last checkpoint: "
            "use --resume without a path"
        )
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    prog = cfg.trainer.progress
    codes = extract_codes(cfg.vqvae, cfg.data, out / "codes", flip=cfg.flip, progress=prog)
    train, val, test = codes.train, codes.val, codes.test
    fingerprint = {VQVAE_FINGERPRINT: codes.fingerprint}
    scales = ScaleDistribution.fit(train.positions, train.scales) if cfg.uses_intensity_scale(vq_cfg) else None
    model_cfg = prior_config_for(cfg, vq_cfg, scales)
    write_run_config(out, cfg)
    t0 = time.time()
    state: dict | None = None  # the weights one phase hands to the next
    reports: dict[str, dict] = {}
    for level, t in phases:
        module, trainer, report = train_phase(cfg, model_cfg, level, t, (train, val, test), state, resume)
        reports[level] = report
        state = module.model.state_dict()
    summary = {
        "out_dir": str(out),
        "wall_seconds": time.time() - t0,
        **_merge_phase_reports(reports),
        "n_train_codes": len(train.codes),
        "n_val_codes": len(val.codes),
        "n_test_codes": len(test.codes),
    }
    if trainer.is_global_zero:
        bits = code_set_bits(module.model, test)
        summary.update(
            weights=str(
                save_weights(module.model, out / "prior.safetensors", "prior", to_plain(model_cfg), fingerprint)
            ),
            **{f"test_{k}": v for k, v in bits.items()},
        )
        write_json(out / "train_summary.json", summary)
    return summary


PHASE_NAMES = {"all": "prior", "top": "prior top-level", "bottom": "prior bottom-level"}


def train_phase(
    cfg: PriorTrainConfig,
    model_cfg: PixelCNNConfig | HierarchicalPriorConfig,
    level: str,
    t: TrainerConfig,
    splits: tuple[CodeSet, CodeSet, CodeSet],
    state: dict | None,
    resume: bool | str | None,
) -> tuple[PriorModule, L.Trainer, dict]:
    """One training phase (``level``: "all", "top" or "bottom") with schedule ``t``, starting from
    ``state`` (the previous phase's weights); returns the module, its trainer and the phase's
    schedule report. :func:`train_prior` runs its phases with it; an experiment can train one
    level again from a given state (docs/experiments/scripts-2026-11-30-bottom-level-width/bottom.py)."""
    train, val, test = splits
    where = Path(cfg.out_dir) / ("top" if level == "top" else "")
    kw = {"num_workers": t.num_workers, "persistent_workers": t.num_workers > 0}
    train_dl = DataLoader(
        TensorDataset(*train.tensors()),
        batch_size=t.batch_size,
        shuffle=True,
        drop_last=len(train.codes) > t.batch_size,
        **kw,
    )
    eval_dls = [DataLoader(TensorDataset(*s.tensors()), batch_size=t.batch_size * 2, **kw) for s in (val, test)]
    module = PriorModule(
        to_plain(model_cfg), t.lr, t.epochs * len(train_dl), t.max_minutes, level=level, compile=cfg.compile
    )
    if state is not None:
        module.model.load_state_dict(state)
    trainer = build_trainer(t, where, monitor=module.monitor, mode="min")
    ckpt = resume_path(where, resume)
    if ckpt is not None:
        check_resumable(ckpt, level, state)
    trainer.fit(module, train_dl, eval_dls, ckpt_path=ckpt, weights_only=True)
    cap = "--top-max-minutes" if level == "top" else "--max-minutes"
    report = {**schedule_report(trainer, t, PHASE_NAMES[level], cap=cap), **module.loss.record()}
    if level != "all":  # the level this phase trained: its best validation epoch (from 0) and bits
        best = trainer.checkpoint_callback
        if best.best_model_path:
            report[f"{level}_best_epoch"] = torch.load(best.best_model_path, map_location="cpu", weights_only=True)[
                "epoch"
            ]
        report[f"{level}_best_val_bits_per_code"] = (
            None if best.best_model_score is None else float(best.best_model_score)
        )
    return module, trainer, report


def check_resumable(ckpt: str | Path, level: str, state: dict | None) -> None:
    """Refuse to resume a phase from a checkpoint another kind of run left: one that trained
    another level (e.g. a joint run's checkpoint where the bottom level of a level-by-level run
    resumes), or, for the bottom level, one whose top level is not the one just trained."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    was = saved.get("hyper_parameters", {}).get("level", "all")
    hint = "remove it or train into a new --out"
    if was != level:
        raise ConfigError(
            f"{ckpt}: a checkpoint of the {was!r} training phase cannot resume the {level!r} phase; {hint}"
        )
    if level == "bottom" and state is not None:
        weights = saved["state_dict"]
        for k, v in state.items():
            if k.startswith("top.") and not torch.equal(weights[f"model.{k}"], v.cpu()):
                raise ConfigError(f"{ckpt}: this checkpoint was trained on another top level than this run's; {hint}")


def _merge_phase_reports(reports: dict[str, dict]) -> dict:
    """One schedule report for the summary: the last phase's, with the top phase's under
    ``top_level``, ``schedule_completed`` only when every phase completed, and every warning."""
    last = reports[list(reports)[-1]]
    merged = {k: v for k, v in last.items() if k != "warning"}
    if "top" in reports:
        merged["top_level"] = reports["top"]
        for key in ("top_best_epoch", "top_best_val_bits_per_code"):
            merged[key] = reports["top"].get(key)
    merged["schedule_completed"] = all(r["schedule_completed"] for r in reports.values())
    warnings = [r["warning"] for r in reports.values() if r.get("warning")]
    if warnings:
        merged["warning"] = "; ".join(warnings)
    return merged
