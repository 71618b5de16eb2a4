"""``brainvq evaluate`` and ``sample``: measure a trained model, draw new slices."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainvq.cli.common import (
    MISMATCH_HELP,
    OVERWRITE_HELP,
    _add_data_args,
    _add_generation_decoder_args,
    _add_model_args,
    _claim_out,
    _data_config,
    _flags_given,
    _generation_decoder,
    _model_paths,
    _positive_int,
    _seed,
    _temperature,
)
from brainvq.errors import ConfigError


# --- evaluate ------------------------------------------------------------------------------
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` parser."""
    from brainvq.pretrained import PRETRAINED

    p = sub.add_parser("evaluate", help="test-split SSIM/PSNR, codebook usage, figures")
    _add_data_args(p)
    p.add_argument("--run", default="runs/vqvae", help="run folder holding vqvae.safetensors")
    p.add_argument(
        "--weights",
        help="weights file (.safetensors or training .ckpt); default RUN/vqvae.safetensors",
    )
    p.add_argument("--out", help="output folder (default: the weights' folder)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
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
    _add_generation_decoder_args(p)
    p.add_argument(
        "--samples", type=_positive_int, help="number of generated slices to evaluate (default 256; the demo uses 32)"
    )
    p.add_argument(
        "--no-generation-metrics",
        action="store_true",
        help="only the brain-shape check: skip the two-sample test, Fréchet distance, memorisation, diversity and tissue judges",
    )
    p.add_argument("--temperature", type=_temperature, default=1.0)
    p.add_argument(
        "--top-temperature",
        type=_temperature,
        help="two-level priors: sampling temperature of the top grid (default: --temperature)",
    )
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def _evaluate_weights(args: argparse.Namespace) -> tuple[Path, str | Path | None, Path]:
    """(VQ-VAE weights, prior weights or None, output folder) of ``brainvq evaluate``."""
    if args.pretrained:
        if args.weights or args.prior:
            raise ConfigError("give either --pretrained or --weights/--prior, not both")
        from brainvq.pretrained import pretrained_paths

        weights, prior = pretrained_paths(args.pretrained)
        return weights, prior, Path(args.out or f"runs/evaluate-{args.pretrained}")
    weights = Path(args.weights or Path(args.run) / "vqvae.safetensors")
    return weights, args.prior, Path(args.out or weights.parent)


def cmd_evaluate(args: argparse.Namespace) -> dict:
    """Reconstruction metrics of the VQ-VAE (its own decoder); with a prior, also the judges of generated
    slices drawn by the generation decoder (when there is one)."""
    from brainvq.evaluate import EVALUATE_OUTPUTS, evaluate_generation, evaluate_vqvae

    weights, prior, out = _evaluate_weights(args)
    if args.generation_decoder and not prior:
        raise ConfigError("--generation-decoder draws generated slices: give --prior too")
    if args.top_temperature is not None and not prior:
        raise ConfigError("--top-temperature is a sampling temperature: give --prior too")
    _claim_out(args, out, EVALUATE_OUTPUTS)
    prog = not args.no_progress
    result = evaluate_vqvae(weights, _data_config(args), out, split=args.split, progress=prog)
    if not prior:
        return result
    generation = evaluate_generation(
        weights,
        prior,
        _data_config(args),
        out,
        **_flags_given(args, n_samples="samples"),
        temperature=args.temperature,
        seed=args.seed,
        progress=prog,
        top_temperature=args.top_temperature,
        skip_metrics=args.no_generation_metrics,
        allow_mismatch=args.allow_mismatched_pair,
        generation_decoder=_generation_decoder(args, weights),
    )
    return {"reconstruction": result, "generation": generation}


# --- sample --------------------------------------------------------------------------------
def add_sample(sub: argparse._SubParsersAction) -> None:
    """The ``sample`` parser."""
    p = sub.add_parser("sample", help="generate new slices: PNG grid, individual PNGs and code maps")
    _add_model_args(p)
    _add_generation_decoder_args(p)
    p.add_argument("--out", default="runs/samples")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--n", type=_positive_int, default=16, help="number of slices")
    p.add_argument(
        "--position",
        type=float,
        help="axial slice position in [0,1] (default: spread over 0.1..0.9)",
    )
    p.add_argument("--temperature", type=_temperature, default=1.0)
    p.add_argument(
        "--top-temperature",
        type=_temperature,
        help="two-level priors: sampling temperature of the top grid (default: --temperature)",
    )
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> dict:
    """Draw new slices from the prior with the generation decoder (or the reconstruction one)."""
    from brainvq.sample.generate import sample_command, sample_outputs

    vqvae, prior = _model_paths(args)
    _claim_out(args, args.out, sample_outputs())
    return sample_command(
        vqvae,
        prior,
        args.out,
        n=args.n,
        position=args.position,
        temperature=args.temperature,
        seed=args.seed,
        progress=not args.no_progress,
        allow_mismatch=args.allow_mismatched_pair,
        generation_decoder=_generation_decoder(args, vqvae),
        top_temperature=args.top_temperature,
    )
