"""Gated PixelCNN prior: causality, no blind spot, conditioning, fast sampler == naive."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from brainvq.checkpoint import save_weights
from brainvq.errors import ConfigError
from brainvq.models.levels import Codes, prior_nll
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import complete, sample_cached, sample_naive
from brainvq.models.weights import load_prior
from tests.causality import assert_causal, input_influence, random_positions

DEFAULT_K = 5  # PixelCNNConfig's default kernel size
KERNELS = [3, DEFAULT_K, 7]


def tiny(conditional: bool = True, **kw) -> GatedPixelCNN:
    """A small prior with the default kernel size unless ``kernel_size`` is given."""
    torch.manual_seed(0)
    cfg = PixelCNNConfig(
        **{
            "num_codes": 12,
            "grid_size": 8,
            "hidden": 16,
            "n_layers": 4,
            "conditional": conditional,
            "cond_dim": 8,
            "location_dim": 4,
            **kw,
        }
    )
    model = GatedPixelCNN(cfg).eval()
    with torch.no_grad():  # larger weights than the init: sharper, more informative distributions
        for p in model.parameters():
            p.mul_(3.0)
    return model


def test_default_kernel_size_is_what_these_tests_cover():
    assert PixelCNNConfig().kernel_size == DEFAULT_K == tiny().config.kernel_size


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("kernel_size", KERNELS)
def test_forward_is_causal_by_gradient(kernel_size: int, conditional: bool):
    """The real ``model.forward`` (conditioning map, head_cond and all), at random positions."""
    model = tiny(conditional, kernel_size=kernel_size)
    codes = torch.randint(0, 12, (2, 8, 8), generator=torch.Generator().manual_seed(kernel_size))
    cond = torch.tensor([0.3, 0.8]) if conditional else None
    assert_causal(lambda c: model(c, cond), model.embed, codes, random_positions(8, 8, seed=kernel_size))


def test_no_blind_spot():
    model = tiny(kernel_size=3)
    codes = torch.randint(0, 12, (1, 8, 8))
    infl = input_influence(lambda c: model(c, torch.tensor([0.5])), model.embed, codes, [(4, 3)])[(4, 3)][0]
    assert infl[3, 4] > 0 and infl[3, 5] > 0  # up-right: the classic PixelCNN blind spot
    assert infl[2, 6] > 0  # further up-right, within the vertical stack's reach
    assert infl[4, 2] > 0 and infl[4, 0] > 0  # left in the same row


def test_later_codes_never_change_earlier_logits():
    model = tiny()
    codes = torch.randint(0, 12, (2, 8, 8))
    cond = torch.tensor([0.3, 0.9])
    base = model(codes, cond)
    changed = codes.clone()
    changed[:, 5, 2:] = (changed[:, 5, 2:] + 1) % 12
    out = model(changed, cond)
    flat_base, flat_out = base.flatten(2), out.flatten(2)
    first = 5 * 8 + 2
    assert torch.allclose(flat_base[..., : first + 1], flat_out[..., : first + 1], atol=1e-6)
    assert not torch.allclose(flat_base[..., first + 1 :], flat_out[..., first + 1 :])


def test_shapes_dtypes_and_nll():
    model = tiny()
    codes = torch.randint(0, 12, (3, 8, 8))
    logits = model(codes, torch.rand(3))
    assert logits.shape == (3, 12, 8, 8) and logits.dtype == torch.float32
    nats = prior_nll(model, Codes(None, codes), torch.rand(3))
    assert nats.keys() == {"bottom"} and nats["bottom"].shape == (3, 8, 8) and (nats["bottom"] > 0).all()


def test_conditioning_changes_outputs():
    model = tiny()
    codes = torch.randint(0, 12, (1, 8, 8))
    a, b = model(codes, torch.tensor([0.1])), model(codes, torch.tensor([0.9]))
    assert (a - b).abs().max() > 1e-3
    unc = tiny(conditional=False)
    with pytest.raises(ConfigError, match="unconditional"):
        unc(codes, torch.tensor([0.5]))
    with pytest.raises(ConfigError, match="pass cond"):
        model(codes)
    assert unc(codes).shape == (1, 12, 8, 8)


def test_input_errors():
    model = tiny()
    with pytest.raises(ConfigError, match="codes must lie in"):
        model(torch.full((1, 8, 8), 12), torch.tensor([0.5]))
    with pytest.raises(ConfigError, match="codes must be int64"):
        model(torch.zeros(1, 4, 4, dtype=torch.long), torch.tensor([0.5]))
    with pytest.raises(ConfigError, match="odd"):
        PixelCNNConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        sample_cached(model, 2, 0.5, temperature=0)
    with pytest.raises(ConfigError, match=">= 1"):
        sample_naive(model, 0, 0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        sample_cached(model, 1, 1.5)


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize(("kernel_size", "temperature"), [(3, 1.0), (DEFAULT_K, 1.0), (DEFAULT_K, 0.7), (7, 0.7)])
def test_cached_sampler_equals_naive(conditional: bool, kernel_size: int, temperature: float):
    model = tiny(conditional, kernel_size=kernel_size)
    cond = torch.tensor([0.1, 0.5, 0.95]) if conditional else None
    a = sample_naive(model, 3, cond, temperature, torch.Generator().manual_seed(7))
    b = sample_cached(model, 3, cond, temperature, torch.Generator().manual_seed(7))
    assert a.dtype == b.dtype == torch.int64 and a.shape == (3, 8, 8)
    assert torch.equal(a, b)
    c = sample_cached(model, 3, cond, temperature, torch.Generator().manual_seed(8))
    assert not torch.equal(b, c)  # the seed matters
    assert len(torch.unique(b)) > 3  # not a degenerate constant grid


@pytest.mark.parametrize("kernel_size", [3, DEFAULT_K])
def test_completion_keeps_prefix_and_matches_naive(kernel_size: int):
    model = tiny(kernel_size=kernel_size)
    real = torch.randint(0, 12, (2, 8, 8))
    cond = torch.tensor([0.4, 0.6])
    done = complete(model, real, cond, keep_rows=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(done[:, :4], real[:, :4])
    mask = torch.zeros_like(real, dtype=torch.bool)
    mask[:, :4] = True
    naive = sample_naive(model, 2, cond, 1.0, torch.Generator().manual_seed(3), real, mask)
    assert torch.equal(done, naive)
    assert not torch.equal(done[:, 4:], real[:, 4:])


def test_named_parts_compute_what_forward_computes():
    """The cached sampler runs the layers' and the output head's named steps; each gives what the
    whole-grid forward gives at that position, and saved priors' state-dict keys stay."""
    model = tiny()
    assert [k for k in model.state_dict() if k.startswith("head.")] == [
        "head.1.weight",
        "head.1.bias",
        "head.3.weight",
        "head.3.bias",
    ]
    g, p, (i, j) = model.config.grid_size, model.config.kernel_size // 2, (5, 4)
    codes = torch.randint(0, 12, (2, g, g), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        s = model.condition_map(model.check_inputs(codes, torch.tensor([0.3, 0.6]), 2), 2)
        v = h = model.embed(codes).permute(0, 3, 1, 2)
        for layer in model.layers:
            above = layer.v_conv(F.pad(v, (p, p, p, 0)))[:, :, i - 1 : i]  # the row above's pre-activation
            bias = layer.horizontal_row_bias(above, s[:, :, i : i + 1])[:, j]
            padded = F.pad(h, (p + 1, 0))[..., :-1] if layer.first else F.pad(h, (p, 0))
            window = padded[:, :, i, j : j + p + 1].transpose(1, 2).reshape(2, -1)  # channels last
            step = layer.horizontal_position(window, bias, h[:, :, i, j], layer.horizontal_matrices())
            v, h = layer(v, h, s)
            assert torch.allclose(step, h[:, :, i, j], rtol=1e-4, atol=1e-4)
        row = model.head.rows(h[:, :, i, j] + model.head_row_bias(s[:, :, i : i + 1])[:, j])
        assert torch.allclose(row, model.logits(h, s)[:, :, i, j], rtol=1e-4, atol=1e-4)


def test_save_reload_identical(tmp_path: Path):
    model = tiny()
    path = save_weights(model, tmp_path / "prior.safetensors", "prior", model.config.to_dict())
    again = load_prior(path)
    codes = torch.randint(0, 12, (2, 8, 8))
    cond = torch.tensor([0.2, 0.7])
    assert torch.equal(model(codes, cond), again(codes, cond))
    assert torch.equal(
        sample_cached(model, 2, cond, generator=torch.Generator().manual_seed(1)),
        sample_cached(again, 2, cond, generator=torch.Generator().manual_seed(1)),
    )
