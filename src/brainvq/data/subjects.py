"""Subjects of shuffled slice collections: near-duplicate clustering, slice order, subject splits.

Adjacent axial slices of one atlas-registered subject are near duplicates (Pearson correlation
above ~0.975 at 128x128), while slices of different subjects are not. Linking every pair above
the threshold and taking connected components recovers the subjects; the Fiedler vector of a
subject's similarity graph then orders its slices, oriented so that slice 0 is the one with the
smallest brain area (the most superior, as in the OASIS-1 subset's ``case_XXX_slice_Y`` names).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.sparse.csgraph import connected_components, laplacian
from scipy.stats import spearmanr

from brainvq.data.brainmask import TISSUE_PIXELS, brain_mask
from brainvq.data.cache import content_key
from brainvq.errors import DataError
from brainvq.io import write_text

SPLIT_NAMES: tuple[str, ...] = ("train", "validate", "test")


@dataclass(frozen=True)
class SubjectRecoveryConfig:
    """How slices are linked into subjects (defaults measured on the OASIS-1 subset)."""

    threshold: float = 0.975  # Pearson correlation that links two slices into one subject
    feature_size: int = 128  # slices are area-downsampled to this before correlating
    # grey level above which a pixel counts as brain (for the orientation): TISSUE_PIXELS in 0..255
    foreground: int = 13
    chunk: int = 1024  # rows of the correlation matrix computed at once


def _features(images: np.ndarray, size: int, chunk: int) -> torch.Tensor:
    """Zero-mean, unit-norm flattened slices at ``size`` (or their own size if smaller)."""
    n, h, w = images.shape
    out = []
    for i in range(0, n, chunk):
        x = torch.from_numpy(np.asarray(images[i : i + chunk], dtype=np.float32))[:, None]
        if max(h, w) > size:
            x = F.interpolate(x, size=(size, size), mode="area")
        x = x.flatten(1)
        x = x - x.mean(1, keepdim=True)
        out.append(x / x.norm(dim=1, keepdim=True).clamp_min(1e-6))
    return torch.cat(out)


def _order_within(feats: torch.Tensor, areas: np.ndarray) -> np.ndarray:
    """Slice index (0..k-1) of each member of one subject: Fiedler-vector order, smallest area first."""
    k = len(feats)
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    sim = (feats @ feats.T).double().clamp_min(0).numpy()
    np.fill_diagonal(sim, 0.0)
    _, vecs = np.linalg.eigh(laplacian(sim, normed=True))
    rank = np.argsort(np.argsort(vecs[:, 1], kind="stable"), kind="stable")
    rho = spearmanr(rank, areas).statistic if k > 2 else float(np.sign(areas[1] - areas[0]) * (rank[1] - rank[0]))
    return (k - 1 - rank if rho < 0 else rank).astype(np.int64)


def recover_subjects(images: np.ndarray, config: SubjectRecoveryConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(case_ids, slice_indices)`` of (N,H,W) uint8 slices whose subjects are unknown.

    Case ids are numbered 0.. in order of each subject's first slice.
    """
    cfg = config or SubjectRecoveryConfig()
    n = len(images)
    feats = _features(images, cfg.feature_size, cfg.chunk)
    rows, cols = [], []
    for i in range(0, n, cfg.chunk):
        r, c = torch.nonzero(feats[i : i + cfg.chunk] @ feats.T > cfg.threshold, as_tuple=True)
        rows.append(r.numpy() + i)
        cols.append(c.numpy())
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    _, first, case_ids = np.unique(labels, return_index=True, return_inverse=True)
    case_ids = np.argsort(np.argsort(first))[case_ids].astype(np.int64)  # number by first appearance
    slice_idx = np.zeros(n, dtype=np.int64)
    for case in range(case_ids.max() + 1):
        members = np.flatnonzero(case_ids == case)
        areas = brain_mask(np.asarray(images[members]), TISSUE_PIXELS.but(threshold=cfg.foreground)).mean(axis=(1, 2))
        slice_idx[members] = _order_within(feats[members], areas)
    return case_ids, slice_idx


def cached_recover_subjects(
    files: Sequence[Path],
    images: np.ndarray,
    cache_dir: Path | None,
    config: SubjectRecoveryConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recover_subjects`, stored beside the decoded images and keyed by the folder contents."""
    cfg = config or SubjectRecoveryConfig()
    if cache_dir is None:
        return recover_subjects(images, cfg)
    key = content_key(files, {"subjects": 1, "shape": list(images.shape[1:]), **asdict(cfg)})
    path = Path(cache_dir) / f"subjects-{key}.json"
    try:
        saved = json.loads(path.read_text())
        case_ids, slice_idx = np.array(saved["case_ids"], np.int64), np.array(saved["slice_indices"], np.int64)
        if len(case_ids) == len(slice_idx) == len(images):
            return case_ids, slice_idx
    except (OSError, ValueError, KeyError):
        pass  # missing or unreadable: recompute
    case_ids, slice_idx = recover_subjects(images, cfg)
    write_text(path, json.dumps({"case_ids": case_ids.tolist(), "slice_indices": slice_idx.tolist()}))
    return case_ids, slice_idx


def split_subjects(
    cases: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, np.ndarray]:
    """Seeded subject-level train/validate/test split (each subject in exactly one split).

    Validation and test get ``max(1, round(fraction * n))`` subjects. With ``labels`` (one per
    subject, e.g. CDR) the split is stratified: subjects are shuffled, grouped by label, and
    the three splits are interleaved evenly along that order.
    """
    cases = np.asarray(cases)
    n = len(cases)
    if n < 3:
        raise DataError(f"{n} subject(s): need at least 3 for subject-disjoint train/validate/test splits")
    n_val, n_test = (max(1, round(f * n)) for f in fractions[1:])
    counts = (n - n_val - n_test, n_val, n_test)
    order = np.random.default_rng(seed).permutation(n)
    if labels is not None:
        order = order[np.argsort(np.asarray(labels)[order], kind="stable")]
    keys = np.concatenate([(np.arange(k) + 0.5) / k for k in counts])
    pattern = np.repeat(np.arange(3), counts)[np.argsort(keys, kind="stable")]
    which = np.empty(n, dtype=np.int64)
    which[order] = pattern
    return {name: np.sort(cases[which == i]) for i, name in enumerate(SPLIT_NAMES)}
