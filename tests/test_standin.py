"""The OASIS-format stand-in dataset generated from the brain templates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainvq.data.oasis import parse_slice_name
from brainvq.data.sources import DataConfig, load_split
from brainvq.data.standin import TEMPLATES, StandInConfig, make_standin_dataset
from brainvq.errors import ConfigError

TINY = StandInConfig(n_train_cases=2, n_val_cases=1, n_test_cases=1, slices_per_case=5, image_size=128, seed=3)


@pytest.fixture(scope="module")
def tiny_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("standin")
    make_standin_dataset(root, TINY, progress=False, workers=2)
    return root


def test_layout_names_and_formats(tiny_standin: Path):
    base = tiny_standin / "keras_png_slices_data"
    ids = {}
    for split in ("train", "validate", "test"):
        imgs = sorted((base / f"keras_png_slices_{split}").iterdir())
        segs = sorted((base / f"keras_png_slices_seg_{split}").iterdir())
        assert len(imgs) == len(segs) == {"train": 2, "validate": 1, "test": 1}[split] * 5
        assert all(p.name.startswith("case_") and p.name.endswith(".nii.png") for p in imgs)
        assert [parse_slice_name(p.name) for p in imgs] == [parse_slice_name(p.name) for p in segs]
        ids[split] = {parse_slice_name(p.name)[0] for p in imgs}
        with Image.open(imgs[0]) as im:
            assert im.mode == "L" and im.size == (128, 128)
    assert ids["train"] == {1, 2} and ids["validate"] == {3} and ids["test"] == {441}
    manifest = json.loads((base / "standin_manifest.json").read_text())
    assert "NOT OASIS" in manifest["what"] and "Collins" in manifest["template_licence_notes"]
    assert "NOT OASIS" in (base / "README.txt").read_text()


def test_masks_and_brain_placement(tiny_standin: Path):
    data = load_split(DataConfig(root=str(tiny_standin), image_size=128), "train", with_masks=True, progress=False)
    mid = data.masks[2]
    assert set(np.unique(mid).tolist()) == {0, 1, 2, 3}  # background, CSF, GM, WM all present
    img = data.images[2].astype(float)
    assert (img[data.masks[2] == 0] == 0).all()  # black background outside the brain
    assert img[data.masks[2] == 3].mean() > img[data.masks[2] == 2].mean()  # T1: WM brighter than GM
    ys, xs = np.nonzero(data.images[2])
    assert abs(ys.mean() - 64) < 12 and abs(xs.mean() - 64) < 12  # centred
    width = xs.max() - xs.min()
    assert 0.45 * 128 < width < 0.9 * 128
    areas = [(data.images[k] > 0).mean() for k in range(5)]
    assert areas[-1] < max(areas)  # top slice smaller than the widest (it covers the axial range)


def test_deterministic_and_seed_dependent(tiny_standin: Path, tmp_path: Path):
    """The same bytes in every file whether cases are built in one process or in several."""
    again = tmp_path / "again"
    make_standin_dataset(again, TINY, progress=False, workers=1)  # the fixture: 2 processes
    files = sorted(p.relative_to(tiny_standin) for p in tiny_standin.rglob("*.png"))
    assert len(files) == 2 * 4 * 5
    assert all((again / f).read_bytes() == (tiny_standin / f).read_bytes() for f in files)
    rel = "keras_png_slices_data/keras_png_slices_train/case_002_slice_2.nii.png"
    other = tmp_path / "other"
    cfg = StandInConfig(**{**TINY.__dict__, "seed": 4})
    make_standin_dataset(other, cfg, progress=False)
    assert (other / rel).read_bytes() != (tiny_standin / rel).read_bytes()


def test_cases_differ(tiny_standin: Path):
    data = load_split(DataConfig(root=str(tiny_standin), image_size=128), "train", progress=False)
    a, b = data.images[2].astype(float), data.images[7].astype(float)  # same slice index, two cases
    assert np.abs(a - b).mean() > 5


def test_reuse_and_overwrite(tiny_standin: Path):
    target = tiny_standin / "keras_png_slices_data" / "keras_png_slices_test" / "case_441_slice_0.nii.png"
    mtime = target.stat().st_mtime_ns
    make_standin_dataset(tiny_standin, TINY, progress=False)  # complete with same config: reused
    assert target.stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="already exists with other contents"):
        make_standin_dataset(tiny_standin, StandInConfig(**{**TINY.__dict__, "seed": 9}), progress=False)


def test_invalid_config():
    with pytest.raises(ConfigError, match="n_train_cases must be >= 1"):
        make_standin_dataset("/nonexistent", StandInConfig(n_train_cases=0))
    with pytest.raises(ConfigError, match="slices_per_case"):
        StandInConfig(slices_per_case=1).validate()


@pytest.mark.parametrize(
    "cfg",
    [StandInConfig(), StandInConfig(n_train_cases=5, n_val_cases=3, n_test_cases=6), TINY],
    ids=["default", "odd", "tiny"],
)
def test_template_mix_balanced_in_every_split(cfg: StandInConfig):
    of = cfg.templates()
    for split, ids in cfg.case_ids().items():
        counts = [sum(of[c] == t for c in ids) for t in TEMPLATES]
        assert sum(counts) == len(ids) and max(counts) - min(counts) == len(ids) % 2, (split, counts)


def test_default_heldout_splits_have_enough_cases():
    cfg = StandInConfig()
    ids = cfg.case_ids()
    assert len(ids["validate"]) >= 8 and len(ids["test"]) >= 8
    total = sum(map(len, ids.values())) * cfg.slices_per_case
    assert total <= 40 * 32  # no more slices to build than the former 32/4/4 x 32 default


def test_manifest_records_template_of_each_case(tiny_standin: Path):
    manifest = json.loads((tiny_standin / "keras_png_slices_data" / "standin_manifest.json").read_text())
    assert manifest["template_of_case"] == {str(c): t for c, t in TINY.templates().items()}
    # alternating within each split: the one validation and the one test case take the first template
    assert manifest["template_of_case"] == {
        "1": TEMPLATES[0],
        "2": TEMPLATES[1],
        "3": TEMPLATES[0],
        "441": TEMPLATES[0],
    }
