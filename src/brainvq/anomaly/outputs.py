"""Files the anomaly commands write: overlay figures, map PNGs and score tables."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from brainvq.io import atomic_write, write_png  # noqa: E402


def overlay_figure(
    image: np.ndarray,
    restoration: np.ndarray,
    amap: np.ndarray,
    path: Path,
    *,
    map_threshold: float,
    truth: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Four panels: input, restoration, anomaly map, input with the map's contour (red) and,
    when given, the true lesion outline (green)."""
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(restoration, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("restoration", fontsize=9)
    im = axes[2].imshow(amap, cmap="inferno", vmin=0, vmax=max(float(amap.max()), map_threshold * 2, 1e-6))
    axes[2].set_title("anomaly map", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02)
    axes[3].imshow(image, cmap="gray", vmin=0, vmax=1)
    if (amap > map_threshold).any():
        axes[3].contour(amap > map_threshold, levels=[0.5], colors="red", linewidths=0.9)
    if truth is not None and truth.any():
        axes[3].contour(truth, levels=[0.5], colors="lime", linewidths=0.9)
    axes[3].set_title(
        f"contour (map > {map_threshold:.3g})" + (", truth green" if truth is not None else ""), fontsize=8
    )
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def save_png(arr: np.ndarray, path: Path, vmax: float = 1.0) -> Path:
    """A (H,W) float array scaled by ``vmax`` to an 8-bit grayscale PNG."""
    img = np.clip(arr / max(vmax, 1e-8), 0, 1) * 255
    return write_png(Path(path), img.round().astype(np.uint8))


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    """Rows of dicts (the union of their keys as columns) to ``path``."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(Path(path), write)
    return Path(path)
