"""Patch discriminator (PatchGAN, Isola et al. 2017) used to sharpen a trained VQ-VAE's decoder."""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Image (B,1,S,S) in [0,1] -> one realness logit per overlapping patch (B,1,S/2^n-1,...).

    ``layers`` stride-2 4x4 convolutions (``channels`` doubling each time, GroupNorm and
    LeakyReLU after all but the first), then a 4x4 convolution to one logit: with 3 layers each
    logit sees a 70x70 pixel patch, the scale of cortical folds and ventricle edges.
    """

    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(1, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers):
            out = channels * 2**i
            mods += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.GroupNorm(8, out), nn.LeakyReLU(0.2)]
            ch = out
        mods += [nn.Conv2d(ch, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2 * x - 1)
