"""Command-line interface: ``brainvq <command> ...`` (``brainvq -h`` lists the commands)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from brainvq.data.errors import BrainVQError, ConfigError
from brainvq.runtime import keep_freed_memory

SCALE_LEVELS = ("none", "top", "all")  # train-prior --intensity-scale: which levels are conditioned on it


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def _devices(s: str) -> int | str:
    return int(s) if s.isdigit() else s


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="data/standin",
        help="OASIS root (keras_png_slices_*), image folder or NIfTI file/folder",
    )
    p.add_argument(
        "--image-size",
        type=_positive_int,
        default=256,
        help="slices are resized to this (with a warning)",
    )
    p.add_argument("--on-wrong-size", choices=("resize", "error"), default="resize")
    p.add_argument("--on-rgb", choices=("convert", "error"), default="convert")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="decode images every run instead of the memmap cache",
    )


def _add_trainer_args(p: argparse.ArgumentParser, config_name: str) -> None:
    g = p.add_argument_group(f"training loop (flags left out keep the defaults of {config_name})")
    g.add_argument("--epochs", type=_positive_int)
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--lr", type=_positive_float)
    g.add_argument("--seed", type=int)
    g.add_argument("--max-minutes", type=_positive_float, default=None, help="stop after this wall time")
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="resume from last.ckpt of --out (or a given .ckpt)",
    )
    g.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    g.add_argument("--devices", type=_devices, default="auto", help="number of devices (e.g. 2) or auto")
    g.add_argument("--num-nodes", type=_positive_int, default=1)
    g.add_argument("--strategy", default="auto", help="e.g. ddp (gloo on CPU, nccl on GPU)")
    g.add_argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed")
    g.add_argument("--num-workers", type=int, default=0)
    g.add_argument("--no-progress", action="store_true")


def _add_anomaly_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("anomaly detection (flags left out keep the defaults of AnomalyConfig)")
    g.add_argument("--quantile", type=float, help="threshold quantile of the validation codes' NLL")
    g.add_argument("--top-quantile", type=float, help="two-level models: the same quantile for the top codes")
    g.add_argument("--samples", type=_positive_int, help="restorations averaged per slice")
    g.add_argument("--dilate", type=int, help="grow the flagged codes by this many codes")
    g.add_argument("--smooth", type=float, help="Gaussian sigma (pixels) of the residual map")
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--seed", type=int)
    g.add_argument("--no-progress", action="store_true")


def _add_model_args(p: argparse.ArgumentParser, run: str = "runs") -> None:
    """--vqvae / --prior weights, or --pretrained NAME for the weights shipped in the package."""
    from brainvq.pretrained import PRETRAINED

    p.add_argument("--vqvae", help=f"VQ-VAE weights (default {run}/vqvae/vqvae.safetensors)")
    p.add_argument("--prior", help=f"prior weights (default {run}/prior/prior.safetensors)")
    p.add_argument(
        "--pretrained",
        choices=sorted(PRETRAINED),
        help="use the weights shipped in the package (no training, no network) instead of --vqvae/--prior",
    )
    p.add_argument("--allow-mismatched-pair", action="store_true", help=MISMATCH_HELP)


def _model_paths(a: argparse.Namespace, run: str = "runs") -> tuple[Path, Path]:
    """The (VQ-VAE, prior) weights the command uses: --pretrained's (hash-checked) or the given ones."""
    if a.pretrained:
        if a.vqvae or a.prior:
            raise ConfigError("give either --pretrained or --vqvae/--prior, not both")
        from brainvq.pretrained import pretrained_paths

        return pretrained_paths(a.pretrained)
    return (
        Path(a.vqvae or f"{run}/vqvae/vqvae.safetensors"),
        Path(a.prior or f"{run}/prior/prior.safetensors"),
    )


FRESH_HELP = (
    "start over; without it a rerun on the same --out continues: finished stages with the same configuration "
    "are reused and an interrupted training stage resumes from its last checkpoint"
)
MISMATCH_HELP = "use a prior with a VQ-VAE other than the one whose codes it learned (warned in the summary)"


