"""Per-image features of the judges: generic image statistics, anatomy, learned position features.

The feature vector of a slice (with the position it claims to be at) concatenates
- image statistics at full resolution: brain area, brain-intensity quantiles, background mean and
  spread, fine-detail energy at four scales, mean gradient magnitude;
- anatomy: symmetry scores, ventricle fraction, intensity tissue fractions
  (:mod:`brainvq.judges.anatomy`);
- the penultimate features of a slice-position regressor trained on real training slices;
- position terms: the stated position and its gap to the regressor's estimate (signed and absolute),
  so that a slice that does not look like its stated position stands out.

With ``FeatureConfig.brain_region`` (the default: the acceptance judges' protocol,
:mod:`brainvq.judges.region`) every feature, the regressor's included, sees only the brain mask
dilated by 5 px, and the two background statistics are dropped; without it, the whole image
(the labelled whole-image diagnostic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from brainvq.data.brainmask import brain_mask
from brainvq.judges.anatomy import (
    SYMMETRY_NAMES,
    AnatomyConfig,
    as_numpy_images,
    fit_tissue_thresholds,
    intensity_tissue_fractions,
    symmetry_scores,
    ventricle_fraction,
)
from brainvq.judges.fitting import downsample, fit
from brainvq.judges.region import REGION_MARGIN, to_brain_region
from brainvq.models.auxnets import SliceCNN


@dataclass
class FeatureConfig:
    """The slice-position regressor whose penultimate layer gives the learned features."""

    work_size: int = 64  # the regressor sees 64x64 copies
    feature_dim: int = 32
    steps: int = 600
    batch_size: int = 32
    brain_region: bool = True  # the protocol: nothing outside the dilated brain mask is seen
    region_margin: int = REGION_MARGIN


STAT_NAMES: tuple[str, ...] = (
    "area",
    "q05",
    "q25",
    "q50",
    "q75",
    "q95",
    "background_mean",
    "background_std",
    "detail_1",
    "detail_2",
    "detail_4",
    "detail_8",
    "gradient",
    *SYMMETRY_NAMES,
    "ventricles",
    "csf",
    "grey_matter",
    "white_matter",
)


#: the statistics of the pixels outside the brain, which the brain-region protocol drops
BACKGROUND_STATS: tuple[str, ...] = ("background_mean", "background_std")


def image_stats(img: np.ndarray, thresholds: np.ndarray, cfg: AnatomyConfig) -> np.ndarray:
    """The :data:`STAT_NAMES` statistics of one (H,W) image in [0,1]."""
    mask = brain_mask(img, cfg.brain)
    out = np.full(len(STAT_NAMES), np.nan)
    out[0] = mask.mean()
    if mask.sum() < 50:
        return np.nan_to_num(out, nan=0.0)
    out[1:6] = np.percentile(img[mask], [5, 25, 50, 75, 95])
    back = ~ndimage.binary_dilation(mask, iterations=5)
    out[6:8] = (img[back].mean(), img[back].std()) if back.any() else (0.0, 0.0)
    t = torch.from_numpy(img)[None, None]
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    for k, f in enumerate((1, 2, 4, 8)):
        x = torch.nn.functional.avg_pool2d(t, f).numpy()[0, 0] if f > 1 else img
        mk = (torch.nn.functional.avg_pool2d(m, f).numpy()[0, 0] > 0.99) if f > 1 else mask
        detail = np.abs(x - ndimage.gaussian_filter(x, 1.0))
        out[8 + k] = detail[mk].mean() if mk.any() else 0.0
    gy, gx = np.gradient(img)
    out[12] = np.hypot(gx, gy)[mask].mean()
    k = 13 + len(SYMMETRY_NAMES)
    out[13:k] = symmetry_scores(img, cfg, mask)
    out[k] = ventricle_fraction(img, cfg, mask)
    out[k + 1 : k + 4] = intensity_tissue_fractions(img, thresholds, cfg, mask)
    return np.nan_to_num(out, nan=0.0)


@dataclass
class FeatureExtractor:
    """Fitted on real training slices: tissue thresholds, the position regressor, feature scaling.
    ``brain_region``: the protocol (:mod:`brainvq.judges.region`) is applied to every image first."""

    regressor: SliceCNN
    thresholds: np.ndarray
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    regressor_test_mae: float = float("nan")
    brain_region: bool = True
    region_margin: int = REGION_MARGIN

    @property
    def stat_names(self) -> list[str]:
        return [n for n in STAT_NAMES if not (self.brain_region and n in BACKGROUND_STATS)]

    @property
    def names(self) -> list[str]:
        cnn = [f"cnn_{i}" for i in range(self.regressor.project[-1].out_features)]
        return [*self.stat_names, *cnn, "position", "position_gap", "position_gap_abs"]

    def seen(self, images: torch.Tensor) -> torch.Tensor:
        """What the features see of images (N,1,H,W) in [0,1]: the brain region, or the whole image."""
        if not self.brain_region:
            return images.float()
        return to_brain_region(images, self.anatomy.foreground, self.region_margin)

    @torch.no_grad()
    def estimate_positions(self, images: torch.Tensor) -> np.ndarray:
        """The regressor's slice-position estimates (N,) of images (N,1,H,W) in [0,1]."""
        small = downsample(self.seen(images), self.regressor.work_size)
        return torch.sigmoid(self.regressor(small)).squeeze(1).numpy()

    @torch.no_grad()
    def raw(self, images: torch.Tensor, positions: np.ndarray) -> np.ndarray:
        """Unscaled features (N, len(names)) of images (N,1,H,W) in [0,1] at their stated positions."""
        images = self.seen(images)
        keep = [STAT_NAMES.index(n) for n in self.stat_names]
        stats = np.stack([image_stats(im, self.thresholds, self.anatomy)[keep] for im in as_numpy_images(images)])
        small = downsample(images, self.regressor.work_size)
        cnn = torch.cat([self.regressor.features(small[i : i + 256]) for i in range(0, len(small), 256)])
        pred = torch.sigmoid(self.regressor.head(cnn)).squeeze(1).numpy()
        pos = np.asarray(positions, np.float64)
        gap = pred - pos
        return np.concatenate([stats, cnn.numpy(), np.stack([pos, gap, np.abs(gap)], 1)], 1)

    def scale(self, raw: np.ndarray, clip: float = 10.0) -> np.ndarray:
        """Features standardised with the training slices' mean and spread, clipped to +-``clip``
        (a statistic that is nearly constant on real slices, e.g. the background's spread, would
        otherwise dominate every distance)."""
        return np.clip((raw - self.mean) / self.std, -clip, clip)


