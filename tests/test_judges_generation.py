"""Generation metrics (memorisation, diversity, tissue): each must tell apart what differs and not what does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainvq.data.slices import SliceSet
from brainvq.judges.generation import (
    GenerationMetricsConfig,
    fractions_by_position,
    generation_metrics,
    mean_pairwise_similarity,
    nearest_training_ssim,
    tissue_fractions,
)
from tests.conftest import blob_slice

FAST = GenerationMetricsConfig(
    segmenter_work_size=64,
    segmenter_steps=120,
    diversity_pairs=32,
)


def make_slices(n_cases: int, n_slices: int = 8, size: int = 64, seed: int = 0, first_case: int = 1) -> SliceSet:
    rng = np.random.default_rng(seed)
    imgs, masks, cases, idx = [], [], [], []
    for c in range(n_cases):
        for s in range(n_slices):
            img, mask = blob_slice(rng, size, s / (n_slices - 1))
            imgs.append(img)
            masks.append(np.searchsorted([0, 85, 170, 255], mask).astype(np.uint8))
            cases.append(first_case + c)
            idx.append(s)
    cases_a, idx_a = np.array(cases), np.array(idx)
    return SliceSet(
        images=np.stack(imgs),
        names=[f"case_{c:03d}_slice_{s}.nii.png" for c, s in zip(cases, idx, strict=True)],
        case_ids=cases_a,
        slice_indices=idx_a,
        positions=(idx_a / (n_slices - 1)).astype(np.float32),
        masks=np.stack(masks),
    )


def as_float(s: SliceSet) -> torch.Tensor:
    return torch.from_numpy(np.array(s.images)).float().div(255)[:, None]


def test_nearest_training_ssim_finds_copies():
    train = make_slices(3, seed=3)
    copies = as_float(train.subset([5, 17]))
    ssim, index = nearest_training_ssim(copies, train, candidates=4)
    assert list(index) == [5, 17] and np.all(ssim > 0.999)
    others, _ = nearest_training_ssim(1 - copies, train, candidates=4)
    assert np.all(others < 0.5)


def test_pairwise_similarity_is_one_for_identical_images_and_lower_otherwise():
    x = as_float(make_slices(2, seed=4))
    same = x[:1].expand(8, -1, -1, -1)
    assert mean_pairwise_similarity(same, 16, 0)[0] == pytest.approx(1.0, abs=1e-4)
    assert mean_pairwise_similarity(x, 16, 0)[0] < 0.95
    big = torch.nn.functional.interpolate(x[:6], size=(192, 192))
    assert mean_pairwise_similarity(big, 8, 0)[1] == "ms-ssim"


def test_tissue_fractions_and_position_bins():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, 0, :2] = 1  # 2 CSF
    labels[0, 1, :] = 2  # 4 GM
    labels[0, 2, :2] = 3  # 2 WM
    np.testing.assert_allclose(tissue_fractions(labels), [[0.25, 0.5, 0.25], [0, 0, 0]])
    table = fractions_by_position(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), np.array([0.1, 0.15, 0.9]), 4)
    np.testing.assert_allclose(table[0], [0.5, 0.5, 0])
    assert np.isnan(table[1]).all() and np.isnan(table[2]).all()
    np.testing.assert_allclose(table[3], [0, 0, 1])


def test_generation_metrics_flags_copies_and_reports_baselines():
    train, val, test = (
        make_slices(4, seed=5),
        make_slices(2, seed=6, first_case=10),
        make_slices(2, seed=7, first_case=441),
    )
    fake = as_float(train.subset(np.arange(0, 16)))  # a "generator" that memorised training slices
    m = generation_metrics(fake, train.positions[:16], train, val, test, FAST, progress=False)
    assert list(m) == ["config", "memorisation", "diversity", "tissue", "timings"]  # no legacy Fréchet distance
    assert len(m["memorisation"]["near_copies"]) == 16
    assert m["memorisation"]["generated"]["mean"] > m["memorisation"]["real_test"]["mean"]
    tissue = m["tissue"]
    assert tissue["segmenter_on_test"]["pixel_accuracy"] > 0.8  # the judge learned the masks
    assert np.array(tissue["real_test"]).shape == (FAST.position_bins, 3)
    assert tissue["generated_vs_test_mean_abs_diff"] < 0.2  # copies of real slices have real tissue mix
    assert tissue["generated_positions"] == "conditioned"

    no_masks = SliceSet(**{**train.__dict__, "masks": None})
    inverted = 1 - fake[:8]  # an obviously different set: bright background, dark brain
    m2 = generation_metrics(inverted, None, no_masks, val, test, FAST, progress=False)
    assert "skipped" in m2["tissue"] and "tissue_s" not in m2["timings"]


def test_unconditional_samples_need_positions_for_the_tissue_table(tmp_path: Path):
    from brainvq.evaluate import measure_samples
    from brainvq.sample.generate import Generated

    train, val, test = (
        make_slices(3, seed=5),
        make_slices(2, seed=6, first_case=10),
        make_slices(2, seed=7, first_case=441),
    )
    fake = as_float(train.subset(np.arange(8)))
    with pytest.raises(ValueError, match="position"):  # before any training
        generation_metrics(fake, np.full(8, np.nan), train, val, test, FAST, progress=False)
    gen = Generated(torch.zeros(8, 4, 4, dtype=torch.long), fake, np.full(8, np.nan, np.float32))
    drawn = np.asarray(test.positions[:8])
    summary, took = measure_samples(gen, drawn, None, (train, val, test), None, FAST, tmp_path, judges=False)
    assert "judges" not in summary and set(took) == {"metrics_s"}  # without the judges: the drawn positions
    assert summary["metrics"]["tissue"]["generated_positions"].startswith("drawn from the test split")
    assert all(Path(f).is_file() for f in summary["metric_figures"])
