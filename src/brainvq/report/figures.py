"""Matplotlib figures: reconstructions, code maps, sample grids, training curves."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from brainvq.io import atomic_write  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    atomic_write(
        path,
        lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix[1:] or "png"),
    )
    plt.close(fig)
    return path


def _img(x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a.squeeze()


def reconstruction_figure(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    ssim: Sequence[float],
    path: Path,
    titles: Sequence[str] | None = None,
) -> Path:
    """Two rows: originals (top) and reconstructions with per-image SSIM in the titles."""
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_img(originals[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(titles[i] if titles else "original", fontsize=8)
        axes[1, i].imshow(_img(reconstructions[i]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].set_title(f"SSIM {ssim[i]:.3f}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("originals (top) vs VQ-VAE reconstructions (bottom)")
    return _save(fig, path)


def code_map_figure(
    images: torch.Tensor | None,
    codes: torch.Tensor,
    num_codes: int,
    path: Path,
    titles: Sequence[str] | None = None,
) -> Path:
    """Code grids as colour maps, each under its image when ``images`` is given."""
    n = len(codes)
    rows = 2 if images is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(2.2 * n, 2.4 * rows), squeeze=False)
    for i in range(n):
        if images is not None:
            axes[0, i].imshow(_img(images[i]), cmap="gray", vmin=0, vmax=1)
            if titles:
                axes[0, i].set_title(titles[i], fontsize=8)
        axes[-1, i].imshow(
            _img(codes[i]),
            cmap="nipy_spectral",
            vmin=0,
            vmax=num_codes - 1,
            interpolation="nearest",
        )
        axes[-1, i].set_title(f"codes {tuple(codes[i].shape)}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return _save(fig, path)


def image_grid(
    images: torch.Tensor,
    path: Path,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Path:
    """A grid of grayscale images (N,1,H,W) in [0,1]."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.8 * ncols, 1.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(_img(images[i]), cmap="gray", vmin=0, vmax=1)
        if titles:
            ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def codebook_histogram(counts: np.ndarray, path: Path) -> Path:
    """Bar chart of how often each code is used, sorted by frequency."""
    counts = np.sort(np.asarray(counts, dtype=float))[::-1]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.bar(np.arange(len(counts)), counts / max(counts.sum(), 1), width=1.0)
    ax.set_xlabel("code (sorted by frequency)")
    ax.set_ylabel("fraction of positions")
    ax.set_title(f"codebook usage: {(counts > 0).sum()}/{len(counts)} codes used")
    return _save(fig, path)


def read_metrics_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSVLogger file -> {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            step = float(row.get("epoch") or 0) if "epoch" in row else float(row.get("step") or 0)
            for k, v in row.items():
                if k in ("epoch", "step") or v in ("", None):
                    continue
                series.setdefault(k, []).append((step, float(v)))
    return series


def training_curves(metrics_csv: Path, path: Path, keys: Sequence[str] | None = None) -> Path:
    """Per-epoch training curves from a CSV log (one panel per metric)."""
    series = read_metrics_csv(metrics_csv)
    keys = [k for k in (keys or sorted(series)) if k in series and not k.endswith("_step")]
    if not keys:
        raise ValueError(f"{metrics_csv}: no metrics to plot")
    ncols = min(3, len(keys))
    nrows = (len(keys) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys, strict=False):
        ax.axis("on")
        xs, ys = zip(*series[k], strict=True)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def generation_metric_figures(metrics: dict, out_dir: Path) -> list[Path]:
    """Plots of :func:`brainvq.judges.generation.generation_metrics` output: nearest-training-slice
    SSIM histograms and tissue fractions per slice position, generated vs real test."""
    out_dir = Path(out_dir)
    paths = []
    mem = metrics["memorisation"]
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.linspace(0, 1, 41)
    ax.hist(mem["real_test_nearest_ssim"], bins=bins, alpha=0.6, density=True, label="real test slices")
    ax.hist(mem["generated_nearest_ssim"], bins=bins, alpha=0.6, density=True, label="generated slices")
    ax.axvline(mem["near_copy_threshold"], color="r", ls="--", lw=1, label="near-copy threshold")
    ax.set_xlabel("highest SSIM to any training slice")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("memorisation check")
    paths.append(_save(fig, out_dir / "memorisation.png"))
    tissue = metrics.get("tissue", {})
    if "real_test" in tissue:
        edges = np.asarray(tissue["bin_edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        real, gen = np.asarray(tissue["real_test"], float), np.asarray(tissue["generated"], float)
        fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
        for k, ax in enumerate(axes):
            ax.plot(centres, real[:, k], "o-", label="real test")
            ax.plot(centres, gen[:, k], "s--", label="generated")
            ax.set_title(tissue["tissues"][k])
            ax.set_xlabel("slice position")
        axes[0].set_ylabel("fraction of brain pixels")
        axes[0].legend(fontsize=8)
        fig.suptitle("tissue fractions from the segmenter, per slice position")
        paths.append(_save(fig, out_dir / "tissue_fractions.png"))
    return paths
