"""Reconstruction quality of a VQ-VAE: per-image SSIM/PSNR and codebook statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from tqdm.auto import tqdm

from brainvq.data.brainmask import SSIM_BRAIN, brain_mask
from brainvq.data.dataset import as_tensor
from brainvq.data.slices import SliceSet
from brainvq.models.vqvae import VQVAE


def per_image_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, data range 1) of each image pair, shape (N,)."""
    return structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")


def brain_region_ssim(
    rec: torch.Tensor, x: torch.Tensor, dilate: int = SSIM_BRAIN.dilate, foreground: float = SSIM_BRAIN.threshold
) -> torch.Tensor:
    """SSIM map (Gaussian window 11) averaged over each image's brain: pixels of ``x`` brighter than
    ``foreground``, dilated by ``dilate`` px (:data:`~brainvq.data.brainmask.SSIM_BRAIN`); shape (N,). Whole-image SSIM counts the black
    background, which any decoder reproduces, so it flatters; this does not."""
    _, ssim_map = structural_similarity_index_measure(rec, x, data_range=1.0, reduction="none", return_full_image=True)
    mask = brain_mask(x, SSIM_BRAIN.but(threshold=foreground, dilate=dilate)).float()
    return (ssim_map * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def per_image_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (data range 1) of each image pair, shape (N,)."""
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))


@dataclass
class ReconstructionResult:
    """Per-image scores, code grids and reconstructions of a whole split."""

    ssim: np.ndarray
    psnr: np.ndarray
    brain_ssim: np.ndarray  # SSIM averaged over the brain mask dilated by 3 px
    codes: torch.Tensor  # (N,h,w) int64
    reconstructions: torch.Tensor  # (N,1,H,W) float
    codebook: dict[str, float]

    def summary(self) -> dict[str, float]:
        """Mean/min/5th-percentile SSIM and PSNR plus codebook usage and perplexity."""
        return {
            "n_images": int(len(self.ssim)),
            "ssim_mean": float(self.ssim.mean()),
            "ssim_min": float(self.ssim.min()),
            "ssim_p05": float(np.percentile(self.ssim, 5)),
            "brain_ssim_mean": float(self.brain_ssim.mean()),
            "brain_ssim_p05": float(np.percentile(self.brain_ssim, 5)),
            "psnr_mean": float(self.psnr.mean()),
            "psnr_min": float(self.psnr.min()),
            "psnr_p05": float(np.percentile(self.psnr, 5)),
            "codebook_usage": self.codebook["usage"],
            "codebook_perplexity": self.codebook["perplexity"],
            "codes_used": self.codebook["codes_used"],
        }


@torch.no_grad()
def reconstruct(model: VQVAE, data: SliceSet, batch_size: int = 64, progress: bool = True) -> ReconstructionResult:
    """Encode and decode every slice of ``data`` with ``model`` (in eval mode)."""
    model.eval()
    model.quantizer.reset_usage()
    images = as_tensor(data)
    device = next(model.parameters()).device
    ssim, psnr, brain, codes, recs = [], [], [], [], []
    for i in tqdm(range(0, len(images), batch_size), desc="reconstruct", disable=not progress, leave=False):
        x = images[i : i + batch_size].to(device)
        out = model(x)
        rec = out.reconstruction.float().clamp(0, 1)
        ssim.append(per_image_ssim(rec, x).cpu())
        psnr.append(per_image_psnr(rec, x).cpu())
        brain.append(brain_region_ssim(rec, x).cpu())
        codes.append(out.codes.cpu())
        recs.append(rec.cpu())
    return ReconstructionResult(
        ssim=torch.cat(ssim).numpy(),
        psnr=torch.cat(psnr).numpy(),
        brain_ssim=torch.cat(brain).numpy(),
        codes=torch.cat(codes),
        reconstructions=torch.cat(recs),
        codebook=model.quantizer.usage_stats(),
    )
