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

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainvq.errors import ConfigError
from brainvq.models.blocks import Decoder, Encoder, TopDecoder, TopEncoder
from brainvq.models.quantizer import QuantizerOutput, VectorQuantizerEMA
from brainvq.models.vqvae_config import VQVAEConfig  # defined there; imported from here too


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
    # forward(x, with_loss=True): the training loss's terms, unweighted ("mse", "commitment", and
    # "top_preview_mse" for a two-level model), and ``loss``, their weighted sum (the objective)
    losses: dict[str, Tensor] = field(default_factory=dict)
    loss: Tensor | None = None


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

    def forward(self, x: Tensor, with_loss: bool = False) -> VQVAEOutput:
        """Reconstruct images ``x`` (B,1,S,S); with ``with_loss`` also the training loss (as in
        nanoGPT, the model owns its objective: the training module, the benchmarks and the
        profiler all time and optimise the same loss)."""
        out = self._autoencode(x)
        if with_loss:
            out.losses, out.loss = self.loss_terms(x, out)
        return out

    def loss_terms(self, x: Tensor, out: VQVAEOutput) -> tuple[dict[str, Tensor], Tensor]:
        """The training loss of ``out`` (this model's output for ``x``): its unweighted terms and
        their weighted sum, reconstruction MSE + commitment (+ ``top_aux_weight`` x the top
        level's preview MSE against ``x`` average-pooled to the preview's size), in float32."""
        mse = F.mse_loss(out.reconstruction.float(), x.float())
        terms = {"mse": mse, "commitment": out.commitment_loss}
        loss = mse + out.commitment_loss
        if out.top_preview is not None:
            preview = torch.sigmoid(out.top_preview.float())
            top_mse = F.mse_loss(preview, F.adaptive_avg_pool2d(x.float(), preview.shape[-2:]))
            terms["top_preview_mse"] = top_mse
            loss = loss + self.config.top_aux_weight * top_mse
        return terms, loss

    def _autoencode(self, x: Tensor) -> VQVAEOutput:
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
