"""Small auxiliary networks used only to *judge* generated slices (issue: generation metrics).

They are trained on real data for tasks other than generation, so their features are independent of
the VQ-VAE: a slice CNN (position regressor, real-vs-generated classifier) and a tissue segmenter.
Both work at reduced resolution; the input is area-downsampled inside ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.GELU())


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


class SliceCNN(nn.Module):
    """Image (N,1,H,W) in [0,1] -> ``features`` (N,feature_dim) -> ``head`` outputs (N,outputs).

    Four stride-2 stages on a ``work_size`` copy of the input, pooled to a 4x4 map so that the
    features keep coarse layout (brain outline, ventricles), then a linear projection.
    """

    def __init__(self, outputs: int = 1, work_size: int = 64, width: int = 16, feature_dim: int = 32) -> None:
        super().__init__()
        self.work_size = work_size
        w = width
        self.body = nn.Sequential(
            _block(1, w, 1), _block(w, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 2)
        )
        self.project = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * w * 16, feature_dim))
        self.head = nn.Sequential(nn.GELU(), nn.Linear(feature_dim, outputs))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation used for Fréchet distances."""
        return self.project(self.body(_resize(x, self.work_size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TissueSegmenter(nn.Module):
    """Small U-Net: image (N,1,H,W) -> class logits (N,4,work_size,work_size) for background/CSF/GM/WM."""

    def __init__(self, work_size: int = 128, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.work_size = work_size
        w = width
        self.enc1 = nn.Sequential(_block(1, w, 1), _block(w, w, 1))
        self.enc2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w, 1))
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1))
        self.dec2 = _block(4 * w + 2 * w, 2 * w, 1)
        self.dec1 = _block(2 * w + w, w, 1)
        self.out = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _resize(x, self.work_size)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        return self.out(d1)
