"""The model pair (brainvq.models.pair.ModelPair): loading and checking a VQ-VAE with its prior,
encoding and decoding, bits per code, NLL maps, sampling and completion, alike for one level and
for two. Bits and samples are pinned to the numbers the code before the pair computed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, save_weights
from brainvq.errors import ConfigError
from brainvq.models.levels import Codes, conditions_for
from brainvq.models.pair import ModelPair, check_pair
from brainvq.models.sampling import complete, sample_cached
from brainvq.sample.generate import generate
from tests.test_hierarchy import GRID, TOP_GRID, codes_for, tiny_prior, tiny_single_prior, tiny_vqvae

LEVELS = [1, 2]


def pair_of(levels: int) -> ModelPair:
    """Untrained tiny pairs: two levels (8x8 bottom, 4x4 top grid) or one (8x8 grid)."""
    if levels == 2:
        return ModelPair(tiny_vqvae(), tiny_prior(3))
    return ModelPair(tiny_vqvae(top_downsample=0), tiny_single_prior())


def batch_of(levels: int, n: int = 4) -> tuple[Codes, torch.Tensor]:
    top, bottom = codes_for(n, 6)
    return Codes(top if levels == 2 else None, bottom), torch.linspace(0.1, 0.9, n)


def old_prior_bits(m, batch: tuple[torch.Tensor, ...], level: str = "all") -> dict[str, torch.Tensor]:
    """``prior_bits`` as brainvq.train.prior computed it before the pair (the reference numbers)."""
    codes, cond = batch[0], batch[1]
    cond = cond if m.config.conditional else None
    if len(batch) == 2:
        bits = F.cross_entropy(m(codes, cond).float(), codes) / math.log(2)
        return {"loss": bits, "bits_per_code": bits, "bits_per_image": bits * codes[0].numel()}
    top = batch[2]
    out = {}
    if level in ("all", "top"):
        out["top_bits_per_code"] = F.cross_entropy(m.top(top, cond).float(), top) / math.log(2)
    if level in ("all", "bottom"):
        out["bottom_bits_per_code"] = F.cross_entropy(m.bottom(codes, cond, top).float(), codes) / math.log(2)
    if level != "all":
        return {"loss": out[f"{level}_bits_per_code"], **out}
    t, b = out["top_bits_per_code"], out["bottom_bits_per_code"]
    image = t * top[0].numel() + b * codes[0].numel()
    return {"loss": t + b, "bits_per_code": image / codes[0].numel(), "bits_per_image": image, **out}


# --- loading and checking ------------------------------------------------------------------------
def test_load_checks_the_pair_and_keeps_a_mismatch_warning(tmp_path: Path):
    pair = pair_of(2)
    vq = save_weights(pair.vqvae, tmp_path / "vq.safetensors", "vqvae", pair.vqvae.config.to_dict())
    mark = {VQVAE_FINGERPRINT: codebook_fingerprint(pair.vqvae)}
    prior = save_weights(pair.prior, tmp_path / "prior.safetensors", "prior", pair.prior.config.to_dict(), mark)
    loaded = ModelPair.load(vq, prior, device="cpu")
    assert loaded.levels == ("top", "bottom") and loaded.pair_warning is None and loaded.conditional
    assert loaded.device == torch.device("cpu") and loaded.image_size == 32 and loaded.num_codes == 16
    # a prior for other code grids stops with one line, whether loaded or built
    single_vq = tiny_vqvae(top_downsample=0)
    single = save_weights(single_vq, tmp_path / "single.safetensors", "vqvae", single_vq.config.to_dict())
    with pytest.raises(ConfigError, match="two-level prior cannot be used with a single-level VQ-VAE") as err:
        ModelPair.load(single, prior)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="single-level prior cannot be used with a two-level VQ-VAE"):
        ModelPair(pair.vqvae, tiny_single_prior())
    # the same architecture trained on another VQ-VAE's codes: stops, or warns when allowed
    other = tiny_vqvae()
    with torch.no_grad():
        other.quantizer.codebook.add_(1.0)
    other_path = save_weights(other, tmp_path / "other.safetensors", "vqvae", other.config.to_dict())
    with pytest.raises(ConfigError, match="learned the codes of another VQ-VAE"):
        ModelPair.load(other_path, prior)
    with pytest.warns(UserWarning, match="another VQ-VAE"):
        allowed = ModelPair.load(other_path, prior, allow_mismatch=True)
    assert "another VQ-VAE" in allowed.pair_warning


def test_check_pair_rejects_mismatched_levels_codes_and_grids():
    two_level, single_vq = tiny_vqvae(), tiny_vqvae(top_downsample=0)
    prior, single = tiny_prior(), tiny_single_prior()
    check_pair(two_level, prior)
    check_pair(single_vq, single)
    with pytest.raises(ConfigError, match="p: a single-level prior cannot be used with a two-level VQ-VAE"):
        check_pair(two_level, single, "p")
    with pytest.raises(ConfigError, match="p: a two-level prior cannot be used with a single-level VQ-VAE"):
        check_pair(single_vq, prior, "p")
    with pytest.raises(ConfigError, match="prior is for K=16, grid 8x8 but the VQ-VAE's level has K=32, grid 8x8"):
        check_pair(tiny_vqvae(num_codes=32), prior)
    with pytest.raises(ConfigError, match="prior is for K=16, grid 8x8 but the VQ-VAE's level has K=16, grid 16x16"):
        check_pair(tiny_vqvae(image_size=64), prior)
    with pytest.raises(ConfigError, match="top prior is for K=8, grid 4x4 but the VQ-VAE's top level has K=16"):
        check_pair(tiny_vqvae(top_num_codes=16), prior)
    with pytest.raises(
        ConfigError, match="top prior is for K=8, grid 4x4 but the VQ-VAE's top level has K=8, grid 2x2"
    ):
        check_pair(tiny_vqvae(top_downsample=4), prior)
    with pytest.raises(ConfigError, match="prior is for K=16, grid 8x8 but the VQ-VAE's level has K=32"):
        check_pair(tiny_vqvae(num_codes=32, top_downsample=0), single)


def test_single_level_weights_saved_before_the_top_level_load_as_a_pair(tmp_path: Path):
    pair = pair_of(1)
    vq_cfg = {k: v for k, v in pair.vqvae.config.to_dict().items() if not k.startswith("top_")}
    prior_cfg = {k: v for k, v in pair.prior.config.to_dict().items() if not k.startswith("top_")}
    vq = save_weights(pair.vqvae, tmp_path / "vq.safetensors", "vqvae", vq_cfg)
    prior = save_weights(pair.prior, tmp_path / "prior.safetensors", "prior", prior_cfg)
    loaded = ModelPair.load(vq, prior, device="cpu")
    assert loaded.levels == ("bottom",)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded.encode(x).bottom, pair.encode(x).bottom)
    codes, cond = batch_of(1)
    assert torch.equal(loaded.bits(codes, cond)["loss"], pair.bits(codes, cond)["loss"])


# --- images and codes ------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", LEVELS)
def test_encode_decode_round_trip(levels: int):
    pair = pair_of(levels)
    x = torch.rand(3, 1, 32, 32)
    codes = pair.encode(x)
    assert codes.bottom.shape == (3, GRID, GRID) and len(codes) == 3
    assert (codes.top is None) == (levels == 1)
    assert codes.top is None or codes.top.shape == (3, TOP_GRID, TOP_GRID)
    images = pair.decode(codes)
    assert torch.allclose(images, pair.vqvae(x).reconstruction, atol=1e-6)
    assert torch.allclose(pair.decode(codes, chunk=2), images, atol=1e-6)
    stacked = codes.map(lambda t: torch.stack([t, t]))  # extra leading dims, e.g. restorations
    assert torch.allclose(pair.decode(stacked), torch.stack([images, images]), atol=1e-6)


# --- bits and NLL ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("levels", "level"), [(1, "all"), (2, "all"), (2, "top"), (2, "bottom")])
def test_bits_are_the_numbers_training_computed_before(levels: int, level: str):
    pair = pair_of(levels)
    codes, cond = batch_of(levels)
    batch = (codes.bottom, cond) if levels == 1 else (codes.bottom, cond, codes.top)
    bits, old = pair.bits(codes, cond, level), old_prior_bits(pair.prior, batch, level)
    assert list(bits) == list(old)
    for name, value in old.items():
        assert torch.equal(bits[name], value), name


def test_bits_refuse_a_level_a_single_level_prior_has_not():
    codes, cond = batch_of(1)
    with pytest.raises(ConfigError, match="needs a two-level prior"):
        pair_of(1).bits(codes, cond, "top")
    with pytest.raises(ConfigError, match="level must be one of"):
        pair_of(2).bits(*batch_of(2), "middle")


@pytest.mark.parametrize("levels", LEVELS)
def test_nll_maps_are_each_codes_cross_entropy(levels: int):
    pair = pair_of(levels)
    codes, cond = batch_of(levels)
    maps = pair.nll(codes, cond)
    assert tuple(maps) == pair.levels
    with torch.no_grad():
        if levels == 1:
            ref = {"bottom": F.cross_entropy(pair.prior(codes.bottom, cond), codes.bottom, reduction="none")}
        else:
            top_logits, logits = pair.prior(codes.top, codes.bottom, cond)
            ref = {
                "top": F.cross_entropy(top_logits, codes.top, reduction="none"),
                "bottom": F.cross_entropy(logits, codes.bottom, reduction="none"),
            }
    for name, value in ref.items():
        assert torch.equal(maps[name], value), name
    # mean NLL in bits is the bits per code of the level
    bits = pair.bits(codes, cond)
    key = "bits_per_code" if levels == 1 else "bottom_bits_per_code"
    assert float(maps["bottom"].mean() / math.log(2)) == pytest.approx(float(bits[key].detach()), rel=1e-5)


# --- sampling and completion -----------------------------------------------------------------------
@pytest.mark.parametrize("levels", LEVELS)
def test_sample_cached_equals_naive_for_a_seed(levels: int):
    pair = pair_of(levels)
    cond = pair.conditions(torch.tensor([0.2, 0.5, 0.8]), generator=torch.Generator().manual_seed(0))
    kw = {"temperature": 0.9, "top_temperature": 0.7}
    fast = pair.sample(3, cond, generator=torch.Generator().manual_seed(4), **kw)
    slow = pair.sample(3, cond, generator=torch.Generator().manual_seed(4), naive=True, **kw)
    assert torch.equal(fast.bottom, slow.bottom) and len(fast.bottom.unique()) > 1
    assert (fast.top is None and slow.top is None) if levels == 1 else torch.equal(fast.top, slow.top)


@pytest.mark.parametrize("levels", LEVELS)
def test_generate_draws_what_the_samplers_drew_before_the_pair(levels: int):
    """generate (batches of 2 here) = conditions drawn once, then top and bottom grids per batch with
    one generator, then decoding: the order the sampling code had before the pair."""
    pair = pair_of(levels)
    positions = np.array([0.1, 0.4, 0.6, 0.9, 0.5], np.float32)
    got = generate(pair, positions, seed=5, batch_size=2, progress=False)
    g = torch.Generator().manual_seed(5)
    cond = conditions_for(pair.prior, positions, generator=g)
    tops, bottoms = [], []
    for s in range(0, 5, 2):
        c = cond[s : s + 2]
        if levels == 1:
            bottoms.append(sample_cached(pair.prior, len(c), c, 1.0, g))
        else:
            tops.append(sample_cached(pair.prior.top, len(c), c, 1.0, g))
            bottoms.append(sample_cached(pair.prior.bottom, len(c), c, 1.0, g, top=tops[-1]))
    assert torch.equal(got.codes, torch.cat(bottoms))
    assert got.top is None if levels == 1 else torch.equal(got.top, torch.cat(tops))
    assert torch.allclose(got.images, pair.vqvae.decode(got.codes, got.top), atol=1e-6)


def test_generate_draws_the_top_grid_at_its_own_temperature():
    """``top_temperature`` is what the top grid is drawn at (the bottom stays at ``temperature``);
    a single-level prior refuses it with one line."""
    pair, positions = pair_of(2), np.array([0.2, 0.5, 0.8], np.float32)
    got = generate(pair, positions, seed=5, temperature=0.9, top_temperature=0.6, progress=False)
    g = torch.Generator().manual_seed(5)
    cond = conditions_for(pair.prior, positions, generator=g)
    top = sample_cached(pair.prior.top, 3, cond, 0.6, g)
    assert torch.equal(got.top, top)
    assert torch.equal(got.codes, sample_cached(pair.prior.bottom, 3, cond, 0.9, g, top=top))
    same = generate(pair, positions, seed=5, temperature=0.9, progress=False)
    assert not torch.equal(same.top, got.top)  # the default draws the top grid at 0.9
    with pytest.raises(ConfigError, match="needs a two-level prior"):
        generate(pair_of(1), positions, top_temperature=0.6, progress=False)
    codes, cond = batch_of(2, 2)  # completion: the top grid completed at top_temperature too
    done = pair.complete(codes, cond, temperature=0.9, top_temperature=0.6, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    top = complete(pair.prior.top, codes.top, cond, None, 0.6, g)
    assert torch.equal(done.top, top)
    assert torch.equal(done.bottom, sample_cached(pair.prior.bottom, 2, cond, 0.9, g, top=top))


@pytest.mark.parametrize("levels", LEVELS)
def test_complete_keeps_the_upper_half_of_the_coarsest_grid(levels: int):
    pair = pair_of(levels)
    codes, cond = batch_of(levels, 2)
    done = pair.complete(codes, cond, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    if levels == 1:
        assert done.top is None and torch.equal(done.bottom[:, : GRID // 2], codes.bottom[:, : GRID // 2])
        assert torch.equal(done.bottom, complete(pair.prior, codes.bottom, cond, generator=g))
        return
    assert torch.equal(done.top[:, : TOP_GRID // 2], codes.top[:, : TOP_GRID // 2])
    top = complete(pair.prior.top, codes.top, cond, generator=g)
    assert torch.equal(done.top, top)
    assert torch.equal(done.bottom, sample_cached(pair.prior.bottom, 2, cond, 1.0, g, top=top))


def test_covered_adds_the_bottom_codes_under_flagged_top_codes():
    bottom = torch.zeros(1, GRID, GRID, dtype=torch.bool)
    bottom[0, 0, 0] = True
    top = torch.zeros(1, TOP_GRID, TOP_GRID, dtype=torch.bool)
    top[0, 3, 3] = True
    covered = ModelPair.covered(Codes(top, bottom))
    assert covered.sum() == 1 + 4 and covered[0, 6:, 6:].all() and covered[0, 0, 0]
    assert torch.equal(ModelPair.covered(Codes(torch.zeros(1, 0, 0, dtype=torch.bool), bottom)), bottom)
