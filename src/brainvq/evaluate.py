"""``brainvq evaluate``: reconstruction metrics and figures on the test split."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from brainvq.data.dataset import as_tensor
from brainvq.data.slices import SliceSet
from brainvq.data.sources import DataConfig, load_split
from brainvq.errors import DataError
from brainvq.io import atomic_write, write_json
from brainvq.judges.generation import GenerationMetricsConfig, generation_metrics
from brainvq.metrics.reconstruction import reconstruct
from brainvq.models.weights import load_vqvae
from brainvq.report import figures

if TYPE_CHECKING:
    from brainvq.judges.shape import AreaModel
    from brainvq.sample.generate import Generated

#: what ``brainvq evaluate`` writes in its output folder (an earlier run's are refused without --overwrite)
EVALUATE_OUTPUTS = ("eval_metrics.json", "test_ssim.npy", "figures", "samples", "generation_metrics.json")


def _split_with_masks(data: DataConfig, split: str, progress: bool, warn: bool) -> SliceSet:
    """The split with its tissue masks when the data has them, else without (tissue judge skipped)."""
    try:
        return load_split(data, split, with_masks=True, progress=progress)
    except DataError as exc:
        if warn:
            warnings.warn(f"tissue masks not used, so the tissue-realism metric is skipped: {exc}", stacklevel=2)
        return load_split(data, split, progress=progress)


def judge_samples(
    images: torch.Tensor,
    positions: np.ndarray,
    vqvae,
    train: SliceSet,
    val: SliceSet,
    test: SliceSet,
    seed: int = 0,
    progress: bool = False,
    area_model: AreaModel | None = None,
) -> tuple[dict, np.ndarray]:
    """The judges on generated slices twice: against real test slices (``judges``: the acceptance
    test), and against ``vqvae``'s reconstructions of test slices, with reconstructed validation
    slices as the floor (``judges_vs_reconstructions``). ``vqvae`` is the one whose decoder drew
    the samples (the generation decoder when there is one). The second separates what the
    prior gets wrong from what the decoder renders differently: no prior can do better than
    decoding real slices' codes.

    Also returns the positions the judges took the slices to be at: ``positions``, or for an
    unconditional prior (NaN positions) their position regressor's estimates. ``area_model``: the
    brain-shape check's, when already fitted on the training slices."""
    from brainvq.judges.power import (
        JudgeConfig,
        fit_judges,
        generated_profile,
        judge_generated,
        judge_generated_on_splits,
    )

    cfg = JudgeConfig(seed=seed)
    fitted = fit_judges(as_tensor(train), np.asarray(train.positions), cfg, progress, area_model)
    cand = generated_profile(fitted, images, positions)  # once, for both comparisons
    out = {"judges": judge_generated_on_splits(images, positions, train, val, test, cfg, fitted, progress, cand)}
    rng = np.random.default_rng(seed + 1)

    def decoded(data: SliceSet) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        idx = np.sort(rng.permutation(len(data))[: len(images)])
        sub = data.subset(idx)
        rec = reconstruct(vqvae, sub, progress=False).reconstructions
        return rec, np.asarray(sub.positions), np.asarray(sub.case_ids)

    out["judges_vs_reconstructions"] = judge_generated(cand, fitted, decoded(test), decoded(val))
    return out, cand.positions


def measure_samples(
    gen: Generated,
    drawn_positions: np.ndarray,
    vqvae,
    splits: tuple[SliceSet, SliceSet, SliceSet],
    area_model: AreaModel,
    cfg: GenerationMetricsConfig,
    out: Path,
    *,
    judges: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict, dict[str, float]]:
    """The judges (if ``judges``) and the generation metrics of generated slices ``gen`` against
    ``splits`` (train, validation, test), and how long each took. ``vqvae``: the VQ-VAE whose
    decoder drew ``gen`` (the judges' reconstructions). The tissue table places each
    slice at the position it was conditioned on; for an unconditional prior at the judges'
    position estimate, or without the judges at ``drawn_positions`` (drawn from the test split)."""
    train, val, test = splits
    summary: dict = {}
    timings: dict[str, float] = {}
    unconditional = np.isnan(np.asarray(gen.positions, float)).any()
    positions, source = gen.positions, "conditioned"
    if unconditional:
        positions, source = drawn_positions, "drawn from the test split (unconditional prior, judges not run)"
    if judges:  # the judges whose power `brainvq check-judges` measures
        t = time.time()
        judged, estimated = judge_samples(
            gen.images, gen.positions, vqvae, train, val, test, seed, progress, area_model
        )
        summary.update(judged)
        timings["judges_s"] = round(time.time() - t, 1)
        if unconditional:
            positions, source = estimated, "estimated by the judges' position regressor (unconditional prior)"
    t = time.time()
    m = generation_metrics(gen.images, positions, train, val, test, cfg, progress, source)
    summary["metrics"] = m
    summary["metric_figures"] = [str(p) for p in figures.generation_metric_figures(m, out / "figures")]
    timings["metrics_s"] = round(time.time() - t, 1)
    return summary, timings


