"""Judges with proven power: anatomy judges, known-bad sets, grouped two-sample test, the power check."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from scipy import ndimage

from brainvq.data.brainmask import brain_mask
from brainvq.judges import badsets
from brainvq.judges.anatomy import (
    fit_tissue_thresholds,
    intensity_tissue_fractions,
    symmetry_score,
    ventricle_fraction,
)
from brainvq.judges.check import REAL, check_judges, make_sets
from brainvq.judges.features import FeatureConfig
from brainvq.judges.power import DESIGNED_TO_REJECT, JUDGES, JudgeConfig, fit_judges
from brainvq.judges.prior_gap import RANDOM_BOTTOM_FRACTIONS, random_bottom_name
from brainvq.judges.shape import AreaModel
from brainvq.judges.twosample import classifier_two_sample, frechet, group_folds


def brain(size: int, position: float, rng: np.random.Generator, ventricles: float = 1.0) -> np.ndarray:
    """A symmetric T1-like slice in [0,1]: grey rim, white interior, two dark ventricles whose size
    grows with ``position`` (times ``ventricles``), a little texture."""
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size - 0.5
    r = 0.36 + rng.uniform(-0.02, 0.02)
    d = np.sqrt((yy / 1.15) ** 2 + xx**2) / r
    img = np.where(d < 1.0, 0.45, 0.0)
    img = np.where(d < 0.8, 0.8, img)
    vr = (0.03 + 0.07 * position) * ventricles
    for side in (-1, 1):
        img = np.where(((xx - side * 0.07) / (vr + 1e-9)) ** 2 + (yy / (2 * vr + 1e-9)) ** 2 < 1.0, 0.15, img)
    texture = ndimage.gaussian_filter(rng.normal(0, 0.04, (size, size)), 1.0)
    texture = (texture + texture[:, ::-1]) / 2  # symmetric texture: real brains mirror well
    return np.clip(img + texture * (d < 1.0), 0, 1).astype(np.float32)


def write_brains(root: Path, cases: dict[str, list[int]], n_slices: int = 6, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, ids in cases.items():
        folder = root / f"keras_png_slices_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for c in ids:
            for s in range(n_slices):
                img = brain(size, s / (n_slices - 1), rng)
                Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"case_{c:03d}_slice_{s}.nii.png")
    return root


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images))[:, None]


# --- anatomy judges ---------------------------------------------------------------------------


def test_ventricle_fraction_grows_with_the_ventricles():
    rng = np.random.default_rng(0)
    none = ventricle_fraction(brain(128, 0.5, rng, ventricles=0.0))
    small = ventricle_fraction(brain(128, 0.0, rng))
    large = ventricle_fraction(brain(128, 1.0, rng))
    assert none < 0.005 < small < large
    assert np.isnan(ventricle_fraction(np.zeros((64, 64), np.float32)))


def test_symmetry_is_high_for_mirrored_brains_even_tilted_and_low_for_mixed_halves():
    rng = np.random.default_rng(1)
    img = brain(128, 0.7, rng)
    tilted = ndimage.rotate(img, 20, reshape=False, order=1)
    lopsided = img.copy()
    lopsided[:, 64:] = brain(128, 0.0, rng, ventricles=2.5)[:, 64:]
    lopsided[:, 64:] = ndimage.shift(lopsided[:, 64:], (8, 0), order=1)
    assert symmetry_score(img) > 0.95
    assert symmetry_score(tilted) > 0.9
    assert symmetry_score(lopsided) < symmetry_score(img) - 0.1


def test_intensity_tissue_classes_recover_three_levels():
    rng = np.random.default_rng(2)
    imgs = [brain(64, p, rng) for p in (0.2, 0.5, 0.9)]
    t = fit_tissue_thresholds(_stack(imgs))
    assert 0.15 < t[0] < 0.45 < t[1] < 0.8
    frac = intensity_tissue_fractions(imgs[1], t)
    assert frac.sum() == pytest.approx(1.0) and frac[2] > frac[1] > frac[0] > 0


# --- known-bad sets ---------------------------------------------------------------------------


def test_blur_and_noise_sets_are_what_they_say():
    rng = np.random.default_rng(3)
    x = _stack([brain(64, p, rng) for p in (0.1, 0.6)])
    blurred = badsets.blur(x, 2.0)
    np.testing.assert_allclose(
        blurred[0, 0].numpy(), np.clip(ndimage.gaussian_filter(x[0, 0].numpy(), 2.0), 0, 1), atol=1e-6
    )
    flat = torch.full((4, 1, 64, 64), 0.5)
    noisy = badsets.add_noise(flat, 0.05, seed=0)
    assert float((noisy - flat).std()) == pytest.approx(0.05, rel=0.05)
    assert torch.equal(noisy, badsets.add_noise(flat, 0.05, seed=0))  # seeded


def test_patch_shuffle_moves_only_brain_tiles_and_keeps_their_pixels():
    rng = np.random.default_rng(4)
    x = _stack([brain(64, 0.8, rng)])
    out = badsets.shuffle_patches(x, 8, seed=0)
    a, b = x[0, 0].numpy(), out[0, 0].numpy()
    mask = brain_mask(a)
    tiles = mask.reshape(8, 8, 8, 8).all(axis=(1, 3)).repeat(8, 0).repeat(8, 1)
    assert np.array_equal(a[~tiles], b[~tiles])  # outside the brain's whole tiles: untouched
    assert not np.array_equal(a[tiles], b[tiles])
    np.testing.assert_allclose(np.sort(a[tiles]), np.sort(b[tiles]))
    scattered = badsets.shuffle_patches(x, 16, seed=0, inside_brain=False)[0, 0].numpy()
    assert (scattered > 0.06).any(1).sum() > 0 and not np.array_equal(scattered, a)


def test_swapped_halves_join_two_subjects_at_the_nearest_position():
    rng = np.random.default_rng(5)
    x = _stack([brain(32, p, rng) for p in (0.0, 0.5, 0.52, 1.0)])
    out = badsets.swap_halves(x, np.array([0.0, 0.5, 0.52, 1.0]), np.array([1, 1, 2, 2]), seed=0)
    assert torch.equal(out[:, :, :, :16], x[:, :, :, :16])
    assert torch.equal(out[1, :, :, 16:], x[2, :, :, 16:])  # case 1 at 0.5 takes case 2 at 0.52
    assert torch.equal(out[2, :, :, 16:], x[1, :, :, 16:])


def test_wrong_positions_are_far_enough_and_inside_the_range():
    p = np.linspace(0, 1, 101)
    q = badsets.wrong_positions(p, 0.3, seed=0)
    assert (np.abs(q - p) >= 0.3 - 1e-6).all() and (q >= 0).all() and (q <= 1).all()


class _PoolVQ(torch.nn.Module):
    """Stand-in VQ-VAE: 4x4 mean pooled and quantised to 16 levels; decode repeats each cell."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_codes=16)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # where the judges look for its device

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.avg_pool2d(x, 4)[:, 0] * 15).round().long()

    def encode_levels(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.encode(x)  # a single level

    def decode(self, codes: torch.Tensor, top: None = None) -> torch.Tensor:
        return (codes.float() / 15).repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]


