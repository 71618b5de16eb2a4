"""Two-level (VQ-VAE-2) model: shapes, causality of both priors, the top-to-bottom conditioning
path, exact cached sampling and save/reload. Pairing checks: tests/test_pair.py; training the
levels and keeping each at its best epoch: tests/test_prior_levels.py.

Every model here is tiny: 32x32 images, an 8x8 bottom grid and a 4x4 top grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from brainvq.checkpoint import save_weights
from brainvq.errors import ConfigError
from brainvq.models.hierarchical import HierarchicalPrior, HierarchicalPriorConfig, prior_from_config
from brainvq.models.levels import sample_codes
from brainvq.models.pair import ModelPair, check_pair
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import sample_cached, sample_naive
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.models.weights import load_prior, load_vqvae
from brainvq.sample.generate import generate
from tests.causality import assert_causal, random_positions

KERNELS = [3, 5, 7]
K, GRID, TOP_K, TOP_GRID = 16, 8, 8, 4  # bottom and top code counts and grid sides
SCALE = GRID // TOP_GRID  # bottom cells per top cell along each side


def vq_config(**kw) -> VQVAEConfig:
    """A two-level VQ-VAE: 32x32 images -> 8x8 bottom codes -> 4x4 top codes."""
    base = dict(
        image_size=32,
        downsample=4,
        num_codes=K,
        code_dim=8,
        stem_channels=8,
        hidden_channels=8,
        top_downsample=2,
        top_num_codes=TOP_K,
    )
    return VQVAEConfig(**{**base, **kw})


def tiny_vqvae(**kw) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(vq_config(**kw)).eval()


def prior_config(kernel_size: int = 3, conditional: bool = True, **kw) -> HierarchicalPriorConfig:
    small = {"hidden": 16, "n_layers": 3, "kernel_size": kernel_size, "cond_dim": 8, "location_dim": 4}
    return HierarchicalPriorConfig.for_grids(
        K, GRID, TOP_K, TOP_GRID, conditional=conditional, top=dict(small), bottom={**small, "top_dim": 8, **kw}
    )


def sharpen(model: torch.nn.Module) -> torch.nn.Module:
    """Larger weights than the init: sharper, more informative distributions."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


def tiny_prior(kernel_size: int = 3, conditional: bool = True, seed: int = 0) -> HierarchicalPrior:
    torch.manual_seed(seed)
    return sharpen(HierarchicalPrior(prior_config(kernel_size, conditional)))


def tiny_single_prior(**kw) -> GatedPixelCNN:
    torch.manual_seed(0)
    cfg = {"num_codes": K, "grid_size": GRID, "hidden": 16, "n_layers": 3, "cond_dim": 8, "location_dim": 4, **kw}
    return sharpen(GatedPixelCNN(PixelCNNConfig(**cfg)))


def codes_for(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(top (n,4,4), bottom (n,8,8)) random code grids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TOP_K, (n, TOP_GRID, TOP_GRID), generator=g), torch.randint(
        0, K, (n, GRID, GRID), generator=g
    )


# --- two-level VQ-VAE ---------------------------------------------------------------------------


def test_two_level_vqvae_shapes_and_decode_matches_forward():
    model = tiny_vqvae()
    assert model.config.hierarchical and model.config.top_grid_size == TOP_GRID
    x = torch.rand(3, 1, 32, 32)
    out = model(x)
    assert out.reconstruction.shape == x.shape
    assert out.codes.shape == (3, GRID, GRID) and out.codes.dtype == torch.int64
    assert out.top_codes.shape == (3, TOP_GRID, TOP_GRID) and out.top_codes.dtype == torch.int64
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < K
    assert 0 <= int(out.top_codes.min()) and int(out.top_codes.max()) < TOP_K
    assert out.top_preview.shape == (3, 1, GRID, GRID)
    top, bottom = model.encode_levels(x)
    assert torch.equal(top, out.top_codes) and torch.equal(bottom, out.codes)
    assert torch.equal(model.encode(x), out.codes)
    assert torch.allclose(model.decode(bottom, top), out.reconstruction, atol=1e-6)
    # the top codes matter to the decoder: other top codes give another image
    assert not torch.allclose(model.decode(bottom, (top + 1) % TOP_K), out.reconstruction, atol=1e-4)
    preview = model.decode_top(top)
    assert preview.shape == (3, 1, GRID, GRID) and 0 <= preview.min() and preview.max() <= 1
    assert torch.allclose(preview, torch.sigmoid(out.top_preview), atol=1e-6)