def real_vs_generated_figure(
    generated: torch.Tensor,
    generated_positions: np.ndarray,
    test: SliceSet,
    out_path: Path,
    *,
    positions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
    real_rows: int = 2,
    generated_rows: int = 3,
    decoder: str = "reconstruction",
) -> Path:
    """Real test slices (of different subjects) and generated slices at the same slice positions,
    one column per position: the side-by-side comparison to look at before believing any metric.
    Generated slices are those already sampled (nearest in conditioned position; distinct ones),
    drawn by the ``decoder`` the title names."""
    pos, cases = np.asarray(test.positions), np.asarray(test.case_ids)
    order = list(dict.fromkeys(cases.tolist()))
    real_idx = []
    for r in range(real_rows):
        in_case = np.flatnonzero(cases == order[(r * max(1, len(order) // real_rows)) % len(order)])
        real_idx += [int(in_case[np.abs(pos[in_case] - p).argmin()]) for p in positions]
    gen_pos = np.asarray(generated_positions, float)
    if np.isnan(gen_pos).any():  # unconditional: no position to match
        gen_pos = np.linspace(0, 1, len(generated))
    ranked = [np.argsort(np.abs(gen_pos - p), kind="stable") for p in positions]
    gen_idx = [int(ranked[c][min(r, len(generated) - 1)]) for r in range(generated_rows) for c in range(len(positions))]
    titles = [f"real {cases[i]} pos {pos[i]:.2f}" for i in real_idx] + [
        f"generated pos {gen_pos[i]:.2f}" for i in gen_idx
    ]
    return figures.image_grid(
        torch.cat([as_tensor(test.subset(np.array(real_idx))), generated[gen_idx]]),
        out_path,
        ncols=len(positions),
        titles=titles,
        suptitle=(
            f"real test slices (top rows) and generated slices (bottom rows, drawn by the {decoder} decoder) "
            "at about the same positions"
        ),
    )


def pick_examples(positions: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` slices spread over the axial range (one per position quantile)."""
    order = np.argsort(positions, kind="stable")
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]


def evaluate_vqvae(
    weights: str | Path,
    data: DataConfig,
    out_dir: str | Path,
    *,
    split: str = "test",
    n_figure: int = 8,
    progress: bool = True,
) -> dict:
    """Reconstruct ``split`` with ``weights`` (the reconstruction decoder), write ``eval_metrics.json``
    and figures; return the summary."""
    out = Path(out_dir)
    model = load_vqvae(weights, "cuda" if torch.cuda.is_available() else "cpu")
    sl = load_split(data, split, progress=progress)
    res = reconstruct(model, sl, progress=progress)
    summary = {"data": str(data.root), "split": split, "weights": str(weights), **res.summary()}
    fig_dir = out / "figures"
    idx = pick_examples(sl.positions, min(n_figure, len(sl)))
    originals = as_tensor(sl.subset(idx))
    titles = [f"{sl.names[i].split('.')[0]}" for i in idx]
    figures.reconstruction_figure(
        originals, res.reconstructions[idx], res.ssim[idx], fig_dir / "reconstructions.png", titles
    )
    worst = np.argsort(res.ssim)[: min(n_figure, len(sl))]
    figures.reconstruction_figure(
        as_tensor(sl.subset(worst)),
        res.reconstructions[worst],
        res.ssim[worst],
        fig_dir / "reconstructions_worst.png",
        [sl.names[i].split(".")[0] for i in worst],
    )
    figures.code_map_figure(originals, res.codes[idx], model.config.num_codes, fig_dir / "code_maps.png", titles)
    counts = torch.bincount(res.codes.flatten(), minlength=model.config.num_codes).numpy()
    figures.codebook_histogram(counts, fig_dir / "codebook_usage.png")
    metrics_csv = Path(weights).parent / "logs" / "metrics.csv"
    if metrics_csv.is_file():
        figures.training_curves(
            metrics_csv,
            fig_dir / "vqvae_training_curves.png",
            [
                "train/loss_epoch",
                "val/ssim",
                "val/psnr",
                "val/codebook_usage",
                "val/perplexity",
                "train/codebook_usage",
            ],
        )
    summary["figures"] = sorted(str(p) for p in fig_dir.glob("*.png"))
    write_json(out / "eval_metrics.json", summary)
    atomic_write(out / "test_ssim.npy", lambda tmp: _save_npy(tmp, res.ssim))
    return summary


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file, not a name: np.save would add ".npy" to a temporary name
        np.save(fh, array)


def _sample_figures(pair, gen, test: SliceSet, out: Path, *, seed: int, temperature: float, top_temperature) -> None:
    """Completions of real test slices (sampled like ``gen``) and ``gen`` beside real test slices."""
    from brainvq.sample.generate import completion_figure

    completion_figure(
        pair,
        test,
        out / "figures" / "completions.png",
        seed=seed,
        temperature=temperature,
        top_temperature=top_temperature,
    )
    real_vs_generated_figure(
        gen.images, gen.positions, test, out / "samples" / "real_vs_generated.png", decoder=pair.drawing_decoder
    )


def evaluate_generation(
    vqvae_path: str | Path,
    prior_path: str | Path,
    data: DataConfig,
    out_dir: str | Path,
    *,
    n_samples: int = 256,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    metrics: GenerationMetricsConfig | None = None,
    skip_metrics: bool = False,
    judges: bool = True,
    allow_mismatch: bool = False,
    generation_decoder: str | Path | None = None,
    top_temperature: float | None = None,
) -> dict:
    """Sample ``n_samples`` slices at positions spread like the test split and measure how many
    are brain-shaped, next to the same statistic on the real test slices. The slices are drawn by
    ``generation_decoder`` when given (else by the VQ-VAE's own decoder); ``decoder`` in the
    summary says which. A two-level prior draws its top grid at ``top_temperature`` (default
    ``temperature``).

    Unless ``skip_metrics``, also runs the power-checked judges of :mod:`brainvq.judges` (if
    ``judges``) and the metrics of :mod:`brainvq.judges.generation` (memorisation, diversity,
    tissue realism), each with its real-data baseline. The default of 256 samples puts the
    two-sample classifier's standard error at 0.022 (0.06 at 32 per side); the summary's
    ``timings`` says how long sampling and the metrics took.
    """
    from brainvq.judges.shape import AreaModel, brain_shape_check
    from brainvq.models.pair import ModelPair
    from brainvq.sample.generate import draw_and_save

    out = Path(out_dir)
    pair = ModelPair.load(vqvae_path, prior_path, allow_mismatch=allow_mismatch, generation_decoder=generation_decoder)
    pair.check_top_temperature(top_temperature)  # before minutes of loading and fitting
    train = _split_with_masks(data, "train", progress, warn=not skip_metrics)
    test = _split_with_masks(data, "test", progress, warn=False)
    area_model = AreaModel.fit(train.images, train.positions)  # once: the shape check here and the judges'
    rng = np.random.default_rng(seed)
    t0 = time.time()
    positions = np.sort(rng.choice(np.asarray(test.positions), n_samples, replace=n_samples > len(test)))
    gen, drawn = draw_and_save(
        pair,
        positions,
        out / "samples",
        temperature=temperature,
        top_temperature=top_temperature,
        seed=seed,
        progress=progress,
    )
    gen_pos = positions  # unconditional samples are judged against the test positions' range
    timings = {"generation_s": round(time.time() - t0, 1)}
    fake = brain_shape_check(gen.images, gen_pos, area_model)
    real = brain_shape_check(test.images, test.positions, area_model)
    _sample_figures(pair, gen, test, out, seed=seed, temperature=temperature, top_temperature=top_temperature)
    summary = {
        "data": str(data.root),
        "n_samples": n_samples,
        **drawn,
        "generated": fake.to_dict(),
        "real_test": real.to_dict(),
    }
    if not skip_metrics:
        val = _split_with_masks(data, "validate", progress, warn=False)
        cfg = metrics or GenerationMetricsConfig(seed=seed)
        splits = (train, val, test)
        measured, took = measure_samples(
            gen, gen_pos, pair.drawing_vqvae, splits, area_model, cfg, out, judges=judges, seed=seed, progress=progress
        )
        summary.update(measured)
        timings.update(took)
    summary["timings"] = {**timings, "total_s": round(time.time() - t0, 1)}
    write_json(out / "generation_metrics.json", summary)
    return summary
