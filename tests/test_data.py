"""Data layer: OASIS parsing, image folders, NIfTI, cache, and every bad-input case."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brainvq.data.dataset import SliceDataset
from brainvq.data.oasis import find_oasis_root, load_oasis_split, parse_slice_name
from brainvq.data.sources import DataConfig, load_split
from brainvq.errors import DataError


def test_parse_slice_name():
    assert parse_slice_name("case_001_slice_0.nii.png") == (1, 0)
    assert parse_slice_name("seg_441_slice_31.nii.png") == (441, 31)
    assert parse_slice_name("brain.png") is None


def test_oasis_layout_parsed(tiny_oasis: Path):
    assert find_oasis_root(tiny_oasis).name == "keras_png_slices_data"
    assert find_oasis_root(tiny_oasis / "keras_png_slices_data").name == "keras_png_slices_data"
    train = load_split(DataConfig(root=str(tiny_oasis), image_size=64), "train", with_masks=True, progress=False)
    assert len(train) == 12 and train.images.shape == (12, 64, 64) and train.images.dtype == np.uint8
    assert sorted(set(train.case_ids.tolist())) == [1, 2, 3]
    assert train.slice_indices[:4].tolist() == [0, 1, 2, 3]
    assert train.positions[:4].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert set(np.unique(train.masks).tolist()) <= {0, 1, 2, 3}
    item = SliceDataset(train)[5]
    assert item["image"].shape == (1, 64, 64) and 0 <= item["image"].min() and item["image"].max() <= 1
    assert int(item["case_id"]) == 2 and int(item["slice_index"]) == 1
    test = load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", progress=False)
    assert set(test.case_ids.tolist()) == {441}


def test_cache_is_reused_and_invalidated(tiny_oasis: Path, tmp_path: Path):
    cache = tmp_path / "c"
    folder = tiny_oasis / "keras_png_slices_data"
    a = load_oasis_split(folder, "validate", size=64, cache_dir=cache, progress=False)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and isinstance(a.images, np.memmap)
    b = load_oasis_split(folder, "validate", size=64, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    assert list(cache.glob("*.npy")) == files
    # editing a file changes the key: a new cache entry with the new pixels
    target = folder / "keras_png_slices_validate" / "case_004_slice_0.nii.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    c = load_oasis_split(folder, "validate", size=64, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npy"))) == 2 and int(c.images[0].max()) == 7


def test_missing_split_folder(tiny_oasis: Path):
    import shutil

    shutil.rmtree(tiny_oasis / "keras_png_slices_data" / "keras_png_slices_validate")
    with pytest.raises(DataError, match="keras_png_slices_validate: split folder missing"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64), "validate", progress=False)


def test_missing_root(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_split(DataConfig(root=str(tmp_path / "nope")), "train", progress=False)


def test_empty_split_folder(tiny_oasis: Path):
    folder = tiny_oasis / "keras_png_slices_data" / "keras_png_slices_test"
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no PNG/JPEG images"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", progress=False)


def test_corrupt_and_truncated_png(tiny_oasis: Path):
    folder = tiny_oasis / "keras_png_slices_data" / "keras_png_slices_test"
    target = folder / "case_441_slice_2.nii.png"
    target.write_bytes(target.read_bytes()[:60])
    with pytest.raises(DataError, match=r"case_441_slice_2\.nii\.png: cannot decode image"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64, cache=False), "test", progress=False)
    target.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="cannot decode"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64, cache=False), "test", progress=False)


def test_rgb_image_converted_or_refused(tiny_oasis: Path):
    folder = tiny_oasis / "keras_png_slices_data" / "keras_png_slices_test"
    target = folder / "case_441_slice_1.nii.png"
    Image.fromarray(np.full((64, 64, 3), (200, 100, 0), np.uint8)).save(target)
    with pytest.warns(UserWarning, match="converted to grayscale"):
        data = load_split(DataConfig(root=str(tiny_oasis), image_size=64, cache=False), "test", progress=False)
    assert data.images.shape == (4, 64, 64) and 100 < int(data.images[1, 0, 0]) < 140
    with pytest.raises(DataError, match=r"case_441_slice_1\.nii\.png: colour image"):
        load_split(
            DataConfig(root=str(tiny_oasis), image_size=64, cache=False, on_rgb="error"),
            "test",
            progress=False,
        )


def test_wrong_size_resized_or_refused(tiny_oasis: Path):
    folder = tiny_oasis / "keras_png_slices_data" / "keras_png_slices_test"
    Image.fromarray(np.zeros((80, 70), np.uint8)).save(folder / "case_441_slice_3.nii.png")
    with pytest.warns(UserWarning, match="resized to 64x64"):
        data = load_split(DataConfig(root=str(tiny_oasis), image_size=64, cache=False), "test", progress=False)
    assert data.images.shape == (4, 64, 64)
    with pytest.raises(DataError, match="is 70x80, expected 64x64"):
        load_split(
            DataConfig(root=str(tiny_oasis), image_size=64, cache=False, on_wrong_size="error"),
            "test",
            progress=False,
        )


def test_masks_must_pair(tiny_oasis: Path):
    base = tiny_oasis / "keras_png_slices_data"
    (base / "keras_png_slices_seg_test" / "seg_441_slice_3.nii.png").unlink()
    with pytest.raises(DataError, match="no matching mask seg_441_slice_3"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", with_masks=True, progress=False)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(base / "keras_png_slices_seg_test" / "seg_441_slice_3.nii.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(base / "keras_png_slices_seg_test" / "seg_999_slice_0.nii.png")
    with pytest.raises(DataError, match="seg_999_slice_0.nii.png: mask has no matching image"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", with_masks=True, progress=False)


def test_mask_with_bad_values(tiny_oasis: Path):
    seg = tiny_oasis / "keras_png_slices_data" / "keras_png_slices_seg_test" / "seg_441_slice_0.nii.png"
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(seg)
    with pytest.raises(DataError, match=r"seg_441_slice_0\.nii\.png: mask has values \[100\]"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", with_masks=True, progress=False)


def test_missing_mask_folder(tiny_oasis: Path):
    import shutil

    shutil.rmtree(tiny_oasis / "keras_png_slices_data" / "keras_png_slices_seg_test")
    with pytest.raises(DataError, match="mask folder missing"):
        load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", with_masks=True, progress=False)


def test_generic_image_folder(tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
            folder / f"img{i:02d}.jpg" if i % 2 else folder / f"img{i:02d}.png"
        )
    cfg = DataConfig(root=str(folder), image_size=32)
    parts = {s: load_split(cfg, s, progress=False) for s in ("train", "validate", "test")}
    assert sum(len(p) for p in parts.values()) == 20
    assert not set(parts["train"].names) & set(parts["test"].names)
    assert np.all(parts["train"].positions == 0.5)


def test_nifti_volume_sliced(tmp_path: Path):
    vol = np.zeros((20, 24, 30), np.float32)
    vol[5:15, 6:18, 5:25] = np.linspace(1, 2, 20)[None, None, :] * 100
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    data = load_split(DataConfig(root=str(path), image_size=32), "train", progress=False)
    n_total = sum(
        len(load_split(DataConfig(root=str(path), image_size=32), s, progress=False))
        for s in ("train", "validate", "test")
    )
    assert n_total == 20  # only the slices with content
    assert data.images.shape[1:] == (32, 32) and data.images.max() > 200
    assert 0 <= data.positions.min() and data.positions.max() <= 1


def test_nifti_corrupt(tmp_path: Path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.nii\.gz: cannot read NIfTI"):
        load_split(DataConfig(root=str(path)), "train", progress=False)
