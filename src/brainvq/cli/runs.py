"""``brainvq check-judges``, ``report``, ``demo`` and ``pipeline``: whole runs and what they show."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from brainvq.cli.common import (
    FRESH_HELP,
    PRECISION_HELP,
    TOTAL_HELP,
    _add_data_args,
    _claim_out,
    _data_config,
    _flags_given,
    _positive_float,
    _positive_int,
    _seed,
    _total_budget,
)
from brainvq.errors import ConfigError
from brainvq.runtime import PRECISIONS


# --- check-judges --------------------------------------------------------------------------
def add_check_judges(sub: argparse._SubParsersAction) -> None:
    """The ``check-judges`` parser."""
    p = sub.add_parser(
        "check-judges",
        help="power check: every generation judge on known-bad sets and on real validation vs test",
    )
    _add_data_args(p)
    p.add_argument("--vqvae", help="VQ-VAE weights for the texture-blob set and the prior's-gap rows (skipped without)")
    p.add_argument(
        "--generation-decoder",
        help="VQ-VAE weights whose decoder draws the prior's-gap rows' reconstructions (default: --vqvae's)",
    )
    p.add_argument("--n", type=_positive_int, help="images per side (default: JudgeConfig's, 256)")
    p.add_argument("--folds", type=_positive_int, help="subject-grouped folds of the two-sample classifier")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--out", default="runs/judges", help="folder for judge_table.{csv,json,md}")
    p.add_argument(
        "--whole-image",
        action="store_true",
        help="judge every feature of the whole image (the diagnostic) instead of the brain region (the protocol)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_check_judges)


def cmd_check_judges(args: argparse.Namespace) -> dict:
    """Every generation judge on known-bad sets and on real validation vs test (table on stderr)."""
    from brainvq.data.sources import load_split
    from brainvq.judges.check import check_judges
    from brainvq.judges.power import JudgeConfig
    from brainvq.models.weights import load_vqvae

    _claim_out(args, args.out)  # judge_table.* are rewritten whole
    data = _data_config(args)
    prog = not args.no_progress
    train, val, test = (load_split(data, s, progress=prog) for s in ("train", "validate", "test"))
    vqvae = load_vqvae(args.vqvae) if args.vqvae else None
    if args.generation_decoder and vqvae is None:
        raise ConfigError("--generation-decoder needs --vqvae (whose codes it draws)")
    drawer = load_vqvae(args.generation_decoder) if args.generation_decoder else None
    cfg = JudgeConfig(**_flags_given(args, n="n", seed="seed", folds="folds"), whole_image_diagnostic=False)
    cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, brain_region=not args.whole_image))
    result = check_judges(train, val, test, args.out, vqvae=vqvae, drawer=drawer, cfg=cfg, progress=prog)
    print(result.pop("markdown"), file=sys.stderr)
    return result


# --- report --------------------------------------------------------------------------------
def add_report(sub: argparse._SubParsersAction) -> None:
    """The ``report`` parser."""
    p = sub.add_parser("report", help="one self-contained HTML page for a run folder (e.g. runs/demo)")
    p.add_argument("run", nargs="?", default="runs/demo")
    p.add_argument("--out", help="HTML file (default RUN/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> dict:
    """Write the run folder's HTML report."""
    from brainvq.report.html import build_report

    return {"report": str(build_report(args.run, args.out))}


