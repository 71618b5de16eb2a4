"""Conditioning a prior on the slice's intensity scale: the measurement, the distribution new
slices draw from, the model's use of it, both samplers, saving, and every path that builds it
(sampling, completion, anomaly scoring, the CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from brainvq.checkpoint import save_weights
from brainvq.cli import _prior_train_config, build_parser
from brainvq.errors import ConfigError
from brainvq.models.conditioning import ScaleDistribution, intensity_scale, slice_conditions
from brainvq.models.hierarchical import HierarchicalPrior, HierarchicalPriorConfig
from brainvq.models.levels import Codes, conditions_for, prior_bits, prior_nll
from brainvq.models.pair import ModelPair
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import complete, sample_cached, sample_naive
from brainvq.models.weights import load_prior
from brainvq.sample.generate import generate
from brainvq.train.codes import CodeSet
from tests.causality import assert_causal, random_positions
from tests.test_hierarchy import GRID, TOP_GRID, TOP_K, K, sharpen, tiny_vqvae


def two_scale_distribution() -> ScaleDistribution:
    """Training slices whose scale depends on position: 0.3-0.4 below position 0.5, 0.8-0.9 above."""
    pos = torch.linspace(0, 1, 200)
    scales = torch.where(pos < 0.5, 0.3, 0.8) + 0.1 * torch.rand(200, generator=torch.Generator().manual_seed(0))
    return ScaleDistribution.fit(pos, scales, bins=2)


def scale_prior(seed: int = 0, **kw) -> GatedPixelCNN:
    torch.manual_seed(seed)
    cfg = {"num_codes": K, "grid_size": GRID, "hidden": 16, "n_layers": 3, "cond_dim": 8, "location_dim": 4}
    cfg |= {"scale_conditional": True, "scale_distribution": two_scale_distribution().to_dict(), **kw}
    return sharpen(GatedPixelCNN(PixelCNNConfig(**cfg)))


def scale_hierarchy(levels: str = "top", seed: int = 0) -> HierarchicalPrior:
    small = {"hidden": 16, "n_layers": 3, "kernel_size": 3, "cond_dim": 8, "location_dim": 4}
    dist = two_scale_distribution().to_dict()
    on = {"scale_conditional": True, "scale_distribution": dist}
    cfg = HierarchicalPriorConfig.for_grids(
        K, GRID, TOP_K, TOP_GRID, top={**small, **on}, bottom={**small, "top_dim": 8, **(on if levels == "all" else {})}
    )
    torch.manual_seed(seed)
    return sharpen(HierarchicalPrior(cfg))


# --- the measurement -------------------------------------------------------------------------
def test_intensity_scale_is_the_95th_percentile_of_brain_pixels():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(3, 1, 32, 32)
    img[:, :, 8:24, 8:24] = torch.rand(3, 1, 16, 16, generator=g) * 0.6 + 0.2  # brain, background stays 0
    img[2] = 0
    img[2, 0, 0, :10] = 0.5  # fewer brain pixels than MIN_BRAIN_PIXELS: the maximum counts
    got = intensity_scale(img)
    for i in range(2):
        brain = img[i][img[i] > 0.05]
        assert got[i] == pytest.approx(float(torch.quantile(brain, 0.95)), abs=1e-6)
    assert got[2] == pytest.approx(0.5)
    # a darker copy of the same slice has a proportionally lower scale; background does not count
    assert intensity_scale(img[:1] * 0.5)[0] == pytest.approx(float(got[0]) * 0.5, rel=1e-5)


def test_scale_distribution_draws_by_position_and_repeats_for_a_seed():
    dist = two_scale_distribution()
    low = dist.sample(torch.full((500,), 0.2), torch.Generator().manual_seed(1))
    high = dist.sample(torch.full((500,), 0.8), torch.Generator().manual_seed(1))
    assert 0.3 <= float(low.min()) and float(low.max()) <= 0.4  # within the training scales of its bin
    assert 0.8 <= float(high.min()) and float(high.max()) <= 0.9
    assert float(low.std()) > 0.01  # a spread, not one value
    again = dist.sample(torch.full((500,), 0.2), torch.Generator().manual_seed(1))
    assert torch.equal(low, again)
    assert ScaleDistribution(**dist.to_dict()) == dist
    u = dist.normalise(torch.tensor([dist.mean, dist.mean + 100 * dist.std]))
    assert u.tolist() == pytest.approx([0.5, 1.0])
    with pytest.raises(ConfigError, match="at least 2 slices"):
        ScaleDistribution.fit(torch.zeros(1), torch.zeros(1))


# --- the model -------------------------------------------------------------------------------
def test_a_scale_conditioned_prior_uses_the_scale_and_says_what_it_needs():
    model = scale_prior()
    codes = torch.randint(0, K, (2, GRID, GRID), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([0.4, 0.4])
    a = model(codes, slice_conditions(pos, torch.tensor([0.3, 0.3])))
    b = model(codes, slice_conditions(pos, torch.tensor([0.85, 0.85])))
    assert (a - b).abs().max() > 1e-3  # the scale changes the prediction
    with pytest.raises(ConfigError, match="intensity scale"):
        model(codes, pos)  # positions alone are not enough
    with pytest.raises(ConfigError, match="scale_distribution"):
        GatedPixelCNN(PixelCNNConfig(num_codes=K, grid_size=GRID, scale_conditional=True))
    with pytest.raises(ConfigError, match="conditional"):
        PixelCNNConfig(conditional=False, scale_conditional=True)
    # still causal: the scale is known in advance like the position
    cond = slice_conditions(torch.full((1,), 0.4), torch.full((1,), 0.35))
    codes1 = codes[:1]
    assert_causal(lambda c: model(c, cond), model.embed, codes1, random_positions(GRID, 6))


def test_a_position_only_prior_ignores_a_scale_column():
    torch.manual_seed(0)
    model = sharpen(GatedPixelCNN(PixelCNNConfig(num_codes=K, grid_size=GRID, hidden=16, n_layers=3)))
    codes = torch.randint(0, K, (2, GRID, GRID), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([0.2, 0.7])
    plain = model(codes, pos)
    assert torch.equal(plain, model(codes, slice_conditions(pos, torch.tensor([0.1, 0.9]))))
    # so code sets that carry scales train and score old-style priors unchanged
    cs = CodeSet(codes, pos, scales=torch.tensor([0.1, 0.9]))
    assert cs.tensors()[1].shape == (2, 2)
    bits = prior_bits(model, Codes(None, cs.tensors()[0]), cs.tensors()[1])["loss"]
    assert torch.equal(bits, prior_bits(model, Codes(None, codes), pos)["loss"])


@pytest.mark.parametrize("levels", ["top", "all"])
def test_cached_sampler_matches_naive_with_scales(levels: str):
    prior = scale_hierarchy(levels)
    cond = slice_conditions(torch.tensor([0.2, 0.6, 0.9]), torch.tensor([0.32, 0.81, 0.88]))
    for model, top in ((prior.top, None), (prior.bottom, torch.randint(0, TOP_K, (3, TOP_GRID, TOP_GRID)))):
        fast = sample_cached(model, 3, cond, 1.0, torch.Generator().manual_seed(5), top=top)
        slow = sample_naive(model, 3, cond, 1.0, torch.Generator().manual_seed(5), top=top)
        assert torch.equal(fast, slow)


# --- the paths that build the conditions ------------------------------------------------------
def test_generate_draws_scales_and_saved_weights_sample_the_same(tmp_path: Path):
    vq = tiny_vqvae()
    prior = scale_hierarchy("top")
    positions = torch.tensor([0.1, 0.2, 0.8, 0.9]).numpy()
    first = generate(ModelPair(vq, prior), positions, seed=3, progress=False)
    assert first.scales is not None and first.scales.shape == (4,)
    assert (first.scales[:2] < 0.41).all() and (first.scales[2:] > 0.79).all()  # drawn at each position
    path = save_weights(prior, tmp_path / "prior.safetensors", "prior", prior.config.to_dict())
    again = generate(ModelPair(vq, load_prior(path)), positions, seed=3, progress=False)
    assert torch.equal(first.codes, again.codes) and torch.equal(first.top, again.top)
    assert (first.scales == again.scales).all()
    other = generate(ModelPair(vq, prior), positions, seed=4, progress=False)
    assert not (first.scales == other.scales).all()


def test_scoring_and_completion_measure_the_scale_on_the_image():
    prior = scale_hierarchy("top")
    img = torch.zeros(2, 1, 32, 32)
    img[:, :, 8:24, 8:24] = torch.linspace(0.2, 0.7, 16)
    img[1] *= 0.5
    pos = torch.tensor([0.3, 0.3])
    cond = conditions_for(prior, pos, images=img)
    assert cond[:, 1].tolist() == pytest.approx(intensity_scale(img).tolist())
    assert torch.equal(ModelPair(tiny_vqvae(), prior).conditions(pos, img), cond)
    # completion of a top grid with those conditions runs through the cached sampler
    top = torch.randint(0, TOP_K, (2, TOP_GRID, TOP_GRID))
    done = complete(prior.top, top, cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(done[:, : TOP_GRID // 2], top[:, : TOP_GRID // 2])
    # the anomaly path scores with them: a different scale gives a different top NLL
    bottom = torch.randint(0, K, (2, GRID, GRID))
    nll = prior_nll(prior, Codes(top, bottom), cond)["top"]
    swapped = prior_nll(prior, Codes(top, bottom), slice_conditions(pos, cond[:, 1].flip(0)))["top"]
    assert not torch.allclose(nll, swapped)
    with pytest.raises(ConfigError, match="images but"):
        conditions_for(prior, pos, images=img[:1])


def test_position_only_and_unconditional_priors_get_what_they_had():
    from tests.test_hierarchy import tiny_prior

    pos = torch.tensor([0.3, 0.6])
    assert torch.equal(conditions_for(tiny_prior(), pos), pos)
    assert conditions_for(tiny_prior(conditional=False), None) is None


def _args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["train-prior", *flags])


def test_cli_intensity_scale_sets_the_levels():
    top = _prior_train_config(_args("--intensity-scale", "top"))
    assert top.top_model.scale_conditional and top.model.scale_conditional and not top.bottom_model.scale_conditional
    both = _prior_train_config(_args("--intensity-scale", "all"))
    assert both.top_model.scale_conditional and both.bottom_model.scale_conditional
    none = _prior_train_config(_args("--intensity-scale", "none"))
    assert not (none.top_model.scale_conditional or none.bottom_model.scale_conditional or none.model.scale_conditional)
    plain = _prior_train_config(_args("--unconditional"))
    assert not plain.top_model.scale_conditional and not plain.top_model.conditional
    with pytest.raises(ConfigError, match="position-conditioned"):
        _prior_train_config(_args("--unconditional", "--intensity-scale", "top"))


def test_a_lesion_does_not_set_the_scale_once_its_pixels_are_excluded():
    img = torch.zeros(1, 1, 64, 64)
    img[:, :, 8:56, 8:56] = torch.linspace(0.2, 0.7, 48)
    healthy = float(intensity_scale(img)[0])
    lesioned = img.clone()
    lesioned[:, :, 20:44, 20:44] = 1.0  # a bright lesion of 25 % of the brain
    assert float(intensity_scale(lesioned)[0]) == pytest.approx(1.0)
    mask = torch.zeros_like(img, dtype=torch.bool)
    mask[:, :, 20:44, 20:44] = True
    assert abs(float(intensity_scale(lesioned, mask)[0]) - healthy) < 0.02


def test_anomaly_detection_runs_with_a_scale_conditioned_prior():
    from brainvq.anomaly.restore import calibrate, detect
    from brainvq.anomaly.scoring import AnomalyConfig

    vq, prior = tiny_vqvae(), scale_hierarchy("all")
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 1, 32, 32)
    x[:, :, 6:26, 6:26] = 0.3 + 0.4 * torch.rand(3, 1, 20, 20, generator=g)
    pos = torch.tensor([0.2, 0.5, 0.8])
    pair = ModelPair(vq, prior)
    thr = calibrate(pair, x, pos, 0.9, top_quantile=0.9)
    res = detect(pair, x, pos, thr, AnomalyConfig(n_samples=2, batch_size=2))
    assert res.flagged.any() and res.score.shape == (3,) and torch.isfinite(res.score).all()
    with pytest.raises(ConfigError, match="positions are required"):
        detect(pair, x, None, thr, AnomalyConfig(n_samples=2))


def test_conditions_reject_what_they_cannot_use():
    prior = scale_hierarchy("top")
    one = conditions_for(prior, torch.tensor(0.3), generator=torch.Generator().manual_seed(0))
    assert one.shape == (1, 2)  # a single position
    assert conditions_for(prior, torch.tensor([[0.3], [0.4]]), generator=torch.Generator()).shape == (2, 2)
    with pytest.raises(ConfigError, match="finite"):
        sample_cached(prior.top, 1, slice_conditions(torch.tensor([0.3]), torch.tensor([float("nan")])))


def test_a_prior_config_from_an_older_run_reruns_without_the_scale(tmp_path: Path):
    """A config.yaml written before the intensity scale existed keeps its position-only levels,
    while a new run's config records (and reruns with) the top level's scale conditioning."""
    import yaml

    from brainvq.train.common import write_run_config
    from brainvq.train.prior import PriorTrainConfig

    write_run_config(tmp_path / "new", PriorTrainConfig())
    doc = yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())
    assert doc["config"]["top_model"]["scale_conditional"] is True
    for level in ("model", "top_model", "bottom_model"):  # what an older release wrote
        for key in ("scale_conditional", "scale_distribution"):
            doc["config"][level].pop(key)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(doc))
    old = _prior_train_config(_args("--config", str(tmp_path / "old.yaml")))
    assert not old.top_model.scale_conditional and not old.bottom_model.scale_conditional
    new = _prior_train_config(_args("--config", str(tmp_path / "new" / "config.yaml")))
    assert new.top_model.scale_conditional
