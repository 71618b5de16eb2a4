"""Training a two-level prior: bits per code of both levels (and of one alone), training one
level while the other is frozen, the level-by-level plan, and keeping each level at its own best
epoch (BestPerLevel, keep_weights). Tiny models of tests/test_hierarchy.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from brainvq.errors import ConfigError
from brainvq.models.hierarchical import HierarchicalPrior
from brainvq.models.levels import Codes, prior_bits
from brainvq.train.codes import CodeSet
from brainvq.train.keep import BestPerLevel, keep_weights
from brainvq.train.prior import PriorModule, PriorTrainConfig, code_set_bits
from tests.test_hierarchy import GRID, TOP_GRID, K, codes_for, prior_config, tiny_prior, tiny_single_prior, vq_config


def test_prior_bits_of_a_two_level_prior_add_up_both_levels():
    prior = tiny_prior(3)
    top, bottom = codes_for(4, 6)
    pos = torch.tensor([0.1, 0.4, 0.6, 0.9])
    with torch.no_grad():
        bits = prior_bits(prior, Codes(top, bottom), pos)
        per_sample = {"top": prior.top.nll_bits(top, pos), "bottom": prior.bottom.nll_bits(bottom, pos, top)}
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


# --- BestPerLevel -------------------------------------------------------------------------------


def snapshot(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(module: torch.nn.Module, state: dict[str, Tensor]) -> None:
    now = module.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k], v), k


def run_fake_epochs(callback: BestPerLevel, prior: HierarchicalPrior) -> list[dict[str, dict[str, Tensor]]]:
    """Three validation rounds (after a sanity check) in which the weights change in place each
    epoch; the top level is best at epoch 0, the bottom at epoch 2. Returns each epoch's weights."""
    module = SimpleNamespace(model=prior)
    sanity = SimpleNamespace(sanity_checking=True, current_epoch=0, callback_metrics={"val/top_bits_per_code": 0.1})
    callback.on_validation_end(sanity, module)  # ignored: Lightning's sanity check is no epoch
    top_bits, bottom_bits = [1.0, 1.5, 1.2], [3.0, 2.5, 2.0]
    states = []
    for epoch in range(3):
        with torch.no_grad():  # "training": every weight changes, in place
            for p in prior.parameters():
                p.add_(torch.randn_like(p))
        states.append({"top": snapshot(prior.top), "bottom": snapshot(prior.bottom)})
        metrics = {
            "val/top_bits_per_code": torch.tensor(top_bits[epoch]),
            "val/bottom_bits_per_code": torch.tensor(bottom_bits[epoch]),
            "val/bits_per_code": torch.tensor(top_bits[epoch] + bottom_bits[epoch]),
        }
        callback.on_validation_end(
            SimpleNamespace(sanity_checking=False, current_epoch=epoch, callback_metrics=metrics), module
        )
    return states


def test_best_per_level_keeps_each_level_at_its_own_best_epoch(tmp_path: Path):
    prior = tiny_prior(3)
    callback = BestPerLevel()
    states = run_fake_epochs(callback, prior)
    assert {level: best["epoch"] for level, best in callback.best.items()} == {"top": 0, "bottom": 2}
    target = tiny_prior(3, seed=1)  # another prior, e.g. the one reloaded from the best total checkpoint
    info = callback.restore(target)
    assert info == {
        "top_best_epoch": 0,
        "top_best_val_bits_per_code": 1.0,
        "bottom_best_epoch": 2,
        "bottom_best_val_bits_per_code": 2.0,
    }
    assert_state_equal(target.top, states[0]["top"])
    assert_state_equal(target.bottom, states[2]["bottom"])
    # the round trip a training checkpoint makes (weights-only, as --resume reads it)
    torch.save(callback.state_dict(), tmp_path / "cb.pt")
    resumed = BestPerLevel()
    resumed.load_state_dict(torch.load(tmp_path / "cb.pt", weights_only=True))
    fresh = tiny_prior(3, seed=2)
    assert resumed.restore(fresh) == info
    assert_state_equal(fresh.top, states[0]["top"])
    assert_state_equal(fresh.bottom, states[2]["bottom"])
    # a single-level prior is left alone
    single = tiny_single_prior()
    before = snapshot(single)
    assert callback.restore(single) == {}
    assert_state_equal(single, before)


def test_keep_weights_last_leaves_the_trained_prior_and_best_loads_each_levels_best() -> None:
    no_best_file = SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path="", best_model_score=None))
    prior = tiny_prior(3)
    callback = BestPerLevel()
    states = run_fake_epochs(callback, prior)
    module = SimpleNamespace(model=prior, load_state_dict=None)
    info = keep_weights("last", no_best_file, module, callback)
    assert info == {"kept": "last", **callback.info()} and info["top_best_epoch"] == 0
    assert_state_equal(prior.top, states[2]["top"])  # untouched: the end of training
    info = keep_weights("best", no_best_file, module, callback)
    assert info["kept"] == "best"
    assert_state_equal(prior.top, states[0]["top"])
    assert_state_equal(prior.bottom, states[2]["bottom"])
