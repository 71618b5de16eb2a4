"""Two decoders over the same codes: the reconstruction decoder (the VQ-VAE's own) reconstructs,
the generation decoder (same encoder and codebooks, decoder fine-tuned) draws generated slices.

Every model here is an untrained tiny one on 64x64 slices (16x16 bottom grid, 4x4 top grid); the
generation decoder is the VQ-VAE with its decoder's weights perturbed, so that the two decoders
draw visibly different images from the same codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, save_weights
from brainvq.cli import main
from brainvq.data.sources import DataConfig
from brainvq.errors import ConfigError
from brainvq.models.hierarchical import HierarchicalPrior, HierarchicalPriorConfig
from brainvq.models.pair import ModelPair
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.models.weights import load_vqvae
from brainvq.runs import RunLayout, find_generation_decoder

PIXEL = 1 / 255 + 1e-4  # the saved PNGs are 8-bit


def _vqvae(seed: int) -> VQVAE:
    torch.manual_seed(seed)
    cfg = VQVAEConfig(image_size=64, num_codes=16, code_dim=8, stem_channels=8, hidden_channels=16, top_num_codes=16)
    model = VQVAE(cfg).eval()
    with torch.no_grad():  # an untrained quantiser: spread the codebooks so that codes differ per seed
        model.quantizer.codebook.normal_()
        model.top_quantizer.codebook.normal_()
    return model


def _perturbed_decoder(vqvae: VQVAE) -> VQVAE:
    """A copy of ``vqvae`` whose decoder's weights are shifted (same encoder, same codebooks)."""
    other = _vqvae(0)
    other.load_state_dict(vqvae.state_dict())
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.decoder.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return other


def _write(model: VQVAE, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_weights(model, path, "vqvae", model.config.to_dict())


def make_run(root: Path, generation_decoder: bool = True) -> RunLayout:
    """A run folder: ROOT/vqvae, ROOT/prior (marked with the VQ-VAE's codebooks) and, if asked,
    ROOT/generation_decoder."""
    layout = RunLayout(root)
    vq = _vqvae(0)
    _write(vq, layout.vqvae_weights)
    if generation_decoder:
        _write(_perturbed_decoder(vq), layout.generation_decoder)
    small = {"hidden": 16, "n_layers": 3, "kernel_size": 3, "cond_dim": 8, "location_dim": 4}
    cfg = HierarchicalPriorConfig.for_grids(16, 16, 16, 4, top=dict(small), bottom={**small, "top_dim": 8})
    torch.manual_seed(1)
    prior = HierarchicalPrior(cfg).eval()
    layout.prior_dir.mkdir(parents=True, exist_ok=True)
    mark = {VQVAE_FINGERPRINT: codebook_fingerprint(vq)}
    save_weights(prior, layout.prior_weights, "prior", cfg.to_dict(), mark)
    return layout


def _saved_images(folder: Path) -> torch.Tensor:
    files = sorted((folder / "images").glob("*.png"))
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f), np.float32) / 255)[None] for f in files])


def _decodings(folder: Path, *weights: Path) -> list[torch.Tensor]:
    """Each VQ-VAE's decoding of the code grids saved in ``folder/sample_codes.pt``."""
    saved = torch.load(folder / "sample_codes.pt", weights_only=True)
    with torch.no_grad():
        return [load_vqvae(w).decode(saved["codes"], saved["top"]) for w in weights]


def assert_drawn_by(folder: Path, drawer: Path, other: Path) -> None:
    """The PNGs in ``folder`` are ``drawer``'s decoding of the saved codes, not ``other``'s."""
    images = _saved_images(folder)
    by_drawer, by_other = _decodings(folder, drawer, other)
    assert (images - by_drawer).abs().max() <= PIXEL
    assert (images - by_other).abs().max() > 0.05  # the two decoders draw visibly different slices


def _sample(layout: RunLayout, out: Path, *extra: str) -> dict:
    argv = ["sample", "--vqvae", str(layout.vqvae_weights), "--prior", str(layout.prior_weights)]
    assert main([*argv, "--n", "3", "--out", str(out), "--no-progress", *extra]) == 0
    return json.loads((out / "sample_summary.json").read_text())


