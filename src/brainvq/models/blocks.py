"""The VQ-VAE's building blocks: space-to-depth and back, bottleneck residual blocks, the
encoder and decoder at the latent grid, the refiner, and the top level's encoder and decoder
(why they are shaped this way: :mod:`brainvq.models.vqvae`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainvq.models.vqvae_config import VQVAEConfig


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


def _is_pointwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1


class PatchSequential(nn.Sequential):
    """An ``nn.Sequential`` (same modules, same state-dict keys, same outputs up to rounding) that
    runs a space-to-depth followed by a 1x1 convolution as one stride-``r`` convolution, and a 1x1
    convolution followed by depth-to-space as one stride-``r`` transposed convolution. Each pair
    then costs one oneDNN call instead of a convolution plus a 6-dimensional copy in each
    direction (about 2x faster for the space-to-depth pair on a 2-core CPU,
    docs/benchmarks.md)."""

    def forward(self, x: Tensor) -> Tensor:
        mods = list(self)
        i = 0
        while i < len(mods):
            m, nxt = mods[i], mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(m, SpaceToDepth) and nxt is not None and _is_pointwise(nxt):
                r = m.r
                w = nxt.weight.view(nxt.out_channels, nxt.in_channels // (r * r), r, r)
                x, i = F.conv2d(x, w, nxt.bias, stride=r), i + 2
            elif _is_pointwise(m) and isinstance(nxt, DepthToSpace):
                x, i = _pointwise_depth_to_space(x, m, nxt.r), i + 2
            else:
                x, i = m(x), i + 1
        return x


def _pointwise_depth_to_space(x: Tensor, conv: nn.Conv2d, r: int) -> Tensor:
    """``DepthToSpace(r)(conv(x))`` for a 1x1 ``conv``, as a transposed convolution: output channel
    c at offset (i, j) of each r x r cell is the conv's output channel c*r*r + i*r + j."""
    out = conv.out_channels // (r * r)
    w = conv.weight.view(out, r, r, conv.in_channels).permute(3, 0, 1, 2)
    y = F.conv_transpose2d(x, w, None, stride=r)
    if conv.bias is None:
        return y
    return y + conv.bias.view(1, out, r, r).repeat(1, 1, x.shape[-2], x.shape[-1])


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
        self.down = PatchSequential(*downs)
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
        self.up = PatchSequential(*ups)
        ch = stem if n_up else hid
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, 16, 3, padding=1), DepthToSpace(4))
        self.refine = Refiner(ch, cfg.refine_channels) if cfg.refine_channels else None

    @property
    def last_layer(self) -> nn.Conv2d:
        """The convolution whose output is the decoder's logits: the refiner's last when there is
        one, else the head's (``brainvq sharpen`` weighs its adversarial loss at its gradient)."""
        return self.refine.last_layer if self.refine is not None else self.head[1]

    def forward(self, q: Tensor) -> Tensor:
        h = self.up(self.body(q))
        logits = self.head(h)
        if self.refine is not None:
            logits = logits + self.refine(h, logits)
        return torch.sigmoid(logits)


class Refiner(nn.Module):
    """Decoder features at 1/4 resolution and the head's logits -> a logit correction at full
    resolution: depth-to-space to ``ch`` channels, joined with the logits, two 3x3 convolutions.
    The last convolution starts at zero, so adding a refiner leaves a trained decoder's output as it was."""

    def __init__(self, in_ch: int, ch: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.ReLU(), nn.Conv2d(in_ch, 16 * ch, 1), DepthToSpace(4))
        self.net = nn.Sequential(
            nn.Conv2d(ch + 1, ch, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(ch, 1, 3, padding=1),
        )
        nn.init.zeros_(self.last_layer.weight)
        nn.init.zeros_(self.last_layer.bias)

    @property
    def last_layer(self) -> nn.Conv2d:
        """The convolution whose output is the logit correction."""
        return self.net[-1]

    def forward(self, h: Tensor, logits: Tensor) -> Tensor:
        return self.net(torch.cat([self.expand(h), logits], 1))


class TopEncoder(nn.Module):
    """Bottom latents (B,D,g,g) -> top latents (B,D,g/t,g/t): space-to-depth steps, then 3x3
    residual blocks at the top grid, where every cell sees its neighbours' context."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        wide, neck = cfg.top_channels, cfg.top_res_bottleneck
        layers: list[nn.Module] = []
        ch = cfg.code_dim
        for _ in range(int(math.log2(cfg.top_downsample))):
            layers += [SpaceToDepth(2), nn.Conv2d(4 * ch, wide, 1), ResBlock(wide, neck)]
            ch = wide
        layers += [ResBlock(wide, neck), nn.ReLU(), nn.Conv2d(wide, cfg.code_dim, 1)]
        self.net = PatchSequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class TopDecoder(nn.Module):
    """Quantised top latents (B,D,g/t,g/t) -> features (B,hidden,g,g) at the bottom grid, which
    condition the bottom quantiser and the decoder, plus a low-resolution image preview."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        wide, hid, neck = cfg.top_channels, cfg.hidden_channels, cfg.top_res_bottleneck
        n_up = int(math.log2(cfg.top_downsample))
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, wide, 1), ResBlock(wide, neck), ResBlock(wide, neck)]
        for i in range(n_up):
            out = hid if i == n_up - 1 else wide
            layers += [nn.ReLU(), nn.Conv2d(wide, 4 * out, 1), DepthToSpace(2)]
        self.net = PatchSequential(*layers)
        self.preview = nn.Sequential(nn.ReLU(), nn.Conv2d(hid, 1, 3, padding=1))
        self.to_bottom = nn.Conv2d(hid, cfg.code_dim, 1)  # added to the bottom quantiser's input
        self.to_decoder = nn.Conv2d(hid, cfg.code_dim, 1)  # added to the decoder's input

    def forward(self, q_top: Tensor) -> Tensor:
        return self.net(q_top)
