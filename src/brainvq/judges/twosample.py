"""Two-sample judges on feature vectors: a classifier test with subject-grouped folds, Fréchet distance."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def group_folds(groups_a: np.ndarray, groups_b: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold ids (0..k-1) for the images of two sets such that all images of one group (subject)
    share a fold, from scikit-learn's ``StratifiedGroupKFold`` (shuffled with ``seed``) with the side
    as the class. A group id is a group within its own side only: the same id in ``groups_a`` and
    ``groups_b`` names two groups (callers compare different subjects, or generated images that carry
    no subject), as in the folds dealt before scikit-learn."""
    ga = np.array([f"a:{g}" for g in np.asarray(groups_a)], dtype=object)
    gb = np.array([f"b:{g}" for g in np.asarray(groups_b)], dtype=object)
    groups = np.concatenate([ga, gb])
    y = np.concatenate([np.zeros(len(ga), int), np.ones(len(gb), int)])
    fold = np.empty(len(y), int)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held_out) in enumerate(splitter.split(np.zeros((len(y), 1)), y, groups)):
        fold[held_out] = f
    return fold[: len(ga)], fold[len(ga) :]


def _logistic(l2: float, n_train: int):
    """Standardise, then L2-regularised logistic regression: scikit-learn minimises
    ``C * sum(log loss) + ||w||^2 / 2`` (bias unpenalised), which is ``mean(log loss) + l2 * ||w||^2``
    for ``C = 1 / (2 * l2 * n_train)``."""
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0 / (2.0 * l2 * n_train), solver="lbfgs", max_iter=1000)
    )


def classifier_two_sample(
    a: np.ndarray,
    b: np.ndarray,
    groups_a: np.ndarray,
    groups_b: np.ndarray,
    *,
    folds: int = 6,
    l2: float = 0.01,
    seed: int = 0,
) -> dict:
    """Held-out accuracy of a logistic classifier telling feature rows ``a`` from ``b``.

    scikit-learn's ``StandardScaler`` + ``LogisticRegression`` fitted on each training fold, folds
    from :func:`group_folds` (no subject has slices on both sides of a split). ``accuracy`` is over
    all held-out predictions; ``fold_accuracies`` are balanced (each side's accuracy weighted
    equally). ``stderr`` is the spread of the fold accuracies (std / sqrt(folds), honest when
    slices of a subject are correlated); ``stderr_binomial`` is the binomial one over all held-out
    predictions.
    """
    n = min(len(a), len(b))
    if n < 4 or len(np.unique(groups_a)) < 2 or len(np.unique(groups_b)) < 2:
        return {"accuracy": float("nan"), "n_per_side": n, "note": "too few images or groups"}
    k = int(min(folds, len(np.unique(groups_a)), len(np.unique(groups_b))))
    fa, fb = group_folds(groups_a, groups_b, k, seed)
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.concatenate([np.zeros(len(a), int), np.ones(len(b), int)])
    fold = np.concatenate([fa, fb])
    correct, fold_acc = 0, []
    for f in range(k):
        te = fold == f
        pred = _logistic(l2, int((~te).sum())).fit(x[~te], y[~te]).predict(x[te])
        # each side weighted equally so unequal fold sizes do not favour a constant guess
        sides = [float((pred[y[te] == c] == c).mean()) for c in (0, 1) if (y[te] == c).any()]
        fold_acc.append(float(np.mean(sides)))
        correct += int((pred == y[te]).sum())
    acc = correct / len(y)
    return {
        "accuracy": acc,
        "n_per_side": n,
        "folds": k,
        "stderr": float(np.std(fold_acc, ddof=1) / np.sqrt(k)),
        "stderr_binomial": float(np.sqrt(acc * (1 - acc) / len(y))),
        "fold_accuracies": np.round(fold_acc, 4).tolist(),
    }


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to (scaled) feature rows ``a`` (n,d) and ``b`` (m,d)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)  # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), symmetric and PSD
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = root_a @ cov_b @ root_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)