# --- the pair --------------------------------------------------------------------------------------
def test_the_pair_decodes_with_the_reconstruction_decoder_and_draws_with_the_generation_decoder(tmp_path: Path):
    layout = make_run(tmp_path / "run")
    pair = ModelPair.load(
        layout.vqvae_weights, layout.prior_weights, "cpu", generation_decoder=layout.generation_decoder
    )
    recon, drawer = load_vqvae(layout.vqvae_weights), load_vqvae(layout.generation_decoder)
    codes = pair.encode(torch.rand(3, 1, 64, 64))
    assert torch.allclose(pair.decode(codes), recon.decode(codes.bottom, codes.top), atol=1e-6)
    assert torch.allclose(pair.draw(codes), drawer.decode(codes.bottom, codes.top), atol=1e-6)
    assert torch.allclose(pair.draw(codes, chunk=2), pair.draw(codes), atol=1e-6)
    assert not torch.allclose(pair.draw(codes), pair.decode(codes), atol=1e-2)
    assert pair.drawing_decoder == "generation" and pair.drawing_vqvae is pair.generation_decoder
    assert pair.decoder_record() == {"drew": "generation", "weights": str(layout.generation_decoder)}
    plain = ModelPair.load(layout.vqvae_weights, layout.prior_weights, "cpu")
    assert plain.drawing_decoder == "reconstruction" and plain.drawing_vqvae is plain.vqvae
    assert torch.equal(plain.draw(codes), plain.decode(codes))
    assert plain.decoder_record() == {"drew": "reconstruction", "weights": str(layout.vqvae_weights)}


