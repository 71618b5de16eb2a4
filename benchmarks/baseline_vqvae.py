"""The reference VQ-VAE architecture that ``bench_vqvae.py`` measures brainvq's against (it
lived in ``brainvq.models.vqvae`` until brainvq commit 4f37c69; only the benchmarks use it)."""

from __future__ import annotations

from torch import nn

from brainvq.errors import ConfigError
from brainvq.models.vqvae import VQVAE, VQVAEConfig


class BaselineVQVAE(VQVAE):
    """Reference architecture for benchmarks: Conv 32 s2 -> Conv 64 s2 -> 1x1 to D,
    mirrored transposed convolutions; same quantiser (latent grid = image_size / 4)."""

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        cfg = config or VQVAEConfig(downsample=4, top_downsample=0)
        if cfg.downsample != 4 or cfg.hierarchical:
            raise ConfigError("the baseline has a single level and downsamples by exactly 4")
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
