"""Prior training throughput: brainvq's training path against today's eager reference, in one run.

Reports, for

* ``reference``: the two-level prior (VQ-VAE-2) with the training defaults of ``brainvq
  train-prior`` trained eagerly, as every brainvq before 0.5 did (top PixelCNN over the 16x16
  top grid, bottom PixelCNN over the 64x64 grid conditioned on the top codes; one training step =
  both levels' losses),
* ``brainvq``: the same prior, same initial weights, same batches, trained the way ``brainvq
  train-prior`` trains it now (the loss through ``torch.compile``, :mod:`brainvq.train.compiled`),
* optionally (``--single-level``) the single-level 64x64 PixelCNN of brainvq before the two-level
  VQ-VAE,

training code grids (= training images) per second in fp32 (fwd + bwd + AdamW step, the loss of
``brainvq.models.levels.prior_bits``, random codes and slice positions), FLOPs per training image
(forward and backward counted by ``torch.utils.flop_counter.FlopCounterMode``), the achieved
GFLOP/s as a fraction of this machine's fp32 matmul GFLOP/s at the same thread count, measured in
the same run, and the bits per code of both runs step by step (same weights and batches, so they
must agree up to rounding). The models' steps are interleaved (always stepping the one with the
least time so far), so background load on a shared machine slows both alike; the ratio
brainvq / reference is the number to quote. The first compiled step (compiling) is reported
apart and excluded from images/s with the other warm-up steps. Run::

    python benchmarks/bench_prior.py --seconds 60 --threads 2 --out runs/bench_prior.json
    python benchmarks/bench_prior.py --seconds 60 --threads 1 --out runs/bench_prior_1t.json
"""

from __future__ import annotations

import argparse
import copy
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
from brainvq.train.compiled import CompiledLoss  # noqa: E402
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


def loss_of(prior: Prior, batch: tuple[Codes, torch.Tensor], bits=prior_bits) -> torch.Tensor:
    """The training loss of ``brainvq train-prior`` (nats; both levels' sum for a two-level prior);
    ``bits``: ``prior_bits`` itself (eager) or a :class:`CompiledLoss` of it."""
    return bits(prior, *batch)["loss"] * math.log(2)


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

    def __init__(
        self, prior: Prior, batches: list[tuple[Codes, torch.Tensor]], lr: float, compiled: bool = False
    ) -> None:
        self.prior = prior.train()
        # brainvq's training path: the compiled loss and the fused AdamW of PriorModule
        self.opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=1e-5, fused=compiled)
        self.batches = batches
        self.bits = CompiledLoss(prior_bits, prior) if compiled else prior_bits
        self.steps, self.elapsed, self.steady_time, self.steady_images = 0, 0.0, 0.0, 0
        self.first_step_seconds, self.losses = 0.0, []

    def step(self) -> None:
        batch = self.batches[self.steps % len(self.batches)]
        t = time.perf_counter()
        loss = loss_of(self.prior, batch, self.bits)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dt = time.perf_counter() - t
        self.losses.append(float(loss.detach()) / math.log(2))
        if self.steps == 0:  # warm-up; for the compiled run also its compile time, which stays out of
            self.first_step_seconds = dt  # the interleaving so that both runs get the same step time
        else:
            self.elapsed += dt
        self.steps += 1
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


