"""Training a two-level prior: bits per code of both levels (and of one alone), training one
level while the other is frozen, and the level-by-level plan. Tiny models of tests/test_hierarchy.py."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from brainvq.errors import ConfigError
from brainvq.models.levels import Codes, prior_bits, prior_nll
from brainvq.train.codes import CodeSet
from brainvq.train.prior import PriorModule, PriorTrainConfig, code_set_bits
from tests.test_hierarchy import GRID, TOP_GRID, K, codes_for, prior_config, tiny_prior, vq_config


def test_prior_bits_of_a_two_level_prior_add_up_both_levels():
    prior = tiny_prior(3)
    top, bottom = codes_for(4, 6)
    pos = torch.tensor([0.1, 0.4, 0.6, 0.9])
    with torch.no_grad():
        bits = prior_bits(prior, Codes(top, bottom), pos)
        nats = prior_nll(prior, Codes(top, bottom), pos)
        per_sample = {level: v.flatten(1).mean(1) / math.log(2) for level, v in nats.items()}
        per_sample["image"] = per_sample["top"] * TOP_GRID**2 + per_sample["bottom"] * GRID**2
        total = code_set_bits(prior, CodeSet(bottom, pos, top), batch_size=3)  # two uneven batches
    assert torch.allclose(bits["top_bits_per_code"], per_sample["top"].mean(), atol=1e-5)
    assert torch.allclose(bits["bottom_bits_per_code"], per_sample["bottom"].mean(), atol=1e-5)
    assert torch.allclose(bits["loss"], bits["top_bits_per_code"] + bits["bottom_bits_per_code"])
    image = bits["top_bits_per_code"] * TOP_GRID**2 + bits["bottom_bits_per_code"] * GRID**2
    assert torch.allclose(bits["bits_per_image"], image, atol=1e-4)
    assert torch.allclose(bits["bits_per_code"], image / GRID**2, atol=1e-6)
    assert total["bits_per_image"] == pytest.approx(float(per_sample["image"].mean()), rel=1e-5)


def test_prior_bits_of_one_level_compute_and_optimise_that_level_alone():
    prior = tiny_prior(3)
    top, bottom = codes_for(4, 6)
    pos = torch.tensor([0.1, 0.4, 0.6, 0.9])
    both = prior_bits(prior, Codes(top, bottom), pos)
    both["loss"].backward()
    used = {n for n, p in prior.named_parameters() if p.grad is not None}  # what the joint loss trains
    for level in ("top", "bottom"):
        bits = prior_bits(prior, Codes(top, bottom), pos, level)
        assert set(bits) == {"loss", f"{level}_bits_per_code"}  # the other level is not even run
        assert torch.allclose(bits["loss"], both[f"{level}_bits_per_code"])
        prior.zero_grad(set_to_none=True)
        bits["loss"].backward()
        grads = {n for n, p in prior.named_parameters() if p.grad is not None}
        assert grads == {n for n in used if n.startswith(f"{level}.")}


def test_prior_module_for_one_level_trains_only_that_level():
    config = prior_config(3).to_dict()
    for level, other in (("top", "bottom"), ("bottom", "top")):
        module = PriorModule(config, lr=1e-3, total_steps=10, level=level)
        assert module.monitor == f"val/{level}_bits_per_code"
        assert all(p.requires_grad for p in getattr(module.model, level).parameters())
        assert not any(p.requires_grad for p in getattr(module.model, other).parameters())
        opt = module.configure_optimizers()["optimizer"]
        trained = {id(p) for group in opt.param_groups for p in group["params"]}
        assert trained == {id(p) for p in getattr(module.model, level).parameters()}
    assert PriorModule(config, lr=1e-3, total_steps=10).monitor == "val/bits_per_code"
    with pytest.raises(ConfigError, match="level must be one of"):
        PriorModule(config, lr=1e-3, total_steps=10, level="middle")
    single = {"num_codes": K, "grid_size": GRID, "hidden": 8, "n_layers": 2}
    with pytest.raises(ConfigError, match="needs a two-level prior"):
        PriorModule(single, lr=1e-3, total_steps=10, level="top")


def test_top_epochs_plans_the_levels_in_turn_and_refuses_what_cannot_apply():
    two_level, one_level = vq_config(), vq_config(top_downsample=0)
    cfg = PriorTrainConfig()
    assert cfg.phases(two_level) == [("all", cfg.trainer)]  # default: both levels together
    cfg = PriorTrainConfig(top_epochs=7, top_max_minutes=3.5)
    cfg.validate()
    (top, top_t), (bottom, bottom_t) = cfg.phases(two_level)
    assert (top, bottom) == ("top", "bottom") and bottom_t == cfg.trainer
    assert (top_t.epochs, top_t.max_minutes) == (7, 3.5)
    assert (top_t.batch_size, top_t.lr, top_t.precision) == (cfg.trainer.batch_size, cfg.trainer.lr, "auto")
    with pytest.raises(ConfigError, match="two-level VQ-VAE; this VQ-VAE has one level"):
        cfg.phases(one_level)
    for kw, message in (
        ({"top_epochs": 0}, "top_epochs must be >= 1"),
        ({"top_max_minutes": 2.0}, "top_max_minutes needs top_epochs"),
        ({"top_epochs": 2, "top_max_minutes": 0.0}, "top_max_minutes must be > 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            PriorTrainConfig(**kw).validate()
    bad_bottom = PriorTrainConfig(top_epochs=2, trainer=dataclasses.replace(cfg.trainer, max_minutes=-1.0))
    with pytest.raises(ConfigError, match="max_minutes"):  # refused before the top level trains
        bad_bottom.validate()