def test_two_level_decode_argument_errors():
    model = tiny_vqvae()
    top, bottom = codes_for(2, 0)
    with pytest.raises(ConfigError, match="two levels: decode\\(codes, top\\) needs the top code grids"):
        model.decode(bottom)
    with pytest.raises(ConfigError, match="top code grids \\(B,4,4\\)"):
        model.decode(bottom, top[:, :2, :2])
    with pytest.raises(ConfigError, match="top codes must lie in"):
        model.decode(bottom, top + TOP_K)
    with pytest.raises(ConfigError, match="1 top grids for 2 bottom grids"):
        model.decode(bottom, top[:1])
    with pytest.raises(ConfigError, match="use forward\\(\\) or encode_levels\\(\\)"):
        model.quantize(torch.rand(1, 1, 32, 32))
    single = tiny_vqvae(top_downsample=0)
    with pytest.raises(ConfigError, match="single level: do not pass top codes"):
        single.decode(bottom, top)
    with pytest.raises(ConfigError, match="single level"):
        single.decode_top(top)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"top_downsample": 3}, "top_downsample must be 0 or a power of two >= 2"),
        ({"top_downsample": 6}, "top_downsample must be 0 or a power of two >= 2"),
        ({"top_downsample": 1}, "top_downsample must be 0 or a power of two >= 2"),
        ({"top_downsample": 16}, "latent grid 8 is not divisible by top_downsample 16"),
        ({"image_size": 48, "top_downsample": 8}, "latent grid 12 is not divisible by top_downsample 8"),
        ({"top_num_codes": 1}, "top_num_codes must be >= 2"),
    ],
)
def test_two_level_config_errors(kw: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        vq_config(**kw)


def test_single_level_weights_saved_before_the_top_level_still_load(tmp_path: Path):
    """A config dict as saved before the top level existed (no top_* keys) loads as one level."""
    old = tiny_vqvae(top_downsample=0)
    saved = {k: v for k, v in old.config.to_dict().items() if not k.startswith("top_")}
    assert "top_downsample" not in saved and "res_bottleneck" in saved
    again = load_vqvae(save_weights(old, tmp_path / "old.safetensors", "vqvae", saved))
    assert not again.config.hierarchical and again.config.top_grid_size == 0
    assert not hasattr(again, "top_encoder") and not hasattr(again, "top_quantizer")
    x = torch.rand(2, 1, 32, 32)
    a, b = old(x), again(x)
    assert torch.equal(a.reconstruction, b.reconstruction) and torch.equal(a.codes, b.codes)
    assert b.top_codes is None
    top, bottom = again.encode_levels(x)
    assert top is None and torch.equal(bottom, a.codes)
    assert torch.equal(again.decode(bottom), old.decode(bottom))


def test_single_level_priors_saved_before_the_top_level_still_load(tmp_path: Path):
    old = tiny_single_prior()
    saved = {k: v for k, v in old.config.to_dict().items() if not k.startswith("top_")}
    again = load_prior(save_weights(old, tmp_path / "old_prior.safetensors", "prior", saved))
    assert isinstance(again, GatedPixelCNN) and again.config.top_codes == 0
    _, codes = codes_for(2, 1)
    cond = torch.tensor([0.2, 0.7])
    assert torch.equal(old(codes, cond), again(codes, cond))


# --- causality of both priors -------------------------------------------------------------------


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("kernel_size", KERNELS)
def test_top_prior_is_causal(kernel_size: int, conditional: bool):
    """The top logits of HierarchicalPrior.forward at (i, j) see only earlier top codes."""
    prior = tiny_prior(kernel_size, conditional).train()  # train mode: gradients flow
    top, bottom = codes_for(2, kernel_size)
    cond = torch.tensor([0.3, 0.8]) if conditional else None
    positions = random_positions(TOP_GRID, 6, seed=kernel_size)
    assert_causal(lambda t: prior(t, bottom, cond)[0], prior.top.embed, top, positions)


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("kernel_size", KERNELS)
def test_bottom_prior_given_top_is_causal(kernel_size: int, conditional: bool):
    """The bottom logits of HierarchicalPrior.forward, conditioned on the top codes, at (i, j)
    get zero gradient from the bottom code at (i, j) and every later one."""
    prior = tiny_prior(kernel_size, conditional).train()
    top, bottom = codes_for(2, 10 + kernel_size)
    cond = torch.tensor([0.3, 0.8]) if conditional else None
    positions = random_positions(GRID, 8, seed=kernel_size)
    assert_causal(lambda c: prior(top, c, cond)[1], prior.bottom.embed, bottom, positions)


# --- the top-to-bottom conditioning path ---------------------------------------------------------


def top_influence(
    prior: HierarchicalPrior, top: Tensor, bottom: Tensor, cond: Tensor, position: tuple | None
) -> Tensor:
    """|d bottom logits (sample 0, at ``position`` or summed over all) / d top embedding| as (B,ht,wt)."""
    captured: list[Tensor] = []
    handle = prior.bottom.top_embed.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = prior.bottom(bottom, cond, top)
    finally:
        handle.remove()
    assert len(captured) == 1
    chosen = logits[0].sum() if position is None else logits[0, :, position[0], position[1]].sum()
    (grad,) = torch.autograd.grad(chosen, captured[0])
    return grad.abs().sum(-1)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_bottom_logits_depend_on_the_top_codes_above_them(kernel_size: int):
    prior = tiny_prior(kernel_size).train()
    top, bottom = codes_for(2, 3)
    cond = torch.tensor([0.4, 0.6])
    whole = top_influence(prior, top, bottom, cond, None)
    assert (whole[0] > 0).all(), "some top cell does not reach any bottom logit"
    assert (whole[1] == 0).all(), "sample 0's logits depend on sample 1's top codes"
    for i, j in random_positions(GRID, 8, seed=kernel_size):
        infl = top_influence(prior, top, bottom, cond, (i, j))
        assert infl[0, i // SCALE, j // SCALE] > 0, f"logits at {(i, j)} ignore the top cell that covers them"
    # changing one top cell (bottom codes fixed) changes the logits of the bottom cells it covers
    with torch.no_grad():
        base = prior.bottom(bottom, cond, top)
        changed = top.clone()
        changed[0, 2, 1] = (changed[0, 2, 1] + 1) % TOP_K
        out = prior.bottom(bottom, cond, changed)
    covered = (slice(2 * SCALE, 3 * SCALE), slice(1 * SCALE, 2 * SCALE))
    assert not torch.allclose(base[0][:, covered[0], covered[1]], out[0][:, covered[0], covered[1]], atol=1e-5)
    assert torch.equal(base[1], out[1])  # the other sample's top did not change


def test_top_codes_line_up_with_the_bottom_cells_they_cover():
    """Changing one top code changes the conditioning map on a square of bottom cells centred
    on the cells that top code covers (the same radius everywhere, clipped at the edges): a top
    grid that is shifted, transposed or interpolated against the bottom grid fails this."""
    torch.manual_seed(0)
    grid, top_grid = 16, 8
    cfg = PixelCNNConfig(
        num_codes=K,
        grid_size=grid,
        hidden=8,
        n_layers=2,
        cond_dim=8,
        location_dim=4,
        top_codes=TOP_K,
        top_grid=top_grid,
    )
    model = GatedPixelCNN(cfg).eval()
    top = torch.randint(0, TOP_K, (1, top_grid, top_grid), generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([0.5])
    f = grid // top_grid
    cell = torch.arange(grid) // f  # the top row (column) covering each bottom row (column)
    with torch.no_grad():
        base = model.condition_map(cond, 1, top)
        radii = set()
        for a in range(top_grid):
            for b in range(top_grid):
                changed = top.clone()
                changed[0, a, b] = (changed[0, a, b] + 1) % TOP_K
                moved = (model.condition_map(cond, 1, changed) - base).abs().amax(1)[0] > 1e-5
                dist = torch.maximum((cell[:, None] - a).abs(), (cell[None, :] - b).abs())
                assert moved[dist == 0].all(), f"top code {(a, b)} does not reach every bottom cell it covers"
                r = int(dist[moved].max())
                assert torch.equal(moved, dist <= r), f"top code {(a, b)} moves cells not centred on its own"
                radii.add(r)
    assert len(radii) == 1 and radii.pop() < top_grid - 1, "top features are not local and translation-equivariant"


def test_bottom_prior_rejects_missing_or_malformed_top():
    prior = tiny_prior()
    top, bottom = codes_for(2, 4)
    cond = torch.tensor([0.4, 0.6])
    with pytest.raises(ConfigError, match="conditioned on top-level codes: pass top"):
        prior.bottom(bottom, cond)
    for bad in (top[:, :2, :2], top[:1], top.float(), top[0]):
        with pytest.raises(ConfigError, match="top must be int64 \\(2,4,4\\)"):
            prior.bottom(bottom, cond, bad)
    with pytest.raises(ConfigError, match="top codes must lie in \\[0, 8\\)"):
        prior.bottom(bottom, cond, top + TOP_K)
    with pytest.raises(ConfigError, match="conditioned on top-level codes: pass top"):
        sample_cached(prior.bottom, 2, cond)
    with pytest.raises(ConfigError, match="top must be int64"):
        sample_naive(prior.bottom, 2, cond, top=top[:1])
    # a single-level prior (and the top prior) take no top codes
    for single in (tiny_single_prior(), prior.top):
        single_top = torch.zeros(2, TOP_GRID, TOP_GRID, dtype=torch.long)
        codes = torch.zeros(2, single.config.grid_size, single.config.grid_size, dtype=torch.long)
        with pytest.raises(ConfigError, match="not conditioned on top-level codes: do not pass top"):
            single(codes, cond, single_top)
        with pytest.raises(ConfigError, match="not conditioned on top-level codes"):
            sample_cached(single, 2, cond, top=single_top)


def test_hierarchical_prior_config_errors():
    good = prior_config()
    with pytest.raises(ConfigError, match="must be conditioned on the top grid"):
        HierarchicalPriorConfig(top=good.top, bottom=PixelCNNConfig(num_codes=K, grid_size=GRID))
    with pytest.raises(ConfigError, match="must be conditioned on the top grid"):
        HierarchicalPriorConfig(top=PixelCNNConfig(num_codes=TOP_K + 1, grid_size=TOP_GRID), bottom=good.bottom)
    with pytest.raises(ConfigError, match="agree on slice-position conditioning"):
        HierarchicalPriorConfig(top=prior_config(conditional=False).top, bottom=good.bottom)
    with pytest.raises(ConfigError, match="top_grid must divide grid_size 8"):
        PixelCNNConfig(num_codes=K, grid_size=GRID, top_codes=TOP_K, top_grid=3)
    # a saved config dict rebuilds the same two-level prior
    assert prior_from_config(good.to_dict()).config == good


# --- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_cached_equals_naive_for_the_bottom_prior_given_top(kernel_size: int):
    prior = tiny_prior(kernel_size, seed=kernel_size)
    top, _ = codes_for(3, 5)
    cond = torch.tensor([0.1, 0.5, 0.9])
    fast = sample_cached(prior.bottom, 3, cond, generator=torch.Generator().manual_seed(1), top=top)
    slow = sample_naive(prior.bottom, 3, cond, generator=torch.Generator().manual_seed(1), top=top)
    assert torch.equal(fast, slow)
    assert fast.shape == (3, GRID, GRID) and len(fast.unique()) > 1
    # the same uniforms under other top codes give other samples: the sampler uses the top
    other = sample_cached(prior.bottom, 3, cond, generator=torch.Generator().manual_seed(1), top=(top + 3) % TOP_K)
    assert not torch.equal(fast, other)


def test_sample_codes_shapes_and_bottom_drawn_given_the_returned_top():
    prior = tiny_prior(5)
    cond = torch.tensor([0.2, 0.5, 0.8])
    drawn = sample_codes(prior, 3, cond, 0.9, torch.Generator().manual_seed(7), top_temperature=0.7)
    top, bottom = drawn.top, drawn.bottom
    assert top.shape == (3, TOP_GRID, TOP_GRID) and top.dtype == torch.int64
    assert bottom.shape == (3, GRID, GRID) and bottom.dtype == torch.int64
    assert 0 <= int(top.min()) and int(top.max()) < TOP_K and 0 <= int(bottom.min()) and int(bottom.max()) < K
    # the same draw by hand: the top grid at top_temperature, then the bottom grid given that top
    gen = torch.Generator().manual_seed(7)
    by_hand_top = sample_cached(prior.top, 3, cond, 0.7, gen)
    by_hand = sample_cached(prior.bottom, 3, cond, 0.9, gen, top=by_hand_top)
    assert torch.equal(top, by_hand_top) and torch.equal(bottom, by_hand)
    single = sample_codes(tiny_single_prior(), 2, torch.tensor([0.3, 0.6]), generator=torch.Generator())
    assert single.top is None and single.bottom.shape == (2, GRID, GRID)


# --- save and reload ----------------------------------------------------------------------------


def test_saved_and_reloaded_prior_gives_identical_samples(tmp_path: Path):
    prior = tiny_prior(5, conditional=True)
    path = save_weights(prior, tmp_path / "prior.safetensors", "prior", prior.config.to_dict())
    again = load_prior(path)
    assert isinstance(again, HierarchicalPrior) and again.config == prior.config
    cond = torch.tensor([0.25, 0.75])
    a = sample_codes(prior, 2, cond, generator=torch.Generator().manual_seed(3))
    b = sample_codes(again, 2, cond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.top, b.top) and torch.equal(a.bottom, b.bottom)
    # a Lightning training checkpoint of the same prior loads the same way
    ckpt = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in prior.state_dict().items()}
    torch.save({"hyper_parameters": {"kind": "prior", "model": prior.config.to_dict()}, "state_dict": state}, ckpt)
    c = sample_codes(load_prior(ckpt), 2, cond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.top, c.top) and torch.equal(a.bottom, c.bottom)
    # and decoded images are identical too, end to end
    vq = load_vqvae(save_weights(tiny_vqvae(), tmp_path / "vq.safetensors", "vqvae", vq_config().to_dict()))
    check_pair(vq, again)
    positions = np.array([0.25, 0.75], np.float32)
    g1 = generate(ModelPair(vq, prior), positions, seed=4, progress=False)
    g2 = generate(ModelPair(vq, again), positions, seed=4, progress=False)
    assert torch.equal(g1.images, g2.images) and torch.equal(g1.top, g2.top)
    assert g1.images.shape == (2, 1, 32, 32) and g1.top.shape == (2, TOP_GRID, TOP_GRID)
