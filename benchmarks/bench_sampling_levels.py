"""Sampling seconds per slice of the two-level prior: cached against naive, and the full pipeline.

Untrained models of the default sizes (``brainvq train-prior`` on the default two-level VQ-VAE:
top PixelCNN over the 16x16 top grid, bottom PixelCNN over the 64x64 grid given the top codes);
sampling time does not depend on the weights. Measured in one run, fp32:

1. *Cached vs naive*, batch ``--n``, same seed. The top level is drawn in full by both samplers.
   The naive sampler runs one full forward pass per code, so on the 64x64 bottom grid it draws
   only the first ``--naive-rows`` rows (the later rows are passed as already known codes, which
   it skips) and its full-grid time is extrapolated linearly (every naive position costs one
   full forward pass, whatever its row). The cached sampler draws the whole bottom grid. Both
   must give identical codes: the whole top grid, and the first rows of the bottom grid.
2. *Full cached two-level sampling* of ``--full-batch`` slices at spread slice positions: top
   grid, bottom grid, VQ-VAE decoding (what ``brainvq generate`` does), seconds per slice; and,
   with ``--single-level``, the cached single-level 64x64 PixelCNN of earlier brainvq for comparison.

Run::

    python benchmarks/bench_sampling_levels.py --n 8 --naive-rows 2 --full-batch 64 --out runs/bench_sampling_levels.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from brainvq.models.conditioning import ScaleDistribution
from brainvq.models.hierarchical import HierarchicalPrior
from brainvq.models.levels import Codes, conditions_for
from brainvq.models.pair import ModelPair
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import sample_cached, sample_naive
from brainvq.models.vqvae import VQVAE, VQVAEConfig
from brainvq.train.prior import PriorTrainConfig, prior_config_for


def timed(fn, *args, **kwargs) -> tuple[float, torch.Tensor]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t
    print(f"  {getattr(fn, '__name__', fn)}: {dt:.2f} s (load average {load_average()})", file=sys.stderr, flush=True)
    return dt, out


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def synthetic_scales() -> ScaleDistribution:
    """Intensity scales for an untrained prior of the default configuration (timing does not depend on them)."""
    g = torch.Generator().manual_seed(0)
    return ScaleDistribution.fit(torch.rand(256, generator=g), 0.8 + 0.1 * torch.rand(256, generator=g))


def spread_conditions(prior: HierarchicalPrior, n: int, seed: int) -> torch.Tensor:
    """Slice positions spread over [0.1, 0.9] (with drawn intensity scales when the prior needs them)."""
    return conditions_for(prior, torch.linspace(0.1, 0.9, n), generator=gen(seed))


def cached_vs_naive(prior: HierarchicalPrior, n: int, naive_rows: int, seed: int) -> dict:
    """Both samplers on both levels, batch ``n``; the naive bottom level on its first ``naive_rows`` rows."""
    cond = spread_conditions(prior, n, seed)
    t_top_c, top_c = timed(sample_cached, prior.top, n, cond, 1.0, gen(seed))
    t_top_n, top_n = timed(sample_naive, prior.top, n, cond, 1.0, gen(seed))
    g = prior.bottom.config.grid_size
    rows = min(naive_rows, g)
    known = torch.zeros(n, g, g, dtype=torch.bool)
    known[:, rows:] = True  # later rows: given (zeros), so the naive sampler draws only the first rows
    t_bot_c, bot_c = timed(sample_cached, prior.bottom, n, cond, 1.0, gen(seed + 1), top=top_c)
    t_bot_n, bot_n = timed(
        sample_naive,
        prior.bottom,
        n,
        cond,
        1.0,
        gen(seed + 1),
        prefix=torch.zeros(n, g, g, dtype=torch.long),
        prefix_mask=known,
        top=top_c,
    )
    t_bot_n_full = t_bot_n * g / rows
    identical_top = bool(torch.equal(top_c, top_n))
    identical_bottom = bool(torch.equal(bot_c[:, :rows], bot_n[:, :rows]))
    cached = (t_top_c + t_bot_c) / n
    naive = (t_top_n + t_bot_n_full) / n
    return {
        "n": n,
        "top": {
            "grid": prior.top.config.grid_size,
            "cached_seconds_per_slice": t_top_c / n,
            "naive_seconds_per_slice": t_top_n / n,
            "speedup": t_top_n / t_top_c,
            "identical_codes": identical_top,
        },
        "bottom": {
            "grid": g,
            "naive_rows_drawn": rows,
            "cached_seconds_per_slice": t_bot_c / n,
            "naive_seconds_per_slice_measured_rows": t_bot_n / n,
            "naive_seconds_per_slice_extrapolated": t_bot_n_full / n,
            "cached_seconds_per_row": t_bot_c / n / g,
            "naive_seconds_per_row": t_bot_n / n / rows,
            "speedup": t_bot_n_full / t_bot_c,
            "identical_codes_in_drawn_rows": identical_bottom,
        },
        "two_level_cached_seconds_per_slice": cached,
        "two_level_naive_seconds_per_slice_extrapolated": naive,
        "two_level_speedup": naive / cached,
        "identical_codes": identical_top and identical_bottom,
    }


def decode(pair: ModelPair, codes: Codes) -> torch.Tensor:
    """Decoded slices on the CPU, 32 at a time (as ``brainvq sample`` decodes)."""
    return pair.decode(codes, chunk=32).cpu()


def full_pipeline(prior: HierarchicalPrior, vqvae: VQVAE, batch: int, seed: int) -> dict:
    """Cached top, cached bottom and decoding of ``batch`` slices at spread positions (as ``brainvq generate``)."""
    cond = spread_conditions(prior, batch, seed)
    g = gen(seed)
    t_top, top = timed(sample_cached, prior.top, batch, cond, 1.0, g)
    t_bot, bottom = timed(sample_cached, prior.bottom, batch, cond, 1.0, g, top=top)
    t_dec, images = timed(decode, ModelPair(vqvae, prior), Codes(top, bottom))
    total = t_top + t_bot + t_dec
    return {
        "batch": batch,
        "image_size": images.shape[-1],
        "top_seconds_per_slice": t_top / batch,
        "bottom_seconds_per_slice": t_bot / batch,
        "decode_seconds_per_slice": t_dec / batch,
        "seconds_per_slice": total / batch,
        "total_seconds": total,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, default=64, help="bottom code grid (the VQ-VAE's latent grid)")
    p.add_argument("--top-downsample", type=int, default=4)
    p.add_argument("--n", type=int, default=8, help="batch of the cached-vs-naive comparison")
    p.add_argument("--naive-rows", type=int, default=2, help="bottom rows drawn by the naive sampler")
    p.add_argument("--full-batch", type=int, default=64, help="batch of the full cached two-level sampling")
    p.add_argument("--single-level", action="store_true", help="also time the single-level 64x64 PixelCNN (cached)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_sampling_levels.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    vq_cfg = VQVAEConfig(image_size=a.grid * 4, top_downsample=a.top_downsample)
    prior = HierarchicalPrior(prior_config_for(PriorTrainConfig(), vq_cfg, synthetic_scales())).eval()
    vqvae = VQVAE(vq_cfg).eval()
    results: dict = {
        "dtype": "float32 (bf16 off)",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_average(),
        "models": "untrained, default sizes (timing does not depend on the weights)",
        "prior_config": prior.config.to_dict(),
    }
    results["cached_vs_naive"] = cached_vs_naive(prior, a.n, a.naive_rows, a.seed)
    results["full_cached_two_level"] = full_pipeline(prior, vqvae, a.full_batch, a.seed)
    if a.single_level:
        single = GatedPixelCNN(PixelCNNConfig(grid_size=a.grid)).eval()
        cond = torch.linspace(0.1, 0.9, a.full_batch)
        t, _ = timed(sample_cached, single, a.full_batch, cond, 1.0, gen(a.seed))
        results["single_level_cached"] = {"batch": a.full_batch, "seconds_per_slice_codes_only": t / a.full_batch}
    results["load_average_after"] = load_average()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "prior_config"}, indent=1))
    if not results["cached_vs_naive"]["identical_codes"]:
        raise SystemExit("cached and naive samplers disagree")
    return results


if __name__ == "__main__":
    main()
