"""What the distribution judges see: the classifier two-sample test and the Fréchet distance on
other views of the same slices. A diagnostic beside the acceptance judges (which use every
feature of the brain region, :mod:`brainvq.judges.region`): it says whether a set is told from
real slices by its background, its fine detail, or its anatomy."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from brainvq.judges.twosample import classifier_two_sample, frechet

#: feature groups that can be left out, by the feature names of :class:`FeatureExtractor`
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "background": ("background_mean", "background_std"),
    "fine_detail": ("detail_1", "detail_2", "detail_4", "detail_8", "gradient"),
}

#: the breakdown's rows: the name, which features ("acceptance": the acceptance judges', i.e. the
#: brain region; "whole_image": every feature of the whole image) and the groups each leaves out
BREAKDOWN_ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "whole image, all features (diagnostic)": ("whole_image", ()),
    "brain region (acceptance)": ("acceptance", ()),
    "brain region without fine detail": ("acceptance", ("fine_detail",)),
}


def _view(judges, profile, which: str) -> tuple[object, np.ndarray] | None:
    """(extractor, raw features) of ``profile`` for a row's view, or None when it was not computed."""
    if which == "acceptance":
        return judges.features, profile.features
    if not judges.features.brain_region:  # the acceptance features already are the whole image's
        return judges.features, profile.features
    if judges.whole_image is None or profile.whole_image is None:
        return None
    return judges.whole_image, profile.whole_image


def feature_breakdown(judges, candidate, reference, baseline) -> dict[str, dict]:
    """c2st accuracy and Fréchet ratio of ``candidate`` vs ``reference`` (profiles of
    :class:`~brainvq.judges.power.FittedJudges`) for each row of :data:`BREAKDOWN_ROWS` whose
    features were computed; ``baseline`` (a second real set) gives each row its own Fréchet floor."""
    cfg, out = judges.cfg, {}
    for row, (which, left_out) in BREAKDOWN_ROWS.items():
        views = [_view(judges, p, which) for p in (reference, candidate, baseline)]
        if any(v is None for v in views):
            continue
        fx = views[0][0]
        drop = {n for g in left_out for n in FEATURE_GROUPS[g]}
        keep = [i for i, n in enumerate(fx.names) if n not in drop]
        (_, ref_raw), (_, cand_raw), (_, base_raw) = views
        c2 = classifier_two_sample(
            ref_raw[:, keep], cand_raw[:, keep], reference.groups, candidate.groups,
            folds=cfg.folds, l2=cfg.l2, seed=cfg.seed,
        )  # fmt: skip
        ref, cand, base = (fx.scale(r)[:, keep] for r in (ref_raw, cand_raw, base_raw))
        fd, floor = frechet(cand, ref), frechet(base, ref)
        out[row] = {
            "features": which,
            "left_out": [n for n in fx.names if n in drop],
            "c2st": c2["accuracy"],
            "frechet": fd,
            "frechet_floor": floor,
            "frechet_ratio": fd / floor if floor > 0 else float("nan"),
        }
    return out


def _separation(reference: np.ndarray, other: np.ndarray) -> float:
    """ROC AUC of one feature between two sets, folded to >= 0.5 (0.5: no separation, 1: complete)."""
    auc = roc_auc_score(np.r_[np.zeros(len(reference)), np.ones(len(other))], np.r_[reference, other])
    return float(max(auc, 1 - auc))


def telling_features(judges, candidate, reference, baseline, top: int = 8) -> list[dict]:
    """The ``top`` acceptance features that tell ``candidate`` from ``reference`` best on their own
    (profiles of :class:`~brainvq.judges.power.FittedJudges`), ranked by ROC AUC (folded to >= 0.5),
    each beside the same for ``baseline`` (a second real set: how far real sets differ on it) and
    the shift of its median in the feature's own units. A diagnostic: it names what still differs,
    one feature at a time."""
    fx = judges.features
    rows = []
    for i, name in enumerate(fx.names):
        ref, cand = reference.features[:, i], candidate.features[:, i]
        rows.append(
            {
                "feature": name,
                "auc": _separation(ref, cand),
                "real_auc": _separation(ref, baseline.features[:, i]),
                "median_shift": float(np.median(cand) - np.median(ref)),
            }
        )
    return sorted(rows, key=lambda r: -r["auc"])[:top]


def breakdown_markdown(rows: dict[str, dict]) -> str:
    """The breakdown as a small markdown table."""
    lines = ["| features | classifier accuracy | Fréchet / floor |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['c2st']:.3f} | {v['frechet_ratio']:.2f}x |" for k, v in rows.items()]
    return "\n".join(lines)
