"""The one brain mask (brainvq.data.brainmask): each named rule gives exactly the mask its callers
made by hand before, every caller asks for its named rule, and no other module thresholds slices
into a mask by itself."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

import brainvq
from brainvq.data import brainmask
from brainvq.data.brainmask import (
    ANOMALY_BRAIN,
    JUDGE_BRAIN,
    LESION_BRAIN,
    LESION_TISSUE,
    REGION_BRAIN,
    SHAPE_FOREGROUND,
    SSIM_BRAIN,
    TISSUE_PIXELS,
    MaskRule,
    brain_mask,
)


def slices() -> np.ndarray:
    """(7,64,64) float32 in [0,1]: brain-like ellipses with dark ventricles and background
    specks, near-threshold noise, and an empty slice."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    out = []
    for k in range(4):
        brain = ((yy - 32) / (22 - k)) ** 2 + ((xx - 30 - k) / 17) ** 2 <= 1
        img = np.where(brain, 0.5 + 0.2 * rng.random((64, 64)), 0.0)
        img[np.hypot(yy - 30, xx - 30) < 4 + k] = 0.01  # ventricles: a hole below every threshold
        img[rng.random((64, 64)) < 0.01] = 0.3  # specks in the background
        out.append(img)
    out += [rng.random((64, 64)) * 0.12, ndimage.gaussian_filter(rng.random((64, 64)), 2) * 0.1, np.zeros((64, 64))]
    return np.stack(out).astype(np.float32)


