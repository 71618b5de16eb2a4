"""Two-sample judges on feature vectors: a classifier test with subject-grouped folds, Fréchet distance."""

from __future__ import annotations

import numpy as np
import torch


def group_folds(groups_a: np.ndarray, groups_b: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold ids (0..k-1) for the images of two sets such that all images of one group (subject)
    share a fold; each side's groups are dealt round-robin in random order, so folds stay balanced."""
    rng = np.random.default_rng(seed)

    def deal(groups: np.ndarray) -> np.ndarray:
        uniq = rng.permutation(np.unique(groups))
        # biggest groups first keeps the folds' sizes even
        sizes = np.array([(groups == g).sum() for g in uniq])
        uniq = uniq[np.argsort(-sizes, kind="stable")]
        fold_of, load = {}, np.zeros(k)
        for g, s in zip(uniq, sizes[np.argsort(-sizes, kind="stable")], strict=True):
            f = int(np.argmin(load))
            fold_of[g] = f
            load[f] += s
        return np.array([fold_of[g] for g in groups])

    return deal(np.asarray(groups_a)), deal(np.asarray(groups_b))


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression fitted with L-BFGS; returns (weights, bias)."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


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

    Folds are split by group (subject): no subject has slices on both sides of a split. Features
    are standardised on each training fold. ``stderr`` is the spread of the fold accuracies
    (std / sqrt(folds), honest when slices of a subject are correlated); ``stderr_binomial`` is
    the binomial one over all held-out predictions.
    """
    n = min(len(a), len(b))
    if n < 4 or len(np.unique(groups_a)) < 2 or len(np.unique(groups_b)) < 2:
        return {"accuracy": float("nan"), "n_per_side": n, "note": "too few images or groups"}
    k = int(min(folds, len(np.unique(groups_a)), len(np.unique(groups_b))))
    fa, fb = group_folds(groups_a, groups_b, k, seed)
    x = torch.from_numpy(np.concatenate([a, b])).double()
    y = torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).double()
    fold = np.concatenate([fa, fb])
    correct, fold_acc = 0, []
    for f in range(k):
        te = torch.from_numpy(fold == f)
        tr = ~te
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        w, bias = _fit_logistic((x[tr] - mu) / sd, y[tr], l2)
        pred = (((x[te] - mu) / sd) @ w + bias > 0).double()
        # each side weighted equally so unequal fold sizes do not favour a constant guess
        acc_a = float((pred[y[te] == 0] == 0).double().mean())
        acc_b = float((pred[y[te] == 1] == 1).double().mean())
        fold_acc.append((acc_a + acc_b) / 2)
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
