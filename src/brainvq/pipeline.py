"""Recipes: the whole pipeline (VQ-VAE -> evaluation -> generation decoder -> prior -> generation
judged -> report) with per-stage budgets, as one command (``brainvq pipeline --recipe NAME``; ``brainvq demo`` is the
``demo`` recipe on the stand-in).

Each recipe plans training in epochs and also caps every training stage's wall time
(``--max-minutes``, Lightning's timer, checked after every step); a run summary records whether
each planned schedule completed. Sampling and judging do a fixed amount of work (``samples``).
A recipe with a ``total_minutes`` budget keeps the whole run inside it: where the stages before
a training stage took longer than planned (a slower CPU builds the dataset and caches codes more
slowly), that stage's cap and the later ones shrink in proportion, so that the work after the
training (``reserve_minutes``) still fits (:class:`TimeBudget`).

Two decoders share the VQ-VAE's codes: the reconstruction decoder (the VQ-VAE's own, trained on
pixel MSE) serves reconstruction metrics and figures; a recipe with ``generation_decoder_epochs`` also trains a
generation decoder (``brainvq sharpen``: the decoder fine-tuned adversarially, encoder and codebooks
frozen) into ``generation_decoder/``, which draws the generated slices.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from brainvq.data.sources import DataConfig
from brainvq.io import write_json
from brainvq.models.vqvae import VQVAEConfig
from brainvq.recipes import Recipe
from brainvq.report.verdict import verdict_lines
from brainvq.runs import RunLayout, StageLedger, config_key
from brainvq.runtime import hardware_record, resolve_precision


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


@dataclasses.dataclass
class _Run:
    """What every stage of one pipeline run shares."""

    data: DataConfig
    layout: RunLayout
    recipe: Recipe
    loop: dict  # the trainers' accelerator, precision, seed and progress flag
    budget: TimeBudget
    ledger: StageLedger
    clock_start: float  # time.time() at the run's start, earlier attempts' time included
    timings: dict[str, float]
    keys: dict[str, str] = dataclasses.field(default_factory=dict)  # each stage's config key

    def stage(self, name: str, config: dict, work) -> dict:
        """Run ``work(resume)`` for stage ``name`` unless it finished before with ``config``
        (then its recorded result is returned); record start and result in the ledger."""
        config = {**config, "after": [self.keys[k] for k in sorted(self.keys)]}  # every stage before it
        recorded = self.ledger.stages.get(name, {}).get("config", {})
        if "precision_used" in config and recorded and "precision_used" not in recorded:
            config.pop("precision_used")  # a ledger from before stage keys named it: this machine's taken
        plan = self.ledger.plan(name, config)
        self.keys[name] = config_key(config)
        if plan == "reuse":
            self.timings[f"{name}_s"] = 0.0
            return self.ledger.result(name)
        t = time.time()
        self.ledger.record(name, config, t - self.clock_start)
        result = work(plan == "resume")
        self.timings[f"{name}_s"] = round(time.time() - t, 1)
        self.ledger.record(name, config, time.time() - self.clock_start, result)
        return result

    def trainer(self, base, epochs: int, minutes: float | None, **more):
        return dataclasses.replace(base, epochs=epochs, max_minutes=minutes, **self.loop, **more)


def _recipe_fields(recipe: Recipe, keys: tuple[str, ...], added_later: tuple[str, ...] = ()) -> dict:
    """The recipe fields in a stage's ledger key. Fields added after run folders existed enter it
    only when set, so a finished stage of an older run folder keeps its key and is reused."""
    fields = {k: getattr(recipe, k) for k in keys}
    fields.update({k: getattr(recipe, k) for k in added_later if getattr(recipe, k) is not None})
    return fields


def _prior_caps(recipe: Recipe) -> dict[str, float]:
    if recipe.prior_top_epochs is not None and recipe.prior_top_minutes is not None:
        return {"prior_top": recipe.prior_top_minutes, "prior": recipe.prior_minutes}
    return {"prior": recipe.prior_minutes}


def _generation_decoder_caps(recipe: Recipe) -> dict[str, float]:
    if recipe.generation_decoder_epochs and recipe.generation_decoder_minutes:
        return {"generation_decoder": recipe.generation_decoder_minutes}
    return {}


def _vqvae_stage(run: _Run, model: VQVAEConfig | None) -> dict:
    from brainvq.train.vqvae import VQVAETrainConfig, train_vqvae

    r = run.recipe
    cfg = VQVAETrainConfig(data=run.data, out_dir=str(run.layout.vqvae_dir))
    if model is not None:
        cfg.model = model
    later = sum(_generation_decoder_caps(r).values()) + sum(_prior_caps(r).values())

    def work(resume: bool) -> dict:
        minutes = run.budget.caps("VQ-VAE", {"vqvae": r.vqvae_minutes}, later)["vqvae"]
        cfg.trainer = run.trainer(cfg.trainer, r.vqvae_epochs, minutes)
        return train_vqvae(cfg, resume=resume)

    config = {"data": run.data, "model": cfg.model, "epochs": r.vqvae_epochs, "seed": run.loop["seed"], **_budget(r)}
    return run.stage("vqvae", config, work)


def _generation_decoder_stage(run: _Run) -> dict:
    """The generation decoder: the VQ-VAE's decoder fine-tuned adversarially into
    ``generation_decoder/`` (the VQ-VAE itself is left as it is)."""
    from brainvq.train.sharpen import SharpenConfig, train_sharpen

    r, layout = run.recipe, run.layout
    cfg = SharpenConfig(vqvae=str(layout.vqvae_weights), data=run.data, out_dir=str(layout.generation_decoder_dir))

    def work(resume: bool) -> dict:
        caps = run.budget.caps("generation decoder", _generation_decoder_caps(r), sum(_prior_caps(r).values()))
        cfg.trainer = run.trainer(cfg.trainer, r.generation_decoder_epochs, caps.get("generation_decoder"))
        return train_sharpen(cfg, resume=resume)

    return run.stage(
        "generation_decoder", {"epochs": r.generation_decoder_epochs, "minutes": r.generation_decoder_minutes}, work
    )


def _prior_stage(run: _Run) -> dict:
    """The prior, trained on the VQ-VAE's codes (the generation decoder has the same ones)."""
    from brainvq.train.prior import PriorTrainConfig, train_prior

    r, layout = run.recipe, run.layout
    cfg = PriorTrainConfig(
        vqvae=str(layout.vqvae_weights), data=run.data, out_dir=str(layout.prior_dir), flip=r.prior_flip
    )
    cfg.top_epochs = r.prior_top_epochs
    if r.prior_bottom_hidden is not None:
        cfg.bottom_model = dataclasses.replace(cfg.bottom_model, hidden=r.prior_bottom_hidden)

    def work(resume: bool) -> dict:
        given = run.budget.caps("prior", _prior_caps(r))
        cfg.top_max_minutes = given.get("prior_top")
        cfg.trainer = run.trainer(cfg.trainer, r.prior_epochs, given["prior"], batch_size=r.prior_batch_size)
        return train_prior(cfg, resume=resume)

    keys = ("prior_epochs", "prior_minutes", "prior_top_epochs", "prior_top_minutes", "prior_batch_size", "prior_flip")
    return run.stage("prior", _recipe_fields(r, keys, added_later=("prior_bottom_hidden",)), work)