def _data_config(a: argparse.Namespace):
    from brainvq.data.sources import DataConfig

    return DataConfig(
        root=a.data,
        image_size=a.image_size,
        on_wrong_size=a.on_wrong_size,
        on_rgb=a.on_rgb,
        cache=not a.no_cache,
    )


TOTAL_HELP = (
    "wall budget of the whole run in minutes, dataset included: training caps shrink when earlier "
    "stages ran late (0: no budget; default: the recipe's)"
)


def _total_budget(a: argparse.Namespace) -> dict:
    """``{"total_minutes": ...}`` when ``--total-minutes`` was given (0 turns the budget off)."""
    if a.total_minutes is None:
        return {}
    if a.total_minutes < 0:
        raise ConfigError(f"--total-minutes must be >= 0, got {a.total_minutes}")
    return {"total_minutes": a.total_minutes or None}


def _given(a: argparse.Namespace, **fields: str) -> dict:
    """``{field: a.<flag>}`` for the flags the user gave (flags left out default to None,
    so the config dataclasses stay the one place that holds defaults)."""
    return {field: getattr(a, flag) for field, flag in fields.items() if getattr(a, flag) is not None}


def _trainer_config(a: argparse.Namespace, defaults):
    """The command's default :class:`TrainerConfig` with the given flags applied."""
    return dataclasses.replace(
        defaults,
        **_given(a, epochs="epochs", batch_size="batch_size", lr="lr", seed="seed"),
        max_minutes=a.max_minutes,
        accelerator=a.accelerator,
        devices=a.devices,
        num_nodes=a.num_nodes,
        strategy=a.strategy,
        precision=a.precision,
        num_workers=a.num_workers,
        progress=not a.no_progress,
    )


# --- commands ------------------------------------------------------------------------------
def cmd_make_dataset(a: argparse.Namespace) -> dict:
    from brainvq.data.standin import StandInConfig, make_standin_dataset

    cfg = StandInConfig(
        **_given(
            a,
            n_train_cases="train_cases",
            n_val_cases="val_cases",
            n_test_cases="test_cases",
            slices_per_case="slices_per_case",
            seed="seed",
        )
    )
    path = make_standin_dataset(a.out, cfg, overwrite=a.overwrite, progress=not a.no_progress)
    return {
        "dataset": str(path),
        "note": "synthetic stand-in from MNI152/Colin27 templates, NOT OASIS",
    }


def _vqvae_train_config(a: argparse.Namespace):
    from brainvq.config import load_yaml_config
    from brainvq.models.vqvae import VQVAEConfig
    from brainvq.train.vqvae import VQVAETrainConfig, upgrade_saved_run_config

    if a.config:
        cfg = load_yaml_config(VQVAETrainConfig, a.config, upgrade=upgrade_saved_run_config)
        cfg.out_dir = a.out
        return cfg
    model = VQVAEConfig(
        **_given(
            a,
            downsample="downsample",
            num_codes="num_codes",
            code_dim="code_dim",
            stem_channels="stem_channels",
            hidden_channels="hidden_channels",
            stem_res_blocks="stem_res_blocks",
            res_bottleneck="res_bottleneck",
            encoder_res_blocks="encoder_res_blocks",
            decoder_res_blocks="decoder_res_blocks",
        )
    )
    trainer = _trainer_config(a, VQVAETrainConfig().trainer)
    return VQVAETrainConfig(data=_data_config(a), model=model, trainer=trainer, out_dir=a.out)


def cmd_train_vqvae(a: argparse.Namespace) -> dict:
    from brainvq.train.vqvae import train_vqvae

    return train_vqvae(_vqvae_train_config(a), resume=a.resume)


