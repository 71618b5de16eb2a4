"""A VQ-VAE and the prior trained on its codes, loaded, checked and used as one object.

:class:`ModelPair` is what sampling, completion, evaluation and anomaly scoring work with:
it encodes images to code grids (:class:`~brainvq.models.levels.Codes`), decodes them, builds
what the prior is conditioned on, and computes bits, per-code NLL maps, samples, completions
and restorations. A single-level pair (one code grid, one PixelCNN) and a two-level one
(VQ-VAE-2: a coarse top grid with its own PixelCNN, and a bottom PixelCNN that also sees the
whole top grid) offer the same methods; the differences live in :mod:`brainvq.models.levels`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, read_metadata
from brainvq.data.errors import ConfigError
from brainvq.models.hierarchical import Prior
from brainvq.models.levels import (
    Codes,
    complete_codes,
    conditions_for,
    covered,
    prior_bits,
    prior_device,
    prior_levels,
    prior_nll,
    resample_codes,
    sample_codes,
    scale_distribution,
)
from brainvq.models.vqvae import VQVAE
from brainvq.models.weights import load_prior, load_vqvae

_WORDS = {1: "single", 2: "two"}


def check_pair(vqvae: VQVAE, prior: Prior, prior_path: str | Path = "prior") -> None:
    """Raise a clear ConfigError unless ``prior`` was built for ``vqvae``'s code grids (levels, K, sizes)."""
    grids, levels = vqvae.config.code_grids(), prior_levels(prior)
    if set(grids) != set(levels):
        raise ConfigError(
            f"{prior_path}: a {_WORDS[len(levels)]}-level prior cannot be used with a "
            f"{_WORDS[len(grids)]}-level VQ-VAE; train the prior on this VQ-VAE's codes"
        )
    for name in ("bottom", "top"):
        if name not in grids:
            continue
        pc, (k, grid) = levels[name].config, grids[name]
        if pc.num_codes != k or pc.grid_size != grid:
            level = "" if name == "bottom" else "top "
            raise ConfigError(
                f"{prior_path}: {level}prior is for K={pc.num_codes}, grid {pc.grid_size}x{pc.grid_size} but the "
                f"VQ-VAE's {level}level has K={k}, grid {grid}x{grid}"
            )


def check_fingerprint(vqvae: VQVAE, prior_path: str | Path, allow_mismatch: bool = False) -> str | None:
    """Stop with a ConfigError when the prior recorded the codebooks of another VQ-VAE than this
    one (its codes would mean something else, and samples or anomaly maps would be silently
    wrong); with ``allow_mismatch``, warn and return the warning instead. Priors saved before the
    fingerprint existed are not checked."""
    recorded = read_metadata(prior_path).get(VQVAE_FINGERPRINT)
    if recorded is None or recorded == codebook_fingerprint(vqvae):
        return None
    message = (
        f"{prior_path}: this prior learned the codes of another VQ-VAE (codebooks {recorded}, this VQ-VAE's "
        f"{codebook_fingerprint(vqvae)})"
    )
    if not allow_mismatch:
        raise ConfigError(f"{message}; use the VQ-VAE it was trained on, or --allow-mismatched-pair")
    warnings.warn(message, stacklevel=3)
    return message


