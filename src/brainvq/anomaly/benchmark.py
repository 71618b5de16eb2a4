"""``brainvq evaluate-anomaly``: synthetic lesions in real test slices, restoration vs reconstruction residual."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
)

from brainvq.anomaly.lesions import LesionConfig, lesion_set
from brainvq.anomaly.outputs import overlay_figure, write_csv
from brainvq.anomaly.restore import AnomalyResult, calibrate, detect
from brainvq.anomaly.scoring import AnomalyConfig
from brainvq.data.dataset import as_tensor
from brainvq.data.slices import SliceSet
from brainvq.data.sources import DataConfig, load_split
from brainvq.errors import ConfigError, DataError
from brainvq.io import write_arrays, write_json
from brainvq.models.pair import ModelPair

METHODS = {"restoration": ("anomaly_map", "score"), "baseline": ("baseline_map", "baseline_score")}
#: what ``brainvq evaluate-anomaly`` writes in its output folder (an earlier run's are refused without --overwrite)
BENCHMARK_OUTPUTS = ("threshold.json", "scores.csv", "anomaly_results.json", "lesions_seed*.npz", "figures")


@dataclass
class BenchmarkConfig:
    """Size of the benchmark; the anomaly and lesion settings it runs with."""

    n_lesioned: int = 200  # lesioned slices per seed
    seeds: tuple[int, ...] = (0, 1, 2)
    split: str = "test"
    max_clean: int | None = None  # clean slices scored (default: the whole split)
    cdr_splits: tuple[str, ...] = ("test",)  # clean slices of these splits are scored for CDR >= 1 vs CDR 0
    subjects_csv: str | None = None  # case,cdr,... (OASIS-1 subset); without it the CDR check is skipped
    n_figures: int = 6
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    lesion: LesionConfig = field(default_factory=LesionConfig)


def pixel_metrics(amap: torch.Tensor, truth: torch.Tensor, brain: torch.Tensor) -> dict:
    """AUPRC and best Dice over thresholds of map values against lesion masks, over brain pixels."""
    sel = brain | truth
    preds, target = amap[sel].float(), truth[sel].long()
    if target.sum() == 0:
        raise DataError("no lesion pixels inside the brain masks")
    auprc = float(binary_average_precision(preds, target))
    precision, recall, thresholds = binary_precision_recall_curve(preds, target)
    dice = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    best = int(dice[:-1].argmax()) if len(thresholds) else 0
    return {"auprc": auprc, "best_dice": float(dice[best]), "best_dice_threshold": float(thresholds[best])}


def image_auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """AUROC of scores ``pos`` (should be high) against ``neg``."""
    preds = torch.cat([pos, neg]).float()
    target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    return float(binary_auroc(preds, target))


def read_cdr(path: str | Path) -> dict[int, float]:
    """case id -> CDR from a ``subjects.csv`` with columns ``case`` and ``cdr``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subjects file not found")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return {int(r["case"]): float(r["cdr"]) for r in rows if r.get("cdr") not in (None, "")}
    except (KeyError, ValueError):
        raise DataError(f"{path}: needs columns 'case' and 'cdr'") from None


def _spread(values: list[float]) -> dict:
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "per_seed": a.tolist()}


def _cdr_auroc(scores: np.ndarray, case_ids: np.ndarray, cdr: dict[int, float]) -> dict:
    """CDR >= 1 (positive) vs CDR 0 per slice and per subject (mean slice score)."""
    c = np.array([cdr.get(int(k), np.nan) for k in case_ids])
    out: dict = {}
    sel = (c >= 1) | (c == 0)
    pos, neg = sel & (c >= 1), sel & (c == 0)
    out["n_subjects_cdr_ge1"] = int(len(np.unique(case_ids[pos])))
    out["n_subjects_cdr0"] = int(len(np.unique(case_ids[neg])))
    if not pos.any() or not neg.any():
        out["note"] = "needs subjects of both groups"
        return out
    out["slice_auroc"] = image_auroc(torch.from_numpy(scores[pos]), torch.from_numpy(scores[neg]))
    subj = {k: scores[case_ids == k].mean() for k in np.unique(case_ids[sel])}
    sp = torch.tensor([v for k, v in subj.items() if cdr[int(k)] >= 1])
    sn = torch.tensor([v for k, v in subj.items() if cdr[int(k)] == 0])
    out["subject_auroc"] = image_auroc(sp, sn)
    return out


