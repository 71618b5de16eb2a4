"""The one brain mask: which pixels of a slice count as brain, for every module that asks.

A mask is made by :func:`brain_mask` under a :class:`MaskRule`, whose steps always run in one
order: smooth, threshold, keep the largest blob, fill holes, erode, dilate. Callers differ only
in the rule, and each rule they use is named here with the reason it differs, so the thresholds
cannot drift apart unnoticed (tests/test_brainmask.py holds every caller to its rule).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass(frozen=True)
class MaskRule:
    """How a brain mask is made from a slice; the steps run in the order of the fields."""

    threshold: float  # pixels above this (after smoothing) are brain, in the images' own units
    smooth: float = 0.0  # Gaussian sigma in pixels applied before thresholding (0: none)
    largest_blob: bool = False  # keep only the largest connected blob
    fill_holes: bool = False  # fill enclosed holes (ventricles, dark lesions stay brain)
    erode: int = 0  # erode by this many pixels (iterations of the 3x3 cross)
    dilate: int = 0  # grow by this radius in pixels: a (2r+1) square, or a Euclidean disk
    disk: bool = False  # dilate with a disk rather than a square

    def but(self, **changes) -> MaskRule:
        """This rule with some fields changed (e.g. a caller's configured threshold)."""
        return dataclasses.replace(self, **changes)

    @property
    def pointwise(self) -> bool:
        """Whether torch can make the mask on the images' own device (a threshold, a square dilation)."""
        return not (self.smooth or self.largest_blob or self.fill_holes or self.erode or (self.dilate and self.disk))


#: the acceptance judges' brain (anatomy, image features, bad sets): lightly smoothed so that
#: background specks do not count, above 0.06 (over the OASIS-1 subset's background ringing),
#: the largest blob only, its holes (the ventricles) filled
JUDGE_BRAIN = MaskRule(0.06, smooth=1.0, largest_blob=True, fill_holes=True)
#: the brain-shape check's foreground: as the judges' brain but every blob kept (it counts them)
SHAPE_FOREGROUND = MaskRule(0.06, smooth=1.0, fill_holes=True)
#: the brain-region protocol: the judges' brain grown by a 5 px disk (the brain's edge and a
#: margin of background are kept, the rest of the background is cleared)
REGION_BRAIN = JUDGE_BRAIN.but(dilate=5, disk=True)
#: brain-region SSIM of reconstructions: above 0.06, grown by 3 px (a 7x7 square) so that the
#: brain's outline, which a decoder can blur, counts
SSIM_BRAIN = MaskRule(0.06, dilate=3)
#: the anomaly detector's brain: above 0.02, low enough for dark tissue, holes filled so that a
#: dark lesion stays inside, eroded by 3 px (the skull-stripping rim reconstructs badly)
ANOMALY_BRAIN = MaskRule(0.02, fill_holes=True, erode=3)
#: where a synthetic lesion may be centred: the anomaly brain eroded by 4 px, away from the rim
LESION_TISSUE = MaskRule(0.02, fill_holes=True, erode=4)
#: where a synthetic lesion may show: the anomaly brain, not eroded
LESION_BRAIN = MaskRule(0.02, fill_holes=True)
#: tissue pixels as they are (the prior's intensity scale, the decoder's detail energy): every
#: pixel above 0.05, no shape operations, on the images' own device
TISSUE_PIXELS = MaskRule(0.05)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def _one(img: np.ndarray, rule: MaskRule) -> np.ndarray:
    """The mask of one (H,W) image."""
    fg = (ndimage.gaussian_filter(img, rule.smooth) if rule.smooth else img) > rule.threshold
    if rule.largest_blob:
        labels, n = ndimage.label(fg)
        if n > 1:  # before the hole filling, so that specks around the brain cannot enclose it
            fg = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    if rule.fill_holes:
        fg = ndimage.binary_fill_holes(fg)
    if rule.erode and fg.any():
        fg = ndimage.binary_erosion(fg, iterations=rule.erode)
    if rule.dilate:
        size = 2 * rule.dilate + 1
        shape = _disk(rule.dilate) if rule.disk else np.ones((size, size), bool)
        fg = ndimage.binary_dilation(fg, structure=shape)
    return fg


def brain_mask(images: np.ndarray | torch.Tensor, rule: MaskRule = JUDGE_BRAIN) -> np.ndarray | torch.Tensor:
    """Boolean brain mask of images (..., H, W) under ``rule``: numpy in, numpy out; torch in, torch
    out on the images' device (a :attr:`~MaskRule.pointwise` rule never leaves it)."""
    if isinstance(images, torch.Tensor):
        if not rule.pointwise:
            return torch.from_numpy(brain_mask(images.detach().cpu().numpy(), rule)).to(images.device)
        fg = images > rule.threshold
        if rule.dilate:
            flat = fg.reshape(-1, 1, *fg.shape[-2:]).float()
            fg = (F.max_pool2d(flat, 2 * rule.dilate + 1, stride=1, padding=rule.dilate) > 0).reshape(fg.shape)
        return fg
    images = np.asarray(images)
    if rule.pointwise and not rule.dilate:
        return images > rule.threshold
    if images.ndim == 2:
        return _one(images, rule)
    flat = images.reshape(-1, *images.shape[-2:])
    return np.stack([_one(im, rule) for im in flat]).reshape(images.shape) if len(flat) else images > rule.threshold
