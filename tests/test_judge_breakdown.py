"""The feature breakdown names the feature group that tells a set from real slices."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from brainvq.judges.breakdown import breakdown_markdown, feature_breakdown
from brainvq.judges.power import JudgeConfig, Profile

NAMES = ["background_mean", "background_std", "detail_1", "gradient", "area", "cnn_0", "cnn_1", "position"]


def _judges() -> SimpleNamespace:
    fx = SimpleNamespace(names=NAMES, scale=lambda raw: np.clip(raw, -10, 10))
    return SimpleNamespace(features=fx, cfg=JudgeConfig())


def _profile(rng: np.random.Generator, shift: dict[str, float]) -> Profile:
    x = rng.normal(size=(192, len(NAMES)))
    for name, d in shift.items():
        x[:, NAMES.index(name)] += d
    return Profile(x, rng.uniform(size=192), np.repeat(np.arange(24), 8), np.ones(192, bool))


@pytest.mark.parametrize(
    ("shift", "clean_row"),
    [
        ({"background_std": 4.0, "background_mean": 4.0}, "without background"),
        ({"background_std": 4.0, "detail_1": 3.0}, "without background and fine detail"),
    ],
)
def test_breakdown_rows_separate_until_the_shifted_groups_are_left_out(shift, clean_row):
    rng = np.random.default_rng(0)
    ref, base, cand = _profile(rng, {}), _profile(rng, {}), _profile(rng, shift)
    rows = feature_breakdown(_judges(), cand, ref, base)
    assert rows["all features"]["c2st"] > 0.9 and rows["all features"]["frechet_ratio"] > 5
    assert rows[clean_row]["c2st"] < 0.65 and rows[clean_row]["frechet_ratio"] < 3  # the acceptance line
    if clean_row != "without background":  # the detail shift still shows without the background
        assert rows["without background"]["c2st"] > 0.9
    assert set(rows[clean_row]["left_out"]) >= set(shift)
    assert clean_row in breakdown_markdown(rows)


def test_breakdown_of_a_real_like_set_is_near_chance_in_every_row():
    rng = np.random.default_rng(1)
    rows = feature_breakdown(_judges(), _profile(rng, {}), _profile(rng, {}), _profile(rng, {}))
    assert all(r["c2st"] < 0.65 for r in rows.values()), rows
