"""A VQ-VAE and the prior trained on its codes, loaded, checked and used as one object.

:class:`ModelPair` is what sampling, completion, evaluation and anomaly scoring work with:
it encodes images to code grids (:class:`~brainvq.models.levels.Codes`), decodes them, builds
what the prior is conditioned on, and computes bits, per-code NLL maps, samples, completions
and restorations. A single-level pair (one code grid, one PixelCNN) and a two-level one
(VQ-VAE-2: a coarse top grid with its own PixelCNN, and a bottom PixelCNN that also sees the
whole top grid) offer the same methods; the differences live in :mod:`brainvq.models.levels`.

A pair may also hold a *generation decoder*: a VQ-VAE with the same encoder and codebooks whose
decoder was fine-tuned adversarially (``brainvq sharpen``). :meth:`ModelPair.decode` is always the
reconstruction decoder's (reconstructions, anomaly restorations); :meth:`ModelPair.draw`, which
renders generated code grids, uses the generation decoder when there is one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, read_metadata
from brainvq.errors import ConfigError
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
from brainvq.models.sampling import check_temperature
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


def check_generation_decoder(
    vqvae: VQVAE, decoder: VQVAE, vqvae_path: str | Path = "vqvae", decoder_path: str | Path = "generation decoder"
) -> None:
    """Stop with a one-line ConfigError unless ``decoder`` has ``vqvae``'s codebooks and code grids
    (a decoder fine-tuned from it), so that it draws the codes the prior learned."""
    ours, theirs = codebook_fingerprint(vqvae), codebook_fingerprint(decoder)
    same_grids = decoder.config.code_grids() == vqvae.config.code_grids()
    if ours == theirs and same_grids and decoder.config.image_size == vqvae.config.image_size:
        return
    raise ConfigError(
        f"{decoder_path}: this generation decoder's codebooks ({theirs}) are not those of the VQ-VAE {vqvae_path} "
        f"({ours}); use a decoder fine-tuned from that VQ-VAE (brainvq sharpen) or --no-generation-decoder"
    )


class ModelPair(nn.Module):
    """A VQ-VAE (``vqvae``) and a prior over its code grids (``prior``), checked to fit each other.

    ``pair_warning``: why the pair was used although the prior learned another VQ-VAE's codes
    (``allow_mismatch``), else None. ``generation_decoder``: a VQ-VAE with ``vqvae``'s codebooks
    whose decoder :meth:`draw` uses (:func:`check_generation_decoder`), or None."""

    def __init__(
        self,
        vqvae: VQVAE,
        prior: Prior,
        *,
        prior_name: str | Path = "prior",
        pair_warning: str | None = None,
        generation_decoder: VQVAE | None = None,
        vqvae_name: str | Path = "vqvae",
        generation_decoder_name: str | Path = "generation decoder",
    ) -> None:
        super().__init__()
        check_pair(vqvae, prior, prior_name)
        if generation_decoder is not None:
            check_generation_decoder(vqvae, generation_decoder, vqvae_name, generation_decoder_name)
        self.vqvae, self.prior = vqvae, prior
        self.generation_decoder = generation_decoder
        self.pair_warning = pair_warning
        self.vqvae_name, self.generation_decoder_name = str(vqvae_name), str(generation_decoder_name)

    @classmethod
    def load(
        cls,
        vqvae_path: str | Path,
        prior_path: str | Path,
        device: str | torch.device | None = None,
        allow_mismatch: bool = False,
        generation_decoder: str | Path | None = None,
    ) -> ModelPair:
        """Both models from their weights (on the GPU when there is one, unless ``device``), checked to
        belong together (:func:`check_pair`, :func:`check_fingerprint`: one-line ConfigError or
        CheckpointError otherwise; a mismatch allowed by ``allow_mismatch`` is kept as ``pair_warning``),
        and the ``generation_decoder`` weights when given (:func:`check_generation_decoder`)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vqvae, prior = load_vqvae(vqvae_path, device), load_prior(prior_path, device)
        check_pair(vqvae, prior, prior_path)
        drawer = None if generation_decoder is None else load_vqvae(generation_decoder, device)  # checked in __init__
        warning = check_fingerprint(vqvae, prior_path, allow_mismatch)
        return cls(
            vqvae,
            prior,
            prior_name=prior_path,
            pair_warning=warning,
            generation_decoder=drawer,
            vqvae_name=vqvae_path,
            generation_decoder_name=generation_decoder or "generation decoder",
        )

    def summary_warnings(self) -> dict[str, list[str]]:
        """``{"warnings": [pair_warning]}`` for a command's summary, or {} for a matched pair."""
        return {"warnings": [self.pair_warning]} if self.pair_warning else {}

    def decoder_record(self) -> dict[str, str]:
        """Which decoder :meth:`draw` uses and its weights, for a command's summary:
        ``{"drew": "generation" | "reconstruction", "weights": path}``."""
        name = self.generation_decoder_name if self.generation_decoder is not None else self.vqvae_name
        return {"drew": self.drawing_decoder, "weights": name}

    # --- what the pair is -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The VQ-VAE's device (images are encoded and decoded there)."""
        return next(self.vqvae.parameters()).device

    @property
    def drawing_decoder(self) -> str:
        """Which decoder :meth:`draw` uses: "generation" (there is a generation decoder) or "reconstruction"."""
        return "reconstruction" if self.generation_decoder is None else "generation"

    @property
    def drawing_vqvae(self) -> VQVAE:
        """The VQ-VAE whose decoder :meth:`draw` uses (its reconstructions are the prior's ceiling)."""
        return self.vqvae if self.generation_decoder is None else self.generation_decoder

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

    def check_top_temperature(self, top_temperature: float | None) -> None:
        """ConfigError unless ``top_temperature`` is None or a positive temperature for a two-level prior."""
        if top_temperature is None:
            return
        if "top" not in self.levels:
            raise ConfigError("a top-level temperature needs a two-level prior; this one has a single level")
        check_temperature(top_temperature, "the top-level temperature")

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

    def decode(self, codes: Codes, chunk: int | None = None) -> Tensor:
        """Code grids (..., h, w) -> images (..., 1, H, W) in [0,1] on the VQ-VAE's device (extra
        leading dims kept) by the reconstruction decoder; ``chunk``: decode at most this many grids at a time."""
        return _decode_with(self.vqvae, codes, self.device, chunk)

    def draw(self, codes: Codes, chunk: int | None = None) -> Tensor:
        """Like :meth:`decode`, by the generation decoder when the pair has one (what generated
        code grids are drawn with; :attr:`drawing_decoder` says which)."""
        return _decode_with(self.drawing_vqvae, codes, self.device, chunk)

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
        top_temperature: float | None = None,
    ) -> Codes:
        """The upper ``keep_rows`` rows (default half) of the coarsest grid kept, the rest drawn again
        (two levels: the top grid at ``top_temperature``, default ``temperature``; then the whole
        bottom grid given the completed top grid)."""
        return complete_codes(self.prior, codes, conditions, temperature, generator, keep_rows, top_temperature)

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


@torch.no_grad()
def _decode_with(vqvae: VQVAE, codes: Codes, device: torch.device, chunk: int | None) -> Tensor:
    """``vqvae``'s decoding of code grids (..., h, w), at most ``chunk`` grids at a time."""
    lead = codes.bottom.shape[:-2]
    flat = codes.map(lambda t: t.reshape(-1, *t.shape[-2:]).to(device))
    if chunk is None:
        out = vqvae.decode(flat.bottom, flat.top)
    else:
        parts = (flat[i : i + chunk] for i in range(0, len(flat), chunk))
        out = torch.cat([vqvae.decode(part.bottom, part.top) for part in parts])
    return out.reshape(*lead, *out.shape[1:])
