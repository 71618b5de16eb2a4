"""A shipped model's quality floor, checkable without the data it was trained on.

``reference.json`` beside the weights holds per-slice statistics of the real slices (never the
slices): the plausible brain area per position bin (:class:`~brainvq.judges.shape.AreaModel`,
from the training split), and the ventricle fraction and position of every test slice (the
reference) and validation slice (the real baseline). :func:`quality_floor` applies the
brain-shape check and the ventricle judge (:func:`~brainvq.judges.anatomy.binned_difference`,
as in :mod:`brainvq.judges.power`) to generated slices against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from brainvq.data.sources import DataConfig, load_split
from brainvq.io import write_text
from brainvq.judges.anatomy import AnatomyConfig, binned_difference, per_image, ventricle_fraction
from brainvq.judges.shape import AreaModel, brain_shape_check


def ventricle_fractions(images) -> np.ndarray:
    """Each slice's ventricle fraction, 0 where there is no brain (as the judges' features count it)."""
    return np.nan_to_num(per_image(ventricle_fraction, images), nan=0.0)


def _ventricles(split) -> dict:
    return {
        "positions": np.round(np.asarray(split.positions, float), 4).tolist(),
        "ventricles": np.round(ventricle_fractions(split.images), 5).tolist(),
    }


def build_reference(data: DataConfig, progress: bool = False) -> dict:
    """The statistics of ``reference.json`` from the real splits of ``data``; it names the data
    by its folder's name, not by the path on the machine it was built on."""
    train, val, test = (load_split(data, s, progress=progress) for s in ("train", "validate", "test"))
    area = AreaModel.fit(train.images, train.positions)
    return {
        "data": Path(data.root).resolve().name,
        "area_model": {"lows": area.lows.tolist(), "highs": area.highs.tolist(), "n_bins": area.n_bins},
        "test": _ventricles(test),
        "validate": _ventricles(val),
    }


def write_reference(data: DataConfig, path: str | Path) -> Path:
    return write_text(Path(path), json.dumps(build_reference(data), indent=1))


def quality_floor(images: torch.Tensor, positions: np.ndarray, reference: dict) -> dict:
    """Share of brain-shaped slices and the ventricle judge's verdict for generated ``images``."""
    area = reference["area_model"]
    shape = brain_shape_check(
        images, positions, AreaModel(np.asarray(area["lows"]), np.asarray(area["highs"]), area["n_bins"])
    )
    cfg = AnatomyConfig()
    ref, base = reference["test"], reference["validate"]
    ventricles = binned_difference(
        ventricle_fractions(images),
        np.asarray(positions),
        np.asarray(ref["ventricles"]),
        np.asarray(ref["positions"]),
        np.asarray(base["ventricles"]),
        np.asarray(base["positions"]),
        cfg.position_bins,
        cfg.ventricle_max_ratio,
    )
    return {"fraction_brain_shaped": shape.fraction_ok, "ventricles": ventricles}