@dataclass
class _Bench:
    """What every part of one benchmark run shares."""

    pair: ModelPair
    threshold: object  # restore.Threshold, calibrated on the validation split
    cfg: BenchmarkConfig
    data: DataConfig
    test: SliceSet
    images: torch.Tensor  # (N,1,H,W) the split's slices
    positions: torch.Tensor  # (N,)
    clean_idx: np.ndarray  # the clean slices scored
    out: Path
    progress: bool

    def detect(self, images: torch.Tensor, positions: torch.Tensor) -> AnomalyResult:
        return detect(self.pair, images, positions, self.threshold, self.cfg.anomaly, progress=self.progress)

    def row(self, i: int, seed: int | str, res: AnomalyResult, k: int, **extra) -> dict:
        return {
            "split": self.cfg.split,
            "name": self.test.names[i],
            "case": int(self.test.case_ids[i]),
            "seed": seed,
            "lesioned": int(seed != ""),
            "score": float(res.score[k]),
            "baseline_score": float(res.baseline_score[k]),
            **extra,
        }


def _calibrated(
    pair: ModelPair, data: DataConfig, cfg: BenchmarkConfig, out: Path, progress: bool
) -> tuple[_Bench, int]:
    """The threshold from the validation split, and the split to score; (bench, validation slices)."""
    val = load_split(data, "validate", progress=progress)
    val_pos = torch.from_numpy(np.asarray(val.positions))
    acfg = cfg.anomaly
    threshold = calibrate(pair, as_tensor(val), val_pos, acfg.quantile, top_quantile=acfg.top_quantile)
    test = load_split(data, cfg.split, progress=progress)
    clean_idx = np.arange(len(test))
    if cfg.max_clean is not None and cfg.max_clean < len(test):
        clean_idx = np.sort(np.random.default_rng(0).choice(len(test), cfg.max_clean, replace=False))
    images, positions = as_tensor(test), torch.from_numpy(np.asarray(test.positions, np.float32))
    return _Bench(pair, threshold, cfg, data, test, images, positions, clean_idx, out, progress), len(val)


def _lesions(bench: _Bench, seed: int, clean: AnomalyResult, per_seed: dict, rows: list) -> tuple[float | None, float]:
    """One lesion seed: lesioned slices scored by both methods, their pixel and image metrics
    appended to ``per_seed``, rows to ``rows``; (best-Dice level of the restoration map, seconds)."""
    cfg, test = bench.cfg, bench.test
    rng = np.random.default_rng(1000 + seed)
    pick = np.sort(rng.choice(bench.clean_idx, cfg.n_lesioned, replace=cfg.n_lesioned > len(bench.clean_idx)))
    images, masks, params = lesion_set(bench.images[pick, 0].numpy(), seed, cfg.lesion)
    names = [test.names[i] for i in pick]
    write_arrays(bench.out / f"lesions_seed{seed}.npz", index=pick, names=np.array(names), masks=masks)
    t = time.time()
    les = bench.detect(torch.from_numpy(images)[:, None], bench.positions[pick])
    seconds = time.time() - t
    truth = torch.from_numpy(masks)[:, None]
    ref = {int(i): k for k, i in enumerate(bench.clean_idx)}
    level = None
    for method, (map_field, score_field) in METHODS.items():
        pm = pixel_metrics(getattr(les, map_field), truth, les.brain)
        neg = getattr(clean, score_field)[[ref[int(i)] for i in pick if int(i) in ref]]
        pm["image_auroc"] = image_auroc(getattr(les, score_field), neg)
        for k, v in pm.items():
            per_seed[method].setdefault(k, []).append(v)
        if method == "restoration":
            level = pm["best_dice_threshold"]
    rows += [bench.row(i, seed, les, k, **params[k]) for k, i in enumerate(pick)]
    if seed == cfg.seeds[0]:
        _figures(les, images, masks, names, bench.out, cfg.n_figures, level)
    return level, seconds


def _cdr(bench: _Bench, clean: AnomalyResult) -> dict:
    """AUROC of CDR >= 1 against CDR 0 from the clean slices' scores (and other splits')."""
    cfg = bench.cfg
    if not cfg.subjects_csv:
        return {"skipped": "no subjects file given"}
    cdr = read_cdr(cfg.subjects_csv)
    scores = {m: [getattr(clean, f).numpy()] for m, (_, f) in METHODS.items()}
    cases = [bench.test.case_ids[bench.clean_idx]]
    for split in cfg.cdr_splits:
        if split == cfg.split:
            continue
        extra = load_split(bench.data, split, progress=bench.progress)
        res = bench.detect(as_tensor(extra), torch.from_numpy(np.asarray(extra.positions, np.float32)))
        for m, (_, f) in METHODS.items():
            scores[m].append(getattr(res, f).numpy())
        cases.append(extra.case_ids)
    case_ids = np.concatenate(cases)
    result = {m: _cdr_auroc(np.concatenate(s), case_ids, cdr) for m, s in scores.items()}
    return {**result, "splits": sorted({cfg.split, *cfg.cdr_splits})}


