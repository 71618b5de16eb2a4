"""The prior's gap: generated slices judged against the drawing decoder's own reconstructions.

A sample has two gaps: the decoder's (its reconstructions of real slices vs real slices) and the
prior's (samples vs reconstructions drawn by the same decoder). A judge against *real* slices
saturates on the decoder's rendering first and then cannot see the prior, so the acceptance
verdict for generation is taken here, against reconstructions of real test slices, with
reconstructed validation slices as the floor. Two more sets say where the gap sits and what the
judge can see:

- ``bottom_redrawn``: the floor's validation slices with their top grid kept and their whole
  bottom grid drawn again by the prior (the level split: if it reads like the samples, the
  bottom level carries the gap);
- ``bottom_random_P``: the same slices with a fraction P of their bottom codes replaced by
  uniformly random codes (the power check's known-bad sets for this comparison).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from brainvq.data.dataset import as_tensor
from brainvq.data.slices import SliceSet
from brainvq.judges.power import FittedJudges, JudgeConfig, Profile, compare
from brainvq.models.levels import Codes

#: the fractions of bottom codes replaced at random in the power check's known-bad sets.
RANDOM_BOTTOM_FRACTIONS: tuple[float, ...] = (0.05, 0.20)


def gap_config(cfg: JudgeConfig) -> JudgeConfig:
    """The judges' thresholds for the prior's gap: the Fréchet distance accepted up to
    ``prior_gap_fd_max_ratio`` (2x) its floor, the classifier up to ``c2st_accept`` (0.75)."""
    return replace(cfg, fd_max_ratio=cfg.prior_gap_fd_max_ratio)


def random_bottom_name(fraction: float) -> str:
    """The set name of reconstructions with ``fraction`` of their bottom codes random."""
    return f"bottom_random_{round(100 * fraction)}pct"


@torch.no_grad()
def encode(encoder, images: torch.Tensor, chunk: int = 64) -> Codes:
    """Code grids of ``images`` (N,1,H,W) in [0,1] by ``encoder`` (a VQ-VAE), on the CPU."""
    dev = next(encoder.parameters()).device
    parts = [Codes(*encoder.encode_levels(images[i : i + chunk].to(dev))).cpu() for i in range(0, len(images), chunk)]
    return Codes.cat(parts)


@torch.no_grad()
def draw(drawer, codes: Codes, chunk: int = 64) -> torch.Tensor:
    """``drawer``'s (a VQ-VAE's) images of code grids, on the CPU."""
    dev = next(drawer.parameters()).device
    out = []
    for i in range(0, len(codes), chunk):
        part = codes[i : i + chunk].to(dev)
        out.append(drawer.decode(part.bottom, part.top).float().cpu())
    return torch.cat(out)


def randomise_bottom(codes: Codes, fraction: float, num_codes: int, seed: int = 0) -> Codes:
    """``codes`` with a share ``fraction`` of the bottom codes (each code with that probability)
    replaced by codes drawn uniformly from all ``num_codes``; the top grid kept."""
    gen = torch.Generator().manual_seed(seed)
    bottom = codes.bottom.clone()
    hit = torch.rand(bottom.shape, generator=gen) < fraction
    bottom[hit] = torch.randint(0, num_codes, (int(hit.sum()),), generator=gen).to(bottom.dtype)
    return Codes(codes.top, bottom)


@torch.no_grad()
def redraw_bottom(pair, codes: Codes, positions: np.ndarray, images: torch.Tensor, seed: int = 0, **kw) -> Codes:
    """``codes`` with the top grid kept and the whole bottom grid drawn again by ``pair``'s prior
    at ``positions`` (the conditions measured on ``images``); ``kw``: the sampler's options
    (``temperature``)."""
    gen = torch.Generator(device=pair.device).manual_seed(seed)
    pos = torch.as_tensor(np.asarray(positions), dtype=torch.float32, device=pair.device)
    cond = pair.conditions(pos if pair.conditional else None, images.to(pair.device))
    dev_codes = codes.to(pair.device)
    flagged = Codes(
        None if codes.top is None else torch.zeros_like(dev_codes.top, dtype=torch.bool),
        torch.ones_like(dev_codes.bottom, dtype=torch.bool),
    )
    out = pair.resample(dev_codes, flagged, cond, 1, generator=gen, **kw)
    return out.map(lambda t: t[0]).cpu()


def judge_gap(
    judges: FittedJudges, candidates: dict[str, Profile], reference: Profile, baseline: Profile
) -> dict[str, dict]:
    """Every candidate set against the reconstructed ``reference`` (test), each judge beside the
    reconstructed ``baseline`` (validation) as its floor, under :func:`gap_config`'s thresholds.
    Returns ``{name: {judge: result}}`` plus ``"floor"``: the baseline itself."""
    gap = replace(judges, cfg=gap_config(judges.cfg))
    out = {name: compare(gap, p, reference, baseline) for name, p in candidates.items()}
    out["floor"] = compare(gap, baseline, reference, baseline)
    return out


def gap_verdict(result: dict[str, dict]) -> dict:
    """The acceptance verdict of one set against reconstructions: the classifier and the Fréchet
    distance (the distribution judges) both accept."""
    c2, fd = result["c2st"], result["frechet"]
    return {
        "accept": bool(c2["accept"] and fd["accept"]),
        "c2st": c2["accuracy"],
        "c2st_stderr": c2.get("stderr"),
        "frechet_ratio": fd["ratio"],
    }


def decoder_guard(decoder_gap: dict[str, dict], cfg: JudgeConfig) -> dict:
    """Whether the drawing decoder's own gap (its reconstructions vs real slices) leaves the
    prior's gap meaningful: its classifier at or below ``prior_gap_decoder_c2st_max``. A decoder
    that renders real codes as something else entirely would pass any prior."""
    acc = decoder_gap["c2st"]["accuracy"]
    limit = cfg.prior_gap_decoder_c2st_max
    return {"accept": acc is not None and bool(acc <= limit), "c2st": acc, "c2st_max": limit}


def guarded_verdict(samples: dict[str, dict], decoder_gap: dict[str, dict], cfg: JudgeConfig) -> dict:
    """The samples' :func:`gap_verdict`, accepted only while :func:`decoder_guard` accepts too."""
    verdict = gap_verdict(samples)
    verdict["decoder_guard"] = guard = decoder_guard(decoder_gap, cfg)
    verdict["accept"] = verdict["accept"] and guard["accept"]
    return verdict


