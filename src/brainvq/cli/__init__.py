"""Command-line interface: ``brainvq <command> ...`` (``brainvq -h`` lists the commands)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable

from brainvq.cli.anomaly import _anomaly_config, add_anomaly, add_evaluate_anomaly, cmd_anomaly, cmd_evaluate_anomaly
from brainvq.cli.common import (
    FRESH_HELP,
    MISMATCH_HELP,
    TOTAL_HELP,
    _add_anomaly_args,
    _add_data_args,
    _add_model_args,
    _add_trainer_args,
    _data_config,
    _devices,
    _flags_given,
    _model_paths,
    _positive_float,
    _positive_int,
    _total_budget,
    _trainer_config,
)
from brainvq.cli.data import add_make_dataset, cmd_make_dataset
from brainvq.cli.generate import _evaluate_weights, add_evaluate, add_sample, cmd_evaluate, cmd_sample
from brainvq.cli.runs import (
    add_check_judges,
    add_demo,
    add_pipeline,
    add_report,
    cmd_check_judges,
    cmd_demo,
    cmd_pipeline,
    cmd_report,
)
from brainvq.cli.train import (
    SCALE_LEVELS,
    _prior_train_config,
    _vqvae_train_config,
    add_sharpen,
    add_train_prior,
    add_train_vqvae,
    cmd_sharpen,
    cmd_train_prior,
    cmd_train_vqvae,
)
from brainvq.errors import BrainVQError
from brainvq.io import dumps_json
from brainvq.runtime import keep_freed_memory

__all__ = [
    "FRESH_HELP",
    "MISMATCH_HELP",
    "SCALE_LEVELS",
    "TOTAL_HELP",
    "_add_anomaly_args",
    "_add_data_args",
    "_add_model_args",
    "_add_trainer_args",
    "_anomaly_config",
    "_data_config",
    "_devices",
    "_evaluate_weights",
    "_flags_given",
    "_model_paths",
    "_positive_float",
    "_positive_int",
    "_prior_train_config",
    "_total_budget",
    "_trainer_config",
    "_vqvae_train_config",
    "build_parser",
    "cmd_anomaly",
    "cmd_check_judges",
    "cmd_demo",
    "cmd_evaluate",
    "cmd_evaluate_anomaly",
    "cmd_make_dataset",
    "cmd_pipeline",
    "cmd_report",
    "cmd_sample",
    "cmd_sharpen",
    "cmd_train_prior",
    "cmd_train_vqvae",
    "main",
]

# The subcommands in the order ``brainvq -h`` lists them; each adds its parser and handler.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_make_dataset,
    add_train_vqvae,
    add_evaluate,
    add_train_prior,
    add_sharpen,
    add_sample,
    add_check_judges,
    add_anomaly,
    add_evaluate_anomaly,
    add_report,
    add_demo,
    add_pipeline,
)

#: the commands that write training checkpoints (an interrupted one keeps them)
WRITE_CHECKPOINTS = (cmd_train_vqvae, cmd_train_prior, cmd_sharpen, cmd_demo, cmd_pipeline)


def build_parser() -> argparse.ArgumentParser:
    """The ``brainvq`` parser: the global flags and one subparser per command."""
    parser = argparse.ArgumentParser(prog="brainvq", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point. A foreseen error (bad input, unusable file or folder) prints one line and exits
    with status 2; an unforeseen one prints one line naming it and exits with status 1; ``-v``
    shows the traceback of either."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
        warnings.filterwarnings("ignore", category=FutureWarning)
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:lightning")
    keep_freed_memory()  # training, evaluation and sampling all re-allocate large buffers
    try:
        with contextlib.ExitStack() as args.claims:  # output folders the command locked (cli.common._claim_out)
            result = args.func(args)
    except (BrainVQError, FloatingPointError) as exc:
        if args.verbose:
            raise
        print(f"brainvq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = " (checkpoints written so far are kept)" if args.func in WRITE_CHECKPOINTS else ""
        print(f"brainvq {args.command}: interrupted{kept}", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"brainvq {args.command}: unexpected error: {type(exc).__name__}: {first} "
            "(rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return 1
    if result is not None and _is_rank_zero():
        print(dumps_json(result, default=str))
    return 0


def _is_rank_zero() -> bool:
    """True except in the non-zero ranks of a distributed run (which must not print the summary twice)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
