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
then drew brain-shaped slices far less often (see the README).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainvq.data.errors import ConfigError
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

    def __post_init__(self) -> None:
        if self.downsample < 4 or self.downsample & (self.downsample - 1):
            raise ConfigError(f"downsample must be a power of two >= 4, got {self.downsample}")
        if self.image_size <= 0 or self.image_size % self.downsample:
            raise ConfigError(
                f"image size {self.image_size} is not divisible by the downsampling factor {self.downsample}"
            )
        for name in ("num_codes", "code_dim", "stem_channels", "hidden_channels", "res_bottleneck"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("stem_res_blocks", "encoder_res_blocks", "decoder_res_blocks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_codes < 2:
            raise ConfigError(f"num_codes must be >= 2, got {self.num_codes}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

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
    return config


class SpaceToDepth(nn.Module):
    """``pixel_unshuffle`` (same values and channel order) that returns a channels-last
    tensor in a single copy, so the next convolution need not reorder its input."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        r = self.r
        blocks = x.permute(0, 2, 3, 1).reshape(b, h // r, r, w // r, r, c)  # a view for any layout
        return blocks.permute(0, 1, 3, 5, 2, 4).reshape(b, h // r, w // r, c * r * r).permute(0, 3, 1, 2)


class DepthToSpace(nn.Module):
    """``pixel_shuffle`` (same values) for channels-last input, returning channels-last in a
    single copy; its backward is one copy too (PyTorch's kernel is ~2x slower on this layout)."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: Tensor) -> Tensor:
        b, cr2, h, w = x.shape
        r, c = self.r, cr2 // (self.r * self.r)
        cells = x.permute(0, 2, 3, 1).reshape(b, h, w, c, r, r)
        return cells.permute(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c).permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """x + 1x1(relu(3x3(relu(x)))), the 3x3 conv narrowed to ``ch // bottleneck`` channels."""

    def __init__(self, ch: int, bottleneck: int = 4) -> None:
        super().__init__()
        mid = max(1, ch // bottleneck)
        self.conv1 = nn.Conv2d(ch, mid, 3, padding=1)
        self.conv2 = nn.Conv2d(mid, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Encoder(nn.Module):
    """Image (B,1,S,S) -> continuous latents (B,D,S/f,S/f)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        stem, hid, neck = cfg.stem_channels, cfg.hidden_channels, cfg.res_bottleneck
        self.stem = nn.Sequential(
            SpaceToDepth(4),
            nn.Conv2d(16, stem, 3, padding=1),
            *[ResBlock(stem, neck) for _ in range(cfg.stem_res_blocks)],
        )
        downs: list[nn.Module] = []
        ch = stem
        for _ in range(int(math.log2(cfg.downsample // 4))):
            downs += [SpaceToDepth(2), nn.Conv2d(4 * ch, hid, 1), ResBlock(hid, neck)]
            ch = hid
        self.down = nn.Sequential(*downs)
        self.body = nn.Sequential(
            nn.Conv2d(ch, hid, 1) if ch != hid else nn.Identity(),
            *[ResBlock(hid, neck) for _ in range(cfg.encoder_res_blocks)],
            nn.ReLU(),
            nn.Conv2d(hid, cfg.code_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.down(self.stem(x)))


class Decoder(nn.Module):
    """Quantised latents (B,D,S/f,S/f) -> image (B,1,S,S) in [0,1]."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        stem, hid, neck = cfg.stem_channels, cfg.hidden_channels, cfg.res_bottleneck
        n_up = int(math.log2(cfg.downsample // 4))
        self.body = nn.Sequential(
            nn.Conv2d(cfg.code_dim, hid, 1),
            *[ResBlock(hid, neck) for _ in range(cfg.decoder_res_blocks)],
        )
        ups: list[nn.Module] = []
        for i in range(n_up):
            out = stem if i == n_up - 1 else hid
            ups += [nn.ReLU(), nn.Conv2d(hid, 4 * out, 1), DepthToSpace(2), ResBlock(out, neck)]
        self.up = nn.Sequential(*ups)
        ch = stem if n_up else hid
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, 16, 3, padding=1), DepthToSpace(4))

    def forward(self, q: Tensor) -> Tensor:
        return torch.sigmoid(self.head(self.up(self.body(q))))


@dataclass
class VQVAEOutput:
    reconstruction: Tensor
    codes: Tensor
    commitment_loss: Tensor
    perplexity: Tensor


class VQVAE(nn.Module):
    """Encoder -> :class:`VectorQuantizerEMA` -> decoder."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VQVAEConfig()
        self.encoder = Encoder(self.config)
        self.quantizer = VectorQuantizerEMA(
            self.config.num_codes,
            self.config.code_dim,
            beta=self.config.beta,
            decay=self.config.ema_decay,
            dead_threshold=self.config.dead_threshold,
        )
        self.decoder = Decoder(self.config)

    def _check(self, x: Tensor) -> None:
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-2:] != (s, s):
            raise ConfigError(f"expected images of shape (B,1,{s},{s}), got {tuple(x.shape)}")

    def quantize(self, x: Tensor) -> QuantizerOutput:
        self._check(x)
        return self.quantizer(self.encoder(x))

    def forward(self, x: Tensor) -> VQVAEOutput:
        q = self.quantize(x)
        return VQVAEOutput(self.decoder(q.quantized), q.codes, q.commitment_loss, q.perplexity)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B,1,S,S) -> code grids (B,S/f,S/f) int64."""
        self._check(x)
        return self.quantizer.nearest_grid(self.encoder(x))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Code grids (B,h,w) int64 -> images (B,1,S,S) in [0,1]."""
        if codes.dtype != torch.long or codes.ndim != 3:
            raise ConfigError(f"expected int64 code grids (B,h,w), got {codes.dtype} {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.num_codes):
            raise ConfigError(f"codes must lie in [0, {self.config.num_codes})")
        return self.decoder(self.quantizer.embed(codes))


class BaselineVQVAE(VQVAE):
    """Reference architecture for benchmarks: Conv 32 s2 -> Conv 64 s2 -> 1x1 to D,
    mirrored transposed convolutions; same quantiser (latent grid = image_size / 4)."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        cfg = config or VQVAEConfig(downsample=4)
        if cfg.downsample != 4:
            raise ConfigError("the baseline downsamples by exactly 4")
        super().__init__(cfg)
        d = cfg.code_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, d, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(d, 64, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
            nn.Sigmoid(),
        )
