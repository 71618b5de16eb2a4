"""The CLI builds the same configs as the Python API, and flags override single fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from brainvq.cli import _prior_train_config, _vqvae_train_config, build_parser, main
from brainvq.errors import ConfigError
from brainvq.models.pixelcnn import PixelCNNConfig
from brainvq.models.vqvae import VQVAEConfig
from brainvq.train.prior import PriorTrainConfig
from brainvq.train.vqvae import VQVAETrainConfig


def test_train_vqvae_without_flags_uses_the_dataclass_defaults() -> None:
    cfg = _vqvae_train_config(build_parser().parse_args(["train-vqvae"]))
    assert cfg.model == VQVAEConfig()
    assert cfg.trainer == VQVAETrainConfig().trainer


def test_train_vqvae_flags_override_only_their_field() -> None:
    a = build_parser().parse_args(
        ["train-vqvae", "--hidden-channels", "40", "--stem-res-blocks", "2", "--lr", "0.01", "--seed", "7"]
    )
    cfg = _vqvae_train_config(a)
    default = VQVAETrainConfig()
    assert (cfg.model.hidden_channels, cfg.model.stem_res_blocks) == (40, 2)
    assert cfg.model.res_bottleneck == default.model.res_bottleneck
    assert cfg.model.code_dim == default.model.code_dim
    assert (cfg.trainer.lr, cfg.trainer.seed) == (0.01, 7)
    assert cfg.trainer.batch_size == default.trainer.batch_size
    a = build_parser().parse_args(["train-vqvae", "--res-bottleneck", "2"])
    assert _vqvae_train_config(a).model.res_bottleneck == 2


def test_train_vqvae_config_from_an_older_run_keeps_its_architecture(tmp_path) -> None:
    """A run's config.yaml written before the stem/bottleneck options (and the res-block split)
    rebuilds the architecture it trained, so ``--config ... --resume`` still fits its checkpoint;
    a hand-written config that leaves them out gets today's defaults."""
    import yaml

    from brainvq.io import to_plain

    old = to_plain(VQVAETrainConfig())
    for key in ("stem_res_blocks", "res_bottleneck", "encoder_res_blocks", "decoder_res_blocks"):
        del old["model"][key]
    old["model"]["n_res_blocks"] = 2
    record = tmp_path / "config.yaml"
    record.write_text(yaml.safe_dump({"config": old, "environment": {"torch": "2.x"}}))
    model = _vqvae_train_config(build_parser().parse_args(["train-vqvae", "--config", str(record)])).model
    assert (model.stem_res_blocks, model.res_bottleneck) == (1, 2)
    assert (model.encoder_res_blocks, model.decoder_res_blocks) == (2, 2)
    hand = tmp_path / "hand.yaml"
    hand.write_text(yaml.safe_dump({"model": {"num_codes": 128}}))
    model = _vqvae_train_config(build_parser().parse_args(["train-vqvae", "--config", str(hand)])).model
    assert model == VQVAEConfig(num_codes=128)


def test_train_prior_without_flags_uses_the_dataclass_defaults() -> None:
    cfg = _prior_train_config(build_parser().parse_args(["train-prior"]))
    assert cfg.model == PixelCNNConfig()
    assert cfg.trainer == PriorTrainConfig().trainer
    a = build_parser().parse_args(["train-prior", "--layers", "3", "--unconditional", "--epochs", "2"])
    cfg = _prior_train_config(a)
    assert (cfg.model.n_layers, cfg.model.conditional, cfg.trainer.epochs) == (3, False, 2)
    assert cfg.model.hidden == PixelCNNConfig().hidden


def test_train_prior_flags_reach_both_levels_of_a_two_level_prior() -> None:
    defaults = PriorTrainConfig()
    cfg = _prior_train_config(build_parser().parse_args(["train-prior"]))
    assert (cfg.top_model, cfg.bottom_model) == (defaults.top_model, defaults.bottom_model)
    a = build_parser().parse_args(["train-prior", "--hidden", "48", "--top-layers", "5", "--unconditional"])
    cfg = _prior_train_config(a)
    assert (cfg.bottom_model.hidden, cfg.bottom_model.n_layers) == (48, defaults.bottom_model.n_layers)
    assert (cfg.top_model.hidden, cfg.top_model.n_layers) == (defaults.top_model.hidden, 5)
    assert not cfg.top_model.conditional and not cfg.bottom_model.conditional
    with pytest.raises(SystemExit):  # --keep is gone: the prior keeps the weights at the end of training
        build_parser().parse_args(["train-prior", "--keep", "best"])
    assert (cfg.top_epochs, cfg.top_max_minutes) == (None, None)  # both levels together
    a = build_parser().parse_args(["train-prior", "--top-epochs", "8", "--top-max-minutes", "16"])
    assert (_prior_train_config(a).top_epochs, _prior_train_config(a).top_max_minutes) == (8, 16.0)


