"""The brain-region protocol: the acceptance features see nothing outside the brain mask dilated
by 5 px (issue 22), while the whole-image diagnostic does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainvq.data.brainmask import brain_mask
from brainvq.judges.features import BACKGROUND_STATS, FeatureConfig, fit_feature_extractor
from brainvq.judges.region import REGION_MARGIN, region_mask, to_brain_region
from tests.test_judges import brain

SIZE = 128


def _slices(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos = np.linspace(0.05, 0.95, n)
    return torch.from_numpy(np.stack([brain(SIZE, p, rng) for p in pos]))[:, None], pos


@pytest.fixture(scope="module")
def extractors():
    x, pos = _slices(24, 0)
    cfg = FeatureConfig(steps=30)
    region = fit_feature_extractor(x, pos, cfg, scale_images=24)
    whole = fit_feature_extractor(x, pos, FeatureConfig(steps=30, brain_region=False), scale_images=24)
    return region, whole


def _noise(x: torch.Tensor, where: str, seed: int = 1) -> torch.Tensor:
    """``x`` plus storage-like noise (std 0.03, clipped to [0,1]) only outside or only inside the
    dilated brain mask of each slice."""
    g = torch.Generator().manual_seed(seed)
    noise = (0.03 * torch.randn(x.shape, generator=g)).abs()
    masks = torch.from_numpy(np.stack([region_mask(im[0].numpy()) for im in x]))[:, None]
    keep = ~masks if where == "outside" else masks
    return (x + noise * keep).clamp(0, 1)


def test_region_mask_is_the_brain_mask_dilated_by_the_margin():
    x, _ = _slices(1, 3)
    img = x[0, 0].numpy()
    brain_px, region = brain_mask(img), region_mask(img)
    assert region[brain_px].all() and region.sum() > brain_px.sum()
    ys, xs = np.nonzero(region & ~brain_px)
    by, bx = np.nonzero(brain_px)
    d = np.sqrt((ys[:, None] - by[None]) ** 2 + (xs[:, None] - bx[None]) ** 2).min(1)
    assert d.max() <= REGION_MARGIN + 1e-9 and d.max() >= REGION_MARGIN - 1
    out = to_brain_region(x)[0, 0].numpy()
    assert (out[~region] == 0).all() and np.array_equal(out[region], img[region])


def test_noise_outside_the_dilated_mask_leaves_every_acceptance_feature_unchanged(extractors):
    region, _ = extractors
    x, pos = _slices(8, 5)
    clean = region.raw(x, pos)
    outside = region.raw(_noise(x, "outside"), pos)
    np.testing.assert_array_equal(outside, clean)
    np.testing.assert_array_equal(region.estimate_positions(_noise(x, "outside")), region.estimate_positions(x))
    inside = region.raw(_noise(x, "inside"), pos)
    changed = np.abs(inside - clean).max(0) > 1e-6
    names = np.array(region.names)
    assert changed.sum() >= 5, names[changed]
    assert {"detail_1", "q05"} <= set(names[changed])


def test_the_whole_image_diagnostic_sees_the_background(extractors):
    region, whole = extractors
    x, pos = _slices(8, 5)
    assert not set(BACKGROUND_STATS) & set(region.names) and set(BACKGROUND_STATS) <= set(whole.names)
    clean, noisy = whole.raw(x, pos), whole.raw(_noise(x, "outside"), pos)
    i = whole.names.index("background_std")
    assert (noisy[:, i] > clean[:, i] + 0.005).all()
