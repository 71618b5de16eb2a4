"""Kaggle 4-class layout: subject recovery, CDR labels, subject-disjoint splits; aspect-preserving resize."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy.stats import spearmanr

from brainvq.data.images import read_gray
from brainvq.data.kaggle import KAGGLE_CLASSES, is_kaggle_root
from brainvq.data.sources import DataConfig, load_split
from brainvq.data.subjects import split_subjects
from brainvq.errors import DataError

SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "oasis1-subset"
SPLITS = ("train", "validate", "test")
CLASS_OF_CDR = {cdr: name for name, cdr in KAGGLE_CLASSES.items()}


def _subjects() -> list[dict]:
    if not (SUBSET / "subjects.csv").is_file():
        pytest.skip(f"OASIS-1 subset not found at {SUBSET} (needs ../shared next to the checkout)")
    with open(SUBSET / "subjects.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def shuffled_layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int]], dict]:
    """8 real subjects (2 per CDR where the subset has them) copied into class folders under random names."""
    rows = _subjects()
    rng = np.random.default_rng(7)
    picked: list[dict] = []
    for cdr in KAGGLE_CLASSES.values():
        pool = [r for r in rows if float(r["cdr"]) == cdr]
        picked += [pool[i] for i in rng.choice(len(pool), min(2, len(pool)), replace=False)]
    for r in rng.permutation(rows):  # top up to 8 subjects
        if len(picked) >= 8:
            break
        if r not in picked:
            picked.append(r)
    root = tmp_path_factory.mktemp("kaggle") / "Alzheimer_s Dataset"
    truth: dict[str, tuple[int, int]] = {}
    names = iter(rng.permutation(100_000))
    for r in picked:
        folder = root / CLASS_OF_CDR[float(r["cdr"])]
        folder.mkdir(parents=True, exist_ok=True)
        for f in (SUBSET / r["split"]).glob(f"case_{int(r['case']):03d}_slice_*.jpg"):
            name = f"{next(names)}.jpg"
            shutil.copy(f, folder / name)
            case, sl = map(int, re.search(r"case_(\d+)_slice_(\d+)", f.name).groups())
            truth[f"{folder.name}/{name}"] = (case, sl)
    return root, truth, {int(r["case"]): float(r["cdr"]) for r in picked}


def test_kaggle_subjects_recovered_exactly(shuffled_layout):
    root, truth, cdr_of = shuffled_layout
    assert is_kaggle_root(root) and is_kaggle_root(root.parent)  # the layout, or the folder above it
    cfg = DataConfig(root=str(root), image_size=128)
    parts = {s: load_split(cfg, s, progress=False) for s in SPLITS}
    assert sum(len(p) for p in parts.values()) == len(truth)
    recovered: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    true_split: dict[int, set[str]] = {}
    for split, data in parts.items():
        for name, case, idx, cdr in zip(data.names, data.case_ids, data.slice_indices, data.cdr, strict=True):
            true_case, true_slice = truth[name]
            recovered.setdefault((split, int(case)), []).append((true_case, true_slice, int(idx)))
            true_split.setdefault(true_case, set()).add(split)
            assert cdr == cdr_of[true_case]  # label from the class folder
    # the recovered subjects are exactly the true subjects (as a partition)
    true_cases = [{t for t, _, _ in members} for members in recovered.values()]
    assert all(len(t) == 1 for t in true_cases)
    assert sorted(next(iter(t)) for t in true_cases) == sorted(cdr_of)
    # subject-disjoint splits, each non-empty
    assert all(len(s) == 1 for s in true_split.values())
    assert {s for ss in true_split.values() for s in ss} == set(SPLITS)
    # slice order within a subject follows the true order (itself a Fiedler estimate, so |rho| not 1)
    rhos = [spearmanr([m[1] for m in members], [m[2] for m in members]).statistic for members in recovered.values()]
    assert all(abs(r) > 0.97 for r in rhos), rhos
    assert sum(r < 0 for r in rhos) <= 1, rhos  # same orientation (slice 0 = smallest brain) but for one odd subject
    for data in parts.values():
        assert data.positions.min() >= 0 and data.positions.max() <= 1


def test_single_class_folder_recovers_subjects(shuffled_layout):
    root, truth, cdr_of = shuffled_layout
    folder = root / "NonDemented"
    data = load_split(DataConfig(root=str(folder), image_size=128, cache=False), "train", progress=False)
    assert (data.cdr == 0.0).all()
    true = np.array([truth[f"NonDemented/{n}"][0] for n in data.names])
    for case in np.unique(data.case_ids):  # a recovered case never mixes subjects, nor is one file per case
        assert len(np.unique(true[data.case_ids == case])) == 1
    assert len(np.unique(data.case_ids)) == len(np.unique(true))


def test_recovered_grouping_is_cached(shuffled_layout, tmp_path: Path):
    root, _, _ = shuffled_layout
    cfg = DataConfig(root=str(root), image_size=128, cache_dir=str(tmp_path / "c"))
    first = load_split(cfg, "test", progress=False)
    cached = sorted(p.name for p in (tmp_path / "c").glob("subjects-*.json"))
    assert len(cached) == sum((root / c).is_dir() for c in KAGGLE_CLASSES)  # one grouping per class folder
    again = load_split(cfg, "test", progress=False)
    assert again.names == first.names and (again.case_ids == first.case_ids).all()


def test_split_subjects_seeded_disjoint_and_stratified():
    cases = np.arange(40)
    labels = np.repeat([0.0, 0.5, 1.0, 2.0], 10)
    a = split_subjects(cases, labels, seed=1)
    b = split_subjects(cases, labels, seed=1)
    c = split_subjects(cases, labels, seed=2)
    assert all((a[s] == b[s]).all() for s in SPLITS)
    assert any(set(a[s]) != set(c[s]) for s in SPLITS)
    assert sorted(np.concatenate([a[s] for s in SPLITS])) == list(cases)
    assert [len(a[s]) for s in SPLITS] == [32, 4, 4]
    for s in ("validate", "test"):  # every CDR class in validation and test
        assert sorted(labels[a[s]]) == [0.0, 0.5, 1.0, 2.0]
    with pytest.raises(DataError, match="at least 3"):
        split_subjects(np.arange(2))


def test_non_square_image_is_padded_not_stretched(tmp_path: Path):
    img = Image.new("L", (60, 100), 0)  # 60 wide, 100 tall
    ImageDraw.Draw(img).ellipse((5, 25, 55, 75), fill=200)  # a circle of diameter 50
    img.save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match="padded to 100x100 and resized to 50x50"):
        out = read_gray(tmp_path / "c.png", 50)
    ys, xs = np.nonzero(out > 100)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert abs(height - width) <= 1 and abs(height - 25) <= 2  # still a circle, scaled by 1/2
    assert abs(xs.mean() - 24.5) < 1 and abs(ys.mean() - 24.5) < 1  # centred
    assert (out[:, :8] == 0).all() and (out[:, -8:] == 0).all()  # black bands where it was padded