def evaluate_anomaly(
    vqvae_path: str | Path,
    prior_path: str | Path,
    data: DataConfig,
    out_dir: str | Path,
    cfg: BenchmarkConfig | None = None,
    *,
    progress: bool = True,
    allow_mismatch: bool = False,
) -> dict:
    """Threshold on the validation split, then clean and lesioned slices of ``cfg.split``
    scored by restoration and by the reconstruction-residual baseline in the same run."""
    cfg = cfg or BenchmarkConfig()
    if cfg.n_lesioned < 2 or not cfg.seeds:
        raise ConfigError("need n_lesioned >= 2 and at least one lesion seed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pair = ModelPair.load(vqvae_path, prior_path, allow_mismatch=allow_mismatch)
    data = DataConfig(**{**asdict(data), "image_size": pair.image_size})
    bench, n_val = _calibrated(pair, data, cfg, out, progress)
    t0 = time.time()
    clean = bench.detect(bench.images[bench.clean_idx], bench.positions[bench.clean_idx])
    per_slice = (time.time() - t0) / len(bench.clean_idx)
    rows = [bench.row(i, "", clean, k) for k, i in enumerate(bench.clean_idx)]
    per_seed: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    levels, seconds = zip(*(_lesions(bench, seed, clean, per_seed, rows) for seed in cfg.seeds), strict=True)
    acfg = cfg.anomaly
    result = {
        "vqvae": str(vqvae_path),
        "prior": str(prior_path),
        "data": data.root,
        "split": cfg.split,
        "n_clean": int(len(bench.clean_idx)),
        "n_lesioned_per_seed": cfg.n_lesioned,
        "seeds": list(cfg.seeds),
        "threshold": {
            **bench.threshold.to_dict(),
            "quantile": acfg.quantile,
            "top_quantile": acfg.top_quantile if bench.threshold.top is not None else None,
            "split": "validate",
            "n_slices": n_val,
            "map_threshold": levels[0],
            "map_threshold_note": "best-Dice level of the restoration map on the first seed's lesioned slices",
        },
        "metrics": {m: {k: _spread(v) for k, v in d.items()} for m, d in per_seed.items()},
        "cdr_ge1_vs_cdr0": _cdr(bench, clean),
        "seconds_per_slice": round(per_slice, 3),
        "seconds_per_slice_lesioned": round(sum(seconds) / (cfg.n_lesioned * len(cfg.seeds)), 3),
        "device": str(pair.device),
        "config": {"benchmark": {k: v for k, v in asdict(cfg).items() if k not in ("anomaly", "lesion")}},
        "anomaly_config": acfg.to_dict(),
        "lesion_config": cfg.lesion.to_dict(),
        **pair.summary_warnings(),
    }
    write_json(out / "threshold.json", {**result["threshold"], "vqvae": str(vqvae_path), "prior": str(prior_path)})
    write_csv(rows, out / "scores.csv")
    write_json(out / "anomaly_results.json", result)
    return {k: v for k, v in result.items() if k not in ("config", "anomaly_config", "lesion_config")}


def _figures(
    res: AnomalyResult,
    images: np.ndarray,
    masks: np.ndarray,
    names: list[str],
    out: Path,
    n: int,
    level: float | None,
) -> None:
    """Overlays of the first ``n`` lesioned slices (restoration) and a baseline map for comparison."""
    for k in np.linspace(0, len(names) - 1, min(n, len(names))).astype(int):
        stem = names[k].split(".")[0]
        overlay_figure(
            images[k],
            res.restoration[k, 0].numpy(),
            res.anomaly_map[k, 0].numpy(),
            out / "figures" / f"{stem}_restoration.png",
            map_threshold=level or 0.1,
            truth=masks[k],
            title=f"{names[k]} (synthetic lesion): restoration, score {res.score[k]:.3f}",
        )
        overlay_figure(
            images[k],
            res.reconstruction[k, 0].numpy(),
            res.baseline_map[k, 0].numpy(),
            out / "figures" / f"{stem}_baseline.png",
            map_threshold=level or 0.1,
            truth=masks[k],
            title=f"{names[k]}: baseline (reconstruction residual), score {res.baseline_score[k]:.3f}",
        )
