"""Flags, argument types and config builders shared by several ``brainvq`` commands."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from brainvq.errors import ConfigError, OutputError
from brainvq.runtime import PRECISIONS

if TYPE_CHECKING:
    from brainvq.data.sources import DataConfig
    from brainvq.train.common import TrainerConfig

FRESH_HELP = (
    "start over; without it a rerun on the same --out continues: finished stages with the same configuration "
    "are reused and an interrupted training stage resumes from its last checkpoint"
)
MISMATCH_HELP = "use a prior with a VQ-VAE other than the one whose codes it learned (warned in the summary)"
GENERATION_DECODER_HELP = (
    "VQ-VAE weights whose decoder draws the generated slices (same codebooks as the VQ-VAE's, e.g. from "
    "`brainvq sharpen`); default: the run folder's generation_decoder/vqvae.safetensors when there is one, "
    "with --pretrained the one shipped with the model"
)
PRECISION_HELP = (
    "auto (default): bf16-mixed on CPUs with bf16 units (AVX-512 BF16, AMX) and bf16-capable GPUs, "
    "else 32-true; 32-true forces fp32 ($BRAINVQ_PRECISION replaces auto)"
)
TOTAL_HELP = (
    "wall budget of the whole run in minutes, dataset included: training caps shrink when earlier "
    "stages ran late (0: no budget; default: the recipe's)"
)


# --- argument types ------------------------------------------------------------------------
def _positive_int(s: str) -> int:
    """argparse type: an integer >= 1."""
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _positive_float(s: str) -> float:
    """argparse type: a finite float > 0."""
    v = float(s)
    if not 0 < v < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _nonnegative_float(s: str) -> float:
    """argparse type: a finite float >= 0."""
    v = float(s)
    if not 0 <= v < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def _temperature(s: str) -> float:
    """argparse type of every sampling temperature: a finite float > 0."""
    try:
        return _positive_float(s)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"temperature must be > 0 and finite, got {s}") from None


#: the largest seed every generator takes (numpy's legacy seeding and Lightning's seed_everything: 32 bits)
MAX_SEED = 2**32 - 1


def _seed(s: str) -> int:
    """argparse type of every --seed: an integer in [0, MAX_SEED]."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {s!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be from 0 to {MAX_SEED}, got {s}")
    return v


def _devices(s: str) -> int | str:
    """argparse type of --devices: a count, or a name such as ``auto``."""
    return int(s) if s.isdigit() else s


# --- output folders ------------------------------------------------------------------------
OVERWRITE_HELP = "replace the outputs an earlier run of this command left in --out (default: refuse)"


def _claim_out(args: argparse.Namespace, out: str | Path, owned: Sequence[str] = ()) -> Path:
    """Check and lock the command's output folder before any work (:func:`brainvq.runs.claim_folder`;
    ``owned``: what the command writes there, refused from an earlier run without ``--overwrite``).
    The claim lasts until :func:`brainvq.cli.main` returns (or the process ends)."""
    from brainvq.runs import EarlierOutputs, claim_folder

    if not str(out).strip():
        raise OutputError("the output folder is an empty path: give a folder")
    if _later_rank():  # the first process of a distributed run holds the folder for all of them
        return Path(out)
    claims = getattr(args, "claims", None)
    if claims is None:  # a command run without main(): held until the process ends
        claims = args.claims = contextlib.ExitStack()
    try:
        return claims.enter_context(claim_folder(out, owned, overwrite=getattr(args, "overwrite", False)))
    except EarlierOutputs as exc:
        raise OutputError(f"{exc}; give --overwrite to replace them, or another output folder") from None