def pick_slices(data: SliceSet, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``n`` slices of ``data`` drawn with ``rng`` (all when fewer), in order: images, positions, subject ids."""
    idx = np.sort(rng.permutation(len(data))[:n])
    return as_tensor(data, idx), np.asarray(data.positions)[idx], np.asarray(data.case_ids)[idx]


class GapReference(NamedTuple):
    """What every prior's-gap comparison is made against: real test and validation slices
    (images, positions, subject ids), the validation slices' codes, and the profiles of both sets
    as the drawing decoder reconstructs them (the reference and the floor)."""

    test: tuple[torch.Tensor, np.ndarray, np.ndarray]
    validation: tuple[torch.Tensor, np.ndarray, np.ndarray]
    validation_codes: Codes
    recon_test: Profile
    recon_validation: Profile


def gap_reference(
    judges: FittedJudges, encoder, drawer, test: SliceSet, validation: SliceSet, n: int, rng: np.random.Generator
) -> GapReference:
    """``n`` test and then ``n`` validation slices drawn with ``rng``, encoded by ``encoder`` and
    drawn by ``drawer`` (VQ-VAEs), profiled by ``judges``."""
    t, v = pick_slices(test, n, rng), pick_slices(validation, n, rng)
    v_codes = encode(encoder, v[0])
    recon_test = judges.profile(draw(drawer, encode(encoder, t[0])), t[1], t[2])
    return GapReference(t, v, v_codes, recon_test, judges.profile(draw(drawer, v_codes), v[1], v[2]))


def judge_prior_gap(
    pair, judges: FittedJudges, samples: Profile, validation: SliceSet, test: SliceSet, n: int, seed: int = 0
) -> dict:
    """The prior's gap of generated slices (their profile ``samples``) drawn by ``pair``'s drawing
    decoder: ``n`` test and ``n`` validation slices are encoded and drawn by that decoder; the
    samples and (two levels) the validation slices with their bottom grid redrawn are judged
    against the reconstructed test slices, the reconstructed validation slices being the floor.
    Also the decoder's gap (reconstructed validation vs real test, real validation as the floor;
    a diagnostic under the standard thresholds).

    The verdict accepts only while the decoder's gap passes :func:`decoder_guard`.
    Returns ``verdict`` (the samples' acceptance), ``level_split`` (the redrawn bottom grid's,
    two levels only), ``sets`` (every judge per set) and ``decoder_gap``."""
    drawer = pair.drawing_vqvae
    ref = gap_reference(judges, pair.vqvae, drawer, test, validation, n, np.random.default_rng(seed + 1))
    (v_img, v_pos, v_grp), v_codes = ref.validation, ref.validation_codes
    candidates = {"samples": samples}
    if v_codes.top is not None:
        redrawn = redraw_bottom(pair, v_codes, v_pos, v_img, seed)
        candidates["bottom_redrawn"] = judges.profile(draw(drawer, redrawn), v_pos, v_grp)
    sets = judge_gap(judges, candidates, ref.recon_test, ref.recon_validation)
    real_test, real_val = judges.profile(*ref.test), judges.profile(*ref.validation)
    decoder_gap = compare(judges, ref.recon_validation, real_test, real_val)
    out = {
        "verdict": guarded_verdict(sets["samples"], decoder_gap, judges.cfg),
        **({"level_split": gap_verdict(sets["bottom_redrawn"])} if "bottom_redrawn" in sets else {}),
        "floor": gap_verdict(sets["floor"]),
        "sets": sets,
        "decoder_gap": decoder_gap,
        "thresholds": {
            "c2st_accept": judges.cfg.c2st_accept,
            "fd_max_ratio": judges.cfg.prior_gap_fd_max_ratio,
            "decoder_c2st_max": judges.cfg.prior_gap_decoder_c2st_max,
        },
        "decoder": pair.drawing_decoder,
        "n": len(ref.test[0]),
    }
    return out
