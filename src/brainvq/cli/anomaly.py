"""``brainvq anomaly`` and ``evaluate-anomaly``: anomaly maps and their benchmark."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from brainvq.cli.common import (
    OVERWRITE_HELP,
    _add_anomaly_args,
    _add_data_args,
    _add_model_args,
    _claim_out,
    _data_config,
    _flags_given,
    _model_paths,
    _positive_float,
    _positive_int,
    _seed,
)

if TYPE_CHECKING:
    from brainvq.anomaly.scoring import AnomalyConfig


def _anomaly_config(args: argparse.Namespace) -> AnomalyConfig:
    """The :class:`AnomalyConfig` of the ``_add_anomaly_args`` flags."""
    from brainvq.anomaly.scoring import AnomalyConfig

    return AnomalyConfig(
        **_flags_given(
            args,
            quantile="quantile",
            top_quantile="top_quantile",
            n_samples="samples",
            dilate="dilate",
            smooth_sigma="smooth",
            batch_size="batch_size",
            seed="seed",
        )
    )


# --- anomaly -------------------------------------------------------------------------------
def add_anomaly(sub: argparse._SubParsersAction) -> None:
    """The ``anomaly`` parser."""
    p = sub.add_parser(
        "anomaly",
        help="anomaly maps: flag codes the prior finds unlikely, restore them, outline the difference",
    )
    _add_model_args(p)
    p.add_argument("--input", required=True, help="a slice image or a folder of them")
    p.add_argument("--out", default="runs/anomaly")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
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


def cmd_anomaly(args: argparse.Namespace) -> dict:
    """Anomaly maps of the given slices."""
    from brainvq.anomaly.command import ANOMALY_OUTPUTS, anomaly_command, read_threshold

    paths = _model_paths(args)
    threshold = read_threshold(args.threshold)  # before --overwrite clears a threshold.json in --out
    _claim_out(args, args.out, ANOMALY_OUTPUTS)
    return anomaly_command(
        *paths,
        args.input,
        args.out,
        position=args.position,
        slices_per_case=args.slices_per_case,
        threshold=threshold,
        calibrate_on=args.calibrate_on,
        config=_anomaly_config(args),
        map_threshold=args.map_threshold,
        figures=not args.no_figures,
        progress=not args.no_progress,
        allow_mismatch=args.allow_mismatched_pair,
    )


# --- evaluate-anomaly ----------------------------------------------------------------------
def add_evaluate_anomaly(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate-anomaly`` parser."""
    p = sub.add_parser(
        "evaluate-anomaly",
        help="benchmark: synthetic lesions in real test slices, restoration vs reconstruction residual",
    )
    _add_data_args(p)
    _add_model_args(p)
    p.add_argument("--out", default="runs/anomaly_eval")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--lesioned", type=_positive_int, default=200, help="lesioned slices per lesion seed")
    p.add_argument("--lesion-seeds", type=_seed, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-clean", type=_positive_int, help="clean slices scored (default: the whole test split)")
    p.add_argument("--subjects", help="subjects.csv with case and cdr columns: AUROC of CDR >= 1 vs CDR 0")
    p.add_argument("--cdr-splits", nargs="+", default=["test"], choices=("train", "validate", "test"))
    _add_anomaly_args(p)
    p.set_defaults(func=cmd_evaluate_anomaly)


def cmd_evaluate_anomaly(args: argparse.Namespace) -> dict:
    """The synthetic-lesion benchmark of the anomaly maps."""
    from brainvq.anomaly.benchmark import BENCHMARK_OUTPUTS, BenchmarkConfig, evaluate_anomaly

    paths = _model_paths(args)
    _claim_out(args, args.out, BENCHMARK_OUTPUTS)
    cfg = BenchmarkConfig(
        n_lesioned=args.lesioned,
        seeds=tuple(args.lesion_seeds),
        max_clean=args.max_clean,
        cdr_splits=tuple(args.cdr_splits),
        subjects_csv=args.subjects,
        anomaly=_anomaly_config(args),
    )
    return evaluate_anomaly(
        *paths,
        _data_config(args),
        args.out,
        cfg,
        progress=not args.no_progress,
        allow_mismatch=args.allow_mismatched_pair,
    )
