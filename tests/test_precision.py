"""Default precision "auto": bf16-mixed where the CPU (or GPU) has bf16 units, else fp32;
explicit precisions pass through, and run records say what was asked for and what was used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import brainvq.runtime as runtime
from brainvq.errors import ConfigError
from brainvq.runtime import hardware_record, resolve_precision

EXPLICIT = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")


@pytest.fixture(autouse=True)
def _auto_precision(_fp32_by_default: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift the suite's fp32 pin (conftest): these tests are about what "auto" resolves to."""
    monkeypatch.delenv("BRAINVQ_PRECISION", raising=False)


def _bf16_units(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    real = runtime.cpu_info()
    monkeypatch.setattr(runtime, "cpu_info", lambda: {**real, "bf16_units": present})


def _cuda(monkeypatch: pytest.MonkeyPatch, available: bool, bf16: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_auto_is_bf16_on_a_cpu_with_bf16_units_and_fp32_without(monkeypatch, accelerator: str) -> None:
    _cuda(monkeypatch, available=False)
    _bf16_units(monkeypatch, True)
    assert resolve_precision("auto", accelerator) == "bf16-mixed"
    _bf16_units(monkeypatch, False)  # e.g. an AVX2-only CPU
    assert resolve_precision("auto", accelerator) == "32-true"


def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch) -> None:
    _bf16_units(monkeypatch, True)  # the CPU's units do not matter on a GPU
    _cuda(monkeypatch, available=True, bf16=True)
    assert resolve_precision("auto", "gpu") == resolve_precision("auto", "auto") == "bf16-mixed"
    _cuda(monkeypatch, available=True, bf16=False)
    assert resolve_precision("auto", "gpu") == resolve_precision("auto", "auto") == "32-true"
    assert resolve_precision("auto", "mps") == "32-true"
    _cuda(monkeypatch, available=True, bf16=True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"  # --accelerator cpu on a GPU machine: the CPU's


@pytest.mark.parametrize("present", [True, False])
def test_explicit_precisions_pass_through(monkeypatch, present: bool) -> None:
    _bf16_units(monkeypatch, present)
    for precision in EXPLICIT:
        for accelerator in ("cpu", "auto", "gpu"):
            assert resolve_precision(precision, accelerator) == precision


def test_the_environment_variable_replaces_auto_only(monkeypatch) -> None:
    _cuda(monkeypatch, available=False)
    _bf16_units(monkeypatch, True)
    monkeypatch.setenv("BRAINVQ_PRECISION", "32-true")
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    monkeypatch.setenv("BRAINVQ_PRECISION", "auto")
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setenv("BRAINVQ_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="BRAINVQ_PRECISION"):
        resolve_precision("auto", "cpu")


def test_auto_is_the_default_of_the_cli_the_configs_and_the_recipes() -> None:
    from brainvq.cli import _prior_train_config, _vqvae_train_config, build_parser
    from brainvq.cli.common import _trainer_config
    from brainvq.recipes import RECIPES
    from brainvq.train.common import TrainerConfig
    from brainvq.train.sharpen import SharpenConfig

    parser = build_parser()
    assert _prior_train_config(parser.parse_args(["train-prior"])).trainer.precision == "auto"
    sharpen = _trainer_config(parser.parse_args(["sharpen"]), SharpenConfig().trainer)
    assert sharpen.precision == "auto"
    assert parser.parse_args(["train-vqvae", "--precision", "32-true"]).precision == "32-true"
    assert _vqvae_train_config(parser.parse_args(["train-vqvae"])).trainer.precision == "auto"
    assert TrainerConfig().precision == "auto"
    TrainerConfig().validate()
    with pytest.raises(ConfigError, match="unknown precision"):
        TrainerConfig(precision="fp8").validate()
    with pytest.raises(SystemExit):
        parser.parse_args(["pipeline", "--precision", "fp8"])
    assert all(r.precision == "auto" for r in RECIPES.values())
    assert parser.parse_args(["demo"]).precision is None  # the recipe's: auto


def test_hardware_record_says_what_was_asked_for_and_what_was_used(monkeypatch) -> None:
    _cuda(monkeypatch, available=False)
    _bf16_units(monkeypatch, False)
    assert hardware_record("cpu", "bf16-mixed")["bf16_used"] is True
    assert hardware_record("cpu", "bf16-true")["bf16_used"] is True
    fp32 = hardware_record("cpu", "auto")
    assert (fp32["precision_requested"], fp32["precision"], fp32["bf16_used"]) == ("auto", "32-true", False)
    _bf16_units(monkeypatch, True)
    bf16 = hardware_record("auto", "auto")
    assert (bf16["precision_requested"], bf16["precision"], bf16["bf16_used"]) == ("auto", "bf16-mixed", True)
    assert hardware_record("cpu", "32-true")["bf16_used"] is False


def test_a_default_run_trains_in_bf16_on_bf16_units_and_records_both(
    monkeypatch, tiny_oasis: Path, tmp_path: Path
) -> None:
    """One tiny VQ-VAE epoch with precision left at "auto" on a CPU with (mocked) bf16 units:
    the trainer runs bf16-mixed and config.yaml records requested auto, resolved bf16-mixed."""
    import brainvq.train.vqvae as train_vqvae_module
    from brainvq.train.common import TrainerConfig, write_run_config
    from tests.test_train_vqvae import tiny_cfg

    _bf16_units(monkeypatch, True)
    built, real_build = [], train_vqvae_module.build_trainer

    def build_and_keep(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_vqvae_module, "build_trainer", build_and_keep)
    cfg = tiny_cfg(tiny_oasis, tmp_path / "run", epochs=1)
    assert cfg.trainer.precision == "auto"
    train_vqvae_module.train_vqvae(cfg)
    assert built[0].precision == "bf16-mixed"
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["config"]["trainer"]["precision"] == "auto"
    assert record["environment"]["precision"] == {"requested": "auto", "resolved": "bf16-mixed"}
    _bf16_units(monkeypatch, False)
    write_run_config(tmp_path / "fp32", TrainerConfig(accelerator="cpu"))
    record = yaml.safe_load((tmp_path / "fp32" / "config.yaml").read_text())
    assert record["environment"]["precision"] == {"requested": "auto", "resolved": "32-true"}
