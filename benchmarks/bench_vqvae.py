"""VQ-VAE training throughput vs. the reference architecture, measured in one run.

Reports, for brainvq's VQ-VAE and the baseline (Conv 32 s2 -> Conv 64 s2 -> 1x1 to D,
mirrored transposed convolutions, same EMA quantiser):

* training images/second (fwd + bwd + optimiser step, steady state),
* model FLOPs per training image (3x the counted forward FLOPs) and achieved GFLOP/s as
  a fraction of this machine's fp32 matmul GFLOP/s, measured in the same run,
* validation SSIM after training both for the same wall time,

and the ratios ours/baseline. Run::

    python benchmarks/bench_vqvae.py --data data/standin --seconds 120 --out runs/bench_vqvae.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.metrics.reconstruction import per_image_ssim
from brainvq.models.vqvae import VQVAE, BaselineVQVAE, VQVAEConfig


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


def forward_flops(model: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as fc:
        model(torch.rand(1, 1, size, size))
    return float(fc.get_total_flops())


def train_for(model: VQVAE, images: torch.Tensor, seconds: float, batch: int, lr: float, seed: int) -> dict:
    """Train for ``seconds`` of wall time; returns images/s measured after 3 warm-up steps."""
    torch.manual_seed(seed)
    model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    steps, seen, t_start, t_steady = 0, 0, time.perf_counter(), None
    while time.perf_counter() - t_start < seconds:
        idx = torch.randint(0, len(images), (batch,), generator=g)
        x = images[idx].contiguous(memory_format=torch.channels_last)
        out = model(x)
        loss = F.mse_loss(out.reconstruction, x) + out.commitment_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps == 3:
            t_steady, seen = time.perf_counter(), 0
        elif steps > 3:
            seen += batch
    steady = time.perf_counter() - (t_steady or t_start)
    return {"steps": steps, "images_per_second": seen / steady if seen else float("nan")}


@torch.no_grad()
def val_ssim(model: VQVAE, images: torch.Tensor) -> float:
    model.eval()
    scores = [per_image_ssim(model(x).reconstruction.clamp(0, 1), x) for x in images.split(64)]
    return float(torch.cat(scores).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/standin")
    p.add_argument("--seconds", type=float, default=120.0, help="training wall time per model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_vqvae.json")
    a = p.parse_args()
    data = DataConfig(root=a.data)
    train = as_tensor(load_split(data, "train"))
    val = as_tensor(load_split(data, "validate"))
    peak = matmul_gflops()
    results = {
        "data": a.data,
        "threads": torch.get_num_threads(),
        "matmul_gflops": peak,
        "seconds_each": a.seconds,
    }
    for name, model in (("brainvq", VQVAE(VQVAEConfig())), ("baseline", BaselineVQVAE())):
        train_flops = 3 * forward_flops(model, train.shape[-1])
        r = train_for(model, train, a.seconds, a.batch_size, a.lr, a.seed)
        r.update(
            train_gflop_per_image=train_flops / 1e9,
            achieved_gflops=r["images_per_second"] * train_flops / 1e9,
            val_ssim_after_same_time=val_ssim(model, val),
            latent_grid=model.config.grid_size,
            parameters=sum(p.numel() for p in model.parameters()),
        )
        r["fraction_of_matmul_peak"] = r["achieved_gflops"] / peak
        results[name] = r
        print(name, json.dumps(r, indent=1))
    ours, base = results["brainvq"], results["baseline"]
    results["speedup_images_per_second"] = ours["images_per_second"] / base["images_per_second"]
    results["ssim_difference"] = ours["val_ssim_after_same_time"] - base["val_ssim_after_same_time"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(
        f"matmul peak {peak:.1f} GFLOP/s; speed-up {results['speedup_images_per_second']:.2f}x; "
        f"SSIM ours {ours['val_ssim_after_same_time']:.4f} vs baseline {base['val_ssim_after_same_time']:.4f}"
    )


if __name__ == "__main__":
    main()