def _generation_stage(run: _Run, drawer: bool, seed: int, progress: bool) -> dict:
    """Samples at test positions (the top grid at the recipe's ``top_temperature``), judged."""
    from brainvq.evaluate import evaluate_generation

    r, layout = run.recipe, run.layout
    config = _recipe_fields(r, ("samples", "judges"), added_later=("top_temperature",))
    return run.stage(
        "generation",
        {**config, "seed": seed, "generation_decoder": drawer},
        lambda _: evaluate_generation(
            layout.vqvae_weights,
            layout.prior_weights,
            run.data,
            layout.generation_dir,
            n_samples=r.samples,
            seed=seed,
            progress=progress,
            judges=r.judges,
            generation_decoder=layout.generation_decoder if drawer else None,
            top_temperature=r.top_temperature,
        ),
    )


def _budget(r: Recipe) -> dict:
    """What shapes every training stage's caps (a changed total redoes the stages it shapes), and
    the precision the run trains in: ``auto`` resolved on this machine, so that a run folder
    resumed where ``auto`` means another precision trains its stages again."""
    keys = ("vqvae_minutes", "total_minutes", "reserve_minutes", "accelerator", "precision")
    return {**{k: getattr(r, k) for k in keys}, "precision_used": resolve_precision(r.precision, r.accelerator)}


