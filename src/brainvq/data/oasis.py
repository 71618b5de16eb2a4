"""The preprocessed OASIS PNG layout (``keras_png_slices_*``) and generic image folders."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from brainvq.data.cache import cached_stack
from brainvq.data.images import RGBPolicy, WrongSizePolicy, decode_stack, list_image_files, read_gray
from brainvq.data.slices import MASK_VALUES, SliceSet, positions_from_indices
from brainvq.data.subjects import cached_recover_subjects
from brainvq.errors import DataError

SPLITS: tuple[str, ...] = ("train", "validate", "test")
_IMAGE_RE = re.compile(r"case_(\d+)_slice_(\d+)")
_MASK_RE = re.compile(r"seg_(\d+)_slice_(\d+)")
_MASK_LUT = np.full(256, 255, dtype=np.uint8)
for _cls, _val in enumerate(MASK_VALUES):
    _MASK_LUT[_val] = _cls


def find_oasis_root(root: str | Path) -> Path:
    """The folder holding ``keras_png_slices_{split}``: ``root`` or ``root/keras_png_slices_data``."""
    root = Path(root)
    for cand in (root, root / "keras_png_slices_data"):
        if any((cand / f"keras_png_slices_{s}").is_dir() for s in SPLITS):
            return cand
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    raise DataError(
        f"{root}: no OASIS split folders (keras_png_slices_train/validate/test) here or in keras_png_slices_data/"
    )


def is_oasis_root(root: str | Path) -> bool:
    """True when ``root`` follows the OASIS layout."""
    try:
        find_oasis_root(root)
    except DataError:
        return False
    return True


def parse_slice_name(name: str) -> tuple[int, int] | None:
    """``case_001_slice_0.nii.png`` -> (1, 0); also accepts ``seg_001_slice_0``; else None."""
    m = _IMAGE_RE.search(name) or _MASK_RE.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _decode_mask(path: Path, size: int, on_wrong_size: WrongSizePolicy) -> np.ndarray:
    raw = read_gray(path, size, on_wrong_size=on_wrong_size, on_rgb="error", resample=Image.NEAREST)
    bad = np.setdiff1d(np.unique(raw), MASK_VALUES)
    if bad.size:
        raise DataError(f"{path}: mask has values {bad[:5].tolist()} outside {list(MASK_VALUES)}")
    return _MASK_LUT[raw]


def load_image_folder(
    folder: str | Path,
    *,
    size: int = 256,
    on_wrong_size: WrongSizePolicy = "resize",
    on_rgb: RGBPolicy = "convert",
    cache_dir: Path | None = None,
    mask_folder: Path | None = None,
    progress: bool = True,
    cdr: float | None = None,
) -> SliceSet:
    """Load a folder of grayscale PNG/JPEG slices (OASIS names give case/slice metadata).

    When any file name does not follow ``case_XXX_slice_Y`` (e.g. one class folder of the
    Kaggle layout), subjects and slice order are recovered from the images themselves
    (:mod:`brainvq.data.subjects`); a slice with no near duplicate is a case of its own with
    position 0.5. With ``mask_folder``, every image must have its ``seg_XXX_slice_Y`` mask.
    ``cdr`` labels every slice with that clinical dementia rating.
    """
    folder = Path(folder)
    files = list_image_files(folder)
    parsed = [parse_slice_name(f.name) for f in files]
    named = all(p is not None for p in parsed)
    if named:
        case_ids = np.array([p[0] for p in parsed], dtype=np.int64)
        slice_idx = np.array([p[1] for p in parsed], dtype=np.int64)
        order = np.lexsort((slice_idx, case_ids))
        files = [files[i] for i in order]
        case_ids, slice_idx = case_ids[order], slice_idx[order]
    images = decode_stack(
        files,
        folder,
        size=size,
        on_wrong_size=on_wrong_size,
        on_rgb=on_rgb,
        cache_dir=cache_dir,
        progress=progress,
    )
    if not named:  # shuffled names: recover the subjects so that splits cannot leak them
        case_ids, slice_idx = cached_recover_subjects(files, images, cache_dir)
    masks = None
    if mask_folder is not None:
        mask_files = _pair_masks(files, case_ids, slice_idx, Path(mask_folder))
        masks = cached_stack(
            mask_files,
            partial(_decode_mask, size=size, on_wrong_size=on_wrong_size),
            (size, size),
            cache_dir=cache_dir,
            tag=Path(mask_folder).name,
            extra={"mask": 1, "non_square": "pad"},
            progress=progress,
        )
    return SliceSet(
        images=images,
        names=[f.name for f in files],
        case_ids=case_ids,
        slice_indices=slice_idx,
        positions=positions_from_indices(case_ids, slice_idx),
        masks=masks,
        source=str(folder),
        cdr=None if cdr is None else np.full(len(files), cdr, dtype=np.float32),
    )


def _pair_masks(files: list[Path], case_ids: np.ndarray, slice_idx: np.ndarray, mask_folder: Path) -> list[Path]:
    if not mask_folder.is_dir():
        raise DataError(f"{mask_folder}: mask folder not found")
    by_key: dict[tuple[int, int], Path] = {}
    for m in list_image_files(mask_folder):
        key = parse_slice_name(m.name)
        if key is None:
            raise DataError(f"{m}: mask file name does not follow seg_XXX_slice_Y")
        by_key[key] = m
    out = []
    for f, c, s in zip(files, case_ids, slice_idx, strict=True):
        key = (int(c), int(s))
        if key not in by_key:
            raise DataError(f"{f}: no matching mask seg_{c:03d}_slice_{s} in {mask_folder}")
        out.append(by_key.pop(key))
    if by_key:
        extra = next(iter(by_key.values()))
        raise DataError(f"{extra}: mask has no matching image ({len(by_key)} unpaired masks)")
    return out


def load_oasis_split(
    root: str | Path,
    split: str,
    *,
    with_masks: bool = False,
    size: int = 256,
    on_wrong_size: WrongSizePolicy = "resize",
    on_rgb: RGBPolicy = "convert",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> SliceSet:
    """Load one split (``train``/``validate``/``test``) of an OASIS-layout dataset."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    base = find_oasis_root(root)
    folder = base / f"keras_png_slices_{split}"
    if not folder.is_dir():
        raise DataError(f"{folder}: split folder missing")
    mask_folder = base / f"keras_png_slices_seg_{split}"
    if with_masks and not mask_folder.is_dir():
        raise DataError(f"{mask_folder}: mask folder missing")
    return load_image_folder(
        folder,
        size=size,
        on_wrong_size=on_wrong_size,
        on_rgb=on_rgb,
        cache_dir=cache_dir,
        mask_folder=mask_folder if with_masks else None,
        progress=progress,
    )