def test_texture_blobs_redraw_only_codes_inside_the_brain():
    rng = np.random.default_rng(6)
    x = _stack([brain(64, p, rng) for p in (0.2, 0.9)])
    vq = _PoolVQ()
    blobs = badsets.texture_blobs(vq, x, seed=0)
    codes, new = vq.encode(x), vq.encode(blobs)
    inside = (
        torch.nn.functional.interpolate(
            torch.from_numpy(np.stack([brain_mask(im) for im in x[:, 0].numpy()])).float()[:, None],
            size=(16, 16),
            mode="area",
        )[:, 0]
        > 0.5
    )
    assert torch.equal(codes[~inside], new[~inside])
    assert not torch.equal(codes[inside], new[inside])
    assert set(new[inside].tolist()) <= set(codes[inside].tolist())


# --- two-sample test ----------------------------------------------------------------------------


def test_group_folds_keep_each_subject_in_one_fold():
    ga, gb = np.repeat(np.arange(6), 5), np.repeat(np.arange(10, 16), 5)
    fa, fb = group_folds(ga, gb, 3, seed=0)
    for g, f in ((ga, fa), (gb, fb)):
        assert all(len(set(f[g == s])) == 1 for s in np.unique(g))
        assert sorted(np.bincount(f).tolist()) == [10, 10, 10]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_subject_is_split_between_training_and_held_out_rows(seed):
    # unequal subject sizes, and the same ids on both sides (a subject is a subject within its side)
    rng = np.random.default_rng(seed)
    ga, gb = np.sort(rng.integers(0, 17, 256)), np.sort(rng.integers(0, 23, 256))
    k = 6
    fa, fb = group_folds(ga, gb, k, seed=seed)
    for g, f in ((ga, fa), (gb, fb)):
        assert set(f.tolist()) == set(range(k))  # every fold holds rows of both sides
        for held_out in range(k):
            train, test = set(g[f != held_out].tolist()), set(g[f == held_out].tolist())
            assert not train & test
    assert np.array_equal((fa, fb), group_folds(ga, gb, k, seed=seed))  # reproducible for a seed


