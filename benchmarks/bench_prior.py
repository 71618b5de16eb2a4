"""Prior training throughput: the two-level prior against the single-level 64x64 PixelCNN, in one run.

Reports, for

* ``two_level``: brainvq's two-level prior (VQ-VAE-2) with the training defaults of
  ``brainvq train-prior`` (top PixelCNN over the 16x16 top grid, bottom PixelCNN over the 64x64
  grid conditioned on the top codes; one training step = both levels' losses), and
* ``single_level``: the single-level prior of brainvq before the two-level VQ-VAE,
  ``GatedPixelCNN(PixelCNNConfig())`` over the 64x64 grid,

training code grids (= training images) per second in fp32 (fwd + bwd + AdamW step, the loss of
``brainvq.models.levels.prior_bits``, random codes and slice positions), FLOPs per training image
(forward and backward counted by ``torch.utils.flop_counter.FlopCounterMode``), and the achieved
GFLOP/s as a fraction of this machine's fp32 matmul GFLOP/s, measured in the same run. The two
models' steps are interleaved (always stepping the one with the least time so far), so background
load on a shared machine slows both alike; the ratio two_level / single_level is the number to quote.
Run::

    python benchmarks/bench_prior.py --seconds 60 --out runs/bench_prior.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling_levels import synthetic_scales  # noqa: E402
from bench_vqvae import matmul_gflops  # noqa: E402

from brainvq.models.hierarchical import HierarchicalPrior, Prior  # noqa: E402
from brainvq.models.levels import Codes, conditions_for, prior_bits, prior_levels  # noqa: E402
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig  # noqa: E402
from brainvq.models.vqvae import VQVAEConfig  # noqa: E402
from brainvq.runtime import keep_freed_memory  # noqa: E402
from brainvq.train.prior import PriorTrainConfig, prior_config_for  # noqa: E402

WARMUP_STEPS = 2  # excluded from images/s (allocator and oneDNN warm-up)


def random_batches(prior: Prior, batch: int, count: int, seed: int) -> list[tuple[Codes, torch.Tensor]]:
    """``count`` batches of random (code grids, positions) shaped for ``prior``."""
    g = torch.Generator().manual_seed(seed)
    levels = prior_levels(prior)
    bottom = levels["bottom"].config
    out = []
    for _ in range(count):
        codes = torch.randint(0, bottom.num_codes, (batch, bottom.grid_size, bottom.grid_size), generator=g)
        pos = conditions_for(prior, torch.rand(batch, generator=g), generator=g)  # + scales if it needs them
        top = None
        if "top" in levels:
            t = levels["top"].config
            top = torch.randint(0, t.num_codes, (batch, t.grid_size, t.grid_size), generator=g)
        out.append((Codes(top, codes), pos))
    return out


def loss_of(prior: Prior, batch: tuple[Codes, torch.Tensor]) -> torch.Tensor:
    """The training loss of ``brainvq train-prior`` (nats; both levels' sum for a two-level prior)."""
    return prior_bits(prior, *batch)["loss"] * math.log(2)


def train_flops_per_image(prior: Prior, batch: tuple[Codes, torch.Tensor]) -> float:
    """FLOPs of forward + backward for one batch, counted op by op, divided by the batch size
    (the optimiser step and elementwise ops are not counted: FlopCounterMode counts matmuls and
    convolutions, which dominate)."""
    prior.train()
    with FlopCounterMode(display=False) as fc:
        loss_of(prior, batch).backward()
    prior.zero_grad(set_to_none=True)
    return float(fc.get_total_flops()) / len(batch[0])


class Run:
    """One prior's training state; :meth:`step` runs one timed optimisation step."""

    def __init__(self, prior: Prior, batches: list[tuple[Codes, torch.Tensor]], lr: float) -> None:
        self.prior = prior.train()
        self.opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=1e-5)
        self.batches = batches
        self.steps, self.elapsed, self.steady_time, self.steady_images = 0, 0.0, 0.0, 0

    def step(self) -> None:
        batch = self.batches[self.steps % len(self.batches)]
        t = time.perf_counter()
        loss = loss_of(self.prior, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dt = time.perf_counter() - t
        self.steps += 1
        self.elapsed += dt
        if self.steps > WARMUP_STEPS:
            self.steady_time += dt
            self.steady_images += len(batch[0])


def train_side_by_side(runs: dict[str, Run], seconds: float, min_steps: int) -> None:
    """Step every run until it has ``seconds`` of step time and ``min_steps`` steps, interleaving
    their steps (always stepping the run with the least time so far)."""
    while True:
        behind = [r for r in runs.values() if r.elapsed < seconds or r.steps < min_steps]
        if not behind:
            return
        min(behind, key=lambda r: r.elapsed).step()


def build_priors(grid: int, top_downsample: int) -> dict[str, Prior]:
    """The two-level prior as ``brainvq train-prior`` builds it, and the single-level PixelCNN."""
    vq = VQVAEConfig(image_size=grid * 4, top_downsample=top_downsample)
    two = HierarchicalPrior(prior_config_for(PriorTrainConfig(), vq, synthetic_scales()))
    one = GatedPixelCNN(dataclasses.replace(PixelCNNConfig(), grid_size=grid))
    return {"two_level": two, "single_level": one}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="step time per model (steady state + warm-up)")
    p.add_argument("--min-steps", type=int, default=WARMUP_STEPS + 3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grid", type=int, default=64, help="bottom code grid (the VQ-VAE's latent grid)")
    p.add_argument("--top-downsample", type=int, default=4, help="top grid = grid / top-downsample")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-size", type=int, default=2048, help="side of the fp32 matmul that measures the peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_prior.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    malloc_tuned = keep_freed_memory()  # as brainvq's training does; process-wide, so both alike
    load_before = load_average()
    peak = matmul_gflops(a.peak_size)
    priors = build_priors(a.grid, a.top_downsample)
    runs, flops = {}, {}
    for name, prior in priors.items():
        batches = random_batches(prior, a.batch_size, 4, a.seed)
        flops[name] = train_flops_per_image(prior, batches[0])
        runs[name] = Run(prior, batches, a.lr)
    t0 = time.perf_counter()
    train_side_by_side(runs, a.seconds, max(a.min_steps, WARMUP_STEPS + 1))
    wall = time.perf_counter() - t0
    peak_after = matmul_gflops(a.peak_size)
    results: dict = {
        "dtype": "float32 (no autocast, bf16 off)",
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "keep_freed_memory": malloc_tuned,
        "batch_size": a.batch_size,
        "data": "random codes and slice positions (timing does not depend on the data)",
        "matmul_gflops": peak,
        "matmul_gflops_after": peak_after,
        "wall_seconds": wall,
    }
    for name, r in runs.items():
        ips = r.steady_images / r.steady_time
        prior = priors[name]
        res = {
            "steps": r.steps,
            "train_seconds": r.elapsed,
            "seconds_per_step": r.steady_time / (r.steps - WARMUP_STEPS),
            "images_per_second": ips,
            "train_gflop_per_image": flops[name] / 1e9,
            "achieved_gflops": ips * flops[name] / 1e9,
            "parameters": sum(q.numel() for q in prior.parameters()),
            "config": prior.config.to_dict(),
        }
        res["fraction_of_matmul_peak"] = res["achieved_gflops"] / peak
        results[name] = res
    two, one = results["two_level"], results["single_level"]
    results["ratio_two_over_single"] = {
        "images_per_second": two["images_per_second"] / one["images_per_second"],
        "train_gflop_per_image": two["train_gflop_per_image"] / one["train_gflop_per_image"],
        "fraction_of_matmul_peak": two["fraction_of_matmul_peak"] / one["fraction_of_matmul_peak"],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k not in ("two_level", "single_level")}, indent=1))
    for name in ("two_level", "single_level"):
        r = results[name]
        print(
            f"{name}: {r['images_per_second']:.2f} images/s ({r['steps']} steps), "
            f"{r['train_gflop_per_image']:.2f} GFLOP/image, {r['achieved_gflops']:.1f} GFLOP/s = "
            f"{100 * r['fraction_of_matmul_peak']:.1f} % of the {peak:.1f} GFLOP/s fp32 matmul peak"
        )
    ratio = results["ratio_two_over_single"]
    print(
        f"two-level / single-level: {ratio['images_per_second']:.2f}x images/s, "
        f"{ratio['train_gflop_per_image']:.3f}x FLOPs per image; load average {load_before} -> {results['load_average_after']}"
    )
    return results


if __name__ == "__main__":
    main()
