"""Failure handling: SIGKILL + resume, NaN loss, bad arguments, 2-process DDP on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from brainvq.cli import main
from brainvq.train.vqvae import VQVAEModule, train_vqvae
from tests.conftest import write_oasis
from tests.test_train_vqvae import tiny_cfg

SMALL_ARCH = [
    "--image-size",
    "64",
    "--num-codes",
    "16",
    "--code-dim",
    "8",
    "--stem-channels",
    "8",
    "--hidden-channels",
    "16",
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "brainvq.cli", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BRAINVQ_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}


def _json_tail(text: str) -> dict:
    """The JSON summary the CLI prints last (other libraries may print before it)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[first:]))


def test_sigkill_mid_training_then_resume(tmp_path: Path):
    data = write_oasis(
        tmp_path / "oasis",
        {"train": list(range(1, 13)), "validate": [13], "test": [441]},
        n_slices=8,
    )
    out = tmp_path / "run"
    base = _cli(
        "train-vqvae",
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--no-progress",
        *SMALL_ARCH,
    )
    proc = subprocess.Popen(
        [*base, "--epochs", "50"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint in time"
    time.sleep(1.5)  # now somewhere inside a later epoch (or writing its checkpoint)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # a complete, loadable file
    killed_step = ckpt["global_step"]
    assert killed_step > 0  # a kill while saving may leave a temp file; the resume removes it
    resume = [*base, "--epochs", str(ckpt["epoch"] + 2), "--resume"]
    done = subprocess.run(resume, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _json_tail(done.stdout)["epochs_run"] == ckpt["epoch"] + 2
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == killed_step + 24  # exactly one more epoch of 96/4 steps
    assert not list(out.rglob(".*.tmp"))
    assert (out / "vqvae.safetensors").is_file()


def test_nan_loss_stops_with_clear_message(tiny_oasis: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "nan"
    original = VQVAEModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch >= 1 else loss

    monkeypatch.setattr(VQVAEModule, "training_step", poisoned)
    with pytest.raises(FloatingPointError, match="training loss became nan at epoch 1"):
        train_vqvae(tiny_cfg(tiny_oasis, out, epochs=3))
    good = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert good["epoch"] == 0  # the last good checkpoint is kept, not overwritten by the bad epoch
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train-vqvae", "--image-size", "100", "--downsample", "8"],
            "not divisible by the downsampling factor",
        ),
        (["sample", "--n", "0"], "argument --n: must be a positive integer"),
        (["sample", "--temperature", "0"], "temperature must be > 0"),
        (["sample", "--position", "1.5"], "--position must be in [0, 1]"),
        (["make-dataset", "--train-cases", "0"], "must be a positive integer"),
        (["train-prior", "--epochs", "-3"], "must be a positive integer"),
    ],
)
def test_out_of_range_arguments(tiny_oasis: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture):
    if argv[0] == "train-vqvae":
        argv = [*argv, "--data", str(tiny_oasis)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects before the command runs
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_ddp_two_processes_on_cpu(tiny_oasis: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    args = _cli(
        "train-vqvae",
        "--data",
        str(tiny_oasis),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--no-progress",
        *SMALL_ARCH,
    )
    done = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["epochs_run"] == 2 and 0 < summary["best_val_ssim"] <= 1
    # each rank runs half the batches: the plan counts per rank, so the full schedule reads as completed
    assert summary["schedule_completed"] and "warning" not in summary and "cut short" not in done.stderr
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 3  # 12 slices / (2 processes x batch 2) = 3 steps per epoch
    assert (out / "vqvae.safetensors").is_file() and (out / "train_summary.json").is_file()
