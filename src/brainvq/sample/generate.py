"""``brainvq sample``: generate code grids with the prior, decode them, save images and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from brainvq.checkpoint import load_prior, load_vqvae
from brainvq.data.dataset import as_tensor
from brainvq.data.errors import ConfigError
from brainvq.data.slices import SliceSet
from brainvq.models.pixelcnn import GatedPixelCNN
from brainvq.models.vqvae import VQVAE
from brainvq.report import figures
from brainvq.sample.sampler import complete, sample_cached
from brainvq.train.common import write_json


@dataclass
class Generated:
    """Sampled code grids, their decoded images and the positions they were conditioned on."""

    codes: torch.Tensor  # (N,h,w)
    images: torch.Tensor  # (N,1,H,W) in [0,1]
    positions: np.ndarray  # (N,) (NaN when unconditional)


def load_models(vqvae_path: str | Path, prior_path: str | Path) -> tuple[VQVAE, GatedPixelCNN]:
    """Load both models and check that the prior was trained on this VQ-VAE's code grid."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vqvae, prior = load_vqvae(vqvae_path, device), load_prior(prior_path, device)
    if prior.config.num_codes != vqvae.config.num_codes or prior.config.grid_size != vqvae.config.grid_size:
        raise ConfigError(
            f"{prior_path}: prior is for K={prior.config.num_codes}, grid {prior.config.grid_size} but the VQ-VAE has "
            f"K={vqvae.config.num_codes}, grid {vqvae.config.grid_size}"
        )
    return vqvae, prior


def spread_positions(n: int, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """``n`` slice positions evenly spread over [low, high]."""
    return np.linspace(low, high, n).astype(np.float32) if n > 1 else np.array([(low + high) / 2], np.float32)


@torch.no_grad()
def generate(
    vqvae: VQVAE,
    prior: GatedPixelCNN,
    positions: np.ndarray | None,
    *,
    n: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
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
    codes = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        cond = torch.from_numpy(positions[start : start + m]) if prior.config.conditional else None
        codes.append(sample_cached(prior, m, cond, temperature, gen, progress=progress).cpu())
    codes_t = torch.cat(codes)
    device = next(vqvae.parameters()).device
    images = torch.cat([vqvae.decode(c.to(device)).cpu() for c in codes_t.split(32)])
    pos = positions if positions is not None else np.full(n, np.nan, np.float32)
    return Generated(codes_t, images, pos)


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
    torch.save(
        {"codes": gen.codes, "positions": torch.from_numpy(gen.positions)},
        out_dir / f"{tag}_codes.pt",
    )
    return {
        "grid": str(out_dir / f"{tag}_grid.png"),
        "code_maps": str(out_dir / f"{tag}_code_maps.png"),
        "n": len(gen.codes),
    }


@torch.no_grad()
def completion_figure(
    vqvae: VQVAE,
    prior: GatedPixelCNN,
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
    x = as_tensor(sub).to(next(vqvae.parameters()).device)
    codes = vqvae.encode(x)
    cond = torch.from_numpy(np.asarray(sub.positions, np.float32)) if prior.config.conditional else None
    done = complete(prior, codes, cond, generator=torch.Generator().manual_seed(seed), temperature=temperature)
    before, after = vqvae.decode(codes).cpu(), vqvae.decode(done).cpu()
    masked = before.clone()
    masked[:, :, before.shape[-2] // 2 :] = 0
    rows = torch.cat([x.cpu(), masked, after])
    titles = [f"real pos {p:.2f}" for p in sub.positions] + ["kept top half"] * n + ["completed"] * n
    return figures.image_grid(
        rows,
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
) -> dict:
    """What ``brainvq sample`` does: N samples (near ``position`` or spread over the axial range)."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if not temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    if position is not None and not 0 <= position <= 1:
        raise ConfigError(f"--position must be in [0, 1], got {position}")
    vqvae, prior = load_models(vqvae_path, prior_path)
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
        **out,
    }
    write_json(Path(out_dir) / "sample_summary.json", summary)
    return summary