def train_position_regressor(
    train: torch.Tensor, positions: np.ndarray, cfg: FeatureConfig, seed: int = 0, progress: bool = False
) -> SliceCNN:
    """A :class:`SliceCNN` that predicts the normalised slice position of (downsampled) real slices."""
    torch.manual_seed(seed)  # the initial weights do not depend on what ran before (like the segmenter's)
    model = SliceCNN(outputs=1, work_size=cfg.work_size, feature_dim=cfg.feature_dim)
    target = torch.as_tensor(np.asarray(positions), dtype=torch.float32)[:, None]
    fit(
        model,
        train,
        target,
        lambda out, y: F.mse_loss(torch.sigmoid(out), y),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seed=seed,
        desc="position regressor",
        progress=progress,
    )
    return model


def fit_feature_extractor(
    train_images: torch.Tensor,
    train_positions: np.ndarray,
    cfg: FeatureConfig | None = None,
    anatomy: AnatomyConfig | None = None,
    scale_images: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> FeatureExtractor:
    """Train the position regressor on ``train_images`` (their brain regions under the protocol)
    and fit thresholds and scaling on them."""
    cfg, anatomy = cfg or FeatureConfig(), anatomy or AnatomyConfig()
    rng = np.random.default_rng(seed)
    seen = to_brain_region(train_images, anatomy.foreground, cfg.region_margin) if cfg.brain_region else train_images
    small = downsample(seen, cfg.work_size)
    regressor = train_position_regressor(small, np.asarray(train_positions), cfg, seed, progress).eval()
    pick = np.sort(rng.permutation(len(train_images))[: min(scale_images, len(train_images))])
    sub = train_images[torch.from_numpy(pick)]
    thresholds = fit_tissue_thresholds(seen[torch.from_numpy(pick[:128])], anatomy)
    fx = FeatureExtractor(
        regressor, thresholds, anatomy, brain_region=cfg.brain_region, region_margin=cfg.region_margin
    )
    raw = fx.raw(sub, np.asarray(train_positions)[pick])
    fx.mean, fx.std = raw.mean(0), raw.std(0) + 1e-6
    return fx
