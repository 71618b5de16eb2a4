"""``brainvq make-dataset``: the OASIS-format stand-in dataset."""

from __future__ import annotations

import argparse

from brainvq.cli.common import _claim_out, _flags_given, _positive_int, _seed


def add_make_dataset(sub: argparse._SubParsersAction) -> None:
    """The ``make-dataset`` parser."""
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
    p.add_argument("--seed", type=_seed)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_make_dataset)


def cmd_make_dataset(args: argparse.Namespace) -> dict:
    """Write the synthetic stand-in dataset to ``args.out``."""
    from brainvq.data.standin import StandInConfig, make_standin_dataset

    _claim_out(args, args.out)  # its own --overwrite: the dataset is built aside and renamed into place
    cfg = StandInConfig(
        **_flags_given(
            args,
            n_train_cases="train_cases",
            n_val_cases="val_cases",
            n_test_cases="test_cases",
            slices_per_case="slices_per_case",
            seed="seed",
        )
    )
    path = make_standin_dataset(args.out, cfg, overwrite=args.overwrite, progress=not args.no_progress)
    return {
        "dataset": str(path),
        "note": "synthetic stand-in from MNI152/Colin27 templates, NOT OASIS",
    }
