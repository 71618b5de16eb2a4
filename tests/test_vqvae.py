"""VQ-VAE model, weights files and checkpoint safety."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch

import brainvq
from brainvq.checkpoint import save_weights
from brainvq.errors import CheckpointError, ConfigError
from brainvq.models.blocks import ResBlock
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.models.weights import load_vqvae


def small(**kw) -> VQVAEConfig:
    return VQVAEConfig(
        **{
            "image_size": 64,
            "num_codes": 16,
            "code_dim": 8,
            "stem_channels": 8,
            "hidden_channels": 16,
            "top_downsample": 0,  # single level here; tests/test_hierarchy.py covers two levels
            **kw,
        }
    )


@pytest.mark.parametrize("downsample", [4, 8, 16])
def test_shapes(downsample: int):
    model = VQVAE(small(downsample=downsample)).eval()
    x = torch.rand(2, 1, 64, 64)
    out = model(x)
    g = 64 // downsample
    assert out.reconstruction.shape == x.shape and out.codes.shape == (2, g, g)
    assert out.codes.dtype == torch.int64 and 0 <= out.reconstruction.min() and out.reconstruction.max() <= 1
    assert torch.equal(model.encode(x), out.codes)
    assert torch.allclose(model.decode(out.codes), out.reconstruction, atol=1e-6)


def test_residual_block_counts():
    x = torch.rand(1, 1, 64, 64)
    n_params = {}
    for enc, dec, stem in ((0, 0, 0), (1, 0, 0), (0, 2, 0), (0, 2, 1)):
        model = VQVAE(small(encoder_res_blocks=enc, decoder_res_blocks=dec, stem_res_blocks=stem)).eval()
        assert model(x).reconstruction.shape == x.shape
        n_params[enc, dec, stem] = sum(p.numel() for p in model.parameters())
    assert n_params[0, 0, 0] < n_params[1, 0, 0] < n_params[0, 2, 0] < n_params[0, 2, 1]


def test_res_bottleneck_sets_the_inner_width():
    for neck, inner in ((2, 8), (4, 4), (64, 1)):
        model = VQVAE(small(res_bottleneck=neck, encoder_res_blocks=1))
        block = model.encoder.body[1]
        assert isinstance(block, ResBlock) and block.conv1.out_channels == inner


def legacy_config(**kw) -> dict:
    """A config as written before the stem/bottleneck options existed."""
    new_keys = ("stem_res_blocks", "res_bottleneck", "top_downsample", "top_num_codes", "top_aux_weight")
    return {k: v for k, v in small().to_dict().items() if k not in new_keys} | kw


def test_weights_saved_before_the_res_block_split_still_load(tmp_path: Path):
    old_architecture = small(encoder_res_blocks=1, decoder_res_blocks=1, stem_res_blocks=1, res_bottleneck=2)
    model = VQVAE(old_architecture).eval()
    legacy = {k: v for k, v in legacy_config().items() if not k.endswith("res_blocks")} | {"n_res_blocks": 1}
    path = save_weights(model, tmp_path / "old.safetensors", "vqvae", legacy)
    again = load_vqvae(path)
    assert again.config == old_architecture
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(model(x).reconstruction, again(x).reconstruction)


def test_weights_saved_before_the_stem_and_bottleneck_options_still_load(tmp_path: Path):
    old_architecture = small(encoder_res_blocks=1, decoder_res_blocks=0, stem_res_blocks=1, res_bottleneck=2)
    model = VQVAE(old_architecture).eval()
    legacy = legacy_config(encoder_res_blocks=1, decoder_res_blocks=0)
    again = load_vqvae(save_weights(model, tmp_path / "old.safetensors", "vqvae", legacy))
    assert again.config == old_architecture
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(model(x).reconstruction, again(x).reconstruction)


def test_config_errors():
    with pytest.raises(ConfigError, match="not divisible by the downsampling factor"):
        VQVAEConfig(image_size=100, downsample=8)
    with pytest.raises(ConfigError, match="power of two"):
        VQVAEConfig(downsample=6)
    with pytest.raises(ConfigError, match="decoder_res_blocks must be >= 0"):
        VQVAEConfig(decoder_res_blocks=-1)
    with pytest.raises(ConfigError, match="res_bottleneck must be positive"):
        VQVAEConfig(res_bottleneck=0)
    with pytest.raises(ConfigError, match="expected images of shape"):
        VQVAE(small())(torch.rand(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="codes must lie in"):
        VQVAE(small()).decode(torch.full((1, 16, 16), 99))


def test_weights_roundtrip_identical_outputs(tmp_path: Path):
    torch.manual_seed(0)
    model = VQVAE(small())
    model.train()
    model(torch.rand(4, 1, 64, 64))  # initialise/update the codebook
    model.eval()
    path = save_weights(model, tmp_path / "w.safetensors", "vqvae", small().to_dict())
    again = load_vqvae(path)
    x = torch.rand(3, 1, 64, 64)
    a, b = model(x), again(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.reconstruction, b.reconstruction)


def test_truncated_or_corrupt_weights(tmp_path: Path):
    path = save_weights(VQVAE(small()), tmp_path / "w.safetensors", "vqvae", small().to_dict())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_vqvae(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_vqvae(tmp_path / "missing.safetensors")


def test_weights_from_other_architecture(tmp_path: Path):
    path = save_weights(VQVAE(small()), tmp_path / "w.safetensors", "vqvae", small(num_codes=32).to_dict())
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_vqvae(path)
    other = save_weights(torch.nn.Linear(2, 2), tmp_path / "p.safetensors", "prior", {})
    with pytest.raises(CheckpointError, match="holds a 'prior' model, expected 'vqvae'"):
        load_vqvae(other)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.marker),))


def test_malicious_pickle_is_not_executed(tmp_path: Path):
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh)
    torch.save({"state_dict": _Evil()}, tmp_path / "evil2.ckpt")
    for f in (bad, tmp_path / "evil2.ckpt"):
        with pytest.raises(CheckpointError, match="cannot load checkpoint safely"):
            load_vqvae(f)
    assert not marker.exists()


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path: Path):
    import os
    import subprocess
    import sys

    from brainvq.io import remove_stale_temp_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".best.ckpt.{int(dead.stdout)}.tmp"
    live = tmp_path / f".last.ckpt.{os.getpid()}.tmp"
    keep = tmp_path / "last.ckpt"
    for f in (stale, live, keep):
        f.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and keep.exists()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c,r", [(1, 4), (3, 2)])
def test_space_to_depth_and_back_match_pixel_shuffles(channels_last: bool, c: int, r: int):
    import torch.nn.functional as F

    from brainvq.models.blocks import DepthToSpace, SpaceToDepth

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, c, 8 * r, 4 * r).contiguous(memory_format=fmt).requires_grad_(True)
    y = SpaceToDepth(r)(x)
    assert torch.equal(y, F.pixel_unshuffle(x, r)) and y.is_contiguous(memory_format=torch.channels_last)
    z = DepthToSpace(r)(y.contiguous(memory_format=fmt))
    assert torch.equal(z, x) and z.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(DepthToSpace(r)(SpaceToDepth(r)(x)), x, g)
    assert torch.equal(gx, g)
    y2 = torch.randn_like(y).requires_grad_(True)
    (g1,) = torch.autograd.grad((DepthToSpace(r)(y2) * x).sum(), y2)
    (g2,) = torch.autograd.grad((F.pixel_shuffle(y2, r) * x).sum(), y2)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("bias", [True, False])
def test_patch_sequential_equals_sequential(bias: bool) -> None:
    """Space-to-depth + 1x1 conv as one strided conv, 1x1 conv + depth-to-space as one transposed
    conv: the same outputs and gradients as running the modules one by one, and the same state dict."""
    from torch import nn

    from brainvq.models.blocks import DepthToSpace, PatchSequential, SpaceToDepth

    torch.manual_seed(0)
    mods = [SpaceToDepth(2), nn.Conv2d(12, 8, 1, bias=bias), nn.ReLU(), nn.Conv2d(8, 20, 1, bias=bias), DepthToSpace(2)]
    fused, plain = PatchSequential(*mods), nn.Sequential(*mods)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for layout in (torch.contiguous_format, torch.channels_last):
        xa = x.contiguous(memory_format=layout).requires_grad_()
        xb = x.contiguous(memory_format=layout).requires_grad_()
        ya, yb = fused(xa), plain(xb)
        assert ya.shape == yb.shape == (2, 5, 8, 8)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
        w = torch.randn_like(ya)
        ga = torch.autograd.grad((ya * w).sum(), [xa, *fused.parameters()])
        gb = torch.autograd.grad((yb * w).sum(), [xb, *plain.parameters()])
        for a, b in zip(ga, gb, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _module_imports() -> dict[str, set[str]]:
    """Each brainvq module -> the brainvq modules it imports at module level, type-only imports
    (``if TYPE_CHECKING:``) included."""
    root = Path(brainvq.__file__).parent
    mods = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in mods.items():
        body = ast.parse(path.read_text()).body
        body += [n for stmt in body if isinstance(stmt, ast.If) for n in stmt.body]
        deps = set()
        for n in body:
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("brainvq"):
                deps |= {f"{n.module}.{a.name}" if f"{n.module}.{a.name}" in mods else n.module for a in n.names}
            elif isinstance(n, ast.Import):
                deps |= {a.name for a in n.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_circle_in_the_package():
    """No module imports, even for types only, a module that imports it back (blocks <-> vqvae was one)."""
    graph = _module_imports()
    assert "brainvq.models.vqvae_config" in graph["brainvq.models.blocks"]
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for dep in graph[node]:
            assert dep not in path, f"import circle: {' -> '.join([*path[path.index(dep) :], dep])}"
            if dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    for name in graph:
        visit(name, [name])


def test_decoder_last_layer_is_the_one_that_makes_the_logits():
    """``brainvq sharpen`` weighs its adversarial loss at ``decoder.last_layer``: the head's
    convolution, or the refiner's last when there is one (its bias shifts every output logit)."""
    x = torch.rand(2, 1, 64, 64)
    for refine in (0, 2):
        torch.manual_seed(0)
        model = VQVAE(small(refine_channels=refine)).eval()
        with torch.no_grad():
            q = model.decoder_input(model.encode(x))
            before = torch.logit(model.decoder(q).double())
            model.decoder.last_layer.bias.add_(1.0)
            after = torch.logit(model.decoder(q).double())
        assert torch.allclose(after - before, torch.ones_like(before), atol=1e-3)
        if refine:
            assert model.decoder.last_layer is model.decoder.refine.net[-1]


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_forward_returns_the_training_loss_with_the_top_preview_term():
    """The model owns its objective (as in nanoGPT): reconstruction MSE + commitment +
    top_aux_weight x the top preview's MSE; the training module returns exactly this number."""
    import torch.nn.functional as F

    from brainvq.train.vqvae import VQVAEModule

    x = torch.rand(3, 1, 64, 64)
    plain = VQVAE(small(top_downsample=2, top_num_codes=16)).eval()(x)
    assert plain.loss is None and plain.losses == {}
    out = VQVAE(small(top_downsample=2, top_num_codes=16, top_aux_weight=0.5)).eval()(x, with_loss=True)
    assert set(out.losses) == {"mse", "commitment", "top_preview_mse"}
    preview_mse = F.mse_loss(torch.sigmoid(out.top_preview), F.avg_pool2d(x, 4))
    assert torch.allclose(out.losses["top_preview_mse"], preview_mse)
    assert torch.allclose(out.losses["mse"], F.mse_loss(out.reconstruction, x))
    expected = out.losses["mse"] + out.commitment_loss + 0.5 * preview_mse
    assert torch.allclose(out.loss, expected) and out.losses["top_preview_mse"] > 0
    single = VQVAE(small()).eval()(x, with_loss=True)
    assert set(single.losses) == {"mse", "commitment"}
    assert torch.equal(single.loss, single.losses["mse"] + single.commitment_loss)
    torch.manual_seed(0)
    module = VQVAEModule(
        small(top_downsample=2, top_num_codes=16, top_aux_weight=0.5).to_dict(), lr=1e-3, total_steps=1
    ).eval()
    assert torch.equal(module.training_step({"image": x}, 0), module.model(x, with_loss=True).loss)