def test_keep_freed_memory_applies_on_glibc_and_is_idempotent() -> None:
    import platform

    from brainvq.runtime import keep_freed_memory

    applied = keep_freed_memory()
    assert applied is (platform.libc_ver()[0] == "glibc")
    assert keep_freed_memory() is applied


def test_evaluate_prior_defaults_to_at_least_256_samples_but_demo_stays_small(monkeypatch) -> None:
    import inspect

    import brainvq.evaluate as ev
    from brainvq.cli import cmd_evaluate

    seen: dict = {}
    real_signature = inspect.signature(ev.evaluate_generation)

    def fake_generation(*args, **kwargs):
        bound = real_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.update(bound.arguments)
        return {}

    monkeypatch.setattr(ev, "evaluate_vqvae", lambda *a, **k: {})
    monkeypatch.setattr(ev, "evaluate_generation", fake_generation)
    cmd_evaluate(build_parser().parse_args(["evaluate", "--prior", "p.safetensors"]))
    assert seen["n_samples"] >= 256
    cmd_evaluate(build_parser().parse_args(["evaluate", "--prior", "p.safetensors", "--samples", "40"]))
    assert seen["n_samples"] == 40
    from brainvq.recipes import get_recipe

    assert build_parser().parse_args(["demo"]).samples is None  # flags left out keep the demo recipe's
    assert get_recipe("demo").samples <= 64  # the demo keeps its own small number


def test_total_minutes_flag_sets_or_turns_off_the_recipes_time_budget(monkeypatch: pytest.MonkeyPatch, tmp_path):
    import brainvq.data.standin
    import brainvq.pipeline
    from brainvq.cli import cmd_demo, cmd_pipeline

    seen: list = []
    monkeypatch.setattr(brainvq.pipeline, "run_pipeline", lambda data, out, recipe, **k: seen.append(recipe) or {})
    monkeypatch.setattr(brainvq.data.standin, "make_standin_dataset", lambda *a, **k: None)
    demo = ["demo", "--out", str(tmp_path), "--data-dir", str(tmp_path), "--pretrained", "none"]
    cmd_demo(build_parser().parse_args(demo))
    cmd_demo(build_parser().parse_args([*demo, "--total-minutes", "20"]))
    cmd_pipeline(build_parser().parse_args(["pipeline", "--data", str(tmp_path), "--total-minutes", "0"]))
    assert [r.total_minutes for r in seen] == [15.0, 20.0, None]  # the recipe's, given, off
    with pytest.raises(ConfigError, match="--total-minutes must be >= 0"):
        cmd_pipeline(build_parser().parse_args(["pipeline", "--data", str(tmp_path), "--total-minutes", "-1"]))


def test_pretrained_flag_gives_the_shipped_weights_to_every_command_that_takes_weights(monkeypatch, tmp_path) -> None:
    import brainvq.anomaly.benchmark
    import brainvq.anomaly.command
    import brainvq.evaluate as ev
    import brainvq.sample.generate
    from brainvq.cli import main
    from brainvq.pretrained import pretrained_paths

    shipped = pretrained_paths("oasis1")
    seen: dict = {}
    monkeypatch.setattr(ev, "evaluate_vqvae", lambda w, data, out, **k: seen.update(evaluate=(w, out)) or {})
    monkeypatch.setattr(ev, "evaluate_generation", lambda v, p, data, out, **k: seen.update(generation=(v, p)) or {})
    monkeypatch.setattr(brainvq.sample.generate, "sample_command", lambda v, p, out, **k: seen.update(sample=(v, p)))
    monkeypatch.setattr(brainvq.anomaly.command, "anomaly_command", lambda v, p, *a, **k: seen.update(anomaly=(v, p)))
    monkeypatch.setattr(
        brainvq.anomaly.benchmark, "evaluate_anomaly", lambda v, p, *a, **k: seen.update(benchmark=(v, p))
    )
    assert main(["evaluate", "--pretrained", "oasis1", "--data", str(tmp_path)]) == 0
    assert seen["evaluate"] == (shipped[0], Path("runs/evaluate-oasis1")) and seen["generation"] == shipped
    assert main(["sample", "--pretrained", "oasis1"]) == 0 and seen["sample"] == shipped
    assert main(["anomaly", "--pretrained", "oasis1", "--input", "x.png"]) == 0 and seen["anomaly"] == shipped
    assert main(["evaluate-anomaly", "--pretrained", "oasis1"]) == 0 and seen["benchmark"] == shipped
    assert main(["anomaly", "--input", "x.png"]) == 0  # without the flag: the run folder's defaults
    assert seen["anomaly"] == (Path("runs/vqvae/vqvae.safetensors"), Path("runs/prior/prior.safetensors"))
    assert main(["evaluate", "--pretrained", "oasis1", "--prior", "p.safetensors"]) == 2


