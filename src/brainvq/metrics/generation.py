"""How realistic, novel and diverse generated slices are, each next to a real-data baseline.

Inception-based FID needs downloaded weights and suits natural photos, not MRI, so every judge
here is trained by the project itself on real slices, for a task other than generation. The
two-sample classifier and the acceptance judges are in :mod:`brainvq.judges` (power-checked);
these are the further metrics:

- Fréchet distance between features of a slice-position regressor (not the VQ-VAE encoder);
  baseline: validation-vs-test with the same number of images;
- memorisation: highest SSIM of each generated slice to any training slice; baseline: the same
  for real test slices, which the models never saw;
- diversity: mean MS-SSIM of random pairs, generated vs real test;
- tissue realism: CSF / grey / white matter fractions from a segmenter trained on the masks, per
  slice-position bin; baseline: validation-vs-test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from tqdm.auto import tqdm

from brainvq.data.dataset import as_tensor
from brainvq.data.slices import TISSUE_NAMES, SliceSet, position_bins
from brainvq.metrics.reconstruction import per_image_ssim
from brainvq.models.auxnets import SliceCNN, TissueSegmenter


@dataclass
class GenerationMetricsConfig:
    """Sizes and training budgets of the judges (defaults run in about a minute on 2 CPU cores)."""

    seed: int = 0
    max_train_images: int = 2048  # random training subset the judges learn from
    batch_size: int = 32
    feature_work_size: int = 64  # the position regressor sees 64x64 copies
    feature_dim: int = 32
    position_steps: int = 400
    segmenter_work_size: int = 64
    segmenter_steps: int = 300
    memorisation_candidates: int = 16  # full-resolution SSIM on the k most correlated training slices
    near_copy_ssim: float = 0.95
    diversity_pairs: int = 256
    position_bins: int = 4


def downsample(images: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Area-downsample (N,1,H,W) images to (N,1,size,size), chunk by chunk."""
    if images.shape[-1] == size:
        return images.float()
    return torch.cat(
        [
            F.interpolate(images[i : i + chunk].float(), size=(size, size), mode="area")
            for i in range(0, len(images), chunk)
        ]
    )