def _later_rank() -> bool:
    """True in the processes a distributed run starts beside its first (torchrun, Lightning's
    launcher, SLURM), which write into the first one's folders."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


# --- flag groups ---------------------------------------------------------------------------
DATA_DEFAULT = "data/standin"


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """--data and how its slices are read."""
    p.add_argument(
        "--data",
        default=DATA_DEFAULT,
        help="OASIS root (keras_png_slices_*), image folder or NIfTI file/folder",
    )
    p.add_argument(
        "--image-size",
        type=_positive_int,
        help="slices are resized to this (with a warning; default 256)",
    )
    p.add_argument("--on-wrong-size", choices=("resize", "error"), help="default resize")
    p.add_argument("--on-rgb", choices=("convert", "error"), help="default convert")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="decode images every run instead of the memmap cache",
    )


#: TrainerConfig field -> the training-loop flag (``args`` attribute) that sets it (--max-minutes aside)
LOOP_FLAGS: dict[str, str] = {
    k: k
    for k in (
        "epochs", "batch_size", "lr", "seed", "accelerator", "devices", "num_nodes", "strategy", "precision", "num_workers",
        "progress",
    )
}  # fmt: skip


def _add_trainer_args(p: argparse.ArgumentParser, config_name: str) -> None:
    """The training-loop flags (epochs, batch size, devices, ...) of a training command."""
    g = p.add_argument_group(f"training loop (flags left out keep the defaults of {config_name})")
    g.add_argument("--epochs", type=_positive_int)
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--lr", type=_positive_float)
    g.add_argument("--seed", type=_seed)
    g.add_argument(
        "--max-minutes",
        type=_positive_float,
        default=None,
        help="stop after this much training time (in total across --resume: raise it to train on)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="resume from last.ckpt of --out (or a given .ckpt)",
    )
    # defaults None: TrainerConfig holds them, and a flag given beside --config is told from one left out
    g.add_argument("--accelerator", help="cpu, gpu or auto (default)")
    g.add_argument("--devices", type=_devices, help="number of devices (e.g. 2) or auto (default)")
    g.add_argument("--num-nodes", type=_positive_int, help="default 1")
    g.add_argument("--strategy", help="e.g. ddp (gloo on CPU, nccl on GPU); default auto")
    g.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    g.add_argument("--num-workers", type=int, help="default 0")
    g.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, help="progress bars (default on; also over a --config)"
    )


def _add_anomaly_args(p: argparse.ArgumentParser) -> None:
    """The AnomalyConfig flags of ``anomaly`` and ``evaluate-anomaly``."""
    g = p.add_argument_group("anomaly detection (flags left out keep the defaults of AnomalyConfig)")
    g.add_argument("--quantile", type=float, help="threshold quantile of the validation codes' NLL")
    g.add_argument("--top-quantile", type=float, help="two-level models: the same quantile for the top codes")
    g.add_argument("--samples", type=_positive_int, help="restorations averaged per slice")
    g.add_argument("--dilate", type=int, help="grow the flagged codes by this many codes")
    g.add_argument("--smooth", type=_nonnegative_float, help="Gaussian sigma (pixels) of the residual map")
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--seed", type=_seed)
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


def _add_generation_decoder_args(p: argparse.ArgumentParser) -> None:
    """--generation-decoder PATH / --no-generation-decoder: which decoder draws generated slices."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--generation-decoder", help=GENERATION_DECODER_HELP)
    g.add_argument(
        "--no-generation-decoder",
        action="store_true",
        help="draw generated slices with the VQ-VAE's own (reconstruction) decoder",
    )


# --- from flags to configs -----------------------------------------------------------------
def _generation_decoder(args: argparse.Namespace, vqvae: Path) -> Path | None:
    """The generation decoder the command draws with: --generation-decoder's, none with
    --no-generation-decoder, with --pretrained the shipped model's (hash-checked; None when it
    ships none), else the run folder's beside ``vqvae`` if any."""
    from brainvq.runs import find_generation_decoder

    if args.generation_decoder:
        return Path(args.generation_decoder)
    if args.no_generation_decoder:
        return None
    if getattr(args, "pretrained", None):
        from brainvq.pretrained import pretrained_generation_decoder

        return pretrained_generation_decoder(args.pretrained)
    return find_generation_decoder(vqvae)


def _model_paths(args: argparse.Namespace, run: str = "runs") -> tuple[Path, Path]:
    """The (VQ-VAE, prior) weights the command uses: --pretrained's (hash-checked) or the given ones."""
    if args.pretrained:
        if args.vqvae or args.prior:
            raise ConfigError("give either --pretrained or --vqvae/--prior, not both")
        from brainvq.pretrained import pretrained_paths

        return pretrained_paths(args.pretrained)
    return (
        Path(args.vqvae or f"{run}/vqvae/vqvae.safetensors"),
        Path(args.prior or f"{run}/prior/prior.safetensors"),
    )


def _data_config(args: argparse.Namespace) -> DataConfig:
    """The :class:`DataConfig` of the ``_add_data_args`` flags."""
    from brainvq.data.sources import DataConfig

    return _data_over(args, DataConfig())


DATA_FLAGS = {"image_size": "image_size", "on_wrong_size": "on_wrong_size", "on_rgb": "on_rgb"}


def _data_over(args: argparse.Namespace, base: DataConfig) -> DataConfig:
    """``base`` (the defaults, or a ``--config``'s data) with the data flags the user gave."""
    given = _flags_given(args, **DATA_FLAGS) | ({"cache": False} if args.no_cache else {})
    return dataclasses.replace(base, root=args.data if args.data != DATA_DEFAULT else base.root, **given)


def _total_budget(args: argparse.Namespace) -> dict:
    """``{"total_minutes": ...}`` when ``--total-minutes`` was given (0 turns the budget off)."""
    if args.total_minutes is None:
        return {}
    if args.total_minutes < 0:
        raise ConfigError(f"--total-minutes must be >= 0, got {args.total_minutes}")
    return {"total_minutes": args.total_minutes or None}


def _flags_given(args: argparse.Namespace, **fields: str) -> dict:
    """``{field: args.<flag>}`` for the flags the user gave (flags left out default to None,
    so the config dataclasses stay the one place that holds defaults)."""
    return {field: getattr(args, flag) for field, flag in fields.items() if getattr(args, flag) is not None}


def _refuse_flags_with_config(args: argparse.Namespace, *flags: str) -> None:
    """``--config`` fixes the architecture: refuse architecture flags beside it instead of ignoring them."""
    given = [
        f"--{f.replace('_', '-')}" for f in flags if getattr(args, f) is not None and getattr(args, f) is not False
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot be combined with --config (it fixes the architecture): edit the config instead"
        )


def _trainer_config(args: argparse.Namespace, base: TrainerConfig) -> TrainerConfig:
    """``base`` (the command's defaults, or a ``--config``'s training loop) with the training-loop
    flags the user gave."""
    given = _flags_given(args, max_minutes="max_minutes", **LOOP_FLAGS)
    return dataclasses.replace(base, **given)
