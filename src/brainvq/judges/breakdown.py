"""What the distribution judges see: the classifier two-sample test and the Fréchet distance
recomputed with groups of features left out. A diagnostic beside the acceptance judges (which
always use every feature): it says whether a set is told from real slices by its anatomy, its
fine detail, or its background."""

from __future__ import annotations

from brainvq.judges.twosample import classifier_two_sample, frechet

#: feature groups that can be left out, by the feature names of :class:`FeatureExtractor`
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "background": ("background_mean", "background_std"),
    "fine_detail": ("detail_1", "detail_2", "detail_4", "detail_8", "gradient"),
}

#: the breakdown's rows: the name and the groups each leaves out
BREAKDOWN_ROWS: dict[str, tuple[str, ...]] = {
    "all features": (),
    "without background": ("background",),
    "without background and fine detail": ("background", "fine_detail"),
}


def feature_breakdown(judges, candidate, reference, baseline) -> dict[str, dict]:
    """c2st accuracy and Fréchet ratio of ``candidate`` vs ``reference`` (profiles of
    :class:`~brainvq.judges.power.FittedJudges`) for each row of :data:`BREAKDOWN_ROWS`;
    ``baseline`` (a second real set) gives each row its own Fréchet floor."""
    names, cfg, fx = judges.features.names, judges.cfg, judges.features
    out = {}
    for row, left_out in BREAKDOWN_ROWS.items():
        drop = {n for g in left_out for n in FEATURE_GROUPS[g]}
        keep = [i for i, n in enumerate(names) if n not in drop]
        c2 = classifier_two_sample(
            reference.features[:, keep],
            candidate.features[:, keep],
            reference.groups,
            candidate.groups,
            folds=cfg.folds,
            l2=cfg.l2,
            seed=cfg.seed,
        )
        ref, cand, base = (fx.scale(p.features)[:, keep] for p in (reference, candidate, baseline))
        fd, floor = frechet(cand, ref), frechet(base, ref)
        out[row] = {
            "left_out": [n for n in names if n in drop],
            "c2st": c2["accuracy"],
            "frechet": fd,
            "frechet_floor": floor,
            "frechet_ratio": fd / floor if floor > 0 else float("nan"),
        }
    return out


def breakdown_markdown(rows: dict[str, dict]) -> str:
    """The breakdown as a small markdown table."""
    lines = ["| features | classifier accuracy | Fréchet / floor |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['c2st']:.3f} | {v['frechet_ratio']:.2f}x |" for k, v in rows.items()]
    return "\n".join(lines)