def _evaluate_weights(a: argparse.Namespace) -> tuple[Path, str | Path | None, Path]:
    """(VQ-VAE weights, prior weights or None, output folder) of ``brainvq evaluate``."""
    if a.pretrained:
        if a.weights or a.prior:
            raise ConfigError("give either --pretrained or --weights/--prior, not both")
        from brainvq.pretrained import pretrained_paths

        weights, prior = pretrained_paths(a.pretrained)
        return weights, prior, Path(a.out or f"runs/evaluate-{a.pretrained}")
    weights = Path(a.weights or Path(a.run) / "vqvae.safetensors")
    return weights, a.prior, Path(a.out or weights.parent)


def cmd_evaluate(a: argparse.Namespace) -> dict:
    from brainvq.evaluate import evaluate_generation, evaluate_vqvae

    weights, prior, out = _evaluate_weights(a)
    prog = not a.no_progress
    result = evaluate_vqvae(weights, _data_config(a), out, split=a.split, progress=prog)
    if not prior:
        return result
    generation = evaluate_generation(
        weights,
        prior,
        _data_config(a),
        out,
        **_given(a, n_samples="samples"),
        temperature=a.temperature,
        seed=a.seed,
        progress=prog,
        skip_metrics=a.no_generation_metrics,
        allow_mismatch=a.allow_mismatched_pair,
    )
    return {"reconstruction": result, "generation": generation}


def _prior_train_config(a: argparse.Namespace):
    from brainvq.config import load_yaml_config
    from brainvq.train.prior import PriorTrainConfig

    if a.config:
        cfg = load_yaml_config(PriorTrainConfig, a.config)
        cfg.out_dir = a.out
        return cfg
    defaults = PriorTrainConfig()
    arch = _given(a, hidden="hidden", n_layers="layers", kernel_size="kernel_size")
    top_arch = _given(a, hidden="top_hidden", n_layers="top_layers", kernel_size="top_kernel_size")
    cond = {"conditional": not a.unconditional}
    scale = a.intensity_scale or ("none" if a.unconditional else None)
    if a.unconditional and scale != "none":
        raise ConfigError("--intensity-scale needs a position-conditioned prior (leave out --unconditional)")

    def level(config, on: bool, **fields):
        flag = {} if scale is None else {"scale_conditional": on}
        return dataclasses.replace(config, **fields, **cond, **flag)

    return PriorTrainConfig(
        vqvae=a.vqvae,
        data=_data_config(a),
        model=level(defaults.model, scale in ("top", "all"), **arch),
        top_model=level(defaults.top_model, scale in ("top", "all"), **top_arch),
        bottom_model=level(defaults.bottom_model, scale == "all", **arch),
        trainer=_trainer_config(a, defaults.trainer),
        out_dir=a.out,
        **_given(a, keep="keep", top_epochs="top_epochs", top_max_minutes="top_max_minutes"),
    )


def cmd_train_prior(a: argparse.Namespace) -> dict:
    from brainvq.train.prior import train_prior

    return train_prior(_prior_train_config(a), resume=a.resume)


def cmd_sharpen(a: argparse.Namespace) -> dict:
    from brainvq.train.sharpen import SharpenConfig, train_sharpen

    defaults = SharpenConfig()
    cfg = SharpenConfig(
        vqvae=a.vqvae,
        data=_data_config(a),
        trainer=_trainer_config(a, defaults.trainer),
        out_dir=a.out,
        **_given(a, adversarial_weight="adversarial_weight", adversarial_start="adversarial_start"),
    )
    return train_sharpen(cfg, resume=a.resume)


def cmd_sample(a: argparse.Namespace) -> dict:
    from brainvq.sample.generate import sample_command

    return sample_command(
        *_model_paths(a),
        a.out,
        n=a.n,
        position=a.position,
        temperature=a.temperature,
        seed=a.seed,
        progress=not a.no_progress,
        allow_mismatch=a.allow_mismatched_pair,
    )