def _disk(r: int) -> np.ndarray:
    d = np.arange(-r, r + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= r * r


def _judges_before(img: np.ndarray, t: float = 0.06) -> np.ndarray:
    fg = ndimage.gaussian_filter(img, 1.0) > t
    labels, n = ndimage.label(fg)
    if n > 1:
        fg = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(fg)


def _anomaly_before(img: np.ndarray) -> np.ndarray:
    m = ndimage.binary_fill_holes(img > 0.02)
    return ndimage.binary_erosion(m, iterations=3) if m.any() else m


#: each named rule and the mask its callers computed by hand before there was one function
BEFORE = {
    "JUDGE_BRAIN": (JUDGE_BRAIN, _judges_before),
    "SHAPE_FOREGROUND": (
        SHAPE_FOREGROUND,
        lambda im: ndimage.binary_fill_holes(ndimage.gaussian_filter(im, 1.0) > 0.06),
    ),
    "REGION_BRAIN": (REGION_BRAIN, lambda im: ndimage.binary_dilation(_judges_before(im), structure=_disk(5))),
    "ANOMALY_BRAIN": (ANOMALY_BRAIN, _anomaly_before),
    "LESION_TISSUE": (
        LESION_TISSUE,
        lambda im: ndimage.binary_erosion(ndimage.binary_fill_holes(im > 0.02), iterations=4),
    ),
    "LESION_BRAIN": (LESION_BRAIN, lambda im: ndimage.binary_fill_holes(im > 0.02)),
    "TISSUE_PIXELS": (TISSUE_PIXELS, lambda im: im > 0.05),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_each_named_rule_is_the_mask_its_callers_made_before(name: str):
    rule, before = BEFORE[name]
    images = slices()
    expected = np.stack([before(im) for im in images])
    assert 0 < expected[:4].mean() < 1  # the test slices exercise the rule
    assert np.array_equal(brain_mask(images, rule), expected)
    assert np.array_equal(np.stack([brain_mask(im, rule) for im in images]), expected)
    masks = brain_mask(torch.from_numpy(images)[:, None], rule)  # torch in, torch out, same shape
    assert masks.dtype == torch.bool and np.array_equal(masks[:, 0].numpy(), expected)


def test_ssim_rule_is_the_max_pooled_threshold_on_the_images_device():
    x = torch.from_numpy(slices())[:, None]
    before = F.max_pool2d((x > 0.06).float(), 7, stride=1, padding=3)
    assert SSIM_BRAIN.pointwise and torch.equal(brain_mask(x, SSIM_BRAIN).float(), before)
    assert np.array_equal(brain_mask(x[:, 0].numpy(), SSIM_BRAIN), before[:, 0].numpy() > 0)  # numpy agrees


def test_rules_differ_only_where_named():
    assert REGION_BRAIN == JUDGE_BRAIN.but(dilate=5, disk=True)
    assert SHAPE_FOREGROUND == JUDGE_BRAIN.but(largest_blob=False)
    assert LESION_TISSUE == ANOMALY_BRAIN.but(erode=4) and LESION_BRAIN == ANOMALY_BRAIN.but(erode=0)
    assert not JUDGE_BRAIN.pointwise and TISSUE_PIXELS.pointwise
    with pytest.raises(dataclasses.FrozenInstanceError):
        JUDGE_BRAIN.threshold = 0.1  # frozen: a caller cannot change a shared rule


def _callers(img: np.ndarray) -> list[tuple[str, object, MaskRule]]:
    """(module, call, the rule it must ask for) for every module that masks slices."""
    from brainvq.anomaly import lesions
    from brainvq.data import subjects
    from brainvq.judges import anatomy, badsets, features, region, shape
    from brainvq.metrics import reconstruction
    from brainvq.models import conditioning
    from brainvq.train import sharpen

    x = torch.from_numpy(img)[None, None]
    return [
        (anatomy, lambda: anatomy.ventricle_fraction(img), JUDGE_BRAIN),
        (features, lambda: features.image_stats(img, np.array([0.3, 0.6]), anatomy.AnatomyConfig()), JUDGE_BRAIN),
        (badsets, lambda: badsets.shuffle_patches(x), JUDGE_BRAIN),
        (shape, lambda: shape.shape_stats(img[None]), SHAPE_FOREGROUND),
        (region, lambda: region.to_brain_region(x), REGION_BRAIN),
        (reconstruction, lambda: reconstruction.brain_region_ssim(x, x), SSIM_BRAIN),
        (lesions, lambda: lesions.tissue_masks(img), LESION_TISSUE),
        (conditioning, lambda: conditioning.intensity_scale(x), TISSUE_PIXELS),
        (sharpen, lambda: sharpen.detail_energy(x), TISSUE_PIXELS),
        (subjects, lambda: subjects.recover_subjects(np.repeat((img * 255).astype(np.uint8)[None], 3, 0)), None),
    ]


def test_every_caller_asks_for_its_named_rule(monkeypatch):
    for module, call, rule in _callers(slices()[0]):
        seen: list[MaskRule] = []

        def spy(images, r=JUDGE_BRAIN, _seen=seen):
            _seen.append(r)
            return brain_mask(images, r)

        monkeypatch.setattr(module, "brain_mask", spy)
        call()
        assert seen, f"{module.__name__} no longer asks brainvq.data.brainmask for its mask"
        if rule is None:  # subject recovery: the tissue pixels, in grey levels
            rule = TISSUE_PIXELS.but(threshold=round(TISSUE_PIXELS.threshold * 255))
        assert set(seen) == {rule}, module.__name__
    from brainvq.anomaly.scoring import AnomalyConfig

    cfg = AnomalyConfig()  # the anomaly detector's configurable mask defaults to its named rule
    assert ANOMALY_BRAIN.but(threshold=cfg.brain_threshold, erode=cfg.erode) == ANOMALY_BRAIN


#: a slice thresholded into a mask by hand: hole filling, a smoothed threshold, or an image
#: compared with a number or a threshold/foreground setting
_HAND_MADE = re.compile(
    r"binary_fill_holes|gaussian_filter\([^)]*\)\s*>"
    r"|\b(img|im|images?|x|part|arr)(\[[^\]]*\])?\s*>\s*([\d.]+\b|[\w.]*(threshold|foreground))",
    re.IGNORECASE,
)


def test_no_other_module_makes_a_brain_mask_by_hand():
    root = Path(brainvq.__file__).parent
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path != Path(brainmask.__file__)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _HAND_MADE.search(line.split("#")[0])
    ]
    assert not found, "make brain masks with brainvq.data.brainmask.brain_mask:\n" + "\n".join(found)