class ModelPair(nn.Module):
    """A VQ-VAE (``vqvae``) and a prior over its code grids (``prior``), checked to fit each other.

    ``pair_warning``: why the pair was used although the prior learned another VQ-VAE's codes
    (``allow_mismatch``), else None."""

    def __init__(
        self, vqvae: VQVAE, prior: Prior, *, prior_name: str | Path = "prior", pair_warning: str | None = None
    ) -> None:
        super().__init__()
        check_pair(vqvae, prior, prior_name)
        self.vqvae, self.prior = vqvae, prior
        self.pair_warning = pair_warning

    @classmethod
    def load(
        cls,
        vqvae_path: str | Path,
        prior_path: str | Path,
        device: str | torch.device | None = None,
        allow_mismatch: bool = False,
    ) -> ModelPair:
        """Both models from their weights (on the GPU when there is one, unless ``device``), checked to
        belong together (:func:`check_pair`, :func:`check_fingerprint`: one-line ConfigError or
        CheckpointError otherwise; a mismatch allowed by ``allow_mismatch`` is kept as ``pair_warning``)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vqvae, prior = load_vqvae(vqvae_path, device), load_prior(prior_path, device)
        check_pair(vqvae, prior, prior_path)
        warning = check_fingerprint(vqvae, prior_path, allow_mismatch)
        return cls(vqvae, prior, prior_name=prior_path, pair_warning=warning)

    def summary_warnings(self) -> dict[str, list[str]]:
        """``{"warnings": [pair_warning]}`` for a command's summary, or {} for a matched pair."""
        return {"warnings": [self.pair_warning]} if self.pair_warning else {}

    # --- what the pair is -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The VQ-VAE's device (images are encoded and decoded there)."""
        return next(self.vqvae.parameters()).device

    @property
    def image_size(self) -> int:
        return self.vqvae.config.image_size

    @property
    def num_codes(self) -> int:
        """Code count K of the bottom grid."""
        return self.vqvae.config.num_codes

    @property
    def levels(self) -> tuple[str, ...]:
        """The code grids, top first: ``("top", "bottom")`` or ``("bottom",)``."""
        return tuple(prior_levels(self.prior))

    @property
    def conditional(self) -> bool:
        """True when the prior needs a slice position for every image."""
        return bool(self.prior.config.conditional)

    @property
    def uses_intensity_scale(self) -> bool:
        """True when a level of the prior is also conditioned on the slice's intensity scale."""
        return scale_distribution(self.prior) is not None

    # --- images <-> codes ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor) -> Codes:
        """Images (B,1,H,W) in [0,1] -> their code grids (int64, on the VQ-VAE's device)."""
        return Codes(*self.vqvae.encode_levels(images.to(self.device)))

    @torch.no_grad()
    def decode(self, codes: Codes, chunk: int | None = None) -> Tensor:
        """Code grids (..., h, w) -> images (..., 1, H, W) in [0,1] on the VQ-VAE's device (extra
        leading dims kept); ``chunk``: decode at most this many grids at a time."""
        lead = codes.bottom.shape[:-2]
        flat = codes.map(lambda t: t.reshape(-1, *t.shape[-2:]).to(self.device))
        if chunk is None:
            out = self.vqvae.decode(flat.bottom, flat.top)
        else:
            out = torch.cat([self._decode(flat[i : i + chunk]) for i in range(0, len(flat), chunk)])
        return out.reshape(*lead, *out.shape[1:])

    def _decode(self, codes: Codes) -> Tensor:
        return self.vqvae.decode(codes.bottom, codes.top)

    # --- the prior ----------------------------------------------------------------------------
    def conditions(
        self,
        positions: Tensor | None,
        images: Tensor | None = None,
        generator: torch.Generator | None = None,
        exclude: Tensor | None = None,
    ) -> Tensor | None:
        """What the prior is conditioned on for these slices (:func:`~brainvq.models.levels.conditions_for`):
        None (unconditional), positions (B,), or (position, intensity scale) rows (B,2) with the
        scale measured on ``images`` (without the pixels in ``exclude``) or, for new slices,
        drawn at each position with ``generator``."""
        return conditions_for(self.prior, positions, images, generator, exclude)

    def bits(self, codes: Codes, conditions: Tensor | None, level: str = "all") -> dict[str, Tensor]:
        """Mean bits per code of a batch (:func:`~brainvq.models.levels.prior_bits`, what training
        optimises and logs): per level and in total, or of ``level`` ("top", "bottom") alone."""
        return prior_bits(self.prior, codes.to(prior_device(self.prior)), conditions, level)

    def nll(self, codes: Codes, conditions: Tensor | None) -> dict[str, Tensor]:
        """Per-code NLL maps in nats, ``{"top": (B,ht,wt), "bottom": (B,h,w)}`` ("bottom" only for
        one level): each code given the codes before it on its level, the conditions and, for
        the bottom level of two, the whole top grid."""
        return prior_nll(self.prior, codes, conditions)

    def sample(
        self,
        n: int,
        conditions: Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        top_temperature: float | None = None,
        progress: bool = False,
        naive: bool = False,
    ) -> Codes:
        """``n`` code grids drawn by the prior given ``conditions`` (:meth:`conditions`; None when
        unconditional), top grid first (at ``top_temperature``, default ``temperature``). The cached
        sampler, or with ``naive`` the reference one, which draws the same codes for a seed."""
        return sample_codes(self.prior, n, conditions, temperature, generator, progress, top_temperature, naive)

    def complete(
        self,
        codes: Codes,
        conditions: Tensor | None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        keep_rows: int | None = None,
    ) -> Codes:
        """The upper ``keep_rows`` rows (default half) of the coarsest grid kept, the rest drawn again
        (two levels: then the whole bottom grid given the completed top grid)."""
        return complete_codes(self.prior, codes, conditions, temperature, generator, keep_rows)

    def resample(
        self,
        codes: Codes,
        flagged: Codes,
        conditions: Tensor | None,
        n: int,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Codes:
        """``n`` restorations (n,B,...) of each grid: the codes ``flagged`` on either level drawn again
        (with every bottom code under a flagged top code), all others kept
        (:func:`~brainvq.models.levels.resample_codes`)."""
        return resample_codes(self.prior, codes, flagged, conditions, n, generator, temperature)

    @staticmethod
    def covered(flagged: Codes) -> Tensor:
        """The bottom codes that ``flagged`` redraws: its bottom mask and every code under a flagged top code."""
        return covered(flagged)
