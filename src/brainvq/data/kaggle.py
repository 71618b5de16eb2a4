"""The Kaggle "Alzheimer's Dataset (4 class of images)" layout: CDR class folders of shuffled slices.

``ROOT/{NonDemented,VeryMildDemented,MildDemented,ModerateDemented}/*.jpg`` (176x208 OASIS-1
slices with meaningless names), or the same class folders one level down (``ROOT/train/...``,
``ROOT/test/...``; pooled, because the layout's own split is by image and leaks subjects).
Subjects are recovered per class by near-duplicate clustering (:mod:`brainvq.data.subjects`),
so that brainvq's splits are by subject; the CDR label comes from the class folder's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainvq.data.images import IMAGE_SUFFIXES, RGBPolicy, WrongSizePolicy, decode_stack
from brainvq.data.slices import SliceSet, positions_from_indices
from brainvq.data.subjects import cached_recover_subjects
from brainvq.errors import DataError

#: Class folder name -> clinical dementia rating.
KAGGLE_CLASSES: dict[str, float] = {
    "NonDemented": 0.0,
    "VeryMildDemented": 0.5,
    "MildDemented": 1.0,
    "ModerateDemented": 2.0,
}


def class_cdr(folder: str | Path) -> float | None:
    """The CDR of a Kaggle class folder (by name, case-insensitive), else None."""
    name = Path(folder).name.lower()
    return next((cdr for cls, cdr in KAGGLE_CLASSES.items() if cls.lower() == name), None)


def find_class_folders(root: str | Path) -> list[Path]:
    """Class folders in ``root`` or, if none, in its direct subfolders (e.g. train/ and test/)."""
    root = Path(root)
    if not root.is_dir():
        return []

    def classes_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_dir() and class_cdr(p) is not None)

    found = classes_in(root)
    if not found:
        found = [c for sub in sorted(root.iterdir()) if sub.is_dir() for c in classes_in(sub)]
    return found


def is_kaggle_root(root: str | Path) -> bool:
    """True when ``root`` holds Kaggle class folders (itself or one level down)."""
    return bool(find_class_folders(root))


def load_kaggle(
    root: str | Path,
    *,
    size: int = 256,
    on_wrong_size: WrongSizePolicy = "resize",
    on_rgb: RGBPolicy = "convert",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> SliceSet:
    """All slices of a Kaggle-layout dataset with recovered subjects, slice order and CDR labels."""
    root = Path(root)
    by_class: dict[float, list[Path]] = {}
    for folder in find_class_folders(root):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        by_class.setdefault(class_cdr(folder), []).extend(files)
    files = [f for cdr in sorted(by_class) for f in by_class[cdr]]
    if not files:
        raise DataError(f"{root}: Kaggle class folders ({', '.join(KAGGLE_CLASSES)}) hold no PNG/JPEG images")
    images = decode_stack(
        files,
        root,
        size=size,
        on_wrong_size=on_wrong_size,
        on_rgb=on_rgb,
        cache_dir=cache_dir,
        tag=f"kaggle-{root.name}",
        progress=progress,
    )
    case_ids, slice_idx, cdr, start = [], [], [], 0
    for label in sorted(by_class):  # a subject has one CDR: cluster each class on its own
        n = len(by_class[label])
        cases, idx = cached_recover_subjects(by_class[label], images[start : start + n], cache_dir)
        case_ids.append(cases + sum(len(np.unique(c)) for c in case_ids))
        slice_idx.append(idx)
        cdr.append(np.full(n, label, dtype=np.float32))
        start += n
    case_arr, slice_arr = np.concatenate(case_ids), np.concatenate(slice_idx)
    return SliceSet(
        images=images,
        names=[str(f.relative_to(root)) for f in files],
        case_ids=case_arr,
        slice_indices=slice_arr,
        positions=positions_from_indices(case_arr, slice_arr),
        source=str(root),
        cdr=np.concatenate(cdr),
    )