def test_grouped_classifier_separates_shifted_features_and_not_equal_ones():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(12), 10)
    a, b = rng.normal(size=(120, 5)), rng.normal(size=(120, 5))
    same = classifier_two_sample(a, b, groups, groups + 100, folds=4)
    shifted = classifier_two_sample(a, b + 1.5, groups, groups + 100, folds=4)
    assert same["accuracy"] < 0.65 and shifted["accuracy"] > 0.9
    assert shifted["stderr"] >= 0 and len(shifted["fold_accuracies"]) == 4


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with a general matrix square root, as an independent check."""
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.real(root)))


def test_frechet_distance_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.7
    assert frechet(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-6)
    assert frechet(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0, 0, 0, 0])  # same covariance: distance = squared mean shift
    assert frechet(a, shifted) == pytest.approx(9.0, rel=1e-6)


# --- the power check ---------------------------------------------------------------------------


FAST = functools.partial(JudgeConfig, n=24, folds=3, features=FeatureConfig(steps=40), max_train_images=96)


def test_fit_judges_takes_a_fitted_area_model_or_fits_its_own():
    rng = np.random.default_rng(9)
    pos = np.linspace(0, 1, 12)
    x = _stack([brain(64, p, rng) for p in pos])
    given = AreaModel.fit(x, pos)
    cfg = FAST(features=FeatureConfig(steps=2))
    assert fit_judges(x, pos, cfg, area_model=given).area_model is given
    own = fit_judges(x, pos, cfg).area_model
    np.testing.assert_allclose(own.lows, given.lows)  # the same slices here, so the same areas
    np.testing.assert_allclose(own.highs, given.highs)


def _load(root: Path):
    from brainvq.data.sources import DataConfig, load_split

    d = DataConfig(root=str(root), image_size=64, cache=False)
    return [load_split(d, s, progress=False) for s in ("train", "validate", "test")]


def test_make_sets_builds_every_set_from_the_real_slices():
    rng = np.random.default_rng(8)
    x = _stack([brain(64, p, rng) for p in np.linspace(0, 1, 6)])
    pos, cases = np.linspace(0, 1, 6), np.repeat([1, 2], 3)
    sets, notes = make_sets(x, pos, cases, vqvae=None, seed=0)
    assert "texture_blobs" in notes and "texture_blobs" not in sets
    assert set(sets) == {REAL, *badsets.BAD_SETS} - {"texture_blobs"}
    assert torch.equal(sets["wrong_position"][0], x) and (np.abs(sets["wrong_position"][1] - pos) >= 0.3 - 1e-6).all()
    assert all(len(s[0]) == 6 for s in sets.values())
    with_vq, _ = make_sets(x, pos, cases, vqvae=_PoolVQ(), seed=0)
    assert "texture_blobs" in with_vq


def check_gap_rows(doc: dict) -> None:
    """The prior's-gap rows of a ``check-judges`` table (with a VQ-VAE): every set and judge, the
    reconstructed validation slices accepted, 20 % random bottom codes rejected. Checked in
    the check-judges test below, so that the table is built once."""
    cells = {(r["set"], r["judge"]): r for r in doc["rows"] if r["set"].startswith("gap:")}
    names = ["gap:reconstructed_validation", *(f"gap:{random_bottom_name(f)}" for f in RANDOM_BOTTOM_FRACTIONS)]
    assert set(cells) == {(s, j) for s in names for j in ("c2st", "frechet")}
    worst = f"gap:{random_bottom_name(0.2)}"
    assert cells[(worst, "c2st")]["verdict"] == "reject" or cells[(worst, "frechet")]["verdict"] == "reject"
    assert cells[(worst, "c2st")]["pass"]
    assert cells[("gap:reconstructed_validation", "frechet")]["verdict"] == "accept"
    gap = doc["details"]["prior_gap"]
    assert gap[random_bottom_name(0.2)]["frechet"]["ratio"] > gap["floor"]["frechet"]["ratio"]


def test_check_judges_writes_every_cell_and_the_cheap_judges_can_tell(tmp_path: Path):
    root = write_brains(
        tmp_path / "d", {"train": list(range(1, 9)), "validate": [20, 21, 22, 23], "test": [30, 31, 32, 33]}
    )
    train, val, test = _load(root)
    res = check_judges(train, val, test, tmp_path / "out", vqvae=_PoolVQ(), cfg=FAST())
    doc = json.loads((tmp_path / "out" / "judge_table.json").read_text())
    cells = {(r["set"], r["judge"]): r for r in doc["rows"]}
    assert {c for c in cells if not c[0].startswith("gap:")} == {
        (s, j) for s in [REAL, *badsets.BAD_SETS] for j in JUDGES
    }
    assert (tmp_path / "out" / "judge_table.csv").read_text().count("\n") == len(cells) + 1
    assert "| blur |" in (tmp_path / "out" / "judge_table.md").read_text()
    for name in ("blur", "noise", "fragments"):
        assert cells[(name, "c2st")]["verdict"] == "reject", cells[(name, "c2st")]
        assert cells[(name, "frechet")]["verdict"] == "reject"
    assert cells[("fragments", "brain_shape")]["verdict"] == "reject"
    for judge in ("brain_shape", "symmetry", "frechet", "ventricles"):
        assert cells[(REAL, judge)]["verdict"] == "accept", cells[(REAL, judge)]
    assert cells[("blur", "c2st")]["expected"] == "reject" and "blur" in DESIGNED_TO_REJECT["c2st"]
    assert res["all_pass"] == all(r["pass"] for r in doc["rows"])
    check_gap_rows(doc)  # the prior's-gap rows: reconstructed validation accepted, 20 % random codes rejected


def test_check_judges_command_and_html_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from brainvq.cli import main
    from brainvq.judges import power
    from brainvq.report.html import judge_table_html

    monkeypatch.setattr(power, "JudgeConfig", FAST)
    root = write_brains(tmp_path / "d", {"train": [1, 2, 3, 4], "validate": [20, 21, 22], "test": [30, 31, 32]})
    assert (
        main(
            [
                "check-judges",
                "--data",
                str(root),
                "--image-size",
                "64",
                "--no-cache",
                "--out",
                str(tmp_path / "j"),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "j" / "judge_table.json").read_text())["rows"]
    page = judge_table_html(rows)
    assert page.count("<tr>") == 1 + len({r["set"] for r in rows}) and "texture_blobs" not in page


def test_judge_generated_rejects_scattered_fragments_against_real_splits(tmp_path: Path):
    from brainvq.data.dataset import as_tensor
    from brainvq.judges.power import judge_generated_on_splits

    root = write_brains(tmp_path / "d", {"train": [1, 2, 3, 4], "validate": [20, 21, 22], "test": [30, 31, 32]})
    train, val, test = _load(root)
    fake = badsets.shuffle_patches(as_tensor(test), 16, seed=1, inside_brain=False)
    res = judge_generated_on_splits(fake, np.asarray(test.positions), train, val, test, cfg=FAST())
    gen, real = res["generated_vs_test"], res["validation_vs_test"]
    assert set(gen) == set(real) == set(JUDGES)
    assert not res["accepted_by_all"]
    assert not gen["brain_shape"]["accept"] and real["brain_shape"]["accept"]
    assert gen["c2st"]["accuracy"] > real["c2st"]["accuracy"]
    assert gen["frechet"]["value"] > 3 * gen["frechet"]["floor"]


def test_the_position_regressor_does_not_depend_on_what_ran_before():
    """Same slices and seed, whatever the global random state before (a model built or sampled
    earlier in the process): the same regressor, so the judges' floor is the same from run to run."""
    from brainvq.judges.features import train_position_regressor

    x, pos = torch.rand(16, 1, 32, 32), np.linspace(0.1, 0.9, 16)
    cfg = FeatureConfig(work_size=32, feature_dim=8, steps=3, batch_size=8)
    torch.manual_seed(1)
    first = train_position_regressor(x, pos, cfg, seed=0).state_dict()
    torch.manual_seed(2)
    torch.rand(100)
    again = train_position_regressor(x, pos, cfg, seed=0).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = train_position_regressor(x, pos, cfg, seed=1).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
