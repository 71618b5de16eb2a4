"""The VQ-VAE's architecture settings (:class:`VQVAEConfig`) and the upgrade of configs saved by
earlier versions. Their own module, below both :mod:`brainvq.models.blocks` and
:mod:`brainvq.models.vqvae`, so the blocks can take a config without an import circle."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from brainvq.errors import ConfigError


@dataclass
class VQVAEConfig:
    """Architecture of the VQ-VAE (saved with every checkpoint)."""

    image_size: int = 256
    downsample: int = 4  # latent grid = image_size / downsample; a power of two >= 4
    num_codes: int = 256  # K
    code_dim: int = 32  # D
    stem_channels: int = 16  # channels of the encoder stem at image_size / 4
    hidden_channels: int = 32  # channels at the latent resolution (and of the decoder head)
    stem_res_blocks: int = 1  # residual blocks on the encoder stem (0 is ~6 % faster, same SSIM,
    # but the prior then drew brain-shaped slices far less often: 58 % vs 89 %)
    res_bottleneck: int = 4  # a residual block's 3x3 conv has channels // res_bottleneck outputs
    encoder_res_blocks: int = 1  # residual blocks at the latent resolution, encoder side
    decoder_res_blocks: int = 1  # ... and decoder side: 0 trains 15 % faster to the same SSIM,
    # but its codes carry more bits and the prior then drew brain-shaped slices only half as often
    beta: float = 0.25
    ema_decay: float = 0.99
    dead_threshold: float = 1.0  # codes used less often than this in 20 steps are restarted
    # Top level (VQ-VAE-2): a coarse grid of grid_size / top_downsample codes that the bottom codes
    # are conditioned on; 0 = a single level (the layout of every brainvq before 0.2).
    top_downsample: int = 4
    top_num_codes: int = 256
    top_channels: int = 64  # channels of the top encoder and decoder
    top_res_bottleneck: int = 2  # their residual blocks' 3x3 convs have top_channels // this outputs
    top_aux_weight: float = 1.0  # weight of the top level's own low-resolution reconstruction loss
    # Full-resolution refinement of the decoder's output (channels; 0 = none): 3x3 convolutions at
    # the image resolution, added to the output logits, so fine detail need not repeat every 4x4
    # block of the depth-to-space head. ``brainvq sharpen`` adds it (zero-initialised).
    refine_channels: int = 0

    def __post_init__(self) -> None:
        if self.downsample < 4 or self.downsample & (self.downsample - 1):
            raise ConfigError(f"downsample must be a power of two >= 4, got {self.downsample}")
        if self.image_size <= 0 or self.image_size % self.downsample:
            raise ConfigError(
                f"image size {self.image_size} is not divisible by the downsampling factor {self.downsample}"
            )
        for name in (
            "num_codes",
            "code_dim",
            "stem_channels",
            "hidden_channels",
            "res_bottleneck",
            "top_channels",
            "top_res_bottleneck",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("stem_res_blocks", "encoder_res_blocks", "decoder_res_blocks", "refine_channels"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_codes < 2:
            raise ConfigError(f"num_codes must be >= 2, got {self.num_codes}")
        if self.top_downsample:
            if self.top_downsample < 2 or self.top_downsample & (self.top_downsample - 1):
                raise ConfigError(f"top_downsample must be 0 or a power of two >= 2, got {self.top_downsample}")
            if self.grid_size % self.top_downsample:
                raise ConfigError(
                    f"latent grid {self.grid_size} is not divisible by top_downsample {self.top_downsample}"
                )
            if self.top_num_codes < 2:
                raise ConfigError(f"top_num_codes must be >= 2, got {self.top_num_codes}")

    @property
    def hierarchical(self) -> bool:
        return self.top_downsample > 0

    @property
    def top_grid_size(self) -> int:
        """Side of the top code grid (0 for a single-level model)."""
        return self.grid_size // self.top_downsample if self.top_downsample else 0

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

    def code_grids(self) -> dict[str, tuple[int, int]]:
        """(code count, grid side) of each level, top first: ``{"top": ..., "bottom": ...}``, or
        ``{"bottom": ...}`` for a single-level model."""
        bottom = {"bottom": (self.num_codes, self.grid_size)}
        return {"top": (self.top_num_codes, self.top_grid_size), **bottom} if self.hierarchical else bottom

    def to_dict(self) -> dict:
        return asdict(self)


def upgrade_saved_config(config: dict) -> dict:
    """A VQ-VAE config dict saved by an earlier brainvq -> today's fields, describing the same
    architecture. Saved configs list every field, so a missing field means an older version."""
    config = dict(config)
    if "n_res_blocks" in config:  # before the encoder/decoder split
        n = config.pop("n_res_blocks")
        config.update(encoder_res_blocks=n, decoder_res_blocks=n)
    # before these options existed: a stem residual block and a half-width bottleneck
    config.setdefault("stem_res_blocks", 1)
    config.setdefault("res_bottleneck", 2)
    config.setdefault("top_downsample", 0)  # before the top level existed: a single level
    config.setdefault("refine_channels", 0)  # before the refiner existed
    config.setdefault("top_channels", 2 * config.get("hidden_channels", 32))  # before the top width was its own
    config.setdefault("top_res_bottleneck", 2)
    return config
