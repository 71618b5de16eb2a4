"""Recipes: the whole pipeline (VQ-VAE -> evaluation -> prior -> generation judged -> report) with
per-stage budgets, as one command (``brainvq pipeline --recipe NAME``; ``brainvq demo`` is the
``demo`` recipe on the stand-in).

Each recipe plans training in epochs and also caps every training stage's wall time
(``--max-minutes``, Lightning's timer, checked after every step); a run summary records whether
each planned schedule completed. Sampling and judging do a fixed amount of work (``samples``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from brainvq.data.errors import ConfigError
from brainvq.data.sources import DataConfig
from brainvq.models.vqvae import VQVAEConfig
from brainvq.report.verdict import verdict_lines
from brainvq.train.common import write_json


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
        note="stand-in data; <= 15 min on 2 CPU cores in fp32",
    ),
    "quality-cpu": Recipe(
        "quality-cpu",
        vqvae_epochs=20,
        vqvae_minutes=13.0,
        prior_epochs=4,  # the bottom level's: its 21-min cap ends it at about 3.5 on a 2-core CPU
        prior_minutes=21.0,
        prior_top_epochs=8,  # the top level alone first (README, "Training the two levels in turn")
        prior_top_minutes=17.0,
        samples=256,
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
) -> dict:
    """Train both models on ``data`` within ``recipe``'s budgets, evaluate, judge samples, write the report.

    ``vqvae_model``: the VQ-VAE architecture (default :class:`VQVAEConfig`'s); ``data_note``: what
    the summary says the data is (default its path)."""
    from brainvq.evaluate import evaluate_generation, evaluate_vqvae
    from brainvq.report.html import build_report
    from brainvq.train.prior import PriorTrainConfig, train_prior
    from brainvq.train.sharpen import SharpenConfig, train_sharpen
    from brainvq.train.vqvae import VQVAETrainConfig, train_vqvae

    out = Path(out)
    # before any training: a recipe whose prior trains level by level needs a two-level VQ-VAE
    PriorTrainConfig(top_epochs=recipe.prior_top_epochs).phases(vqvae_model or VQVAEConfig())
    timings = timings if timings is not None else {}
    t0 = t = time.time()

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.time() - t, 1)
        t = time.time()

    hw = {"accelerator": recipe.accelerator, "precision": recipe.precision, "seed": seed, "progress": progress}
    vq_cfg = VQVAETrainConfig(data=data, out_dir=str(out / "vqvae"))
    if vqvae_model is not None:
        vq_cfg.model = vqvae_model
    vq_cfg.trainer = dataclasses.replace(
        vq_cfg.trainer, epochs=recipe.vqvae_epochs, max_minutes=recipe.vqvae_minutes, **hw
    )
    vq = train_vqvae(vq_cfg)
    lap("vqvae_train_s")
    vq_weights = out / "vqvae" / "vqvae.safetensors"
    sharp: dict = {}
    if recipe.sharpen_epochs:  # same codes, sharper decoder: evaluated, used by the prior and generation
        sh_cfg = SharpenConfig(vqvae=str(vq_weights), data=data, out_dir=str(out / "sharpen"))
        sh_cfg.trainer = dataclasses.replace(
            sh_cfg.trainer, epochs=recipe.sharpen_epochs, max_minutes=recipe.sharpen_minutes or None, **hw
        )
        sharp = train_sharpen(sh_cfg)
        vq_weights = out / "sharpen" / "vqvae.safetensors"
        lap("sharpen_s")
    ev = evaluate_vqvae(vq_weights, data, out / "vqvae", progress=progress)
    lap("evaluate_s")
    prior_cfg = PriorTrainConfig(
        vqvae=str(vq_weights),
        data=data,
        out_dir=str(out / "prior"),
        flip=recipe.prior_flip,
        top_epochs=recipe.prior_top_epochs,
        top_max_minutes=recipe.prior_top_minutes,
    )
    prior_cfg.trainer = dataclasses.replace(
        prior_cfg.trainer,
        epochs=recipe.prior_epochs,
        max_minutes=recipe.prior_minutes,
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
    timings["total_s"] = round(time.time() - t0, 1) + sum(v for k, v in timings.items() if k == "dataset_s")
    warnings = [s["warning"] for s in (vq, sharp, prior) if s.get("warning")]
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
    }
    summary = {"verdict": verdict_lines(summary), **summary}  # the answer first, the details after
    write_json(out / "demo_summary.json", summary)
    summary["report"] = str(build_report(out))
    return summary