def fit(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = 2e-3,
    flip: bool = True,
    desc: str = "fit",
    progress: bool = False,
) -> float:
    """Train ``model`` with AdamW on random mini-batches for ``steps`` steps; returns the last loss.

    ``flip`` mirrors images (and their targets when these are images too) left-right at random.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=gen)
        x, y = inputs[idx], targets[idx]
        if flip:
            mirror = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
            if y.dim() == 3:  # per-pixel targets follow their image
                y = torch.where(mirror[:, None, None], y.flip(-1), y)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])


# --- Fréchet distance in the position regressor's feature space ---------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (n,d) and ``b`` (m,d)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)  # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), symmetric and PSD
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = root_a @ cov_b @ root_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def train_position_regressor(
    train: torch.Tensor, positions: np.ndarray, cfg: GenerationMetricsConfig, progress: bool = False
) -> SliceCNN:
    """A :class:`SliceCNN` that predicts the normalised slice position of (downsampled) real slices."""
    model = SliceCNN(outputs=1, work_size=cfg.feature_work_size, feature_dim=cfg.feature_dim)
    target = torch.as_tensor(np.asarray(positions), dtype=torch.float32)[:, None]
    fit(
        model,
        train,
        target,
        lambda out, y: F.mse_loss(torch.sigmoid(out), y),
        steps=cfg.position_steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        desc="position regressor",
        progress=progress,
    )
    return model


# --- memorisation ------------------------------------------------------------------------------


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def nearest_training_ssim(
    images: torch.Tensor, train: SliceSet, candidates: int = 16, chunk: int = 512, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """For each image, the highest SSIM to a training slice and that slice's index.

    Every training slice is compared by correlation at 64x64; full-resolution SSIM is then computed
    against the ``candidates`` most correlated ones (an exhaustive SSIM search costs ~100x more).
    """
    query = _unit_rows(downsample(images, 64))
    scores, index = [], []
    for i in tqdm(range(0, len(train), chunk), desc="nearest training slices", disable=not progress, leave=False):
        ref = _unit_rows(downsample(as_tensor(train, np.arange(i, min(i + chunk, len(train)))), 64))
        s = query @ ref.T
        k = min(candidates, s.shape[1])
        top = s.topk(k, dim=1)
        scores.append(top.values)
        index.append(top.indices + i)
    scores_all, index_all = torch.cat(scores, 1), torch.cat(index, 1)
    best = scores_all.topk(min(candidates, scores_all.shape[1]), dim=1).indices
    cand = torch.gather(index_all, 1, best)
    best_ssim = np.zeros(len(images), np.float32)
    best_idx = np.zeros(len(images), np.int64)
    for j in range(len(images)):
        idx = np.sort(cand[j].numpy())
        ref = as_tensor(train, idx)
        s = per_image_ssim(images[j : j + 1].float().expand(len(ref), -1, -1, -1), ref)
        best_ssim[j] = float(s.max())
        best_idx[j] = int(idx[int(s.argmax())])
    return best_ssim, best_idx


def _distribution(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(np.max(values)),
    }


# --- diversity -----------------------------------------------------------------------------------


@torch.no_grad()
def mean_pairwise_similarity(images: torch.Tensor, pairs: int, seed: int) -> tuple[float, str]:
    """Mean MS-SSIM (SSIM for images under 176 px) over random distinct pairs; lower = more diverse."""
    n = len(images)
    if n < 2:
        raise ValueError("diversity needs at least 2 images")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # never the same image twice
    a, b = images[torch.from_numpy(i)].float(), images[torch.from_numpy(j)].float()
    if images.shape[-1] >= 176:
        vals = [
            multiscale_structural_similarity_index_measure(
                a[k : k + 64], b[k : k + 64], data_range=1.0, reduction="none", normalize="relu"
            )
            for k in range(0, pairs, 64)
        ]
        return float(torch.cat(vals).mean()), "ms-ssim"
    return float(per_image_ssim(a, b).mean()), "ssim"


# --- tissue realism ------------------------------------------------------------------------------


def train_segmenter(
    train: SliceSet, index: np.ndarray, cfg: GenerationMetricsConfig, progress: bool = False
) -> TissueSegmenter:
    """A :class:`TissueSegmenter` trained on the training masks (class ids 0..3)."""
    size = cfg.segmenter_work_size
    x = downsample(as_tensor(train, index), size)
    masks = torch.from_numpy(np.array(train.masks[index])).float()[:, None]
    y = F.interpolate(masks, size=(size, size), mode="nearest")[:, 0].long()
    model = TissueSegmenter(work_size=size)
    fit(
        model,
        x,
        y,
        F.cross_entropy,
        steps=cfg.segmenter_steps,
        batch_size=16,
        seed=cfg.seed,
        desc="segmenter",
        progress=progress,
    )
    return model


def tissue_fractions(labels: torch.Tensor) -> np.ndarray:
    """(N,h,w) class ids -> (N,3) fractions of CSF, GM and WM among the non-background pixels."""
    counts = torch.stack([(labels == c).flatten(1).sum(1) for c in (1, 2, 3)], 1).float()
    return (counts / counts.sum(1, keepdim=True).clamp_min(1)).numpy()


def fractions_by_position(fractions: np.ndarray, positions: np.ndarray, bins: int) -> np.ndarray:
    """Mean tissue fractions (bins,3) over equal-width slice-position bins (NaN for empty bins)."""
    which = position_bins(positions, bins)
    out = np.full((bins, fractions.shape[1]), np.nan)
    for b in range(bins):
        if (which == b).any():
            out[b] = fractions[which == b].mean(0)
    return out


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    both = ~(np.isnan(a) | np.isnan(b))
    return float(np.abs(a - b)[both].mean()) if both.any() else float("nan")


@torch.no_grad()
def segment(model: TissueSegmenter, images: torch.Tensor) -> torch.Tensor:
    """Class ids (N,s,s) at the segmenter's working size for images (N,1,H,W) in [0,1]."""
    return _batched(lambda x: model(x).argmax(1), downsample(images, model.work_size))


def segmenter_quality(pred: torch.Tensor, data: SliceSet) -> dict[str, float]:
    """Pixel accuracy and per-tissue Dice of predicted labels ``pred`` (N,s,s) against ``data``'s masks."""
    size = pred.shape[-1]
    masks = torch.from_numpy(np.array(data.masks)).float()[:, None]
    true = F.interpolate(masks, size=(size, size), mode="nearest")[:, 0].long()
    out = {"pixel_accuracy": float((pred == true).float().mean())}
    for c in (1, 2, 3):
        inter = ((pred == c) & (true == c)).sum().item()
        denom = (pred == c).sum().item() + (true == c).sum().item()
        out[f"dice_{TISSUE_NAMES[c].replace(' ', '_')}"] = 2 * inter / denom if denom else float("nan")
    return out


# --- everything together -------------------------------------------------------------------------