PRIOR_KEYS = (
    "test_bits_per_code",
    "test_bits_per_image",
    "test_top_bits_per_code",
    "test_bottom_bits_per_code",
    "epochs_run",
    "planned_epochs",
    "schedule_completed",
    "top_best_epoch",
    "bottom_best_epoch",
    "top_level",
)


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
    fresh: bool = False,
) -> dict:
    """Train both models on ``data`` within ``recipe``'s budgets, evaluate, judge samples, write the report.

    Rerun on the same ``out`` folder, it continues: stages that finished with the same
    configuration are reused, an interrupted training stage resumes from its last checkpoint and
    the time budget counts the time already spent (:class:`~brainvq.runs.StageLedger`);
    ``fresh`` starts over. ``timings``: seconds spent before this call (the demo's pretrained
    showcase and dataset), counted in the time budget; ``vqvae_model``: the VQ-VAE architecture
    (default :class:`VQVAEConfig`'s); ``data_note``: what the summary says the data is (default
    its path); ``opening``: what the summary opens with, before the verdict."""
    from brainvq.evaluate import evaluate_vqvae
    from brainvq.report.html import build_report
    from brainvq.train.prior import PriorTrainConfig

    layout = RunLayout(out)
    # before any training: a recipe whose prior trains level by level needs a two-level VQ-VAE
    PriorTrainConfig(top_epochs=recipe.prior_top_epochs).phases(vqvae_model or VQVAEConfig())
    ledger = StageLedger.open(layout.stages, fresh)
    timings = dict(timings or {})
    before_s = sum(timings.values())
    carried_s = ledger.spent_s  # what earlier attempts of this run spent
    t0 = time.time()
    start = t0 - before_s - carried_s
    loop = {"accelerator": recipe.accelerator, "precision": recipe.precision, "seed": seed, "progress": progress}
    budget = TimeBudget(recipe.total_minutes, recipe.reserve_minutes, start)
    run = _Run(data, layout, recipe, loop, budget, ledger, start, timings)
    vq = _vqvae_stage(run, vqvae_model)
    vq_weights = layout.vqvae_weights  # the reconstruction decoder's: reconstruction metrics, the prior's codes
    ev = run.stage("evaluate", {}, lambda _: evaluate_vqvae(vq_weights, data, layout.vqvae_dir, progress=progress))
    drawer = _generation_decoder_stage(run) if recipe.generation_decoder_epochs else {}
    prior = _prior_stage(run)
    gen = _generation_stage(run, bool(drawer), seed, progress)
    timings["total_s"] = round(time.time() - t0 + before_s, 1)
    budget_record = budget.finish()
    warnings = [s["warning"] for s in (vq, drawer, prior) if s.get("warning")] + budget.warnings
    summary = {
        "data": data_note or str(data.root),
        "recipe": dataclasses.asdict(recipe),
        "warnings": warnings,
        "resumed": ledger.notes or None,
        "reconstruction_test": ev,
        "vqvae": {k: vq.get(k) for k in ("best_val_ssim", "epochs_run", "planned_epochs", "schedule_completed")},
        **({"generation_decoder": {k: drawer.get(k) for k in GENERATION_DECODER_KEYS}} if drawer else {}),
        "prior": {k: prior.get(k) for k in PRIOR_KEYS if k in prior},
        "generation": gen,
        "timings": timings,
        "hardware": hardware_record(recipe.accelerator, recipe.precision),
        "time_budget": {**budget_record, "carried_minutes": round(carried_s / 60, 2)},
    }
    summary = {**(opening or {}), "verdict": verdict_lines(summary), **summary}  # the answer first, the details after
    write_json(layout.summary, summary)
    summary["report"] = str(build_report(out))
    return summary


GENERATION_DECODER_KEYS = ("epochs_run", "planned_epochs", "schedule_completed", "best_val_detail_gap", "weights")
