"""``brainvq train-vqvae``, ``train-prior`` and ``sharpen``: the training commands."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from brainvq.cli.common import (
    _add_data_args,
    _add_trainer_args,
    _claim_out,
    _data_config,
    _data_over,
    _flags_given,
    _positive_float,
    _positive_int,
    _refuse_flags_with_config,
    _trainer_config,
)
from brainvq.errors import ConfigError

if TYPE_CHECKING:
    from brainvq.models.pixelcnn import PixelCNNConfig
    from brainvq.train.prior import PriorTrainConfig
    from brainvq.train.vqvae import VQVAETrainConfig

SCALE_LEVELS = ("none", "top", "all")  # train-prior --intensity-scale: which levels are conditioned on it


#: flags that set an architecture, which a --config fixes
VQVAE_ARCHITECTURE_FLAGS = (
    "downsample",
    "num_codes",
    "code_dim",
    "stem_channels",
    "hidden_channels",
    "stem_res_blocks",
    "res_bottleneck",
    "encoder_res_blocks",
    "decoder_res_blocks",
)
#: PriorTrainConfig field -> flag, for the train-prior flags that are neither architecture nor training loop
PRIOR_RUN_FLAGS = {
    "vqvae": "vqvae", "top_epochs": "top_epochs", "top_max_minutes": "top_max_minutes", "compile": "compile"
}  # fmt: skip
PRIOR_ARCHITECTURE_FLAGS = (
    "hidden",
    "layers",
    "kernel_size",
    "top_hidden",
    "top_layers",
    "top_kernel_size",
    "unconditional",
    "intensity_scale",
)


def _resume(args: argparse.Namespace, out: str) -> str | None:
    """Claim the training command's folder (it reuses it: --resume continues the run in it) and
    check that ``--resume`` without a file has a checkpoint there to resume from."""
    from brainvq.train.common import last_checkpoints

    _claim_out(args, out)
    if args.resume in ("last", "auto") and not last_checkpoints(out):
        raise ConfigError(f"--resume: no checkpoint in {out} to resume from (leave out --resume to start training)")
    return args.resume


# --- train-vqvae ---------------------------------------------------------------------------
def add_train_vqvae(sub: argparse._SubParsersAction) -> None:
    """The ``train-vqvae`` parser."""
    p = sub.add_parser("train-vqvae", help="train the VQ-VAE")
    _add_data_args(p)
    p.add_argument("--out", default="runs/vqvae")
    p.add_argument(
        "--config",
        help="YAML config (e.g. a previous run's config.yaml); training-loop flags given apply over it",
    )
    g = p.add_argument_group("architecture (flags left out keep the defaults of VQVAEConfig)")
    g.add_argument("--downsample", type=_positive_int, help="image size / latent grid size")
    g.add_argument("--num-codes", type=_positive_int, help="K, codebook size")
    g.add_argument("--code-dim", type=_positive_int, help="D, code vector size")
    g.add_argument("--stem-channels", type=_positive_int)
    g.add_argument("--hidden-channels", type=_positive_int)
    g.add_argument(
        "--stem-res-blocks",
        type=int,
        help="residual blocks on the encoder stem (0 is faster, codes harder for the prior)",
    )
    g.add_argument("--res-bottleneck", type=_positive_int, help="channel reduction inside residual blocks")
    g.add_argument("--encoder-res-blocks", type=int, help="residual blocks at the latent grid, encoder")
    g.add_argument(
        "--decoder-res-blocks", type=int, help="... and decoder (0 trains faster but gives codes harder for the prior)"
    )
    _add_trainer_args(p, "VQVAETrainConfig")
    p.set_defaults(func=cmd_train_vqvae)


def _vqvae_train_config(args: argparse.Namespace) -> VQVAETrainConfig:
    """The VQ-VAE training config: ``--config``'s, or the defaults with the given flags applied."""
    from brainvq.config import load_yaml_config
    from brainvq.models.vqvae import VQVAEConfig
    from brainvq.train.vqvae import VQVAETrainConfig, upgrade_saved_run_config

    if args.config:
        _refuse_flags_with_config(args, *VQVAE_ARCHITECTURE_FLAGS)
        cfg = load_yaml_config(VQVAETrainConfig, args.config, upgrade=upgrade_saved_run_config)
        cfg.out_dir = args.out
        cfg.data = _data_over(args, cfg.data)
        cfg.trainer = _trainer_config(args, cfg.trainer)
        return cfg
    model = VQVAEConfig(
        **_flags_given(
            args,
            downsample="downsample",
            num_codes="num_codes",
            code_dim="code_dim",
            stem_channels="stem_channels",
            hidden_channels="hidden_channels",
            stem_res_blocks="stem_res_blocks",
            res_bottleneck="res_bottleneck",
            encoder_res_blocks="encoder_res_blocks",
            decoder_res_blocks="decoder_res_blocks",
        )
    )
    trainer = _trainer_config(args, VQVAETrainConfig().trainer)
    return VQVAETrainConfig(data=_data_config(args), model=model, trainer=trainer, out_dir=args.out)


def cmd_train_vqvae(args: argparse.Namespace) -> dict:
    """Train the VQ-VAE."""
    from brainvq.train.vqvae import train_vqvae

    cfg = _vqvae_train_config(args)
    return train_vqvae(cfg, resume=_resume(args, cfg.out_dir))