def generation_metrics(
    fake: torch.Tensor,
    fake_positions: np.ndarray | None,
    train: SliceSet,
    val: SliceSet,
    test: SliceSet,
    cfg: GenerationMetricsConfig | None = None,
    progress: bool = True,
) -> dict:
    """All metrics for generated images ``fake`` (N,1,H,W in [0,1]) against the test split.

    ``fake_positions`` are the slice positions the samples were conditioned on (None or NaN:
    unconditional; the position regressor's predictions are used for the per-position tissue table).
    """
    cfg = cfg or GenerationMetricsConfig()
    t0 = time.time()
    fake = fake.float().cpu()
    n = len(fake)
    rng = np.random.default_rng(cfg.seed)
    sub = np.sort(rng.permutation(len(train))[: cfg.max_train_images])
    work = cfg.feature_work_size
    train_small = downsample(as_tensor(train, sub), work)
    test_full, val_full = as_tensor(test), as_tensor(val)
    test_small, val_small, fake_small = downsample(test_full, work), downsample(val_full, work), downsample(fake, work)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 1)
        return time.time()

    t = time.time()
    regressor = train_position_regressor(train_small, train.positions[sub], cfg, progress)
    with torch.no_grad():
        pred_test = torch.sigmoid(regressor(test_small)).squeeze(1).numpy()
        pred_fake = torch.sigmoid(regressor(fake_small)).squeeze(1).numpy()
        f_test, f_val, f_fake = (regressor.features(x).numpy() for x in (test_small, val_small, fake_small))
    val_pick = rng.permutation(len(val))[:n]  # the floor uses as many validation slices as there are samples
    frechet = {
        "generated_vs_test": frechet_distance(f_fake, f_test),
        "validation_vs_test": frechet_distance(f_val[val_pick], f_test),
        "n_generated": n,
        "n_validation": len(val_pick),
        "feature_net": "slice-position regressor trained on the training split",
        "feature_net_test_mae": float(np.abs(pred_test - np.asarray(test.positions)).mean()),
    }
    conditioned = fake_positions is not None and not np.isnan(np.asarray(fake_positions, float)).any()
    if conditioned:
        # does the sample look like the position it was asked for? (real test slices: the MAE above)
        frechet["generated_position_mae"] = float(np.abs(pred_fake - np.asarray(fake_positions)).mean())
    t = lap("frechet_s", t)

    gen_near, gen_idx = nearest_training_ssim(fake, train, cfg.memorisation_candidates, progress=progress)
    real_near, _ = nearest_training_ssim(test_full, train, cfg.memorisation_candidates, progress=progress)
    copies = np.flatnonzero(gen_near >= cfg.near_copy_ssim)
    memorisation = {
        "generated": _distribution(gen_near),
        "real_test": _distribution(real_near),
        "near_copy_threshold": cfg.near_copy_ssim,
        "near_copies": [
            {"sample": int(i), "train_slice": train.names[gen_idx[i]], "ssim": float(gen_near[i])} for i in copies
        ],
        "generated_nearest_ssim": gen_near.round(4).tolist(),
        "real_test_nearest_ssim": real_near.round(4).tolist(),
        "method": f"SSIM at full resolution to the {cfg.memorisation_candidates} most correlated training slices (64x64 correlation over all)",
    }
    t = lap("memorisation_s", t)

    div_fake, kind = mean_pairwise_similarity(fake, cfg.diversity_pairs, cfg.seed)
    div_real, _ = mean_pairwise_similarity(test_full, cfg.diversity_pairs, cfg.seed)
    diversity = {"measure": kind, "generated": div_fake, "real_test": div_real, "pairs": cfg.diversity_pairs}
    t = lap("diversity_s", t)

    result = {
        "config": asdict(cfg),
        "frechet_position_features": frechet,
        "memorisation": memorisation,
        "diversity": diversity,
    }
    if train.masks is not None and test.masks is not None:
        seg = train_segmenter(train, sub, cfg, progress)
        test_labels = segment(seg, test_full)  # used for the tissue table and the segmenter's own score
        gen_pos = np.asarray(fake_positions) if conditioned else pred_fake
        bins = cfg.position_bins
        real_tab = fractions_by_position(tissue_fractions(test_labels), np.asarray(test.positions), bins)
        gen_tab = fractions_by_position(tissue_fractions(segment(seg, fake)), gen_pos, bins)
        val_tab = fractions_by_position(tissue_fractions(segment(seg, val_full)), np.asarray(val.positions), bins)
        result["tissue"] = {
            "tissues": list(TISSUE_NAMES[1:]),
            "bin_edges": np.linspace(0, 1, bins + 1).round(3).tolist(),
            "real_test": real_tab.round(4).tolist(),
            "generated": gen_tab.round(4).tolist(),
            "generated_vs_test_mean_abs_diff": _mean_abs_diff(gen_tab, real_tab),
            "validation_vs_test_mean_abs_diff": _mean_abs_diff(val_tab, real_tab),
            "segmenter_on_test": segmenter_quality(test_labels, test),
            "note": "fractions of the non-background pixels, averaged per slice-position bin",
        }
        lap("tissue_s", t)
    else:
        result["tissue"] = {"skipped": "the data has no masks (keras_png_slices_seg_*), so no segmenter can be trained"}
    result["timings"] = timings | {"total_s": round(time.time() - t0, 1)}
    return result
