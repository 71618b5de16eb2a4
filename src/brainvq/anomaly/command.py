"""``brainvq anomaly``: score, restore and outline anomalies in a slice or a folder of slices."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from brainvq.anomaly.outputs import overlay_figure, save_png, write_csv
from brainvq.anomaly.restore import calibrate, detect
from brainvq.anomaly.scoring import AnomalyConfig, Thresholds
from brainvq.data.dataset import as_tensor
from brainvq.data.images import IMAGE_SUFFIXES, list_image_files, read_gray
from brainvq.data.oasis import parse_slice_name
from brainvq.data.slices import positions_from_indices
from brainvq.data.sources import DataConfig, load_split
from brainvq.errors import ConfigError, DataError
from brainvq.io import write_arrays, write_json
from brainvq.models.pair import ModelPair

DEFAULT_MAP_THRESHOLD = 0.1  # contour level of the smoothed residual when no calibrated one is stored
#: what ``brainvq anomaly`` writes in its output folder (an earlier run's are refused without --overwrite)
ANOMALY_OUTPUTS = (
    "scores.csv", "maps.npz", "threshold.json", "anomaly_summary.json", "restorations", "maps", "overlays"
)  # fmt: skip


def load_inputs(
    path: str | Path, size: int, position: float | None, slices_per_case: int | None = None
) -> tuple[torch.Tensor, list[str], np.ndarray | None]:
    """Images (N,1,size,size) in [0,1], their names and slice positions (None when unknown).

    Positions come from ``position`` for every image, or else from OASIS names
    (``case_XXX_slice_Y``) like the training data: index / last index of the case, which is
    ``slices_per_case - 1`` when given, else the highest index among the inputs; then each case
    must hold its slices from slice_0 on (:func:`~brainvq.data.slices.positions_from_indices`).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}: not a PNG/JPEG image")
        files = [path]
    elif path.is_dir():
        files = list_image_files(path)
    else:
        raise DataError(f"{path}: input not found")
    images = np.stack([read_gray(f, size) for f in files]).astype(np.float32) / 255.0
    names = [f.name for f in files]
    if position is not None:
        if not 0 <= position <= 1:
            raise ConfigError(f"--position must be in [0, 1], got {position}")
        return torch.from_numpy(images)[:, None], names, np.full(len(files), position, np.float32)
    parsed = [parse_slice_name(n) for n in names]
    if any(p is None for p in parsed):
        return torch.from_numpy(images)[:, None], names, None
    case_ids = np.array([p[0] for p in parsed])
    slice_idx = np.array([p[1] for p in parsed])
    positions = _checked_positions(case_ids, slice_idx, names, slices_per_case)
    return torch.from_numpy(images)[:, None], names, positions


def _checked_positions(
    case_ids: np.ndarray, slice_idx: np.ndarray, names: list[str], slices_per_case: int | None
) -> np.ndarray:
    hint = "give --position, or --slices-per-case N for cases of N slices"
    if slices_per_case is not None:
        return positions_from_indices(case_ids, slice_idx, slices_per_case, hint)
    for case in np.unique(case_ids):
        if (case_ids == case).sum() < 2:
            first = names[int(np.flatnonzero(case_ids == case)[0])]
            raise DataError(
                f"{first}: missing slice position (only one slice of case {case}, so its position in the "
                "volume is unknown); give --position"
            )
    return positions_from_indices(case_ids, slice_idx, hint=hint)


