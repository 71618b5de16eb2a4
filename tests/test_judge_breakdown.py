"""The feature breakdown says which view (whole image or brain region) and which feature group
tells a set from real slices."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from brainvq.judges.breakdown import breakdown_markdown, feature_breakdown, telling_features
from brainvq.judges.power import JudgeConfig, Profile

REGION = ["detail_1", "gradient", "area", "cnn_0", "cnn_1", "position"]
WHOLE = ["background_mean", "background_std", *REGION]


def _judges() -> SimpleNamespace:
    scale = lambda raw: np.clip(raw, -10, 10)  # noqa: E731
    region = SimpleNamespace(names=REGION, scale=scale, brain_region=True)
    whole = SimpleNamespace(names=WHOLE, scale=scale, brain_region=False)
    return SimpleNamespace(features=region, whole_image=whole, cfg=JudgeConfig())


def _profile(rng: np.random.Generator, shift: dict[str, float]) -> Profile:
    """A set whose whole-image features are shifted by ``shift``; its brain-region features are the
    same values without the background columns (what the protocol sees)."""
    whole = rng.normal(size=(192, len(WHOLE)))
    for name, d in shift.items():
        whole[:, WHOLE.index(name)] += d
    region = whole[:, [WHOLE.index(n) for n in REGION]]
    return Profile(region, rng.uniform(size=192), np.repeat(np.arange(24), 8), np.ones(192, bool), whole)


def _rows(shift: dict[str, float], seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    ref, base, cand = _profile(rng, {}), _profile(rng, {}), _profile(rng, shift)
    return feature_breakdown(_judges(), cand, ref, base)


def test_a_background_shift_shows_only_in_the_whole_image_diagnostic():
    rows = _rows({"background_std": 4.0, "background_mean": 4.0})
    whole, region = rows["whole image, all features (diagnostic)"], rows["brain region (acceptance)"]
    assert whole["c2st"] > 0.9 and whole["frechet_ratio"] > 5
    assert region["c2st"] < 0.65 and region["frechet_ratio"] < 3
    assert whole["features"] == "whole_image" and region["features"] == "acceptance"


def test_a_detail_shift_shows_in_the_brain_region_until_fine_detail_is_left_out():
    rows = _rows({"detail_1": 3.0})
    assert rows["brain region (acceptance)"]["c2st"] > 0.9
    clean = rows["brain region without fine detail"]
    assert clean["c2st"] < 0.65 and clean["frechet_ratio"] < 3
    assert set(clean["left_out"]) == {"detail_1", "gradient"}
    assert "brain region without fine detail" in breakdown_markdown(rows)


def test_without_whole_image_features_the_diagnostic_row_is_left_out():
    rng = np.random.default_rng(2)
    judges = _judges()
    judges.whole_image = None
    rows = feature_breakdown(judges, _profile(rng, {}), _profile(rng, {}), _profile(rng, {}))
    assert set(rows) == {"brain region (acceptance)", "brain region without fine detail"}


def test_breakdown_of_a_real_like_set_is_near_chance_in_every_row():
    rows = _rows({}, seed=1)
    assert len(rows) == 3 and all(r["c2st"] < 0.65 for r in rows.values()), rows


def test_telling_features_name_the_shifted_feature_first_and_real_sets_near_chance():
    rng = np.random.default_rng(3)
    ref, base, cand = _profile(rng, {}), _profile(rng, {}), _profile(rng, {"gradient": -1.5, "cnn_1": 0.8})
    rows = telling_features(_judges(), cand, ref, base, top=3)
    assert [r["feature"] for r in rows[:2]] == ["gradient", "cnn_1"]
    assert rows[0]["auc"] > 0.8 > rows[1]["auc"] > 0.6 and rows[0]["median_shift"] < -1
    assert all(r["real_auc"] < 0.62 for r in rows) and len(rows) == 3
    same = telling_features(_judges(), base, ref, base, top=len(REGION))
    assert len(same) == len(REGION) and all(r["auc"] < 0.62 for r in same)
