"""The brain-shape check used to judge generated slices."""

from __future__ import annotations

import numpy as np

from brainvq.judges.shape import AreaModel, ShapeThresholds, brain_shape_check


def ellipse(ry: float, rx: float, size: int = 128, cy: float = 64, cx: float = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32) * 0.7


def fitted() -> AreaModel:
    real = np.stack([ellipse(40 + k, 32 + k) for k in range(-4, 5)])
    return AreaModel.fit(real, np.full(len(real), 0.5))


def test_ellipse_passes_and_variants_fail():
    model = fitted()
    ok = brain_shape_check(ellipse(40, 32)[None], [0.5], model)
    assert ok.fraction_ok == 1.0
    two = ellipse(20, 16, cy=35, cx=35) + ellipse(20, 16, cy=95, cx=95)
    ring = ellipse(40, 32) * (ellipse(30, 22) == 0)
    ring[60:68, 60:] = 0  # open the ring: a "C" shape
    rng = np.random.default_rng(0)
    texture = (rng.random((128, 128)) > 0.5).astype(np.float32)
    empty = np.zeros((128, 128), np.float32)
    tiny = ellipse(10, 8)
    report = brain_shape_check(np.stack([two, ring, texture, empty, tiny]), [0.5] * 5, model)
    assert report.fraction_ok == 0.0 and not report.per_image_ok.any()
    assert report.per_criterion["one_blob"] < 1.0 and report.per_criterion["area"] < 1.0


def test_area_depends_on_position_bin():
    real = np.stack([ellipse(20, 16)] * 3 + [ellipse(44, 36)] * 3)
    model = AreaModel.fit(real, np.array([0.05] * 3 + [0.55] * 3))
    small, large = ellipse(20, 16)[None], ellipse(44, 36)[None]
    assert brain_shape_check(small, [0.05], model).fraction_ok == 1.0
    assert brain_shape_check(small, [0.55], model).fraction_ok == 0.0
    assert brain_shape_check(large, [0.55], model).fraction_ok == 1.0


def test_thresholds_are_configurable():
    model = fitted()
    square = np.zeros((128, 128), np.float32)
    square[30:98, 34:94] = 0.7
    strict = ShapeThresholds(ellipse_overlap=0.95)
    assert brain_shape_check(square[None], [0.5], model, strict).per_criterion["elliptical"] == 0.0
    lenient = ShapeThresholds(ellipse_overlap=0.5, solidity=0.5)
    assert brain_shape_check(square[None], [0.5], model, lenient).per_criterion["elliptical"] == 1.0
