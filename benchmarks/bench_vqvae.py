"""VQ-VAE training throughput vs. the reference architecture, measured in one run.

Reports, for brainvq's default VQ-VAE and the baseline (Conv 32 s2 -> Conv 64 s2 -> 1x1 to D,
mirrored transposed convolutions, same EMA quantiser):

* training images/second (fwd + bwd + optimiser step, steady state),
* model FLOPs per training image (3x the counted forward FLOPs of encoder and decoder, plus
  the nearest-code search, which has no backward pass) and achieved GFLOP/s as a fraction
  of this machine's fp32 matmul GFLOP/s, measured in the same run,
* validation SSIM after training both for the same wall time (their steps are interleaved,
  so load from other processes on a shared machine slows both alike),

and the ratios ours/baseline. Run::

    python benchmarks/bench_vqvae.py --data data/standin --seconds 120 --out runs/bench_vqvae.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_vqvae import BaselineVQVAE  # noqa: E402

from brainvq.data.dataset import as_tensor  # noqa: E402
from brainvq.data.sources import DataConfig, load_split  # noqa: E402
from brainvq.metrics.reconstruction import per_image_ssim  # noqa: E402
from brainvq.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from brainvq.runtime import keep_freed_memory  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` fp32 matmul rate of this machine in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _flops(fn, *args) -> tuple[float, torch.Tensor]:
    with FlopCounterMode(display=False) as fc:
        out = fn(*args)
    return float(fc.get_total_flops()), out


@torch.no_grad()
def train_flops(model: VQVAE, size: int) -> float:
    """FLOPs of one training image: 3x (forward + backward) for encoder and decoder, 1x for
    the nearest-code search (no gradient flows through it). Slightly high: it includes the
    first convolution's input gradient, which is never computed (~4 % of ours, ~1 % of the
    baseline's)."""
    model.eval()  # no codebook initialisation or EMA update while counting
    enc, z = _flops(model.encoder, torch.rand(1, 1, size, size))
    search, codes = _flops(model.quantizer.nearest_grid, z)
    dec, _ = _flops(model.decoder, model.quantizer.embed(codes))
    return 3 * (enc + dec) + search


class Run:
    """One model's training state; :meth:`step` runs one timed optimisation step."""

    def __init__(self, model: VQVAE, images: torch.Tensor, batch: int, lr: float, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = model.train().to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)
        self.images, self.batch = images, batch
        self.g = torch.Generator().manual_seed(seed)
        self.steps, self.elapsed, self.steady_time, self.steady_images = 0, 0.0, 0.0, 0

    def step(self) -> None:
        t = time.perf_counter()
        idx = torch.randint(0, len(self.images), (self.batch,), generator=self.g)
        x = self.images[idx].contiguous(memory_format=torch.channels_last)
        loss = self.model(x, with_loss=True).loss  # the training objective, top preview included
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dt = time.perf_counter() - t
        self.steps += 1
        self.elapsed += dt
        if self.steps > WARMUP_STEPS:
            self.steady_time += dt
            self.steady_images += self.batch


WARMUP_STEPS = 3  # excluded from images/s (allocator and oneDNN warm-up), included in wall time


def train_side_by_side(runs: dict[str, Run], seconds: float) -> dict[str, dict]:
    """Train every run for ``seconds`` of its own step time, interleaving their steps (always
    stepping the run with the least time so far), so background load on this shared
    machine hits all of them alike. Returns steps and steady-state images/s per run."""
    while True:
        behind = [r for r in runs.values() if r.elapsed < seconds]
        if not behind:
            break
        min(behind, key=lambda r: r.elapsed).step()
    return {
        name: {
            "steps": r.steps,
            "train_seconds": r.elapsed,
            "images_per_second": r.steady_images / r.steady_time if r.steady_time else float("nan"),
        }
        for name, r in runs.items()
    }


@torch.no_grad()
def val_ssim(model: VQVAE, images: torch.Tensor) -> float:
    model.eval()
    scores = [per_image_ssim(model(x).reconstruction.clamp(0, 1), x) for x in images.split(64)]
    return float(torch.cat(scores).mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/standin")
    p.add_argument("--seconds", type=float, default=120.0, help="training wall time per model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-size", type=int, default=2048, help="side of the fp32 matmul that measures the peak")
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads (the matmul peak is measured at the same count)"
    )
    p.add_argument("--top-channels", type=int, help="brainvq's top-level width (default: VQVAEConfig's)")
    p.add_argument(
        "--top-res-bottleneck", type=int, help="brainvq's top-level residual bottleneck (default: VQVAEConfig's)"
    )
    p.add_argument("--out", default="runs/bench_vqvae.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    our_cfg = VQVAEConfig(
        **{k: v for k, v in (("top_channels", a.top_channels), ("top_res_bottleneck", a.top_res_bottleneck)) if v}
    )
    # Process-wide, so it speeds up both models alike (brainvq's training does this too).
    malloc_tuned = keep_freed_memory()
    data = DataConfig(root=a.data)
    train = as_tensor(load_split(data, "train"))
    val = as_tensor(load_split(data, "validate"))
    peak = matmul_gflops(a.peak_size)
    results = {
        "data": a.data,
        "threads": torch.get_num_threads(),
        "matmul_gflops": peak,
        "seconds_each": a.seconds,
        "dtype": "float32 (no autocast, bf16 off)",
        "brainvq_config": our_cfg.to_dict(),
        "keep_freed_memory": malloc_tuned,
    }
    models = {"brainvq": VQVAE(our_cfg), "baseline": BaselineVQVAE()}
    flops = {name: train_flops(m, train.shape[-1]) for name, m in models.items()}
    runs = {name: Run(m, train, a.batch_size, a.lr, a.seed) for name, m in models.items()}
    timing = train_side_by_side(runs, a.seconds)
    for name, model in models.items():
        r = timing[name]
        r.update(
            train_gflop_per_image=flops[name] / 1e9,
            achieved_gflops=r["images_per_second"] * flops[name] / 1e9,
            val_ssim_after_same_time=val_ssim(model, val),
            latent_grid=model.config.grid_size,
            parameters=sum(p.numel() for p in model.parameters()),
        )
        r["fraction_of_matmul_peak"] = r["achieved_gflops"] / peak
        results[name] = r
        print(name, json.dumps(r, indent=1))
    ours, base = results["brainvq"], results["baseline"]
    ours["speedup_images_per_second"] = ours["images_per_second"] / base["images_per_second"]
    ours["ssim_difference"] = ours["val_ssim_after_same_time"] - base["val_ssim_after_same_time"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(
        f"matmul peak {peak:.1f} GFLOP/s ({a.threads} threads); brainvq {ours['speedup_images_per_second']:.2f}x "
        f"the baseline's images/s at {100 * ours['fraction_of_matmul_peak']:.0f} % of the peak (baseline "
        f"{100 * base['fraction_of_matmul_peak']:.0f} %); SSIM after the same time {ours['val_ssim_after_same_time']:.4f} "
        f"vs {base['val_ssim_after_same_time']:.4f}"
    )
    return results


if __name__ == "__main__":
    main()
