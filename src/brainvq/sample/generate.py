"""``brainvq sample``: generate code grids with the prior, decode them, save images and figures."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, load_prior, load_vqvae, read_metadata
from brainvq.data.dataset import as_tensor
from brainvq.data.errors import ConfigError
from brainvq.data.slices import SliceSet
from brainvq.io import write_json
from brainvq.models.hierarchical import Prior, conditions_for, is_hierarchical
from brainvq.models.vqvae import VQVAE
from brainvq.report import figures
from brainvq.sample.sampler import complete, sample_cached, sample_levels


@dataclass
class Generated:
    """Sampled code grids, their decoded images and what they were conditioned on."""

    codes: torch.Tensor  # (N,h,w) bottom-level codes
    images: torch.Tensor  # (N,1,H,W) in [0,1]
    positions: np.ndarray  # (N,) (NaN when unconditional)
    top: torch.Tensor | None = None  # (N,ht,wt) top-level codes of a two-level model
    scales: np.ndarray | None = None  # (N,) intensity scales drawn for a prior conditioned on them


def _levels(cfg_k: int, cfg_grid: int) -> str:
    return f"K={cfg_k}, grid {cfg_grid}x{cfg_grid}"


def check_pair(vqvae: VQVAE, prior: Prior, prior_path: str | Path = "prior") -> None:
    """Raise a clear ConfigError unless ``prior`` was built for ``vqvae``'s code grids (levels, K, sizes)."""
    v = vqvae.config
    if is_hierarchical(prior) != v.hierarchical:
        raise ConfigError(
            f"{prior_path}: a {'two' if is_hierarchical(prior) else 'single'}-level prior cannot be used with a "
            f"{'two' if v.hierarchical else 'single'}-level VQ-VAE; train the prior on this VQ-VAE's codes"
        )
    pairs = [(prior.bottom.config if is_hierarchical(prior) else prior.config, v.num_codes, v.grid_size, "")]
    if v.hierarchical:
        pairs.append((prior.top.config, v.top_num_codes, v.top_grid_size, "top "))
    for pc, k, grid, level in pairs:
        if pc.num_codes != k or pc.grid_size != grid:
            raise ConfigError(
                f"{prior_path}: {level}prior is for {_levels(pc.num_codes, pc.grid_size)} but the VQ-VAE's {level}level "
                f"has {_levels(k, grid)}"
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
    warnings.warn(message, stacklevel=2)
    return message


def load_models(
    vqvae_path: str | Path,
    prior_path: str | Path,
    device: str | torch.device | None = None,
    allow_mismatch: bool = False,
) -> tuple[VQVAE, Prior]:
    """Load both models (on the GPU when there is one, unless ``device``) and check that the
    prior was trained on this VQ-VAE's codes (:func:`check_pair`, :func:`check_fingerprint`;
    a mismatch allowed by ``allow_mismatch`` is kept as ``prior.pair_warning``)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vqvae, prior = load_vqvae(vqvae_path, device), load_prior(prior_path, device)
    check_pair(vqvae, prior, prior_path)
    prior.pair_warning = check_fingerprint(vqvae, prior_path, allow_mismatch)
    return vqvae, prior


def spread_positions(n: int, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """``n`` slice positions evenly spread over [low, high]."""
    return np.linspace(low, high, n).astype(np.float32) if n > 1 else np.array([(low + high) / 2], np.float32)


@torch.no_grad()
def generate(
    vqvae: VQVAE,
    prior: Prior,
    positions: np.ndarray | None,
    *,
    n: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,  # a cached sampling step costs about the same for 1 or 64 grids on CPU
    progress: bool = True,
    top_temperature: float | None = None,
) -> Generated:
    """Sample ``n`` (or ``len(positions)``) code grids and decode them."""
    if prior.config.conditional:
        if positions is None:
            raise ConfigError("this prior is conditioned on slice position: give positions")
        positions = np.asarray(positions, dtype=np.float32)
        n = len(positions)
    elif n is None:
        raise ConfigError("give the number of samples")
    gen = torch.Generator().manual_seed(seed)
    conds = conditions_for(prior, positions, generator=gen)  # intensity scales drawn here if needed
    codes, tops = [], []
    for start in tqdm(range(0, n, batch_size), desc="sample batches", disable=not progress, leave=False):
        m = min(batch_size, n - start)
        cond = conds[start : start + m] if conds is not None else None
        top, bottom = sample_levels(
            prior, m, cond, temperature, gen, progress=progress, top_temperature=top_temperature
        )
        codes.append(bottom.cpu())
        if top is not None:
            tops.append(top.cpu())
    codes_t = torch.cat(codes)
    top_t = torch.cat(tops) if tops else None
    images = decode_levels(vqvae, top_t, codes_t)
    pos = positions if positions is not None else np.full(n, np.nan, np.float32)
    scales = conds[:, 1].numpy() if conds is not None and conds.ndim == 2 else None
    return Generated(codes_t, images, pos, top_t, scales)


@torch.no_grad()
def decode_levels(vqvae: VQVAE, top: torch.Tensor | None, codes: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Decode (top, bottom) code grids in chunks on the VQ-VAE's device; images on the CPU."""
    device = next(vqvae.parameters()).device
    return torch.cat(
        [
            vqvae.decode(codes[i : i + chunk].to(device), None if top is None else top[i : i + chunk].to(device)).cpu()
            for i in range(0, len(codes), chunk)
        ]
    )


def save_generated(gen: Generated, out_dir: Path, num_codes: int, tag: str = "sample") -> dict:
    """Individual PNGs, a grid, the code maps (figure + tensor)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(gen.images):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(out_dir / "images" / f"{tag}_{i:03d}.png")
    titles = [f"pos {p:.2f}" if np.isfinite(p) else f"#{i}" for i, p in enumerate(gen.positions)]
    figures.image_grid(
        gen.images,
        out_dir / f"{tag}_grid.png",
        titles=titles,
        suptitle="generated slices (decoded prior samples)",
    )
    k = min(8, len(gen.codes))
    figures.code_map_figure(gen.images[:k], gen.codes[:k], num_codes, out_dir / f"{tag}_code_maps.png", titles[:k])
    scales = None if gen.scales is None else torch.from_numpy(gen.scales)
    torch.save(
        {"codes": gen.codes, "top": gen.top, "positions": torch.from_numpy(gen.positions), "scales": scales},
        out_dir / f"{tag}_codes.pt",
    )
    return {
        "grid": str(out_dir / f"{tag}_grid.png"),
        "code_maps": str(out_dir / f"{tag}_code_maps.png"),
        "n": len(gen.codes),
    }


@torch.no_grad()
def complete_lower_half(
    vqvae: VQVAE,
    prior: Prior,
    x: torch.Tensor,
    positions: np.ndarray,
    *,
    seed: int = 0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices ``x`` (B,1,H,W) with the lower half of their code grids drawn again by the prior:
    ``(kept upper half, completed slice)``, both decoded, on the CPU."""
    x = x.to(next(vqvae.parameters()).device)
    top, codes = vqvae.encode_levels(x)
    cond = conditions_for(prior, torch.from_numpy(np.asarray(positions, np.float32)), images=x)
    gen = torch.Generator().manual_seed(seed)
    if top is None:
        done_top, done = None, complete(prior, codes, cond, generator=gen, temperature=temperature)
    else:  # complete the top grid's lower half first, then draw the whole bottom grid given it
        done_top = complete(prior.top, top, cond, generator=gen, temperature=temperature)
        done = sample_cached(prior.bottom, len(x), cond, temperature, gen, top=done_top)
    kept = vqvae.decode(codes, top).cpu()
    kept[:, :, kept.shape[-2] // 2 :] = 0
    return kept, vqvae.decode(done, done_top).cpu()


def completion_figure(
    vqvae: VQVAE,
    prior: Prior,
    data: SliceSet,
    out_path: Path,
    *,
    n: int = 6,
    seed: int = 0,
    temperature: float = 1.0,
) -> Path:
    """Real slices, their top-half-kept code grids completed by the prior, decoded side by side."""
    idx = np.linspace(len(data) * 0.2, len(data) * 0.8, n).astype(int)
    sub = data.subset(idx)
    x = as_tensor(sub)
    kept, after = complete_lower_half(vqvae, prior, x, sub.positions, seed=seed, temperature=temperature)
    titles = [f"real pos {p:.2f}" for p in sub.positions] + ["kept top half"] * n + ["completed"] * n
    return figures.image_grid(
        torch.cat([x, kept, after]),
        out_path,
        ncols=n,
        titles=titles,
        suptitle="completion: top half kept, bottom half sampled",
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
) -> dict:
    """What ``brainvq sample`` does: N samples (near ``position`` or spread over the axial range)."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if not temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    if position is not None and not 0 <= position <= 1:
        raise ConfigError(f"--position must be in [0, 1], got {position}")
    vqvae, prior = load_models(vqvae_path, prior_path, allow_mismatch=allow_mismatch)
    positions = np.full(n, position, np.float32) if position is not None else spread_positions(n)
    gen = generate(
        vqvae,
        prior,
        positions if prior.config.conditional else None,
        n=n,
        temperature=temperature,
        seed=seed,
        progress=progress,
    )
    out = save_generated(gen, Path(out_dir), vqvae.config.num_codes)
    summary = {
        "vqvae": str(vqvae_path),
        "prior": str(prior_path),
        "temperature": temperature,
        "seed": seed,
        "positions": gen.positions.tolist(),
        **({"intensity_scales": gen.scales.tolist()} if gen.scales is not None else {}),
        **out,
        **({"warnings": [prior.pair_warning]} if prior.pair_warning else {}),
    }
    write_json(Path(out_dir) / "sample_summary.json", summary)
    return summary
