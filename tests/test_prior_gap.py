"""The prior's-gap judge (brainvq.judges.prior_gap): samples against the drawing decoder's own
reconstructions, the level split (real top grid, bottom grid redrawn) and its power rows."""

from __future__ import annotations

import numpy as np
import torch

from brainvq.judges.power import JudgeConfig
from brainvq.judges.prior_gap import (
    decoder_guard,
    gap_config,
    guarded_verdict,
    randomise_bottom,
    redraw_bottom,
)
from brainvq.models.levels import Codes
from tests.test_pair import pair_of


def test_randomise_bottom_replaces_about_the_fraction_and_keeps_the_top():
    top, bottom = torch.randint(0, 8, (50, 4, 4)), torch.randint(0, 300, (50, 16, 16))
    out = randomise_bottom(Codes(top, bottom), 0.2, 300, seed=1)
    changed = (out.bottom != bottom).float().mean().item()
    assert 0.185 < changed < 0.215  # 20 % drawn again (binomial sd 0.0035), 1/300 of them the same code
    assert torch.equal(out.top, top) and out.bottom.max() < 300
    assert torch.equal(out.bottom, randomise_bottom(Codes(top, bottom), 0.2, 300, seed=1).bottom)
    assert torch.equal(randomise_bottom(Codes(top, bottom), 0.0, 300).bottom, bottom)


def test_redraw_bottom_keeps_the_top_grid_draws_the_bottom_alike_for_a_seed_and_follows_position():
    torch.manual_seed(0)
    pair = pair_of(2)
    images = torch.rand(6, 1, 32, 32)
    codes = pair.encode(images).cpu()
    pos = np.linspace(0.1, 0.9, 6)
    a, b = redraw_bottom(pair, codes, pos, images, seed=3), redraw_bottom(pair, codes, pos, images, seed=3)
    assert torch.equal(a.top, codes.top)  # the level split keeps every real top code
    assert torch.equal(a.bottom, b.bottom) and not torch.equal(a.bottom, codes.bottom)
    other = redraw_bottom(pair, codes, 1.0 - pos, images, seed=3)
    assert not torch.equal(other.bottom, a.bottom)  # conditioned on the slice position


def test_the_gap_thresholds_are_the_issue_35_lines():
    cfg = gap_config(JudgeConfig())
    assert cfg.fd_max_ratio == 2.0 and cfg.c2st_accept == 0.75 and JudgeConfig().fd_max_ratio == 3.0


def test_the_verdict_opens_with_the_prior_gap_and_reads_null_numbers_as_n_a():
    from brainvq.report.verdict import prior_gap_lines, verdict_lines

    res = {"c2st": 0.86, "c2st_stderr": 0.03, "frechet_ratio": 5.1, "accept": False}
    gap = {
        "verdict": res,
        "level_split": {**res, "c2st": 0.77},
        "floor": {**res, "c2st": 0.30, "frechet_ratio": 1.0},
        "thresholds": {"c2st_accept": 0.75, "fd_max_ratio": 2.0},
        "decoder": "generation",
        "decoder_gap": {"c2st": {"accuracy": 0.67}, "frechet": {"ratio": None}},
    }
    lines = verdict_lines({"warnings": []}, {"prior_gap": gap})
    assert lines[0].startswith("Prior's gap") and "REJECTED" in lines[0] and "<= 2x" in lines[0]
    assert "84 % of the samples' excess" in lines[1]  # (0.77 - 0.30) / (0.86 - 0.30)
    assert "Fréchet n/a" in lines[2] and lines[2].startswith("Decoder's gap (diagnostic)")  # before the guard
    null = {**gap, "verdict": {**res, "c2st": None}, "level_split": {**res, "frechet_ratio": None}}
    lines = prior_gap_lines({"prior_gap": null})
    assert "classifier n/a" in lines[0] and "Fréchet n/ax" in lines[1]