# --- demo ----------------------------------------------------------------------------------
def add_demo(sub: argparse._SubParsersAction) -> None:
    """The ``demo`` parser."""
    from brainvq.pretrained import PRETRAINED

    p = sub.add_parser("demo", help="end to end on the stand-in dataset: data, VQ-VAE, evaluation, prior, samples")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data-dir", default="data/standin")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument(
        "--pretrained",
        choices=(*sorted(PRETRAINED), "none"),
        default="oasis1",
        help="first show what this shipped model draws (default oasis1; none: skip)",
    )
    g = p.add_argument_group("budgets (flags left out keep the demo recipe's, see brainvq.recipes.RECIPES)")
    g.add_argument("--vqvae-epochs", type=_positive_int)
    g.add_argument("--vqvae-minutes", type=_positive_float)
    g.add_argument("--prior-epochs", type=_positive_int)
    g.add_argument("--prior-minutes", type=_positive_float)
    g.add_argument("--samples", type=_positive_int)
    g.add_argument("--total-minutes", type=float, help=TOTAL_HELP)
    g.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> dict:
    """Stand-in dataset, then the ``demo`` recipe: VQ-VAE, evaluation, prior, judged samples, report."""
    from brainvq.data.sources import DataConfig
    from brainvq.data.standin import StandInConfig, make_standin_dataset
    from brainvq.pipeline import run_pipeline
    from brainvq.recipes import get_recipe

    t0 = time.time()
    _claim_out(args, args.out)  # a rerun continues the run in it (--fresh starts over)
    recipe = dataclasses.replace(
        get_recipe("demo"),
        **_flags_given(
            args,
            vqvae_epochs="vqvae_epochs",
            vqvae_minutes="vqvae_minutes",
            prior_epochs="prior_epochs",
            prior_minutes="prior_minutes",
            samples="samples",
            precision="precision",
        ),
        **_total_budget(args),
    )
    opening, timings = {}, {}
    if args.pretrained != "none":  # what a trained model draws, first: seconds, no data needed
        from brainvq.pretrained.showcase import showcase
        from brainvq.runs import RunLayout

        shown = showcase(args.pretrained, RunLayout(args.out).pretrained_dir, seed=args.seed)
        print(f"brainvq demo: the pretrained {args.pretrained} model's slices: {shown['samples']}", file=sys.stderr)
        opening = {
            "pretrained_model": shown,
            "trained_here": "what follows is what about 15 minutes of training on synthetic stand-in data gives",
        }
        timings["pretrained_s"] = round(time.time() - t0, 1)
    make_standin_dataset(Path(args.data_dir), StandInConfig(seed=args.seed), progress=not args.no_progress)
    timings["dataset_s"] = round(time.time() - t0 - sum(timings.values()), 1)
    return run_pipeline(
        DataConfig(root=args.data_dir),
        Path(args.out),
        recipe,
        seed=args.seed,
        progress=not args.no_progress,
        timings=timings,
        data_note=f"{args.data_dir} (synthetic stand-in, not OASIS)",
        opening=opening,
        fresh=args.fresh,
    )


# --- pipeline ------------------------------------------------------------------------------
def add_pipeline(sub: argparse._SubParsersAction) -> None:
    """The ``pipeline`` parser."""
    from brainvq.recipes import RECIPES

    p = sub.add_parser(
        "pipeline",
        help="a whole recipe on your data: VQ-VAE, evaluation, prior, judged samples, report (e.g. quality-cpu)",
    )
    _add_data_args(p)
    p.add_argument("--out", default="runs/pipeline")
    p.add_argument("--recipe", default="quality-cpu", help=", ".join(RECIPES))
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--samples", type=_positive_int, help="generated slices to judge (default: the recipe's)")
    p.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--accelerator", help="default: the recipe's")
    p.add_argument("--total-minutes", type=float, help=TOTAL_HELP)
    p.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> dict:
    """A whole recipe on the user's data."""
    from brainvq.pipeline import run_pipeline
    from brainvq.recipes import get_recipe

    recipe = dataclasses.replace(
        get_recipe(args.recipe),
        **_flags_given(args, samples="samples", precision="precision", accelerator="accelerator"),
        **_total_budget(args),
    )
    _claim_out(args, args.out)  # a rerun continues the run in it (--fresh starts over)
    return run_pipeline(
        _data_config(args), Path(args.out), recipe, seed=args.seed, progress=not args.no_progress, fresh=args.fresh
    )
