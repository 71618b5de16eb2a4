"""Anomaly detection: NLL maps, restoration, synthetic lesions, the benchmark and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brainvq.anomaly.benchmark import pixel_metrics
from brainvq.anomaly.lesions import LesionConfig, lesion_set, tissue_masks
from brainvq.anomaly.restore import calibrate, detect
from brainvq.anomaly.scoring import AnomalyConfig, Thresholds, flag_codes, pixel_map
from brainvq.checkpoint import save_weights
from brainvq.cli import main
from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.models.hierarchical import HierarchicalPrior, HierarchicalPriorConfig
from brainvq.models.levels import Codes, prior_nll, resample_codes, top_to_bottom
from brainvq.models.pair import ModelPair
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import sample_naive
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.train.common import TrainerConfig
from brainvq.train.prior import PriorTrainConfig, train_prior
from brainvq.train.vqvae import train_vqvae
from tests.test_train_vqvae import tiny_cfg


def _tiny_prior(grid: int = 8, k: int = 6, conditional: bool = True) -> GatedPixelCNN:
    torch.manual_seed(0)
    cfg = PixelCNNConfig(
        num_codes=k, grid_size=grid, hidden=8, n_layers=3, kernel_size=3, cond_dim=4, location_dim=2,
        conditional=conditional,
    )  # fmt: skip
    return GatedPixelCNN(cfg).eval()


def _tiny(levels: int) -> tuple[GatedPixelCNN | HierarchicalPrior, torch.Tensor, torch.Tensor | None]:
    """An untrained prior (one level: 8x8 grid, K=6; two levels: plus a 4x4 top grid, K=5) and
    random code grids for a batch of 2."""
    if levels == 1:
        return _tiny_prior(), torch.randint(0, 6, (2, 8, 8)), None
    torch.manual_seed(0)
    arch = {"hidden": 8, "n_layers": 3, "kernel_size": 3, "cond_dim": 4, "location_dim": 2}
    prior = HierarchicalPrior(HierarchicalPriorConfig.for_grids(6, 8, 5, 4, top=arch, bottom=arch)).eval()
    return prior, torch.randint(0, 6, (2, 8, 8)), torch.randint(0, 5, (2, 4, 4))


def _assert_causal(nll_fn, codes: torch.Tensor, k: int, i: int, j: int) -> None:
    """Changing code (i,j) moves its own NLL and some later ones, never an earlier one."""
    nll = nll_fn(codes)
    changed = codes.clone()
    changed[:, i, j] = (codes[:, i, j] + 1) % k
    diff = (nll_fn(changed) - nll).abs() > 1e-6
    g = codes.shape[-1]
    order = torch.arange(g * g).reshape(g, g)
    assert not diff[:, order < i * g + j].any()  # nothing before the changed code moves
    assert diff[:, i, j].all() and diff[:, order > i * g + j].any()


def _nll(prior, codes: torch.Tensor, cond: torch.Tensor, top: torch.Tensor | None) -> dict[str, torch.Tensor]:
    return prior_nll(prior, Codes(top, codes), cond)


@pytest.mark.parametrize("levels", [1, 2])
def test_nll_map_shape_and_causality(levels: int):
    prior, codes, top = _tiny(levels)
    cond = torch.tensor([0.3, 0.7])
    nll = _nll(prior, codes, cond, top)["bottom"]
    assert nll.shape == (2, 8, 8) and (nll > 0).all()
    assert pixel_map(nll, 32).shape == (2, 1, 32, 32)
    _assert_causal(lambda c: _nll(prior, c, cond, top)["bottom"], codes, 6, 4, 5)
    if levels == 1:
        assert "top" not in _nll(prior, codes, cond, top)
        return
    tnll = _nll(prior, codes, cond, top)["top"]
    assert tnll.shape == (2, 4, 4) and (tnll > 0).all()
    _assert_causal(lambda t: _nll(prior, codes, cond, t)["top"], top, 5, 2, 1)
    # the bottom codes are conditioned on the top grid: those under a changed top code move
    other = top.clone()
    other[:, 3, 3] = (top[:, 3, 3] + 1) % 5
    assert ((_nll(prior, codes, cond, other)["bottom"] - nll)[:, 6:, 6:].abs() > 1e-6).all()


@pytest.mark.parametrize("levels", [1, 2])
def test_resampling_changes_only_flagged_codes(levels: int):
    prior, codes, top = _tiny(levels)
    cond = torch.tensor([0.2, 0.9])
    nll = _nll(prior, codes, cond, top)["bottom"]
    flagged = flag_codes(nll, float(nll.quantile(0.9)), dilate=0)
    assert 0 < flagged.sum() < flagged.numel()
    top_flagged = None
    if levels == 2:
        top_flagged = torch.zeros(2, 4, 4, dtype=torch.bool)
        top_flagged[:, 3, 0] = True  # covers bottom codes (6..7, 0..1)
    gen = torch.Generator().manual_seed(1)
    restored = resample_codes(prior, Codes(top, codes), Codes(top_flagged, flagged), cond, 3, gen, 1.0)
    tops, out = restored.top, restored.bottom
    assert out.shape == (3, 2, 8, 8)
    redrawn = flagged if levels == 1 else flagged | top_to_bottom(top_flagged, 8)
    assert torch.equal(out[:, ~redrawn], codes[None].expand(3, -1, -1, -1)[:, ~redrawn])
    assert (out[:, redrawn] != codes[redrawn]).any()
    # the cached sampler (which skips rows and columns with nothing to draw) matches the reference one
    gen = torch.Generator().manual_seed(1)
    ref_top = None
    if levels == 2:
        assert tops.shape == (3, 2, 4, 4)
        assert torch.equal(tops[:, ~top_flagged], top[None].expand(3, -1, -1, -1)[:, ~top_flagged])
        assert (tops[:, top_flagged] != top[top_flagged]).any()
        ref_top = sample_naive(
            prior.top, 6, cond.repeat(3), generator=gen, prefix=top.repeat(3, 1, 1),
            prefix_mask=~top_flagged.repeat(3, 1, 1),
        )  # fmt: skip
        assert torch.equal(tops.reshape(6, 4, 4), ref_top)
    else:
        assert tops is None
    ref = sample_naive(
        prior if levels == 1 else prior.bottom, 6, cond.repeat(3), generator=gen,
        prefix=codes.repeat(3, 1, 1), prefix_mask=~redrawn.repeat(3, 1, 1), top=ref_top,
    )  # fmt: skip
    assert torch.equal(out.reshape(6, 8, 8), ref)


@pytest.mark.parametrize("levels", [1, 2])
def test_detect_restores_nothing_when_nothing_is_flagged(levels: int):
    """Untrained single- and two-level pairs run end to end; with no code above the thresholds the
    restoration is the plain reconstruction, and with every code flagged it is not."""
    torch.manual_seed(0)
    vq_cfg = VQVAEConfig(
        image_size=32, num_codes=6, code_dim=4, stem_channels=4, hidden_channels=8, top_num_codes=5,
        top_downsample=0 if levels == 1 else 2,
    )  # fmt: skip
    vqvae = VQVAE(vq_cfg).eval()
    prior, _, _ = _tiny(levels)
    x = torch.rand(3, 1, 32, 32)
    pos = torch.tensor([0.2, 0.5, 0.8])
    cfg = AnomalyConfig(n_samples=2, erode=0, smooth_sigma=0.0)
    pair = ModelPair(vqvae, prior)
    none = detect(pair, x, pos, Thresholds(1e9, 1e9 if levels == 2 else None), cfg)
    assert torch.equal(none.restoration, none.reconstruction) and not none.flagged.any()
    assert torch.equal(none.anomaly_map, none.baseline_map)
    assert none.top_nll.shape == ((3, 4, 4) if levels == 2 else (3, 0, 0))
    every = detect(pair, x, pos, Thresholds(-1.0, -1.0 if levels == 2 else None), cfg)
    assert every.flagged.all() and not torch.equal(every.restoration, every.reconstruction)
    assert every.top_flagged.all() if levels == 2 else every.top_flagged.numel() == 0


def test_flag_codes_dilates():
    nll = torch.zeros(1, 5, 5)
    nll[0, 2, 2] = 9.0
    assert flag_codes(nll, 1.0, dilate=0).sum() == 1
    assert flag_codes(nll, 1.0, dilate=1).sum() == 9


def test_lesions_are_reproducible_and_inside_tissue():
    from tests.conftest import blob_slice

    imgs = np.stack([blob_slice(np.random.default_rng(i), 128, 0.5)[0] for i in range(6)]).astype(np.float32) / 255
    cfg = LesionConfig(min_radius=3, max_radius=10)
    a, ma, pa = lesion_set(imgs, 7, cfg)
    b, mb, _ = lesion_set(imgs, 7, cfg)
    c, _, _ = lesion_set(imgs, 8, cfg)
    assert np.array_equal(a, b) and np.array_equal(ma, mb) and not np.array_equal(a, c)
    for k, p in enumerate(pa):
        assert ma[k].any() and (imgs[k][ma[k]] > 0.02).all()  # lesion pixels lie in the brain
        tissue = tissue_masks(imgs[k])[p["tissue"]]
        assert tissue[int(p["centre_y"]), int(p["centre_x"])]
        delta = (a[k] - imgs[k])[ma[k]].mean()
        assert delta > 0.1 if p["kind"] == "hyper" else delta < -0.1


def test_pixel_metrics_perfect_and_random():
    truth = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    truth[..., 4:8, 4:8] = True
    brain = torch.ones_like(truth)
    perfect = pixel_metrics(truth.float(), truth, brain)
    assert perfect["auprc"] == pytest.approx(1.0) and perfect["best_dice"] == pytest.approx(1.0)
    noise = pixel_metrics(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)), truth, brain)
    assert noise["auprc"] < 0.4 and noise["best_dice"] < 0.5


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from tests.conftest import write_oasis

    root = tmp_path_factory.mktemp("anomaly")
    data = write_oasis(root / "oasis", {"train": [1, 2, 3, 4, 5, 6], "validate": [7], "test": [441, 442]}, n_slices=6)
    train_vqvae(tiny_cfg(data, root / "vq", epochs=20))  # enough to give the hole its own codes
    cfg = PriorTrainConfig(
        vqvae=str(root / "vq" / "vqvae.safetensors"),
        data=DataConfig(root=str(data), image_size=64),
        model=PixelCNNConfig(hidden=8, n_layers=3, kernel_size=3, cond_dim=8, location_dim=4),
        trainer=TrainerConfig(epochs=6, batch_size=8, lr=3e-3, progress=False),
        out_dir=str(root / "prior"),
    )
    train_prior(cfg)
    return data, root / "vq" / "vqvae.safetensors", root / "prior" / "prior.safetensors"


def _plant(x: torch.Tensor) -> torch.Tensor:
    """A black square (a hole, never seen inside a training brain) in the middle of the brain."""
    out = x.clone()
    out[:, 0, 24:40, 24:40] = 0.0
    return out


def test_planted_patch_scores_above_clean_slices(models: tuple[Path, Path, Path]):
    data, vq_path, prior_path = models
    pair = ModelPair.load(vq_path, prior_path)
    dc = DataConfig(root=str(data), image_size=64)
    val, test = load_split(dc, "validate", progress=False), load_split(dc, "test", progress=False)
    thr = calibrate(pair, as_tensor(val), torch.from_numpy(val.positions), 0.98, top_quantile=0.98)
    x, pos = as_tensor(test), torch.from_numpy(test.positions)
    cfg = AnomalyConfig(n_samples=2, erode=1, smooth_sigma=1.0)
    clean = detect(pair, x, pos, thr, cfg)
    planted = detect(pair, _plant(x), pos, thr, cfg)
    assert pair.levels == ("top", "bottom")  # the tiny VQ-VAE of tests.test_train_vqvae has two levels
    assert planted.anomaly_map.shape == x.shape and planted.nll.shape == (len(x), 16, 16)
    assert planted.top_nll.shape == (len(x), 4, 4) and planted.top_nll_pixels.shape == x.shape
    assert thr.top is not None and planted.top_nll[:, 1:3, 1:3].mean() > clean.top_nll[:, 1:3, 1:3].mean()
    # the patch's codes are unlikely under the prior, get flagged, and the image scores rise
    assert planted.nll[:, 6:10, 6:10].mean() > clean.nll[:, 6:10, 6:10].mean()
    assert planted.flagged[:, 6:10, 6:10].float().mean() > clean.flagged[:, 6:10, 6:10].float().mean()
    assert planted.score.min() > clean.score.max()
    # the map is brightest in the patch
    inside = planted.anomaly_map[:, 0, 24:40, 24:40].mean()
    assert inside > 2 * planted.anomaly_map[:, 0][planted.brain[:, 0]].mean()
    # same seed, same result
    again = detect(pair, _plant(x), pos, thr, cfg)
    assert torch.equal(again.restoration, planted.restoration)


def test_anomaly_cli_writes_scores_and_figures(models, tmp_path: Path, capsys: pytest.CaptureFixture):
    data, vq, prior = models
    out = tmp_path / "anom"
    test_dir = tmp_path / "folder"  # two cases from slice_0, two slices each: positions from the names
    test_dir.mkdir()
    for name in ("case_441_slice_0", "case_441_slice_5", "case_442_slice_0", "case_442_slice_2"):
        src = data / "keras_png_slices_data" / "keras_png_slices_test" / f"{name}.nii.png"
        (test_dir / src.name).write_bytes(src.read_bytes())
    args = ["anomaly", "--vqvae", str(vq), "--prior", str(prior), "--input", str(test_dir), "--out", str(out)]
    assert main([*args, "--calibrate-on", str(data), "--samples", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_images"] == 4 and summary["threshold"]["split"] == "validate"
    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {"name", "score", "baseline_score", "flagged_codes"} <= set(rows[0])
    assert [float(r["position"]) for r in rows] == [0.0, 1.0, 0.0, 1.0]
    assert len(list((out / "overlays").glob("*.png"))) == 4
    stored = json.loads((out / "threshold.json").read_text())
    assert stored["nll_threshold"] == pytest.approx(summary["threshold"]["nll_threshold"])
    # the stored threshold is reused, and a single slice can be scored with --position
    one = test_dir / "case_441_slice_5.nii.png"
    again = ["--threshold", str(out / "threshold.json"), "--no-figures", "--no-progress"]
    assert main([*args[:5], "--input", str(one), "--out", str(tmp_path / "one"), "--position", "0.4", *again]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 1


def test_anomaly_cli_errors(models, tmp_path: Path, capsys: pytest.CaptureFixture):
    data, vq, prior = models
    test_dir = data / "keras_png_slices_data" / "keras_png_slices_test"
    base = ["anomaly", "--prior", str(prior), "--out", str(tmp_path / "o"), "--threshold", "3", "--no-progress"]

    other = VQVAE(VQVAEConfig(image_size=64, num_codes=32, code_dim=8, stem_channels=8, hidden_channels=16))
    save_weights(other, tmp_path / "other.safetensors", "vqvae", other.config.to_dict())
    assert main([*base, "--vqvae", str(tmp_path / "other.safetensors"), "--input", str(test_dir)]) == 2
    assert "prior is for K=16" in capsys.readouterr().err
    single = VQVAE(
        VQVAEConfig(image_size=64, num_codes=16, code_dim=8, stem_channels=8, hidden_channels=16, top_downsample=0)
    )
    save_weights(single, tmp_path / "single.safetensors", "vqvae", single.config.to_dict())
    assert main([*base, "--vqvae", str(tmp_path / "single.safetensors"), "--input", str(test_dir)]) == 2
    assert "two-level prior cannot be used with a single-level VQ-VAE" in capsys.readouterr().err

    plain = tmp_path / "plain"
    plain.mkdir()
    Image.open(test_dir / "case_441_slice_2.nii.png").save(plain / "scan.png")
    assert main([*base, "--vqvae", str(vq), "--input", str(plain)]) == 2
    assert "missing slice positions" in capsys.readouterr().err

    assert main([*base, "--vqvae", str(vq), "--input", str(test_dir / "case_441_slice_2.nii.png")]) == 2
    err = capsys.readouterr().err
    assert "missing slice position" in err and "give --position" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--vqvae", str(vq), "--input", str(empty)]) == 2
    assert "no PNG/JPEG images" in capsys.readouterr().err

    no_thr = [a for a in base if a not in ("--threshold", "3")]
    assert main([*no_thr, "--vqvae", str(vq), "--input", str(test_dir)]) == 2
    assert "--calibrate-on" in capsys.readouterr().err


def test_evaluate_anomaly_cli(models, tmp_path: Path, capsys: pytest.CaptureFixture):
    data, vq, prior = models
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("case,cdr,split,slices\n441,0.0,test,6\n442,1.0,test,6\n7,0.5,validate,6\n")
    out = tmp_path / "bench"
    args = ["evaluate-anomaly", "--data", str(data), "--image-size", "64", "--vqvae", str(vq), "--prior", str(prior)]
    opts = ["--lesioned", "6", "--lesion-seeds", "0", "1", "--samples", "1", "--subjects", str(subjects)]
    assert main([*args, *opts, "--out", str(out), "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    for method in ("restoration", "baseline"):
        m = res["metrics"][method]
        assert len(m["auprc"]["per_seed"]) == 2 and 0 <= m["auprc"]["mean"] <= 1
        assert 0 <= m["best_dice"]["mean"] <= 1 and 0 <= m["image_auroc"]["mean"] <= 1
        assert res["cdr_ge1_vs_cdr0"][method]["n_subjects_cdr_ge1"] == 1
    assert res["threshold"]["split"] == "validate" and res["n_clean"] == 12
    masks = np.load(out / "lesions_seed1.npz")
    assert masks["masks"].shape == (6, 64, 64) and masks["masks"].any(axis=(1, 2)).all()
    with open(out / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 + 2 * 6 and sum(r["lesioned"] == "1" for r in rows) == 12
    assert list((out / "figures").glob("*_restoration.png"))

    from brainvq.report.html import anomaly_section

    html = anomaly_section(out)
    assert "AUPRC" in html and "data:image/png;base64" in html
    assert anomaly_section(tmp_path / "nothing") == ""


def test_positions_from_file_names_need_the_whole_run_of_a_case(tmp_path: Path):
    """Slices 10-13 of a 26-slice case are not positions 0.77-1.00: without --position or
    --slices-per-case such inputs stop with one line; with it they get index / 25."""
    from PIL import Image

    from brainvq.anomaly.command import load_inputs
    from brainvq.data.slices import positions_from_indices
    from brainvq.errors import DataError

    for i in range(10, 14):
        Image.fromarray(np.full((32, 32), 40 * (i - 9), np.uint8)).save(tmp_path / f"case_001_slice_{i}.nii.png")
    with pytest.raises(DataError, match="start at index 10, not 0.*give --position, or --slices-per-case N"):
        load_inputs(tmp_path, 32, None)
    _, names, positions = load_inputs(tmp_path, 32, None, slices_per_case=26)
    assert [int(n.split("_")[3].split(".")[0]) for n in names] == [10, 11, 12, 13]
    assert positions == pytest.approx(np.arange(10, 14) / 25)
    with pytest.raises(DataError, match="slice 13 is past the 12 slices per case"):
        load_inputs(tmp_path, 32, None, slices_per_case=12)
    # a case from slice 0 with a gap keeps index / last index, as the training data does
    cases = np.array([1, 1, 1, 2, 2])
    assert positions_from_indices(cases, np.array([0, 2, 4, 0, 1])) == pytest.approx([0, 0.5, 1, 0, 1])
