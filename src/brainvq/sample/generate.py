"""``brainvq sample``: generate code grids with the prior, draw them (with the generation decoder
when there is one), save images and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from brainvq.data.dataset import as_tensor
from brainvq.data.slices import SliceSet
from brainvq.errors import ConfigError
from brainvq.io import atomic_write, write_json, write_png
from brainvq.models.levels import Codes
from brainvq.models.pair import ModelPair
from brainvq.report import figures


@dataclass
class Generated:
    """Sampled code grids, their decoded images, what they were conditioned on and which decoder
    drew them ("generation" or "reconstruction", :attr:`ModelPair.drawing_decoder`)."""

    codes: torch.Tensor  # (N,h,w) bottom-level codes
    images: torch.Tensor  # (N,1,H,W) in [0,1]
    positions: np.ndarray  # (N,) (NaN when unconditional)
    top: torch.Tensor | None = None  # (N,ht,wt) top-level codes of a two-level model
    scales: np.ndarray | None = None  # (N,) intensity scales drawn for a prior conditioned on them
    decoder: str = "reconstruction"


def spread_positions(n: int, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """``n`` slice positions evenly spread over [low, high]."""
    return np.linspace(low, high, n).astype(np.float32) if n > 1 else np.array([(low + high) / 2], np.float32)


@torch.no_grad()
def generate(
    pair: ModelPair,
    positions: np.ndarray | None,
    *,
    n: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,  # a cached sampling step costs about the same for 1 or 64 grids on CPU
    progress: bool = True,
    top_temperature: float | None = None,
) -> Generated:
    """Sample ``n`` (or ``len(positions)``) code grids and draw them (:meth:`ModelPair.draw`).
    A two-level prior draws its top grid at ``top_temperature`` (default ``temperature``)."""
    if pair.conditional:
        if positions is None:
            raise ConfigError("this prior is conditioned on slice position: give positions")
        positions = np.asarray(positions, dtype=np.float32)
        n = len(positions)
    elif n is None:
        raise ConfigError("give the number of samples")
    pair.check_top_temperature(top_temperature)
    gen = torch.Generator().manual_seed(seed)
    conds = pair.conditions(positions, generator=gen)  # intensity scales drawn here if needed
    parts = []
    for start in tqdm(range(0, n, batch_size), desc="sample batches", disable=not progress, leave=False):
        m = min(batch_size, n - start)
        cond = conds[start : start + m] if conds is not None else None
        codes = pair.sample(
            m, cond, temperature=temperature, generator=gen, top_temperature=top_temperature, progress=progress
        )
        parts.append(codes.cpu())
    codes = Codes.cat(parts)
    images = pair.draw(codes, chunk=32).cpu()
    pos = positions if positions is not None else np.full(n, np.nan, np.float32)
    scales = conds[:, 1].numpy() if conds is not None and conds.ndim == 2 else None
    return Generated(codes.bottom, images, pos, codes.top, scales, pair.drawing_decoder)


def save_generated(
    gen: Generated,
    out_dir: Path,
    num_codes: int,
    tag: str = "sample",
    *,
    ncols: int = 8,
    suptitle: str | None = None,
) -> dict:
    """Individual PNGs, a grid (``ncols`` wide; ``suptitle`` default: which decoder drew the
    prior's samples), the code maps (figure + tensor)."""
    out_dir = Path(out_dir)
    for i, img in enumerate(gen.images):
        write_png(out_dir / "images" / f"{tag}_{i:03d}.png", (img[0].numpy() * 255).round().astype(np.uint8))
    titles = [f"pos {p:.2f}" if np.isfinite(p) else f"#{i}" for i, p in enumerate(gen.positions)]
    figures.image_grid(
        gen.images,
        out_dir / f"{tag}_grid.png",
        ncols=ncols,
        titles=titles,
        suptitle=suptitle or f"generated slices (prior samples drawn by the {gen.decoder} decoder)",
    )
    k = min(8, len(gen.codes))
    figures.code_map_figure(gen.images[:k], gen.codes[:k], num_codes, out_dir / f"{tag}_code_maps.png", titles[:k])
    scales = None if gen.scales is None else torch.from_numpy(gen.scales)
    codes = {"codes": gen.codes, "top": gen.top, "positions": torch.from_numpy(gen.positions), "scales": scales}
    atomic_write(out_dir / f"{tag}_codes.pt", lambda tmp: torch.save(codes, tmp))
    return {
        "grid": str(out_dir / f"{tag}_grid.png"),
        "code_maps": str(out_dir / f"{tag}_code_maps.png"),
        "n": len(gen.codes),
    }


def sample_outputs(tag: str = "sample") -> tuple[str, ...]:
    """The names :func:`save_generated` (and :func:`sample_command`'s summary) write in a folder."""
    return ("images", f"{tag}_grid.png", f"{tag}_code_maps.png", f"{tag}_codes.pt", f"{tag}_summary.json")


def draw_and_save(
    pair: ModelPair,
    positions: np.ndarray,
    out_dir: Path,
    *,
    temperature: float = 1.0,
    top_temperature: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Generated, dict]:
    """The one sampling path of ``sample`` and ``evaluate``: ``len(positions)`` slices (at
    ``positions`` when the prior is conditioned on them) drawn by :func:`generate`, saved in
    ``out_dir`` (:func:`save_generated`), and the summary fields both commands write."""
    gen = generate(
        pair,
        positions if pair.conditional else None,
        n=len(positions),
        temperature=temperature,
        seed=seed,
        progress=progress,
        top_temperature=top_temperature,
    )
    saved = save_generated(gen, Path(out_dir), pair.num_codes)
    summary = {
        "decoder": pair.decoder_record(),
        "temperature": temperature,
        **({"top_temperature": top_temperature} if top_temperature is not None else {}),
        "seed": seed,
        **({"intensity_scales": gen.scales.tolist()} if gen.scales is not None else {}),
        **saved,
        **pair.summary_warnings(),
    }
    return gen, summary


@torch.no_grad()
def complete_lower_half(
    pair: ModelPair,
    x: torch.Tensor,
    positions: np.ndarray,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices ``x`` (B,1,H,W) with the lower half of their code grids drawn again by the prior:
    ``(kept upper half, completed slice)``, both drawn by :meth:`ModelPair.draw`, on the CPU."""
    x = x.to(pair.device)
    codes = pair.encode(x)
    cond = pair.conditions(torch.from_numpy(np.asarray(positions, np.float32)), images=x)
    gen = torch.Generator().manual_seed(seed)
    done = pair.complete(codes, cond, temperature=temperature, generator=gen, top_temperature=top_temperature)
    kept = pair.draw(codes).cpu()
    kept[:, :, kept.shape[-2] // 2 :] = 0
    return kept, pair.draw(done).cpu()


def completion_figure(
    pair: ModelPair,
    data: SliceSet,
    out_path: Path,
    *,
    n: int = 6,
    seed: int = 0,
    temperature: float = 1.0,
    top_temperature: float | None = None,
) -> Path:
    """Real slices, their top-half-kept code grids completed by the prior, drawn side by side."""
    idx = np.linspace(len(data) * 0.2, len(data) * 0.8, n).astype(int)
    sub = data.subset(idx)
    x = as_tensor(sub)
    kept, after = complete_lower_half(
        pair, x, sub.positions, seed=seed, temperature=temperature, top_temperature=top_temperature
    )
    titles = [f"real pos {p:.2f}" for p in sub.positions] + ["kept top half"] * n + ["completed"] * n
    return figures.image_grid(
        torch.cat([x, kept, after]),
        out_path,
        ncols=n,
        titles=titles,
        suptitle=f"completion: top half kept, bottom half sampled (drawn by the {pair.drawing_decoder} decoder)",
    )


def sample_command(
    vqvae_path: str | Path,
    prior_path: str | Path,
    out_dir: str | Path,
    *,
    n: int = 16,
    position: float | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    allow_mismatch: bool = False,
    generation_decoder: str | Path | None = None,
    top_temperature: float | None = None,
) -> dict:
    """What ``brainvq sample`` does: N samples (near ``position`` or spread over the axial range),
    drawn by ``generation_decoder`` when given, else by the VQ-VAE's own (reconstruction) decoder."""
    if n < 1:
        raise ConfigError(f"the number of slices must be >= 1, got {n}")
    if position is not None and not 0 <= position <= 1:
        raise ConfigError(f"--position must be in [0, 1], got {position}")
    pair = ModelPair.load(vqvae_path, prior_path, allow_mismatch=allow_mismatch, generation_decoder=generation_decoder)
    positions = np.full(n, position, np.float32) if position is not None else spread_positions(n)
    gen, drawn = draw_and_save(
        pair,
        positions,
        Path(out_dir),
        temperature=temperature,
        top_temperature=top_temperature,
        seed=seed,
        progress=progress,
    )
    summary = {"vqvae": str(vqvae_path), "prior": str(prior_path), "positions": gen.positions.tolist(), **drawn}
    write_json(Path(out_dir) / "sample_summary.json", summary)
    return summary