def test_a_generation_decoder_with_other_codebooks_stops_with_one_line(tmp_path: Path, capsys):
    layout = make_run(tmp_path / "run")
    other = _write(_vqvae(1), tmp_path / "other" / "vqvae.safetensors")  # same architecture, other codebooks
    with pytest.raises(ConfigError) as err:
        ModelPair.load(layout.vqvae_weights, layout.prior_weights, "cpu", generation_decoder=other)
    message = str(err.value)
    assert "\n" not in message and str(other) in message and str(layout.vqvae_weights) in message
    assert "codebooks" in message
    with pytest.raises(ConfigError, match="codebooks"):  # also when the pair is built from models
        pair = ModelPair.load(layout.vqvae_weights, layout.prior_weights, "cpu")
        ModelPair(pair.vqvae, pair.prior, generation_decoder=load_vqvae(other))
    shutil.copyfile(other, layout.generation_decoder)  # the run folder's own generation decoder is the wrong one
    argv = ["sample", "--vqvae", str(layout.vqvae_weights), "--prior", str(layout.prior_weights), "--n", "1"]
    assert main([*argv, "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert _sample(layout, tmp_path / "s", "--no-generation-decoder")["decoder"]["drew"] == "reconstruction"


# --- finding it in a run folder ----------------------------------------------------------------------
def test_find_generation_decoder_only_beside_a_run_folders_vqvae(tmp_path: Path):
    layout = make_run(tmp_path / "run")
    assert find_generation_decoder(layout.vqvae_weights) == layout.generation_decoder
    assert find_generation_decoder(str(layout.vqvae_weights)) == layout.generation_decoder
    assert find_generation_decoder(layout.generation_decoder) is None  # not ROOT/vqvae/vqvae.safetensors
    assert find_generation_decoder(layout.prior_weights) is None
    old = make_run(tmp_path / "old", generation_decoder=False)
    assert find_generation_decoder(old.vqvae_weights) is None


# --- sample ---------------------------------------------------------------------------------------------
def test_sample_draws_with_the_run_folders_generation_decoder_unless_told_not_to(tmp_path: Path):
    layout = make_run(tmp_path / "run")
    recon, drawer = layout.vqvae_weights, layout.generation_decoder
    found = _sample(layout, tmp_path / "found")
    assert found["decoder"] == {"drew": "generation", "weights": str(drawer)}
    assert_drawn_by(tmp_path / "found", drawer, recon)
    off = _sample(layout, tmp_path / "off", "--no-generation-decoder")
    assert off["decoder"] == {"drew": "reconstruction", "weights": str(recon)}
    assert_drawn_by(tmp_path / "off", recon, drawer)
    given = shutil.copy(drawer, tmp_path / "elsewhere.safetensors")  # any file with the same codebooks
    moved = RunLayout(tmp_path / "moved")
    shutil.copytree(layout.root, moved.root)
    shutil.rmtree(moved.generation_decoder_dir)
    told = _sample(moved, tmp_path / "told", "--generation-decoder", str(given))
    assert told["decoder"] == {"drew": "generation", "weights": str(given)}
    assert_drawn_by(tmp_path / "told", drawer, recon)
    with pytest.raises(SystemExit) as exited:  # the two flags exclude each other
        _sample(layout, tmp_path / "x", "--no-generation-decoder", "--generation-decoder", str(given))
    assert exited.value.code == 2


def test_an_old_run_folder_without_a_generation_decoder_samples_with_the_reconstruction_decoder(tmp_path: Path):
    layout = make_run(tmp_path / "old", generation_decoder=False)
    summary = _sample(layout, tmp_path / "s")
    assert summary["decoder"] == {"drew": "reconstruction", "weights": str(layout.vqvae_weights)}
    images = _saved_images(tmp_path / "s")
    (decoded,) = _decodings(tmp_path / "s", layout.vqvae_weights)
    assert len(images) == 3 and (images - decoded).abs().max() <= PIXEL


# --- evaluate ---------------------------------------------------------------------------------------------
def test_evaluate_reconstructs_with_one_decoder_and_draws_with_the_other(
    tiny_oasis: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import brainvq.evaluate as ev
    from brainvq.data.sources import load_split
    from brainvq.metrics.reconstruction import reconstruct

    layout = make_run(tmp_path / "run")
    recon, drawer = layout.vqvae_weights, layout.generation_decoder
    judged: dict = {}

    def fake_measure(gen, drawn, pair, *args, **kwargs):  # the judges and metrics themselves are tested elsewhere
        judged["vqvae"] = pair.drawing_vqvae
        return {}, {}

    monkeypatch.setattr(ev, "measure_samples", fake_measure)
    argv = ["evaluate", "--data", str(tiny_oasis), "--image-size", "64", "--run", str(layout.vqvae_dir)]
    assert main([*argv, "--prior", str(layout.prior_weights), "--samples", "3", "--no-progress"]) == 0
    rec = json.loads(layout.vqvae_eval.read_text())
    gen = json.loads((layout.vqvae_dir / "generation_metrics.json").read_text())
    # reconstruction numbers: the reconstruction decoder's
    test = load_split(DataConfig(root=str(tiny_oasis), image_size=64), "test", progress=False)
    by_recon, by_drawer = (reconstruct(load_vqvae(w), test, progress=False) for w in (recon, drawer))
    assert rec["weights"] == str(recon)
    assert rec["ssim_mean"] == pytest.approx(float(np.mean(by_recon.ssim)), abs=1e-6)
    assert abs(float(np.mean(by_drawer.ssim)) - rec["ssim_mean"]) > 1e-3
    # generated slices, and the judges' reconstructions: the generation decoder's
    assert gen["decoder"] == {"drew": "generation", "weights": str(drawer)}
    assert_drawn_by(layout.vqvae_dir / "samples", drawer, recon)
    state = load_vqvae(drawer).state_dict()
    assert all(torch.equal(v, state[k]) for k, v in judged["vqvae"].state_dict().items())
    # --no-generation-decoder: drawn and judged with the reconstruction decoder
    argv += ["--prior", str(layout.prior_weights), "--samples", "3", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "off"), "--no-generation-decoder"]) == 0
    off = json.loads((tmp_path / "off" / "generation_metrics.json").read_text())
    assert off["decoder"] == {"drew": "reconstruction", "weights": str(recon)}
    assert_drawn_by(tmp_path / "off" / "samples", recon, drawer)
    state = load_vqvae(recon).state_dict()
    assert all(torch.equal(v, state[k]) for k, v in judged["vqvae"].state_dict().items())


def test_evaluate_generation_draws_with_the_given_generation_decoder(tiny_oasis: Path, tmp_path: Path):
    from brainvq.evaluate import evaluate_generation

    layout = make_run(tmp_path / "run")
    data = DataConfig(root=str(tiny_oasis), image_size=64)
    out = tmp_path / "gen"
    summary = evaluate_generation(
        layout.vqvae_weights,
        layout.prior_weights,
        data,
        out,
        n_samples=3,
        progress=False,
        skip_metrics=True,
        generation_decoder=layout.generation_decoder,
    )
    assert summary["decoder"]["drew"] == "generation"
    assert_drawn_by(out / "samples", layout.generation_decoder, layout.vqvae_weights)
    plain = evaluate_generation(
        layout.vqvae_weights,
        layout.prior_weights,
        data,
        tmp_path / "plain",
        n_samples=3,
        progress=False,
        skip_metrics=True,
    )
    assert plain["decoder"]["drew"] == "reconstruction"  # nothing found by itself: the caller chooses


def test_evaluate_generation_decoder_needs_a_prior(tmp_path: Path):
    from brainvq.cli import build_parser, cmd_evaluate

    args = build_parser().parse_args(["evaluate", "--generation-decoder", str(tmp_path / "g.safetensors")])
    with pytest.raises(ConfigError, match="--generation-decoder draws generated slices: give --prior"):
        cmd_evaluate(args)


def test_codes_drawn_by_both_decoders_share_the_prior(tmp_path: Path):
    """The generation decoder encodes to the same codes: the prior's codes mean the same to both."""
    layout = make_run(tmp_path / "run")
    recon, drawer = load_vqvae(layout.vqvae_weights), load_vqvae(layout.generation_decoder)
    x = torch.rand(2, 1, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(recon.encode_levels(x), drawer.encode_levels(x), strict=True))
    assert codebook_fingerprint(recon) == codebook_fingerprint(drawer)
