"""One entry point for every supported input: OASIS layout, Kaggle class folders, image folder, NIfTI volumes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from brainvq.data.cache import default_cache_dir
from brainvq.data.images import RGBPolicy, WrongSizePolicy
from brainvq.data.kaggle import class_cdr, is_kaggle_root, load_kaggle
from brainvq.data.nifti import is_nifti, load_nifti
from brainvq.data.oasis import SPLITS, is_oasis_root, load_image_folder, load_oasis_split
from brainvq.data.slices import SliceSet
from brainvq.data.subjects import split_subjects
from brainvq.errors import DataError


@dataclass
class DataConfig:
    """Where the slices come from and how bad input is handled."""

    root: str = "data/standin"
    image_size: int = 256
    on_wrong_size: WrongSizePolicy = "resize"
    on_rgb: RGBPolicy = "convert"
    cache: bool = True
    cache_dir: str | None = None  # default: $BRAINVQ_CACHE or ~/.cache/brainvq
    split_seed: int = 0  # subject-level split of sources without split folders


def _split_by_case(data: SliceSet, split: str, seed: int) -> SliceSet:
    """Seeded subject-level 80/10/10 split (stratified by CDR when known) for sources without
    split folders; a source of fewer than 3 cases (one NIfTI volume) interleaves its slices."""
    cases, first = np.unique(data.case_ids, return_index=True)
    if len(cases) >= 3:
        labels = None if data.cdr is None else np.nan_to_num(data.cdr[first], nan=-1.0)
        sel = np.isin(data.case_ids, split_subjects(cases, labels, seed=seed)[split])
    else:
        k = np.arange(len(data)) % 10
        sel = {"train": k < 8, "validate": k == 8, "test": k == 9}[split]
    return data.subset(np.flatnonzero(sel))


def load_split(config: DataConfig, split: str, *, with_masks: bool = False, progress: bool = True) -> SliceSet:
    """Load ``split`` from ``config.root``; never returns an empty set."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(config.root)
    cache_dir = (Path(config.cache_dir) if config.cache_dir else default_cache_dir()) if config.cache else None
    if not root.exists():
        raise DataError(f"{root}: data not found (run `brainvq make-dataset {root}` for the stand-in)")
    if root.is_dir() and is_oasis_root(root):
        data = load_oasis_split(
            root,
            split,
            with_masks=with_masks,
            size=config.image_size,
            on_wrong_size=config.on_wrong_size,
            on_rgb=config.on_rgb,
            cache_dir=cache_dir,
            progress=progress,
        )
    elif is_nifti(root) or (root.is_dir() and any(is_nifti(p) for p in root.iterdir())):
        vols = [root] if root.is_file() else sorted(p for p in root.iterdir() if is_nifti(p))
        data = _split_by_case(load_nifti(vols, config.image_size), split, config.split_seed)
    elif root.is_dir():
        load = load_kaggle if is_kaggle_root(root) else partial(load_image_folder, cdr=class_cdr(root))
        full = load(
            root,
            size=config.image_size,
            on_wrong_size=config.on_wrong_size,
            on_rgb=config.on_rgb,
            cache_dir=cache_dir,
            progress=progress,
        )
        data = _split_by_case(full, split, config.split_seed)
    else:
        raise DataError(f"{root}: not an OASIS folder, Kaggle class folders, image folder or NIfTI volume")
    if len(data) == 0:
        raise DataError(f"{root}: split {split!r} has no images")
    if with_masks and data.masks is None:
        raise DataError(f"{root}: split {split!r} has no masks")
    return data
