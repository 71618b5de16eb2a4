"""Recipes: the whole pipeline (VQ-VAE -> evaluation -> prior -> generation judged -> report) with
per-stage budgets, as one command (``brainvq pipeline --recipe NAME``; ``brainvq demo`` is the
``demo`` recipe on the stand-in).

Each recipe plans training in epochs and also caps every training stage's wall time
(``--max-minutes``, Lightning's timer, checked after every step); a run summary records whether
each planned schedule completed. Sampling and judging do a fixed amount of work (``samples``).
A recipe with a ``total_minutes`` budget keeps the whole run inside it: where the stages before
a training stage took longer than planned (a slower CPU builds the dataset and caches codes more
slowly), that stage's cap and the later ones shrink in proportion, so that the work after the
training (``reserve_minutes``) still fits (:class:`TimeBudget`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from brainvq.data.errors import ConfigError
from brainvq.data.sources import DataConfig
from brainvq.io import write_json
from brainvq.models.vqvae import VQVAEConfig
from brainvq.report.verdict import verdict_lines


@dataclasses.dataclass
class Recipe:
    """Budgets of one end-to-end run."""

    name: str
    vqvae_epochs: int
    vqvae_minutes: float
    prior_epochs: int
    prior_minutes: float
    samples: int  # generated slices that are judged
    sharpen_epochs: int = 0  # adversarial fine-tuning of the decoder (``brainvq sharpen``); 0 = none
    sharpen_minutes: float = 0.0
    prior_batch_size: int = 16
    # a two-level prior's top level trained alone first (PriorTrainConfig.top_epochs); then the
    # bottom level gets prior_epochs / prior_minutes. None: both levels together
    prior_top_epochs: int | None = None
    prior_top_minutes: float | None = None
    prior_flip: bool = True  # also train the prior on the codes of mirrored slices
    # wall budget of the whole run (dataset included) and the part of it kept for the work after
    # the prior's training (its test bits, sampling, judging, report); None: no budget
    total_minutes: float | None = None
    reserve_minutes: float = 0.0
    accelerator: str = "auto"
    precision: str = "32-true"
    judges: bool = True
    note: str = ""


RECIPES: dict[str, Recipe] = {
    "demo": Recipe(
        "demo",
        vqvae_epochs=20,
        vqvae_minutes=4.0,
        prior_epochs=6,
        prior_minutes=4.5,
        samples=32,
        prior_flip=False,
        total_minutes=15.0,
        reserve_minutes=5.0,  # codes cached, prior test bits, 32 samples judged: 4.3 min on a 2-core AVX2 CPU
        note="stand-in data; <= 15 min on 2 CPU cores in fp32",
    ),
    "quality-cpu": Recipe(
        "quality-cpu",
        vqvae_epochs=20,
        vqvae_minutes=13.0,
        prior_epochs=4,  # the bottom level's: its 20-min cap ends it at about 3.4 (AVX-512) or 2 (AVX2) on 2 cores
        prior_minutes=20.0,
        prior_top_epochs=8,  # the top level alone first (docs/experiments/2026-11-26-prior-levels-in-turn.md)
        prior_top_minutes=17.0,
        samples=256,
        total_minutes=60.0,
        reserve_minutes=10.0,  # codes cached, prior test bits, 256 samples judged: 9.4 min on an AVX2-only 2-core CPU
        note="OASIS-1 subset; <= 60 min on 2 CPU cores in fp32",
    ),
    "quality-gpu": Recipe(
        "quality-gpu",
        vqvae_epochs=30,
        vqvae_minutes=10.0,
        prior_epochs=20,
        prior_minutes=15.0,
        samples=256,
        prior_batch_size=32,
        accelerator="gpu",
        precision="bf16-mixed",
        note="OASIS-1 subset; one GPU (about 8 min on an H100)",
    ),
}


@dataclasses.dataclass
class TimeBudget:
    """Shares what is left of a recipe's ``total_minutes`` out to its training stages.

    Before each training stage, :meth:`caps` scales that stage's caps and the later stages' caps
    by one factor (at most 1) so that they and ``reserve_minutes`` fit in the time left. Each
    shortened stage is recorded (:attr:`stages`) with a warning for the run summary."""

    total_minutes: float | None
    reserve_minutes: float
    start: float  # time.time() when the run began (the dataset stage included)
    min_fraction: float = 0.1  # a stage keeps at least this share of its cap, even past the budget
    stages: dict[str, dict] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def caps(self, stage: str, planned: dict[str, float], later_minutes: float = 0.0) -> dict[str, float]:
        """The caps (minutes) for ``stage``'s parts ``planned``, given ``later_minutes`` of caps
        planned for the training stages after it."""
        if self.total_minutes is None:
            return dict(planned)
        used = (time.time() - self.start) / 60
        left = self.total_minutes - used - self.reserve_minutes
        ahead = sum(planned.values()) + later_minutes
        factor = max(min(1.0, left / ahead), self.min_fraction) if ahead > 0 else 1.0
        given = {k: v * factor for k, v in planned.items()}
        self.stages[stage] = {
            "started_after_minutes": round(used, 2),
            "planned_minutes": {k: round(v, 2) for k, v in planned.items()},
            "given_minutes": {k: round(v, 2) for k, v in given.items()},
        }
        if factor < 0.99:  # a shortfall of seconds is not worth a warning
            self.warnings.append(
                f"{stage} training got {factor:.0%} of its planned time cap "
                f"({sum(given.values()):.1f} of {sum(planned.values()):.1f} min) to keep the run within its "
                f"{self.total_minutes:g}-minute budget: the stages before it took {used:.1f} min on this machine"
            )
        return given

    def finish(self) -> dict:
        """The budget's record for the run summary; warns when the run took longer than its budget."""
        took = (time.time() - self.start) / 60
        if self.total_minutes is not None and took > self.total_minutes:
            self.warnings.append(
                f"the run took {took:.1f} min, over its {self.total_minutes:g}-minute budget: the work after "
                f"training (reserve {self.reserve_minutes:g} min) took longer than planned on this machine"
            )
        return {
            "total_minutes": self.total_minutes,
            "reserve_minutes": self.reserve_minutes,
            "took_minutes": round(took, 2),
            "stages": self.stages,
        }


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def run_pipeline(
    data: DataConfig,
    out: Path,
    recipe: Recipe,
    *,
    seed: int = 0,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    vqvae_model: VQVAEConfig | None = None,
    data_note: str | None = None,
    opening: dict | None = None,
) -> dict:
    """Train both models on ``data`` within ``recipe``'s budgets, evaluate, judge samples, write the report.

    ``timings``: seconds already spent on stages before this call (the demo's pretrained showcase
    and dataset), counted in the time budget; ``vqvae_model``: the VQ-VAE architecture (default
    :class:`VQVAEConfig`'s); ``data_note``: what the summary says the data is (default its path);
    ``opening``: what the summary opens with, before the verdict (the demo's pretrained model)."""
    from brainvq.evaluate import evaluate_generation, evaluate_vqvae
    from brainvq.report.html import build_report
    from brainvq.train.prior import PriorTrainConfig, train_prior
    from brainvq.train.sharpen import SharpenConfig, train_sharpen
    from brainvq.train.vqvae import VQVAETrainConfig, train_vqvae

    out = Path(out)
    # before any training: a recipe whose prior trains level by level needs a two-level VQ-VAE
    PriorTrainConfig(top_epochs=recipe.prior_top_epochs).phases(vqvae_model or VQVAEConfig())
    timings = dict(timings or {})
    before_s = sum(timings.values())
    t0 = t = time.time()
    budget = TimeBudget(recipe.total_minutes, recipe.reserve_minutes, t0 - before_s)
    prior_caps = {"prior": recipe.prior_minutes}
    if recipe.prior_top_epochs is not None and recipe.prior_top_minutes is not None:
        prior_caps = {"prior_top": recipe.prior_top_minutes, **prior_caps}
    sharpen_caps = {"sharpen": recipe.sharpen_minutes} if recipe.sharpen_epochs and recipe.sharpen_minutes else {}

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.time() - t, 1)
        t = time.time()

    hw = {"accelerator": recipe.accelerator, "precision": recipe.precision, "seed": seed, "progress": progress}
    vq_cfg = VQVAETrainConfig(data=data, out_dir=str(out / "vqvae"))
    if vqvae_model is not None:
        vq_cfg.model = vqvae_model
    later = sum(sharpen_caps.values()) + sum(prior_caps.values())
    vq_minutes = budget.caps("VQ-VAE", {"vqvae": recipe.vqvae_minutes}, later)["vqvae"]
    vq_cfg.trainer = dataclasses.replace(vq_cfg.trainer, epochs=recipe.vqvae_epochs, max_minutes=vq_minutes, **hw)
    vq = train_vqvae(vq_cfg)
    lap("vqvae_train_s")
    vq_weights = out / "vqvae" / "vqvae.safetensors"
    sharp: dict = {}
    if recipe.sharpen_epochs:  # same codes, sharper decoder: evaluated, used by the prior and generation
        sh_cfg = SharpenConfig(vqvae=str(vq_weights), data=data, out_dir=str(out / "sharpen"))
        sh_minutes = budget.caps("sharpening", sharpen_caps, sum(prior_caps.values())).get("sharpen")
        sh_cfg.trainer = dataclasses.replace(sh_cfg.trainer, epochs=recipe.sharpen_epochs, max_minutes=sh_minutes, **hw)
        sharp = train_sharpen(sh_cfg)
        vq_weights = out / "sharpen" / "vqvae.safetensors"
        lap("sharpen_s")
    ev = evaluate_vqvae(vq_weights, data, out / "vqvae", progress=progress)
    lap("evaluate_s")
    prior_given = budget.caps("prior", prior_caps)
    prior_cfg = PriorTrainConfig(
        vqvae=str(vq_weights),
        data=data,
        out_dir=str(out / "prior"),
        flip=recipe.prior_flip,
        top_epochs=recipe.prior_top_epochs,
        top_max_minutes=prior_given.get("prior_top"),
    )
    prior_cfg.trainer = dataclasses.replace(
        prior_cfg.trainer,
        epochs=recipe.prior_epochs,
        max_minutes=prior_given["prior"],
        batch_size=recipe.prior_batch_size,
        **hw,
    )
    prior = train_prior(prior_cfg)
    lap("prior_train_s")
    gen = evaluate_generation(
        vq_weights,
        out / "prior" / "prior.safetensors",
        data,
        out / "generation",
        n_samples=recipe.samples,
        seed=seed,
        progress=progress,
        judges=recipe.judges,
    )
    lap("generation_s")
    timings["total_s"] = round(time.time() - t0 + before_s, 1)
    budget_record = budget.finish()
    warnings = [s["warning"] for s in (vq, sharp, prior) if s.get("warning")] + budget.warnings
    summary = {
        "data": data_note or str(data.root),
        "recipe": dataclasses.asdict(recipe),
        "warnings": warnings,
        "reconstruction_test": ev,
        "vqvae": {k: vq.get(k) for k in ("best_val_ssim", "epochs_run", "planned_epochs", "schedule_completed")},
        **(
            {
                "sharpen": {
                    k: sharp.get(k)
                    for k in ("best_val_detail_gap", "epochs_run", "planned_epochs", "schedule_completed")
                }
            }
            if sharp
            else {}
        ),
        "prior": {
            k: prior.get(k)
            for k in (
                "test_bits_per_code",
                "test_bits_per_image",
                "test_top_bits_per_code",
                "test_bottom_bits_per_code",
                "epochs_run",
                "planned_epochs",
                "schedule_completed",
                "kept",
                "top_best_epoch",
                "bottom_best_epoch",
                "top_level",
            )
            if k in prior
        },
        "generation": gen,
        "timings": timings,
        "time_budget": budget_record,
    }
    summary = {**(opening or {}), "verdict": verdict_lines(summary), **summary}  # the answer first, the details after
    write_json(out / "demo_summary.json", summary)
    summary["report"] = str(build_report(out))
    return summary