def test_an_old_prior_config_with_keep_last_loads_and_keep_best_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    from brainvq.train.common import write_run_config

    saved = dataclasses.replace(PriorTrainConfig(), top_epochs=8, out_dir=str(tmp_path))
    doc = yaml.safe_load(write_run_config(tmp_path, saved).read_text())
    config = tmp_path / "config.yaml"
    for keep in ("last", "best"):  # a run folder from before --keep was removed recorded one of these
        doc["config"]["keep"] = keep
        config.write_text(yaml.safe_dump(doc))
        args = ["train-prior", "--config", str(config), "--out", str(tmp_path / "new")]
        if keep == "last":  # the default: ignored, the rest of the config applies
            assert _prior_train_config(build_parser().parse_args(args)).top_epochs == 8
            continue
        assert main(args) == 2  # refused before any data is read
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "PriorTrainConfig.keep: 'best' is no longer supported" in err
        assert "4f37c69" in err and not (tmp_path / "new").exists()


def test_training_loop_flags_apply_over_a_config_and_architecture_flags_are_refused(tmp_path: Path) -> None:
    from brainvq.train.common import write_run_config

    saved = dataclasses.replace(PriorTrainConfig(), top_epochs=8, top_max_minutes=12.0, out_dir=str(tmp_path))
    saved.trainer = dataclasses.replace(saved.trainer, max_minutes=11.5, precision="32-true", epochs=4)
    write_run_config(tmp_path, saved)
    config = str(tmp_path / "config.yaml")
    plain = _prior_train_config(build_parser().parse_args(["train-prior", "--config", config]))
    assert (plain.trainer.max_minutes, plain.trainer.precision, plain.top_epochs) == (11.5, "32-true", 8)
    assert plain.vqvae == saved.vqvae and plain.data == saved.data
    args = ["train-prior", "--config", config, "--max-minutes", "20", "--top-epochs", "5", "--no-compile"]
    args += ["--data", str(tmp_path), "--vqvae", "other.safetensors", "--no-progress", "--no-cache"]
    args += ["--precision", "auto", "--image-size", "128"]  # a flag given at its default value still applies
    cfg = _prior_train_config(build_parser().parse_args(args))
    assert (cfg.trainer.max_minutes, cfg.trainer.epochs, cfg.trainer.precision) == (20.0, 4, "auto")
    assert (cfg.data.image_size, cfg.data.cache) == (128, False)
    assert (cfg.top_epochs, cfg.top_max_minutes, cfg.compile, cfg.trainer.progress) == (5, 12.0, False, False)
    assert (cfg.data.root, cfg.vqvae, cfg.model) == (str(tmp_path), "other.safetensors", saved.model)
    # switches are two-way: a config saved with them off is switched back on from the command line
    off = dataclasses.replace(cfg, out_dir=str(tmp_path / "off"))
    write_run_config(tmp_path / "off", off)
    on = ["train-prior", "--config", str(tmp_path / "off" / "config.yaml"), "--progress", "--compile"]
    back = _prior_train_config(build_parser().parse_args(on))
    assert (back.compile, back.trainer.progress) == (True, True)
    kept = _prior_train_config(build_parser().parse_args(on[:3]))
    assert (kept.compile, kept.trainer.progress) == (False, False)
    with pytest.raises(ConfigError, match="--top-layers cannot be combined with --config"):
        _prior_train_config(build_parser().parse_args(["train-prior", "--config", config, "--top-layers", "3"]))
    vq = tmp_path / "vq"
    write_run_config(vq, VQVAETrainConfig())
    a = build_parser().parse_args(["train-vqvae", "--config", str(vq / "config.yaml"), "--epochs", "3"])
    assert _vqvae_train_config(a).trainer.epochs == 3
    for flag, value in (("--num-codes", "64"), ("--decoder-res-blocks", "0")):  # 0 is given too
        with pytest.raises(ConfigError, match=f"{flag} cannot be combined"):
            _vqvae_train_config(
                build_parser().parse_args(["train-vqvae", "--config", str(vq / "config.yaml"), flag, value])
            )
