"""Shared fixtures: tiny OASIS-layout datasets written into temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def blob_slice(rng: np.random.Generator, size: int, position: float) -> tuple[np.ndarray, np.ndarray]:
    """A brain-like ellipse whose radius depends on slice position, plus its 4-class mask."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    r = 0.25 + 0.15 * np.sin(np.pi * position) + rng.uniform(-0.02, 0.02)
    d = np.sqrt((yy / 1.2) ** 2 + xx**2) / r
    mask = np.zeros((size, size), np.uint8)
    mask[d < 1.0] = 85
    mask[d < 0.9] = 170
    mask[d < 0.6] = 255
    img = np.where(mask == 85, 60, np.where(mask == 170, 140, np.where(mask == 255, 220, 0)))
    img = np.clip(img + rng.normal(0, 5, img.shape) * (mask > 0), 0, 255).astype(np.uint8)
    return img, mask


def write_oasis(root: Path, cases: dict[str, list[int]], n_slices: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/keras_png_slices_data/keras_png_slices_{split}`` (+ seg) and return root."""
    rng = np.random.default_rng(seed)
    base = root / "keras_png_slices_data"
    for split, ids in cases.items():
        img_dir = base / f"keras_png_slices_{split}"
        seg_dir = base / f"keras_png_slices_seg_{split}"
        img_dir.mkdir(parents=True, exist_ok=True)
        seg_dir.mkdir(parents=True, exist_ok=True)
        for c in ids:
            for s in range(n_slices):
                img, mask = blob_slice(rng, size, s / max(n_slices - 1, 1))
                Image.fromarray(img).save(img_dir / f"case_{c:03d}_slice_{s}.nii.png")
                Image.fromarray(mask).save(seg_dir / f"seg_{c:03d}_slice_{s}.nii.png")
    return root


@pytest.fixture
def tiny_oasis(tmp_path: Path) -> Path:
    """3 train cases, 1 validate, 1 test (ids from 441), 4 slices each, 64x64."""
    return write_oasis(tmp_path / "oasis", {"train": [1, 2, 3], "validate": [4], "test": [441]})


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINVQ_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session", autouse=True)
def _fp32_by_default():
    """Default ("auto") precision resolves to 32-true in tests: the suite's numbers and run
    times hold on every machine, whether its CPU has bf16 units or not (tests/test_precision.py
    lifts this to test "auto" itself). Tests also train eagerly: compiling each tiny model would
    cost the suite minutes (tests/test_compiled.py turns torch.compile back on). Session-scoped,
    so that module-scoped fixtures that train (e.g. tests/test_prior_pipeline.py) get it too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINVQ_PRECISION", "32-true")
        mp.setenv("BRAINVQ_COMPILE", "0")
        yield