def read_threshold(threshold: str | None) -> dict | None:
    """A given per-code NLL threshold: a number or a ``threshold.json`` written by an earlier run
    (None when none is given); a value that is not a finite number >= 0 stops with one line."""
    if threshold is None:
        return None
    p = Path(threshold)
    if p.is_file():
        try:
            info = json.loads(p.read_text())
            top = info.get("top_nll_threshold")
            Thresholds.checked(float(info["nll_threshold"]), _optional_float(top))
        except ConfigError as exc:  # before ValueError, which it is
            raise ConfigError(f"{p}: {exc}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"{p}: not a threshold file (needs a number under 'nll_threshold')") from None
        return {**info, "source": str(p)}
    try:
        value = float(threshold)
    except ValueError:
        raise ConfigError(f"--threshold {threshold!r}: neither a number nor a threshold.json file") from None
    try:
        Thresholds.checked(value)  # refuses NaN, infinite and negative values
    except ConfigError as exc:
        raise ConfigError(f"threshold {threshold}: {exc}") from None
    return {"nll_threshold": value, "source": "given"}


def resolve_threshold(
    threshold: str | dict | None,
    calibrate_on: str | None,
    pair: ModelPair,
    quantile: float,
    top_quantile: float | None = None,
) -> dict:
    """The per-code NLL threshold: a number, a ``threshold.json`` written by an earlier run
    (:func:`read_threshold`, or what it read), or the ``quantile`` of the validation split of
    ``calibrate_on`` (and, for two levels, the ``top_quantile`` of its top codes; a plain number
    leaves top codes unflagged)."""
    if threshold is not None:
        return threshold if isinstance(threshold, dict) else read_threshold(threshold)
    if calibrate_on is None:
        raise ConfigError(
            "give --threshold (a number or a threshold.json) or --calibrate-on DATA (its validation split)"
        )
    val = load_split(DataConfig(root=calibrate_on, image_size=pair.image_size), "validate", progress=False)
    pos = torch.from_numpy(np.asarray(val.positions, np.float32))
    thr = calibrate(pair, as_tensor(val), pos, quantile, top_quantile=top_quantile)
    return {
        **thr.to_dict(),
        "quantile": quantile,
        "top_quantile": top_quantile if thr.top is not None else None,
        "split": "validate",
        "data": str(calibrate_on),
        "n_slices": len(val),
        "source": "calibrated",
    }


def _per_image(
    res, images: torch.Tensor, names: list[str], positions: np.ndarray | None, level: float, figures: Path | None
) -> list[dict]:
    """One scores.csv row per input; with ``figures`` (the output folder) its restoration, map and overlay."""
    rows = []
    for i, name in enumerate(names):
        stem = name.split(".")[0]
        amap = res.anomaly_map[i, 0].numpy()
        brain = bool(res.brain[i].any())  # no brain: nothing to score (not "least anomalous")
        rows.append(
            {
                "name": name,
                "position": "" if positions is None else round(float(positions[i]), 4),
                "no_brain": not brain,
                "score": round(float(res.score[i]), 6) if brain else "",
                "baseline_score": round(float(res.baseline_score[i]), 6) if brain else "",
                "max_code_nll": round(float(res.nll[i].max()), 4),
                "flagged_codes": int(res.flagged[i].sum()),
                "flagged_top_codes": int(res.top_flagged[i].sum()),
                "anomalous_pixels": int((amap > level).sum()),
            }
        )
        if figures is not None:
            save_png(res.restoration[i, 0].numpy(), figures / "restorations" / f"{stem}.png")
            save_png(amap, figures / "maps" / f"{stem}.png", vmax=max(2 * level, 1e-6))
            overlay_figure(
                images[i, 0].numpy(),
                res.restoration[i, 0].numpy(),
                amap,
                figures / "overlays" / f"{stem}.png",
                map_threshold=level,
                title=f"{name}: score {res.score[i]:.3f}",
            )
    return rows


def anomaly_command(
    vqvae_path: str | Path,
    prior_path: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    *,
    position: float | None = None,
    slices_per_case: int | None = None,
    threshold: str | None = None,
    calibrate_on: str | None = None,
    config: AnomalyConfig | None = None,
    map_threshold: float | None = None,
    figures: bool = True,
    progress: bool = True,
    allow_mismatch: bool = False,
) -> dict:
    """What ``brainvq anomaly`` does; returns the summary written to ``anomaly_summary.json``."""
    cfg = config or AnomalyConfig()
    t0 = time.time()
    pair = ModelPair.load(vqvae_path, prior_path, allow_mismatch=allow_mismatch)
    images, names, positions = load_inputs(input_path, pair.image_size, position, slices_per_case)
    if pair.conditional and positions is None:
        raise DataError(
            f"{input_path}: missing slice positions (file names do not follow case_XXX_slice_Y); give --position"
        )
    thr = resolve_threshold(threshold, calibrate_on, pair, cfg.quantile, cfg.top_quantile)
    thresholds = Thresholds.checked(float(thr["nll_threshold"]), _optional_float(thr.get("top_nll_threshold")))
    level = map_threshold if map_threshold is not None else float(thr.get("map_threshold", DEFAULT_MAP_THRESHOLD))
    t1 = time.time()
    cond = torch.from_numpy(positions) if positions is not None else None
    res = detect(pair, images, cond, thresholds, cfg, progress=progress)
    t_detect = time.time() - t1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _per_image(res, images, names, positions, level, out if figures else None)
    no_brain = [r["name"] for r in rows if r["no_brain"]]
    if no_brain:
        warnings.warn(
            f"no brain found in {len(no_brain)} slice(s), not scored: {', '.join(no_brain[:5])}", stacklevel=2
        )
    write_csv(rows, out / "scores.csv")
    write_arrays(out / "maps.npz", names=np.array(names), anomaly=res.anomaly_map[:, 0].half().numpy())
    write_json(out / "threshold.json", {**thr, "map_threshold": level})
    summary = {
        "vqvae": str(vqvae_path),
        "prior": str(prior_path),
        "input": str(input_path),
        "n_images": len(names),
        "threshold": {**thr, "map_threshold": level},
        "config": cfg.to_dict(),
        "seconds_total": round(time.time() - t0, 2),
        "seconds_per_slice_detect": round(t_detect / len(names), 3),
        "scores_csv": str(out / "scores.csv"),
        "top_scores": sorted((r for r in rows if not r["no_brain"]), key=lambda r: -r["score"])[:5],
        "no_brain": no_brain,
        **pair.summary_warnings(),
    }
    write_json(out / "anomaly_summary.json", summary)
    return summary


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)