# --- train-prior ---------------------------------------------------------------------------
def add_train_prior(sub: argparse._SubParsersAction) -> None:
    """The ``train-prior`` parser."""
    p = sub.add_parser(
        "train-prior",
        help="train the gated PixelCNN prior on the VQ-VAE codes of the whole training split",
    )
    _add_data_args(p)
    p.add_argument("--vqvae", help="the VQ-VAE's weights (default runs/vqvae/vqvae.safetensors)")
    p.add_argument("--out", default="runs/prior")
    p.add_argument(
        "--config", help="YAML config (e.g. a previous run's config.yaml); training-loop flags given apply over it"
    )
    g = p.add_argument_group(
        "architecture (flags left out keep the defaults of PriorTrainConfig; with a two-level "
        "VQ-VAE --hidden/--layers/--kernel-size set the bottom PixelCNN, --top-* the top one)"
    )
    g.add_argument("--hidden", type=_positive_int)
    g.add_argument("--layers", type=_positive_int)
    g.add_argument("--kernel-size", type=_positive_int, help="odd")
    g.add_argument("--top-hidden", type=_positive_int)
    g.add_argument("--top-layers", type=_positive_int)
    g.add_argument("--top-kernel-size", type=_positive_int, help="odd")
    g.add_argument("--unconditional", action="store_true", help="do not condition on slice position")
    g.add_argument(
        "--intensity-scale",
        choices=SCALE_LEVELS,
        help="which levels are also conditioned on the slice's intensity scale: none, top (the top PixelCNN; "
        "a single-level prior itself) or all",
    )
    g = p.add_argument_group("two-level prior trained level by level (without --top-epochs both levels train together)")
    g.add_argument(
        "--top-epochs",
        type=_positive_int,
        help="train the top level alone first, for this many epochs; then the bottom level for --epochs",
    )
    g.add_argument(
        "--top-max-minutes",
        type=_positive_float,
        help="wall-time cap of the top level's training (--max-minutes caps the bottom level's only)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="train through torch.compile (default; it falls back to eager by itself if it fails), or eagerly",
    )
    _add_trainer_args(p, "PriorTrainConfig")
    p.set_defaults(func=cmd_train_prior)


def _prior_train_config(args: argparse.Namespace) -> PriorTrainConfig:
    """The prior training config: ``--config``'s, or the defaults with the given flags applied."""
    from brainvq.config import load_yaml_config
    from brainvq.train.prior import PriorTrainConfig

    if args.config:
        _refuse_flags_with_config(args, *PRIOR_ARCHITECTURE_FLAGS)
        cfg = load_yaml_config(PriorTrainConfig, args.config)
        cfg.out_dir = args.out
        cfg.data = _data_over(args, cfg.data)
        cfg.trainer = _trainer_config(args, cfg.trainer)
        given = _flags_given(args, **PRIOR_RUN_FLAGS)
        return dataclasses.replace(cfg, **given)
    defaults = PriorTrainConfig()
    arch = _flags_given(args, hidden="hidden", n_layers="layers", kernel_size="kernel_size")
    top_arch = _flags_given(args, hidden="top_hidden", n_layers="top_layers", kernel_size="top_kernel_size")
    cond = {"conditional": not args.unconditional}
    scale = args.intensity_scale or ("none" if args.unconditional else None)
    if args.unconditional and scale != "none":
        raise ConfigError("--intensity-scale needs a position-conditioned prior (leave out --unconditional)")

    def level(config: PixelCNNConfig, on: bool, **fields: int) -> PixelCNNConfig:
        """One PixelCNN level's config with the architecture and conditioning flags applied."""
        flag = {} if scale is None else {"scale_conditional": on}
        return dataclasses.replace(config, **fields, **cond, **flag)

    return PriorTrainConfig(
        data=_data_config(args),
        model=level(defaults.model, scale in ("top", "all"), **arch),
        top_model=level(defaults.top_model, scale in ("top", "all"), **top_arch),
        bottom_model=level(defaults.bottom_model, scale == "all", **arch),
        trainer=_trainer_config(args, defaults.trainer),
        out_dir=args.out,
        **_flags_given(args, **PRIOR_RUN_FLAGS),
    )


def cmd_train_prior(args: argparse.Namespace) -> dict:
    """Train the PixelCNN prior on a trained VQ-VAE's codes."""
    from brainvq.train.prior import train_prior

    cfg = _prior_train_config(args)
    return train_prior(cfg, resume=_resume(args, cfg.out_dir))


# --- sharpen -------------------------------------------------------------------------------
def add_sharpen(sub: argparse._SubParsersAction) -> None:
    """The ``sharpen`` parser."""
    p = sub.add_parser(
        "sharpen",
        help="fine-tune a trained VQ-VAE's decoder with a patch discriminator (codes and priors stay valid)",
    )
    _add_data_args(p)
    p.add_argument("--vqvae", default="runs/vqvae/vqvae.safetensors")
    p.add_argument("--out", default="runs/sharpen")
    g = p.add_argument_group("adversarial loss (flags left out keep the defaults of SharpenConfig)")
    g.add_argument("--adversarial-weight", type=float, help="multiplies the adaptive weight (0: L1 only)")
    g.add_argument("--adversarial-start", type=int, help="discriminator-only steps before the decoder sees it")
    _add_trainer_args(p, "SharpenConfig")
    p.set_defaults(func=cmd_sharpen)


def cmd_sharpen(args: argparse.Namespace) -> dict:
    """Fine-tune a trained VQ-VAE's decoder adversarially."""
    from brainvq.train.sharpen import SharpenConfig, train_sharpen

    defaults = SharpenConfig()
    cfg = SharpenConfig(
        vqvae=args.vqvae,
        data=_data_config(args),
        trainer=_trainer_config(args, defaults.trainer),
        out_dir=args.out,
        **_flags_given(args, adversarial_weight="adversarial_weight", adversarial_start="adversarial_start"),
    )
    return train_sharpen(cfg, resume=_resume(args, cfg.out_dir))
