"""Recipes: the budgets of one end-to-end run (``brainvq pipeline --recipe NAME``), which
:func:`brainvq.pipeline.run_pipeline` carries out."""

from __future__ import annotations

import dataclasses

from brainvq.errors import ConfigError


@dataclasses.dataclass
class Recipe:
    """Budgets of one end-to-end run."""

    name: str
    vqvae_epochs: int
    vqvae_minutes: float
    prior_epochs: int
    prior_minutes: float
    samples: int  # generated slices that are judged
    # the generation decoder: the decoder fine-tuned adversarially (``brainvq sharpen``); 0 epochs = none
    generation_decoder_epochs: int = 0
    generation_decoder_minutes: float = 0.0
    prior_batch_size: int = 16
    # a two-level prior's top level trained alone first (PriorTrainConfig.top_epochs); then the
    # bottom level gets prior_epochs / prior_minutes. None: both levels together
    prior_top_epochs: int | None = None
    prior_top_minutes: float | None = None
    prior_flip: bool = True  # also train the prior on the codes of mirrored slices
    # a two-level prior's bottom PixelCNN width (None: brainvq.models.hierarchical.BOTTOM_LEVEL's):
    # narrower, it completes more of its schedule inside prior_minutes
    prior_bottom_hidden: int | None = None
    # wall budget of the whole run (dataset included) and the part of it kept for the work after
    # the prior's training (its test bits, sampling, judging, report); None: no budget
    total_minutes: float | None = None
    reserve_minutes: float = 0.0
    accelerator: str = "auto"
    # auto: bf16-mixed on CPUs with bf16 units and bf16-capable GPUs, else 32-true
    # (brainvq.runtime.resolve_precision; the summary's hardware records the one used)
    precision: str = "auto"
    judges: bool = True
    top_temperature: float | None = None  # a two-level prior's top grid, judged samples (None: 1.0)
    note: str = ""


RECIPES: dict[str, Recipe] = {
    "demo": Recipe(
        "demo",
        vqvae_epochs=20,
        vqvae_minutes=4.0,
        prior_epochs=6,
        prior_minutes=5.0,  # compiling takes about 1 min of it: 5.43 of 6 epochs (4.91 in 4.5 min), AVX-512 fp32
        samples=32,
        prior_flip=False,
        total_minutes=15.0,
        reserve_minutes=5.0,  # codes cached, prior test bits, 32 samples judged: 4.3 min on a 2-core AVX2 CPU
        note="stand-in data; <= 15 min on 2 CPU cores in fp32",
    ),
    "quality-cpu": Recipe(
        "quality-cpu",
        vqvae_epochs=20,
        vqvae_minutes=12.0,
        # about 4 min an epoch on 2 cores (AVX-512, fp32); 4 epochs: classifier 0.875 against 0.928
        # after 2 (docs/experiments/2026-11-29-brain-region-two-decoders.md)
        generation_decoder_epochs=4,
        generation_decoder_minutes=15.0,
        prior_epochs=4,  # the bottom level's
        prior_minutes=12.0,
        prior_top_epochs=8,  # the top level alone first (docs/experiments/2026-11-26-prior-levels-in-turn.md)
        prior_top_minutes=12.0,
        # 3.85 of 4 bottom epochs in its 11.8 min against 2.86 at width 32, the same test bits
        # (docs/experiments/2026-11-30-bottom-level-width.md)
        prior_bottom_hidden=24,
        samples=256,
        top_temperature=0.85,  # the classifier lower on both runs and seeds (same experiment)
        total_minutes=60.0,
        reserve_minutes=9.0,  # codes cached, prior test bits, 256 samples judged: 9.4 min on an AVX2-only 2-core CPU
        note="OASIS-1 subset; <= 60 min on 2 CPU cores in fp32",
    ),
    "quality-cpu-long": Recipe(
        "quality-cpu-long",
        # 97.5 min on a 2-core AVX-512 CPU in fp32 (docs/experiments/2026-11-29-quality-cpu-long-and-top-temperature.md)
        vqvae_epochs=20,
        vqvae_minutes=18.0,
        generation_decoder_epochs=7,
        generation_decoder_minutes=29.0,
        prior_epochs=7,
        prior_minutes=29.0,
        prior_top_epochs=10,
        prior_top_minutes=21.0,
        samples=256,
        top_temperature=0.85,  # the classifier lower on both runs and seeds (same experiment)
        total_minutes=120.0,
        reserve_minutes=12.0,
        note="OASIS-1 subset; <= 2 hours on 2 CPU cores in fp32 (the best recipe when no GPU is lent)",
    ),
    "quality-gpu": Recipe(
        "quality-gpu",
        vqvae_epochs=30,
        vqvae_minutes=10.0,
        prior_epochs=20,
        prior_minutes=15.0,
        samples=256,
        generation_decoder_epochs=4,
        generation_decoder_minutes=6.0,
        prior_batch_size=32,
        top_temperature=0.85,
        accelerator="gpu",
        note="OASIS-1 subset; one GPU (about 8 min on an H100)",
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