def cmd_demo(a: argparse.Namespace) -> dict:
    """Stand-in dataset, then the ``demo`` recipe: VQ-VAE, evaluation, prior, judged samples, report."""
    from brainvq.data.sources import DataConfig
    from brainvq.data.standin import StandInConfig, make_standin_dataset
    from brainvq.pipeline import get_recipe, run_pipeline

    t0 = time.time()
    recipe = dataclasses.replace(
        get_recipe("demo"),
        **_given(
            a,
            vqvae_epochs="vqvae_epochs",
            vqvae_minutes="vqvae_minutes",
            prior_epochs="prior_epochs",
            prior_minutes="prior_minutes",
            samples="samples",
            precision="precision",
        ),
        **_total_budget(a),
    )
    opening, timings = {}, {}
    if a.pretrained != "none":  # what a trained model draws, first: seconds, no data needed
        from brainvq.pretrained.showcase import showcase

        shown = showcase(a.pretrained, Path(a.out) / "pretrained", seed=a.seed)
        print(f"brainvq demo: the pretrained {a.pretrained} model's slices: {shown['samples']}", file=sys.stderr)
        opening = {
            "pretrained_model": shown,
            "trained_here": "what follows is what about 15 minutes of training on synthetic stand-in data gives",
        }
        timings["pretrained_s"] = round(time.time() - t0, 1)
    make_standin_dataset(Path(a.data_dir), StandInConfig(seed=a.seed), progress=not a.no_progress)
    timings["dataset_s"] = round(time.time() - t0 - sum(timings.values()), 1)
    return run_pipeline(
        DataConfig(root=a.data_dir),
        Path(a.out),
        recipe,
        seed=a.seed,
        progress=not a.no_progress,
        timings=timings,
        data_note=f"{a.data_dir} (synthetic stand-in, not OASIS)",
        opening=opening,
        fresh=a.fresh,
    )


def cmd_pipeline(a: argparse.Namespace) -> dict:
    from brainvq.pipeline import get_recipe, run_pipeline

    recipe = dataclasses.replace(
        get_recipe(a.recipe),
        **_given(a, samples="samples", precision="precision", accelerator="accelerator"),
        **_total_budget(a),
    )
    return run_pipeline(_data_config(a), Path(a.out), recipe, seed=a.seed, progress=not a.no_progress, fresh=a.fresh)


def cmd_check_judges(a: argparse.Namespace) -> dict:
    from brainvq.checkpoint import load_vqvae
    from brainvq.data.sources import load_split
    from brainvq.judges.check import check_judges
    from brainvq.judges.power import JudgeConfig

    data = _data_config(a)
    prog = not a.no_progress
    train, val, test = (load_split(data, s, progress=prog) for s in ("train", "validate", "test"))
    vqvae = load_vqvae(a.vqvae) if a.vqvae else None
    cfg = JudgeConfig(**_given(a, n="n", seed="seed", folds="folds"))
    result = check_judges(train, val, test, a.out, vqvae=vqvae, cfg=cfg, progress=prog)
    print(result.pop("markdown"), file=sys.stderr)
    return result


def cmd_report(a: argparse.Namespace) -> dict:
    from brainvq.report.html import build_report

    return {"report": str(build_report(a.run, a.out))}


def _anomaly_config(a: argparse.Namespace):
    from brainvq.anomaly.scoring import AnomalyConfig

    return AnomalyConfig(
        **_given(
            a,
            quantile="quantile",
            top_quantile="top_quantile",
            n_samples="samples",
            dilate="dilate",
            smooth_sigma="smooth",
            batch_size="batch_size",
            seed="seed",
        )
    )


def cmd_anomaly(a: argparse.Namespace) -> dict:
    from brainvq.anomaly.command import anomaly_command

    return anomaly_command(
        *_model_paths(a),
        a.input,
        a.out,
        position=a.position,
        slices_per_case=a.slices_per_case,
        threshold=a.threshold,
        calibrate_on=a.calibrate_on,
        config=_anomaly_config(a),
        map_threshold=a.map_threshold,
        figures=not a.no_figures,
        progress=not a.no_progress,
        allow_mismatch=a.allow_mismatched_pair,
    )


