"""The in-memory form of a set of 2D slices: uint8 pixels plus per-slice metadata."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: OASIS mask grey values, in class-id order: background, CSF, grey matter, white matter.
MASK_VALUES: tuple[int, ...] = (0, 85, 170, 255)
TISSUE_NAMES: tuple[str, ...] = ("background", "CSF", "grey matter", "white matter")


@dataclass
class SliceSet:
    """A stack of grayscale slices (N,H,W uint8, possibly memory-mapped) with metadata.

    ``positions`` is the normalised axial position of each slice in [0, 1]
    (0 = lowest slice of its case/volume, 1 = highest); the prior conditions on it.
    ``masks`` (optional) holds class ids 0..3 (see :data:`MASK_VALUES`).
    ``cdr`` (optional) is each slice's clinical dementia rating (0, 0.5, 1, 2), NaN when unknown.
    """

    images: np.ndarray
    names: list[str]
    case_ids: np.ndarray
    slice_indices: np.ndarray
    positions: np.ndarray
    masks: np.ndarray | None = None
    source: str = ""
    cdr: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        for field in ("names", "case_ids", "slice_indices", "positions"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"SliceSet.{field} has {len(getattr(self, field))} entries, expected {n}")
        if self.cdr is not None and len(self.cdr) != n:
            raise ValueError(f"SliceSet.cdr has {len(self.cdr)} entries, expected {n}")
        if self.masks is not None and self.masks.shape != self.images.shape:
            raise ValueError(f"masks shape {self.masks.shape} != images shape {self.images.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: np.ndarray | list[int]) -> SliceSet:
        """Return the slices at ``index`` (copied into memory)."""
        idx = np.asarray(index, dtype=np.int64)
        return SliceSet(
            images=np.asarray(self.images[idx]),
            names=[self.names[i] for i in idx],
            case_ids=self.case_ids[idx],
            slice_indices=self.slice_indices[idx],
            positions=self.positions[idx],
            masks=None if self.masks is None else np.asarray(self.masks[idx]),
            source=self.source,
            cdr=None if self.cdr is None else self.cdr[idx],
        )


def position_bins(positions: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the equal-width bin of [0, 1] that each slice position falls in (0..n_bins-1)."""
    return np.clip((np.asarray(positions) * n_bins).astype(int), 0, n_bins - 1)


def positions_from_indices(
    case_ids: np.ndarray,
    slice_indices: np.ndarray,
    slices_per_case: int | None = None,
    hint: str = "a case's slice files must run from slice_0 to its last slice",
) -> np.ndarray:
    """Normalise slice indices to [0, 1] within each case.

    The rule: position = index / last index of the case, where the last index is
    ``slices_per_case - 1`` when given, else the highest index present. Without
    ``slices_per_case`` a case must hold the full run 0..N (gaps are allowed, a late start is
    not): slices 10-13 of a 26-slice case would otherwise be read as 0.77-1.00 instead of
    0.40-0.52, so such a case stops with a DataError that ends with ``hint``."""
    from brainvq.errors import DataError

    slice_indices = np.asarray(slice_indices)
    positions = np.zeros(len(case_ids), dtype=np.float32)
    for case in np.unique(case_ids):
        sel = case_ids == case
        idx = slice_indices[sel]
        if slices_per_case is not None:
            if idx.max() >= slices_per_case:
                raise DataError(f"case {case}: slice {idx.max()} is past the {slices_per_case} slices per case given")
            top = slices_per_case - 1
        else:
            if idx.min() > 0:
                raise DataError(
                    f"case {case}: its slices start at index {idx.min()}, not 0, so their positions in the volume "
                    f"are unknown; {hint}"
                )
            top = idx.max()
        positions[sel] = idx / top if top > 0 else 0.5
    return positions