def build_priors(grid: int, top_downsample: int, single_level: bool = False) -> dict[str, Prior]:
    """The two-level prior as ``brainvq train-prior`` builds it, twice with the same weights
    (reference and brainvq), and optionally the single-level PixelCNN."""
    vq = VQVAEConfig(image_size=grid * 4, top_downsample=top_downsample)
    two = HierarchicalPrior(prior_config_for(PriorTrainConfig(), vq, synthetic_scales()))
    priors: dict[str, Prior] = {"reference": two, "brainvq": copy.deepcopy(two)}
    if single_level:
        priors["single_level"] = GatedPixelCNN(dataclasses.replace(PixelCNNConfig(), grid_size=grid))
    return priors


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
    p.add_argument("--single-level", action="store_true", help="also time the former single-level 64x64 PixelCNN")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_prior.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    malloc_tuned = keep_freed_memory()  # as brainvq's training does; process-wide, so both alike
    load_before = load_average()
    peak = matmul_gflops(a.peak_size)
    priors = build_priors(a.grid, a.top_downsample, a.single_level)
    runs, flops = {}, {}
    for name, prior in priors.items():
        batches = random_batches(prior, a.batch_size, 4, a.seed)
        flops[name] = train_flops_per_image(prior, batches[0])
        runs[name] = Run(prior, batches, a.lr, compiled=name == "brainvq")
    t0 = time.perf_counter()
    train_side_by_side(runs, a.seconds, max(a.min_steps, WARMUP_STEPS + 1))
    wall = time.perf_counter() - t0
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
        "matmul_gflops_after": matmul_gflops(a.peak_size),
        "wall_seconds": wall,
        "compile": runs["brainvq"].bits.record(),
    }
    for name, r in runs.items():
        results[name] = _result(r, priors[name], flops[name], peak)
    ours, ref = results["brainvq"], results["reference"]
    same = min(len(runs["brainvq"].losses), len(runs["reference"].losses))
    diffs = [abs(x - y) for x, y in zip(runs["brainvq"].losses[:same], runs["reference"].losses[:same], strict=True)]
    results["ratio_brainvq_over_reference"] = {
        "images_per_second": ours["images_per_second"] / ref["images_per_second"],
        "fraction_of_matmul_peak": ours["fraction_of_matmul_peak"] / ref["fraction_of_matmul_peak"],
    }
    results["same_steps_bits_per_code"] = {
        "steps": same,
        "brainvq_last": runs["brainvq"].losses[same - 1],
        "reference_last": runs["reference"].losses[same - 1],
        "max_abs_difference": max(diffs),
    }
    if "single_level" in results:
        one = results["single_level"]
        results["ratio_two_over_single"] = {
            "images_per_second": ours["images_per_second"] / one["images_per_second"],
            "train_gflop_per_image": ours["train_gflop_per_image"] / one["train_gflop_per_image"],
        }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    _print(results, runs, peak)
    return results


def _result(r: Run, prior: Prior, flops: float, peak: float) -> dict:
    ips = r.steady_images / r.steady_time
    res = {
        "steps": r.steps,
        "train_seconds": r.elapsed,
        "first_step_seconds": r.first_step_seconds,
        "seconds_per_step": r.steady_time / (r.steps - WARMUP_STEPS),
        "images_per_second": ips,
        "train_gflop_per_image": flops / 1e9,
        "achieved_gflops": ips * flops / 1e9,
        "parameters": sum(q.numel() for q in prior.parameters()),
        "config": prior.config.to_dict(),
    }
    res["fraction_of_matmul_peak"] = res["achieved_gflops"] / peak
    return res


def _print(results: dict, runs: dict[str, Run], peak: float) -> None:
    print(json.dumps({k: v for k, v in results.items() if k not in runs}, indent=1))
    for name in runs:
        r = results[name]
        print(
            f"{name}: {r['images_per_second']:.2f} images/s ({r['steps']} steps, first {r['first_step_seconds']:.1f} s), "
            f"{r['train_gflop_per_image']:.2f} GFLOP/image, {r['achieved_gflops']:.1f} GFLOP/s = "
            f"{100 * r['fraction_of_matmul_peak']:.1f} % of the {peak:.1f} GFLOP/s fp32 matmul peak "
            f"({results['threads']} threads)"
        )
    ratio, same = results["ratio_brainvq_over_reference"], results["same_steps_bits_per_code"]
    print(
        f"brainvq / reference: {ratio['images_per_second']:.2f}x images/s; bits per code after {same['steps']} steps "
        f"{same['brainvq_last']:.4f} vs {same['reference_last']:.4f} (largest step difference "
        f"{same['max_abs_difference']:.1e}); load average {results['load_average_before']} -> "
        f"{results['load_average_after']}"
    )


if __name__ == "__main__":
    main()
