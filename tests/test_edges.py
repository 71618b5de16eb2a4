"""The edges a new user hits (issue 36): checked output folders, refused bad numbers, bad weights
and slices caught, one line instead of a traceback. Each probe of the issue has a test here."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import brainvq.checkpoint
import brainvq.runs
import brainvq.sample.generate
import brainvq.train.vqvae
from brainvq.checkpoint import save_weights
from brainvq.cli import main
from brainvq.errors import CheckpointError, DataError
from brainvq.io import dumps_json, write_json
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.models.weights import load_vqvae
from brainvq.pretrained import pretrained_paths
from brainvq.runs import LOCK_NAME, claim_folder
from tests.conftest import blob_slice

SAMPLE = ["sample", "--pretrained", "oasis1", "--n", "2", "--position", "0.5", "--no-progress"]


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """(exit status, stderr) of ``brainvq argv`` run in this process (argparse errors included)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    """The one ``error:`` line of ``err``; fails on a traceback or on more than one error line."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def quick_generate(pair, positions, *, n=None, seed=0, **kwargs):
    """Stands in for :func:`brainvq.sample.generate.generate` (seconds of sampling on a busy CPU):
    ``n`` random slices of the seed, so that the folder handling around it is what is tested."""
    from brainvq.sample.generate import Generated

    n = len(positions) if positions is not None else n
    g = torch.Generator().manual_seed(seed)
    size, grid = pair.image_size, pair.vqvae.config.grid_size
    time.sleep(float(os.environ.get("QUICK_GENERATE_S", "0")))  # a command that takes a while
    pos = np.full(n, np.nan, np.float32) if positions is None else np.asarray(positions, np.float32)
    codes = torch.randint(0, pair.num_codes, (n, grid, grid), generator=g)
    return Generated(codes, torch.rand(n, 1, size, size, generator=g), pos, decoder=pair.drawing_decoder)


def _tiny_vqvae() -> VQVAE:
    torch.manual_seed(0)
    cfg = VQVAEConfig(image_size=64, num_codes=16, code_dim=8, stem_channels=8, hidden_channels=16, top_num_codes=16)
    return VQVAE(cfg).eval()


def _save_tiny(path: Path, model: VQVAE | None = None) -> Path:
    model = model or _tiny_vqvae()
    return save_weights(model, path, "vqvae", model.config.__dict__)


# --- output folders ----------------------------------------------------------------------------
# every command with an output folder, as it would be called (the folder goes last)
OUT_COMMANDS = [
    ["sample", "--pretrained", "oasis1", "--out"],
    ["anomaly", "--pretrained", "oasis1", "--input", "x.png", "--threshold", "3", "--out"],
    ["evaluate", "--pretrained", "oasis1", "--out"],
    ["evaluate-anomaly", "--pretrained", "oasis1", "--out"],
    ["train-vqvae", "--out"],
    ["train-prior", "--out"],
    ["sharpen", "--out"],
    ["check-judges", "--out"],
    ["pipeline", "--out"],
    ["demo", "--pretrained", "none", "--out"],
    ["make-dataset"],
]


@pytest.mark.parametrize("argv", OUT_COMMANDS, ids=lambda a: a[0])
def test_an_output_folder_that_is_a_file_or_under_one_stops_at_once(argv, tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    t = time.time()
    code, err = _run([*argv, str(afile)], capsys)
    assert code == 2 and f"{afile} is a file, not a folder" in _one_error_line(err)
    code, err = _run([*argv, str(afile / "sub")], capsys)
    assert code == 2 and f"{afile} is a file" in _one_error_line(err)
    assert time.time() - t < 20  # before any work (no data, no weights, no training)
    assert afile.read_text() == "not a folder"


def test_an_empty_output_path_is_refused(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run(["make-dataset", "", "--train-cases", "1"], capsys)
    assert code == 2 and "empty path" in _one_error_line(err)
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_an_output_folder_without_write_permission_stops_at_once(tmp_path: Path, capsys, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = os.open

    def denied(path, *args, **kwargs):  # what a folder without write permission gives a non-root user
        if Path(path).name == LOCK_NAME:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(brainvq.runs.os, "open", denied)
    code, err = _run([*SAMPLE, "--out", str(locked)], capsys)
    assert code == 2 and "permission denied, the folder is not writable" in _one_error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_folder_stops_at_once_for_real(tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = _run([*SAMPLE, "--out", str(locked / "sub")], capsys)
    assert code == 2 and "permission denied" in _one_error_line(err)


def test_a_folder_in_use_by_another_command_is_refused_and_freed_when_its_holder_dies(tmp_path: Path, capsys) -> None:
    out = tmp_path / "busy"
    with claim_folder(out):
        code, err = _run([*SAMPLE, "--out", str(out)], capsys)
        assert code == 2 and f"another brainvq command (pid {os.getpid()})" in _one_error_line(err)
    # a holder killed with SIGKILL cannot release the lock itself: the OS does
    script = f"import os; from brainvq.runs import claim_folder; claim_folder({str(out)!r}).__enter__(); os.kill(os.getpid(), 9)"
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -9
    with claim_folder(out):
        pass


def test_an_earlier_runs_outputs_are_refused_and_overwrite_replaces_them(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(brainvq.sample.generate, "generate", quick_generate)
    out = tmp_path / "s"
    assert main([*SAMPLE, "--n", "3", "--out", str(out)]) == 0
    code, err = _run([*SAMPLE, "--n", "1", "--out", str(out), "--seed", "7"], capsys)
    assert code == 2 and "holds the outputs of an earlier run" in _one_error_line(err)
    assert len(list((out / "images").glob("*.png"))) == 3  # untouched
    assert main([*SAMPLE, "--n", "1", "--out", str(out), "--seed", "7", "--overwrite"]) == 0
    summary = json.loads((out / "sample_summary.json").read_text())
    assert summary["n"] == 1 and summary["seed"] == 7
    assert len(list((out / "images").glob("*.png"))) == 1  # no image of the first run left beside it
    (out / "mine.txt").write_text("the user's")  # files the command does not write are no earlier run
    assert main([*SAMPLE, "--n", "1", "--out", str(tmp_path / "t")]) == 0
    assert main([*SAMPLE, "--n", "1", "--out", str(out), "--overwrite"]) == 0
    assert (out / "mine.txt").read_text() == "the user's"
    assert not (out / LOCK_NAME).exists()  # released with the folder


def test_two_samples_into_one_folder_at_once_one_wins_and_the_other_stops(tmp_path: Path) -> None:
    out = tmp_path / "both"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "BRAINVQ_CACHE": str(tmp_path / "cache"), "QUICK_GENERATE_S": "3"}
    script = (
        "import sys; import brainvq.sample.generate as g; from tests.test_edges import quick_generate; "
        "g.generate = quick_generate; from brainvq.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", script, *SAMPLE, "--out", str(out)]
    procs = [
        subprocess.Popen([*argv, "--seed", str(seed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=300), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser_err = next(err for code, _, err in results if code == 2)
    line = _one_error_line(loser_err)
    assert "another brainvq command" in line or "outputs of an earlier run" in line
    winner = json.loads(next(stdout for code, stdout, _ in results if code == 0))
    summary = json.loads((out / "sample_summary.json").read_text())
    assert summary["seed"] == winner["seed"] and summary["n"] == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["sample_000.png", "sample_001.png"]
    codes_file = torch.load(out / "sample_codes.pt", weights_only=True)
    assert len(codes_file["codes"]) == 2 and not list(out.glob(".*.tmp"))


# --- bad numbers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--seed", "99999999999999999999"], "seed must be from 0 to 4294967295"),
        (["sample", "--seed", "-1"], "seed must be from 0 to 4294967295"),
        (["evaluate", "--seed", "1e3"], "seed must be an integer"),
        (["train-vqvae", "--seed", "4294967296"], "seed must be from 0 to 4294967295"),
        (["anomaly", "--input", "x.png", "--seed", "-5"], "seed must be from 0 to 4294967295"),
        (["sample", "--temperature", "inf"], "temperature must be > 0 and finite"),
        (["sample", "--temperature", "nan"], "temperature must be > 0 and finite"),
        (["sample", "--top-temperature", "inf"], "temperature must be > 0 and finite"),
        (["evaluate", "--temperature", "nan"], "temperature must be > 0 and finite"),
        (["evaluate", "--top-temperature", "-1"], "temperature must be > 0 and finite"),
        (["anomaly", "--input", "x.png", "--smooth", "nan"], "must be a finite number >= 0"),
        (["train-vqvae", "--lr", "inf"], "must be a finite number > 0"),
    ],
)
def test_bad_numbers_are_refused_by_the_one_parser_of_each(argv, message, capsys) -> None:
    code, err = _run(argv, capsys)
    assert code == 2 and message in _one_error_line(err)


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_a_nan_negative_or_infinite_anomaly_threshold_stops_with_one_line(value, tmp_path: Path, capsys) -> None:
    out = tmp_path / "an"
    code, err = _run(
        ["anomaly", "--pretrained", "oasis1", "--input", "x.png", "--threshold", value, "--out", str(out)], capsys
    )
    assert code == 2 and "must be a finite number >= 0" in _one_error_line(err)
    assert not out.exists()  # refused before the output folder is made


@pytest.mark.parametrize("doc", ['{"nll_threshold": NaN}', '{"nll_threshold": 3.0, "top_nll_threshold": -Infinity}'])
def test_a_threshold_file_holding_nan_stops_with_one_line(doc, tmp_path: Path, capsys) -> None:
    thr = tmp_path / "threshold.json"
    thr.write_text(doc)
    argv = [
        "anomaly",
        "--pretrained",
        "oasis1",
        "--input",
        "x.png",
        "--threshold",
        str(thr),
        "--out",
        str(tmp_path / "a"),
    ]
    code, err = _run(argv, capsys)
    line = _one_error_line(err)
    assert code == 2 and str(thr) in line and "must be a finite number >= 0" in line


def test_json_the_project_writes_is_always_valid(tmp_path: Path) -> None:
    data = {"t": float("inf"), "xs": [1.0, float("nan"), -float("inf")], "nested": {"ok": 0.5}, "path": tmp_path}
    path = write_json(tmp_path / "s.json", data)

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    doc = json.loads(path.read_text(), parse_constant=refuse)  # NaN / Infinity would be refused
    assert doc == {"t": None, "xs": [1.0, None, None], "nested": {"ok": 0.5}, "path": str(tmp_path)}
    assert json.loads(dumps_json({"a": float("nan")}), parse_constant=refuse) == {"a": None}


# --- bad weights and slices ----------------------------------------------------------------------
def test_weights_with_nan_values_are_refused_naming_file_and_tensor(tmp_path: Path, capsys) -> None:
    model = _tiny_vqvae()
    name, param = next(iter(model.encoder.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    bad = _save_tiny(tmp_path / "nan.safetensors", model)
    with pytest.raises(CheckpointError, match=rf"nan\.safetensors: tensor 'encoder\.{name}' holds NaN"):
        load_vqvae(bad)
    prior = pretrained_paths("oasis1")[1]
    argv = ["anomaly", "--vqvae", str(bad), "--prior", str(prior), "--input", "x.png", "--threshold", "3"]
    code, err = _run([*argv, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "holds NaN or infinite values" in _one_error_line(err)


def test_a_bit_flipped_weights_file_is_called_corrupt(tmp_path: Path) -> None:
    path = _save_tiny(tmp_path / "vqvae.safetensors")
    load_vqvae(path)  # intact
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor's data (a mantissa bit: the value stays finite)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt weights file"):
        load_vqvae(path)


def test_a_weights_file_without_read_permission_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save_tiny(tmp_path / "vqvae.safetensors")

    def denied(file, *args, **kwargs):  # what a file without read permission gives a non-root user
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(brainvq.checkpoint, "open", denied, raising=False)
    with pytest.raises(CheckpointError, match="permission denied, cannot read the weights file"):
        load_vqvae(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_weights_file_without_read_permission_says_so_for_real(tmp_path: Path) -> None:
    path = _save_tiny(tmp_path / "vqvae.safetensors")
    path.chmod(0o000)
    with pytest.raises(CheckpointError, match="permission denied"):
        load_vqvae(path)


def test_resume_with_a_truncated_or_no_checkpoint_stops_with_one_line(tiny_oasis: Path, tmp_path: Path, capsys) -> None:
    small = ["--data", str(tiny_oasis), "--image-size", "64", "--num-codes", "16", "--code-dim", "8", "--epochs", "1"]
    out = tmp_path / "run"
    code, err = _run(["train-vqvae", *small, "--out", str(out), "--resume"], capsys)
    assert code == 2 and f"no checkpoint in {out} to resume from" in _one_error_line(err)
    assert not out.exists()  # a refused command leaves no folder behind
    last = out / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, last)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code, err = _run(["train-vqvae", *small, "--out", str(out), "--resume"], capsys)
    assert code == 2 and "last.ckpt: cannot load checkpoint safely" in _one_error_line(err)
    code, err = _run(["train-prior", "--data", str(tiny_oasis), "--out", str(tmp_path / "p"), "--resume"], capsys)
    assert code == 2 and "to resume from" in _one_error_line(err)


def test_an_image_over_the_decompression_limit_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 64x64 image stands for a 14000x14000 one
    from brainvq.data.images import read_gray

    with pytest.raises(DataError, match="big.png: image too large to decode safely"):
        read_gray(big, 64)
    argv = ["anomaly", "--pretrained", "oasis1", "--input", str(big), "--threshold", "3", "--position", "0.5"]
    code, err = _run([*argv, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "image too large" in _one_error_line(err)


def test_a_slice_without_brain_is_warned_about_and_marked_not_scored(tmp_path: Path, capsys) -> None:
    from tests.test_pair import pair_of

    pair = pair_of(1)  # untrained and tiny: which slices have a brain does not depend on training
    vqvae = save_weights(pair.vqvae, tmp_path / "vq.safetensors", "vqvae", pair.vqvae.config.to_dict())
    prior = save_weights(pair.prior, tmp_path / "prior.safetensors", "prior", pair.prior.config.to_dict())
    inputs, size = tmp_path / "in", pair.image_size
    inputs.mkdir()
    Image.fromarray(blob_slice(np.random.default_rng(0), size, 0.5)[0]).save(inputs / "brain.png")
    Image.fromarray(np.zeros((size, size), np.uint8)).save(inputs / "black.png")
    out = tmp_path / "a"
    argv = ["anomaly", "--vqvae", str(vqvae), "--prior", str(prior), "--input", str(inputs), "--position", "0.5"]
    with pytest.warns(UserWarning, match=r"no brain found in 1 slice\(s\), not scored: black.png"):
        code, err = _run([*argv, "--threshold", "4", "--samples", "1", "--no-progress", "--out", str(out)], capsys)
    assert code == 0, err
    with open(out / "scores.csv") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert rows["black.png"]["no_brain"] == "True" and rows["black.png"]["score"] == ""
    assert rows["brain.png"]["no_brain"] == "False" and float(rows["brain.png"]["score"]) >= 0
    summary = json.loads((out / "anomaly_summary.json").read_text())
    assert summary["no_brain"] == ["black.png"] and [r["name"] for r in summary["top_scores"]] == ["brain.png"]


# --- one line, tracebacks only with -v -----------------------------------------------------------
def test_an_interrupted_sample_does_not_claim_checkpoints(tmp_path: Path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(brainvq.sample.generate, "sample_command", interrupted)
    code, err = _run([*SAMPLE, "--out", str(tmp_path / "s")], capsys)
    assert code == 130 and err.strip() == "brainvq sample: interrupted"
    monkeypatch.setattr(brainvq.train.vqvae, "train_vqvae", interrupted)
    code, err = _run(["train-vqvae", "--out", str(tmp_path / "v")], capsys)
    assert code == 130 and "checkpoints written so far are kept" in err


def test_an_unforeseen_error_is_one_line_asking_for_v(tmp_path: Path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(brainvq.sample.generate, "sample_command", broken)
    code, err = _run([*SAMPLE, "--out", str(tmp_path / "s")], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "unexpected error: RuntimeError: something nobody foresaw (rerun with -v for the traceback)" in err
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["-v", *SAMPLE, "--out", str(tmp_path / "s2")])


def test_the_later_processes_of_a_distributed_run_share_the_first_ones_folder(tmp_path: Path, monkeypatch) -> None:
    import argparse

    from brainvq.cli.common import _claim_out
    from brainvq.errors import OutputError

    out = tmp_path / "ddp"
    with claim_folder(out):  # the first process (rank 0) holds it
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert _claim_out(argparse.Namespace(), out) == out
        monkeypatch.setenv("LOCAL_RANK", "0")
        with pytest.raises(OutputError, match="another brainvq command"):
            _claim_out(argparse.Namespace(), out)