def cmd_evaluate_anomaly(a: argparse.Namespace) -> dict:
    from brainvq.anomaly.benchmark import BenchmarkConfig, evaluate_anomaly

    cfg = BenchmarkConfig(
        n_lesioned=a.lesioned,
        seeds=tuple(a.lesion_seeds),
        max_clean=a.max_clean,
        cdr_splits=tuple(a.cdr_splits),
        subjects_csv=a.subjects,
        anomaly=_anomaly_config(a),
    )
    return evaluate_anomaly(
        *_model_paths(a),
        _data_config(a),
        a.out,
        cfg,
        progress=not a.no_progress,
        allow_mismatch=a.allow_mismatched_pair,
    )


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from brainvq.pretrained import PRETRAINED

    parser = argparse.ArgumentParser(prog="brainvq", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-dataset", help="generate the OASIS-format stand-in dataset from the brain templates")
    p.add_argument("out", nargs="?", default="data/standin")
    p.add_argument(
        "--train-cases",
        type=_positive_int,
        help="default: StandInConfig's (36 training, 8 validation and 8 test cases of 24 slices)",
    )
    p.add_argument("--val-cases", type=_positive_int)
    p.add_argument("--test-cases", type=_positive_int)
    p.add_argument("--slices-per-case", type=_positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_make_dataset)

    p = sub.add_parser("train-vqvae", help="train the VQ-VAE")
    _add_data_args(p)
    p.add_argument("--out", default="runs/vqvae")
    p.add_argument(
        "--config",
        help="YAML config (e.g. a previous run's config.yaml); overrides the flags below",
    )
    g = p.add_argument_group("architecture (flags left out keep the defaults of VQVAEConfig)")
    g.add_argument("--downsample", type=_positive_int, help="image size / latent grid size")
    g.add_argument("--num-codes", type=_positive_int, help="K, codebook size")
    g.add_argument("--code-dim", type=_positive_int, help="D, code vector size")
    g.add_argument("--stem-channels", type=_positive_int)
    g.add_argument("--hidden-channels", type=_positive_int)
    g.add_argument(
        "--stem-res-blocks",
        type=int,
        help="residual blocks on the encoder stem (0 is faster, codes harder for the prior)",
    )
    g.add_argument("--res-bottleneck", type=_positive_int, help="channel reduction inside residual blocks")
    g.add_argument("--encoder-res-blocks", type=int, help="residual blocks at the latent grid, encoder")
    g.add_argument(
        "--decoder-res-blocks", type=int, help="... and decoder (0 trains faster but gives codes harder for the prior)"
    )
    _add_trainer_args(p, "VQVAETrainConfig")
    p.set_defaults(func=cmd_train_vqvae)

    p = sub.add_parser("evaluate", help="test-split SSIM/PSNR, codebook usage, figures")
    _add_data_args(p)
    p.add_argument("--run", default="runs/vqvae", help="run folder holding vqvae.safetensors")
    p.add_argument(
        "--weights",
        help="weights file (.safetensors or training .ckpt); default RUN/vqvae.safetensors",
    )
    p.add_argument("--out", help="output folder (default: the weights' folder)")
    p.add_argument("--split", default="test", choices=("train", "validate", "test"))
    p.add_argument(
        "--prior",
        help="prior weights: also sample and measure generated slices (brain-shape check)",
    )
    p.add_argument(
        "--pretrained",
        choices=sorted(PRETRAINED),
        help="evaluate the VQ-VAE and prior shipped in the package (output default runs/evaluate-NAME)",
    )
    p.add_argument("--allow-mismatched-pair", action="store_true", help=MISMATCH_HELP)
    p.add_argument(
        "--samples", type=_positive_int, help="number of generated slices to evaluate (default 256; the demo uses 32)"
    )
    p.add_argument(
        "--no-generation-metrics",
        action="store_true",
        help="only the brain-shape check: skip the two-sample test, Fréchet distance, memorisation, diversity and tissue judges",
    )
    p.add_argument("--temperature", type=_positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "train-prior",
        help="train the gated PixelCNN prior on the VQ-VAE codes of the whole training split",
    )
    _add_data_args(p)
    p.add_argument("--vqvae", default="runs/vqvae/vqvae.safetensors")
    p.add_argument("--out", default="runs/prior")
    p.add_argument("--config", help="YAML config (e.g. a previous run's config.yaml)")
    g = p.add_argument_group(
        "architecture (flags left out keep the defaults of PriorTrainConfig; with a two-level "
        "VQ-VAE --hidden/--layers/--kernel-size set the bottom PixelCNN, --top-* the top one)"
    )
    g.add_argument("--hidden", type=_positive_int)
    g.add_argument("--layers", type=_positive_int)
    g.add_argument("--kernel-size", type=_positive_int, help="odd")
    g.add_argument("--top-hidden", type=_positive_int)
    g.add_argument("--top-layers", type=_positive_int)
    g.add_argument("--top-kernel-size", type=_positive_int, help="odd")
    g.add_argument("--unconditional", action="store_true", help="do not condition on slice position")
    g.add_argument(
        "--intensity-scale",
        choices=SCALE_LEVELS,
        help="which levels are also conditioned on the slice's intensity scale: none, top (the top PixelCNN; "
        "a single-level prior itself) or all",
    )
    p.add_argument(
        "--keep",
        help="weights to keep: last (the end of training, default) or best (each level's best validation "
        "epoch); checked by PriorTrainConfig",
    )
    g = p.add_argument_group("two-level prior trained level by level (without --top-epochs both levels train together)")
    g.add_argument(
        "--top-epochs",
        type=_positive_int,
        help="train the top level alone first, for this many epochs; then the bottom level for --epochs",
    )
    g.add_argument(
        "--top-max-minutes",
        type=_positive_float,
        help="wall-time cap of the top level's training (--max-minutes caps the bottom level's only)",
    )
    _add_trainer_args(p, "PriorTrainConfig")
    p.set_defaults(func=cmd_train_prior)

    p = sub.add_parser(
        "sharpen",
        help="fine-tune a trained VQ-VAE's decoder with a patch discriminator (codes and priors stay valid)",
    )
    _add_data_args(p)
    p.add_argument("--vqvae", default="runs/vqvae/vqvae.safetensors")
    p.add_argument("--out", default="runs/sharpen")
    g = p.add_argument_group("adversarial loss (flags left out keep the defaults of SharpenConfig)")
    g.add_argument("--adversarial-weight", type=float, help="multiplies the adaptive weight (0: L1 only)")
    g.add_argument("--adversarial-start", type=int, help="discriminator-only steps before the decoder sees it")
    _add_trainer_args(p, "SharpenConfig")
    p.set_defaults(func=cmd_sharpen)

    p = sub.add_parser("sample", help="generate new slices: PNG grid, individual PNGs and code maps")
    _add_model_args(p)
    p.add_argument("--out", default="runs/samples")
    p.add_argument("--n", type=int, default=16, help="number of slices")
    p.add_argument(
        "--position",
        type=float,
        help="axial slice position in [0,1] (default: spread over 0.1..0.9)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "check-judges",
        help="power check: every generation judge on known-bad sets and on real validation vs test",
    )
    _add_data_args(p)
    p.add_argument("--vqvae", help="VQ-VAE weights for the texture-blob set (skipped without)")
    p.add_argument("--n", type=_positive_int, help="images per side (default: JudgeConfig's, 256)")
    p.add_argument("--folds", type=_positive_int, help="subject-grouped folds of the two-sample classifier")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", default="runs/judges", help="folder for judge_table.{csv,json,md}")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_check_judges)

    p = sub.add_parser(
        "anomaly",
        help="anomaly maps: flag codes the prior finds unlikely, restore them, outline the difference",
    )
    _add_model_args(p)
    p.add_argument("--input", required=True, help="a slice image or a folder of them")
    p.add_argument("--out", default="runs/anomaly")
    p.add_argument(
        "--position", type=float, help="axial slice position in [0,1] for every input (default: from OASIS names)"
    )
    p.add_argument(
        "--slices-per-case",
        type=_positive_int,
        help="slices in each input's whole case: position = index / (N - 1) (default: the inputs must run from slice_0)",
    )
    p.add_argument(
        "--threshold", help="per-code NLL threshold: a number or a threshold.json (e.g. from evaluate-anomaly)"
    )
    p.add_argument("--calibrate-on", help="data root whose validation split sets the threshold (--quantile)")
    p.add_argument("--map-threshold", type=_positive_float, help="contour level of the anomaly map")
    p.add_argument("--no-figures", action="store_true", help="only scores.csv, maps.npz and the summary")
    _add_anomaly_args(p)
    p.set_defaults(func=cmd_anomaly)

    p = sub.add_parser(
        "evaluate-anomaly",
        help="benchmark: synthetic lesions in real test slices, restoration vs reconstruction residual",
    )
    _add_data_args(p)
    _add_model_args(p)
    p.add_argument("--out", default="runs/anomaly_eval")
    p.add_argument("--lesioned", type=_positive_int, default=200, help="lesioned slices per lesion seed")
    p.add_argument("--lesion-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-clean", type=_positive_int, help="clean slices scored (default: the whole test split)")
    p.add_argument("--subjects", help="subjects.csv with case and cdr columns: AUROC of CDR >= 1 vs CDR 0")
    p.add_argument("--cdr-splits", nargs="+", default=["test"], choices=("train", "validate", "test"))
    _add_anomaly_args(p)
    p.set_defaults(func=cmd_evaluate_anomaly)

    p = sub.add_parser("report", help="one self-contained HTML page for a run folder (e.g. runs/demo)")
    p.add_argument("run", nargs="?", default="runs/demo")
    p.add_argument("--out", help="HTML file (default RUN/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="end to end on the stand-in dataset: data, VQ-VAE, evaluation, prior, samples")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data-dir", default="data/standin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pretrained",
        choices=(*sorted(PRETRAINED), "none"),
        default="oasis1",
        help="first show what this shipped model draws (default oasis1; none: skip)",
    )
    g = p.add_argument_group("budgets (flags left out keep the demo recipe's, see brainvq.pipeline.RECIPES)")
    g.add_argument("--vqvae-epochs", type=_positive_int)
    g.add_argument("--vqvae-minutes", type=_positive_float)
    g.add_argument("--prior-epochs", type=_positive_int)
    g.add_argument("--prior-minutes", type=_positive_float)
    g.add_argument("--samples", type=_positive_int)
    g.add_argument("--total-minutes", type=float, help=TOTAL_HELP)
    g.add_argument("--precision", help="32-true (default), bf16-mixed, 16-mixed")
    p.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "pipeline",
        help="a whole recipe on your data: VQ-VAE, evaluation, prior, judged samples, report (e.g. quality-cpu)",
    )
    _add_data_args(p)
    p.add_argument("--out", default="runs/pipeline")
    p.add_argument("--recipe", default="quality-cpu", help="demo, quality-cpu or quality-gpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=_positive_int, help="generated slices to judge (default: the recipe's)")
    p.add_argument("--precision", help="default: the recipe's (fp32 on CPU, bf16-mixed on GPU)")
    p.add_argument("--accelerator", help="default: the recipe's")
    p.add_argument("--total-minutes", type=float, help=TOTAL_HELP)
    p.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit with status 2."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.verbose:
        warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
        warnings.filterwarnings("ignore", category=FutureWarning)
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:lightning")
    keep_freed_memory()  # training, evaluation and sampling all re-allocate large buffers
    try:
        result = a.func(a)
    except (BrainVQError, FloatingPointError) as exc:
        if a.verbose:
            raise
        print(f"brainvq {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"brainvq {a.command}: interrupted (checkpoints written so far are kept)",
            file=sys.stderr,
        )
        return 130
    if result is not None and _is_rank_zero():
        print(json.dumps(result, indent=2, default=str))
    return 0


def _is_rank_zero() -> bool:
    """True except in the non-zero ranks of a distributed run (which must not print the summary twice)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


if __name__ == "__main__":
    sys.exit(main())
