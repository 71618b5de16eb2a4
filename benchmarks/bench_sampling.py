"""Cached vs naive PixelCNN sampling, measured in one run on the same model and seed.

The naive sampler recomputes the whole grid for each of the H*W positions; the cached
sampler reuses per-layer activations. Both must return identical code grids. Run::

    python benchmarks/bench_sampling.py --grid 32 --n 8 --out runs/bench_sampling.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.models.sampling import sample_cached, sample_naive


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--codes", type=int, default=256)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--n", type=int, default=8, help="batch of samples drawn by each sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_sampling.json")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    cfg = PixelCNNConfig(num_codes=a.codes, grid_size=a.grid, hidden=a.hidden, n_layers=a.layers)
    model = GatedPixelCNN(cfg).eval()
    cond = torch.linspace(0.1, 0.9, a.n)
    times, samples = {}, {}
    for name, fn in (("cached", sample_cached), ("naive", sample_naive)):
        t = time.perf_counter()
        samples[name] = fn(model, a.n, cond, 1.0, torch.Generator().manual_seed(a.seed))
        times[name] = time.perf_counter() - t
    identical = bool(torch.equal(samples["cached"], samples["naive"]))
    result = {
        "config": cfg.to_dict(),
        "n": a.n,
        "threads": torch.get_num_threads(),
        "naive_seconds": times["naive"],
        "cached_seconds": times["cached"],
        "speedup": times["naive"] / times["cached"],
        "identical_samples": identical,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not identical:
        raise SystemExit("cached and naive samplers disagree")
    return result


if __name__ == "__main__":
    main()