def test_the_prior_gap_counts_only_beside_a_decoder_that_draws_like_real_slices():
    """A decoder that renders real codes as something else (the top grid alone read 1.00 against
    real slices on the OASIS-1 subset) makes any prior look close to its reconstructions."""
    from brainvq.report.verdict import prior_gap_lines

    cfg = JudgeConfig()
    assert decoder_guard({"c2st": {"accuracy": 0.75}}, cfg)["accept"]
    assert decoder_guard({"c2st": {"accuracy": 0.90}}, cfg)["accept"]
    assert not decoder_guard({"c2st": {"accuracy": 1.0}}, cfg)["accept"]
    assert not decoder_guard({"c2st": {"accuracy": None}}, cfg)["accept"]  # a non-finite number
    passing = {"c2st": 0.65, "c2st_stderr": 0.03, "frechet_ratio": 1.6}
    gap = {
        "floor": {**passing, "c2st": 0.37, "frechet_ratio": 1.0},
        "thresholds": {"c2st_accept": 0.75, "fd_max_ratio": 2.0},
        "decoder": "generation",
    }
    fine = prior_gap_lines({"prior_gap": {**gap, "verdict": {**passing, "accept": True}}})[0]
    guarded = {**passing, "accept": False, "decoder_guard": decoder_guard({"c2st": {"accuracy": 1.0}}, cfg)}
    blind = prior_gap_lines({"prior_gap": {**gap, "verdict": guarded}})[0]
    assert "ACCEPTED" in fine and "draws little detail" not in fine
    gap["thresholds"]["decoder_c2st_max"] = 0.90
    gap["decoder_gap"] = {"c2st": {"accuracy": 0.67}, "frechet": {"ratio": 1.9}}
    lines = prior_gap_lines({"prior_gap": {**gap, "verdict": {**passing, "accept": True}}})
    assert lines[-1].startswith("Decoder's gap (the prior's gap counts while its classifier reads <= 0.9)")
    assert "REJECTED" in blind and "read 1.00 against real slices, above 0.9" in blind


def test_a_passing_gap_beside_a_decoder_told_from_real_slices_is_rejected():
    """The verdict judge_prior_gap writes: the gap's two judges and the decoder guard together."""
    cfg = JudgeConfig()
    gap = {"c2st": {"accuracy": 0.65, "accept": True}, "frechet": {"ratio": 1.6, "accept": True}}
    far = {"c2st": {"accuracy": 1.0}}
    near = {"c2st": {"accuracy": 0.67}}
    assert guarded_verdict(gap, near, cfg)["accept"]
    blind = guarded_verdict(gap, far, cfg)
    assert not blind["accept"] and blind["c2st"] == 0.65 and not blind["decoder_guard"]["accept"]
    failing = {**gap, "frechet": {"ratio": 5.1, "accept": False}}
    assert not guarded_verdict(failing, near, cfg)["accept"]


def test_the_report_table_shows_the_guarded_verdict_on_the_samples_row():
    from brainvq.report.html import prior_gap_html

    both = {"c2st": {"accuracy": 0.65, "accept": True}, "frechet": {"ratio": 1.6, "accept": True}}
    verdict = guarded_verdict(both, {"c2st": {"accuracy": 1.0}}, JudgeConfig())
    gap = {
        "verdict": verdict,
        "sets": {"samples": both, "floor": both},
        "thresholds": {"c2st_accept": 0.75, "fd_max_ratio": 2.0},
        "decoder": "generation",
        "n": 256,
    }
    page = prior_gap_html(gap)
    samples_row, floor_row = page.split("<tr><td>")[1:3]
    assert "<b>reject</b>" in samples_row and "<b>reject</b>" not in floor_row
    assert "they read 1, so the samples are rejected" in page
    del verdict["decoder_guard"]  # a run folder written before the guard
    verdict["accept"] = True
    assert "counts only while" not in prior_gap_html(gap) and "<b>reject</b>" not in prior_gap_html(gap)
