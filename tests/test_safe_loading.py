"""Loading never executes code from a file: every loader is fed a pickle whose unpickling
would create a marker file, with a positive control proving the payload really runs under
a plain ``torch.load(weights_only=False)``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from brainvq.checkpoint import save_weights
from brainvq.data.sources import DataConfig
from brainvq.errors import CheckpointError
from brainvq.models.pixelcnn import PixelCNNConfig
from brainvq.models.vqvae import VQVAE
from brainvq.models.weights import load_prior, load_vqvae
from brainvq.train.common import AtomicCheckpointIO, TrainerConfig
from brainvq.train.prior import PriorTrainConfig, train_prior
from brainvq.train.vqvae import train_vqvae
from tests.test_train_vqvae import tiny_cfg


class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: stands in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil_checkpoint(path: Path, marker: Path, kind: str = "vqvae") -> Path:
    """A Lightning-looking checkpoint (torch.save zip format) carrying the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {"model.x": _Payload(marker)},
            "hyper_parameters": {"kind": kind, "model": {}},
            "epoch": 0,
            "global_step": 1,
        },
        path,
    )
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def test_positive_control_payload_runs_under_plain_torch_load(tmp_path: Path, marker: Path):
    """Without this, the tests below would pass with a payload that never runs at all."""
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    assert not marker.exists()
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()
    raw = tmp_path / "raw.ckpt"  # a bare pickle stream, not torch's zip format
    raw.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(Exception):  # noqa: B017 - the legacy loader runs the payload, then fails on the format
        torch.load(raw, map_location="cpu", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("loader", [load_vqvae, load_prior], ids=["load_vqvae", "load_prior"])
@pytest.mark.parametrize("fmt", ["torch", "raw"])
def test_weight_loaders_refuse_the_payload(tmp_path: Path, marker: Path, loader, fmt: str):
    kind = "vqvae" if loader is load_vqvae else "prior"
    path = tmp_path / "evil.ckpt"
    if fmt == "torch":
        _evil_checkpoint(path, marker, kind)
    else:
        path.write_bytes(pickle.dumps({"state_dict": _Payload(marker), "hyper_parameters": {"kind": kind}}))
    with pytest.raises(CheckpointError, match="cannot load checkpoint safely"):
        loader(path)
    assert not marker.exists()


def test_lightning_checkpoint_io_refuses_the_payload(tmp_path: Path, marker: Path):
    evil = _evil_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(evil)
    # ... even when a caller asks for a full unpickle
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


def test_train_vqvae_resume_refuses_the_payload(tiny_oasis: Path, tmp_path: Path, marker: Path):
    out = tmp_path / "run"
    _evil_checkpoint(out / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="cannot load checkpoint safely"):  # refused before Lightning reads it
        train_vqvae(tiny_cfg(tiny_oasis, out, epochs=1), resume=True)
    assert not marker.exists()


def test_train_prior_resume_and_code_cache_refuse_the_payload(tiny_oasis: Path, tmp_path: Path, marker: Path):
    vq_cfg = tiny_cfg(tiny_oasis, tmp_path).model
    vqvae = save_weights(VQVAE(vq_cfg), tmp_path / "vqvae.safetensors", "vqvae", vq_cfg.__dict__)
    out = tmp_path / "prior"
    _evil_checkpoint(out / "checkpoints" / "last.ckpt", marker, "prior")
    (out / "codes").mkdir(parents=True)
    (out / "codes" / "codes_train_flip.pt").write_bytes(pickle.dumps({"key": _Payload(marker)}))
    cfg = PriorTrainConfig(
        vqvae=str(vqvae),
        data=DataConfig(root=str(tiny_oasis), image_size=64),
        model=PixelCNNConfig(hidden=8, n_layers=2, kernel_size=3, cond_dim=4, location_dim=2),
        trainer=TrainerConfig(epochs=1, batch_size=8, progress=False),
        out_dir=str(out),
    )
    with pytest.raises(CheckpointError, match="cannot load checkpoint safely"):
        train_prior(cfg, resume=True)
    assert not marker.exists()
    # the bad code cache was rebuilt (not unpickled) before the resume was refused
    assert torch.load(out / "codes" / "codes_train_flip.pt", weights_only=True)["codes"].dtype == torch.int64


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_a_plain_write_gives_under_the_umask(tmp_path: Path, umask: int):
    """safetensors and torch.save create their temporary files 0o600; the renamed file must not
    keep that, or a lab group sharing a run folder cannot read the weights."""
    import os

    from brainvq.io import write_json
    from brainvq.models.vqvae import VQVAEConfig

    old = os.umask(umask)
    try:
        weights = save_weights(VQVAE(VQVAEConfig(image_size=32, downsample=4)), tmp_path / "v.safetensors", "vqvae", {})
        summary = write_json(tmp_path / "s.json", {"a": 1})
        AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(1)}, tmp_path / "last.ckpt")
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    expected = plain.stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for path in (weights, summary, tmp_path / "last.ckpt"):
        assert path.stat().st_mode & 0o777 == expected, path
    os.chmod(weights, 0o640)  # an existing file keeps its own mode when rewritten, as with open(..., "w")
    save_weights(VQVAE(VQVAEConfig(image_size=32, downsample=4)), weights, "vqvae", {})
    assert weights.stat().st_mode & 0o777 == 0o640
