"""VQ-VAE for 256x256 grayscale slices, built to be fast on CPU.

All convolutions run at reduced resolution: the image is folded into channels with
space-to-depth (``pixel_unshuffle``) instead of strided full-resolution convolutions, and
the decoder unfolds with depth-to-space (``pixel_shuffle``) instead of transposed
convolutions. With the defaults every convolution runs at 64x64 and the latent grid is
64x64 (downsampling factor 4): on the stand-in data a 32x32 grid (factor 8) plateaued
near SSIM 0.86 in the CPU budget while 64x64 passed 0.9 within minutes.

Channel counts are small (16 in the encoder stem, 32 at the latent grid) and each residual
block narrows to a quarter of its channels for its 3x3 convolution: on CPU a training step is
bound as much by memory traffic of the elementwise ops (ReLU, residual adds and their
gradients) as by convolution FLOPs, so every extra 32-channel 64x64 activation costs time. On
the stand-in this trained to higher SSIM per second than wider variants. The stem and decoder
residual blocks are kept although dropping either trains faster to the same SSIM: the prior
then drew brain-shaped slices far less often (docs/design.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from brainvq.errors import ConfigError
from brainvq.models.blocks import Decoder, Encoder, TopDecoder, TopEncoder
from brainvq.models.quantizer import QuantizerOutput, VectorQuantizerEMA


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


@dataclass
class VQVAEOutput:
    reconstruction: Tensor
    codes: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    top_codes: Tensor | None = None  # (B,g/t,g/t) for a two-level model
    top_preview: Tensor | None = (
        None  # (B,1,g,g) logits of the image at the bottom grid's resolution, from the top codes alone
    )
    top_perplexity: Tensor | None = None


class VQVAE(nn.Module):
    """Encoder -> :class:`VectorQuantizerEMA` -> decoder, optionally with a top level (VQ-VAE-2).

    With ``top_downsample > 0`` the bottom latents are also encoded to a coarse top grid and
    quantised with their own codebook; the decoded top codes are added to the bottom
    quantiser's input (so bottom codes encode what the top level misses) and to the decoder's
    input. The top level also predicts the image at the bottom grid's resolution on its own
    (``top_preview``, trained with ``top_aux_weight``), which keeps the coarse anatomy in the top
    codes, where a prior that sees the whole slice can model it.
    """

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VQVAEConfig()
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizerEMA(
            cfg.num_codes, cfg.code_dim, beta=cfg.beta, decay=cfg.ema_decay, dead_threshold=cfg.dead_threshold
        )
        self.decoder = Decoder(cfg)
        if cfg.hierarchical:
            self.top_encoder = TopEncoder(cfg)
            self.top_quantizer = VectorQuantizerEMA(
                cfg.top_num_codes, cfg.code_dim, beta=cfg.beta, decay=cfg.ema_decay, dead_threshold=cfg.dead_threshold
            )
            self.top_decoder = TopDecoder(cfg)

    def _check(self, x: Tensor) -> None:
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-2:] != (s, s):
            raise ConfigError(f"expected images of shape (B,1,{s},{s}), got {tuple(x.shape)}")

    def quantize(self, x: Tensor) -> QuantizerOutput:
        """Bottom-level quantisation of images ``x`` (single-level models only)."""
        self._check(x)
        if self.config.hierarchical:
            raise ConfigError("quantize() is for single-level models; use forward() or encode_levels()")
        return self.quantizer(self.encoder(x))

    def forward(self, x: Tensor) -> VQVAEOutput:
        self._check(x)
        z = self.encoder(x)
        if not self.config.hierarchical:
            q = self.quantizer(z)
            return VQVAEOutput(self.decoder(q.quantized), q.codes, q.commitment_loss, q.perplexity)
        qt = self.top_quantizer(self.top_encoder(z))
        u = self.top_decoder(qt.quantized)
        q = self.quantizer(z + self.top_decoder.to_bottom(u))
        rec = self.decoder(q.quantized + self.top_decoder.to_decoder(u))
        return VQVAEOutput(
            rec,
            q.codes,
            q.commitment_loss + qt.commitment_loss,
            q.perplexity,
            top_codes=qt.codes,
            top_preview=self.top_decoder.preview(u),
            top_perplexity=qt.perplexity,
        )

    @torch.no_grad()
    def encode_levels(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """Images (B,1,S,S) -> (top code grids (B,g/t,g/t) or None, bottom code grids (B,g,g)), int64."""
        self._check(x)
        z = self.encoder(x)
        if not self.config.hierarchical:
            return None, self.quantizer.nearest_grid(z)
        top = self.top_quantizer.nearest_grid(self.top_encoder(z))
        u = self.top_decoder(self.top_quantizer.embed(top))
        return top, self.quantizer.nearest_grid(z + self.top_decoder.to_bottom(u))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B,1,S,S) -> bottom code grids (B,S/f,S/f) int64 (see :meth:`encode_levels` for both levels)."""
        return self.encode_levels(x)[1]

    def _check_codes(self, codes: Tensor, num_codes: int, grid: int, what: str) -> None:
        if codes.dtype != torch.long or codes.ndim != 3 or codes.shape[1:] != (grid, grid):
            raise ConfigError(
                f"expected int64 {what} code grids (B,{grid},{grid}), got {codes.dtype} {tuple(codes.shape)}"
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
            raise ConfigError(f"{what} codes must lie in [0, {num_codes})")

    @torch.no_grad()
    def decode(self, codes: Tensor, top: Tensor | None = None) -> Tensor:
        """Bottom code grids (B,h,w) int64 (and, for a two-level model, top grids) -> images (B,1,S,S) in [0,1]."""
        return self.decoder(self.decoder_input(codes, top))

    def decoder_input(self, codes: Tensor, top: Tensor | None = None) -> Tensor:
        """What the decoder sees for these code grids: the bottom embeddings, plus the decoded top
        codes for a two-level model (B,D,g,g). Differentiable with respect to the decoder's inputs."""
        cfg = self.config
        self._check_codes(codes, cfg.num_codes, cfg.grid_size, "bottom")
        q = self.quantizer.embed(codes)
        if not cfg.hierarchical:
            if top is not None:
                raise ConfigError("this VQ-VAE has a single level: do not pass top codes")
            return q
        if top is None:
            raise ConfigError("this VQ-VAE has two levels: decode(codes, top) needs the top code grids too")
        self._check_codes(top, cfg.top_num_codes, cfg.top_grid_size, "top")
        if len(top) != len(codes):
            raise ConfigError(f"{len(top)} top grids for {len(codes)} bottom grids")
        u = self.top_decoder(self.top_quantizer.embed(top))
        return q + self.top_decoder.to_decoder(u)

    @torch.no_grad()
    def decode_top(self, top: Tensor) -> Tensor:
        """Top code grids -> the top level's own low-resolution image (B,1,g,g) in [0,1]."""
        cfg = self.config
        if not cfg.hierarchical:
            raise ConfigError("this VQ-VAE has a single level")
        self._check_codes(top, cfg.top_num_codes, cfg.top_grid_size, "top")
        return torch.sigmoid(self.top_decoder.preview(self.top_decoder(self.top_quantizer.embed(top))))
