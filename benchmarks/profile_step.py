"""Where a training step's time goes, by operator and by module: the default two-level VQ-VAE
(batch 32) or the default two-level prior (batch 16), fp32, random data, on ``--threads`` threads.

Prints ``torch.profiler``'s operator table (self CPU time), the forward time of each part of the
model (VQ-VAE: encoder, quantiser, top encoder, top quantiser, top decoder, decoder; eager prior:
top and bottom PixelCNN), and the convolutions' time (forward and backward) by the spatial size
of their input, which separates the top level's 16x16 and 32x32 layers from the 64x64 ones. Run::

    python benchmarks/profile_step.py --model vqvae --threads 2
    python benchmarks/profile_step.py --model prior --threads 2 [--compiled]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prior import Run, build_priors, random_batches  # noqa: E402

from brainvq.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from brainvq.runtime import keep_freed_memory  # noqa: E402


def _labelled(module: torch.nn.Module, label: str) -> None:
    """Wrap ``module``'s forward in a profiler range, so its forward time can be read off by name."""
    forward = module.forward

    def run(*args, **kw):
        with record_function(label):
            return forward(*args, **kw)

    module.forward = run


def vqvae_step(image_size: int, batch: int):
    model = VQVAE(VQVAEConfig(image_size=image_size)).train().to(memory_format=torch.channels_last)
    for name in ("encoder", "quantizer", "top_encoder", "top_quantizer", "top_decoder", "decoder"):
        _labelled(getattr(model, name), f"part:{name}")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x = torch.rand(batch, 1, image_size, image_size).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = model(x, with_loss=True).loss  # the training objective, top preview included
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def prior_step(grid: int, batch: int, compiled: bool):
    prior = build_priors(grid, 4)["brainvq" if compiled else "reference"]
    if not compiled:  # a compiled graph has no module boundaries left to label
        _labelled(prior.top, "part:top PixelCNN")
        _labelled(prior.bottom, "part:bottom PixelCNN")
    run = Run(prior, random_batches(prior, batch, 4, 0), 3e-3, compiled=compiled)
    return run.step


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("vqvae", "prior"), default="vqvae")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    p.add_argument("--size", type=int, default=256, help="image side (VQ-VAE) or 4x the bottom grid (prior)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--compiled", action="store_true", help="prior: brainvq's compiled training loss")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--out", default="runs/profile_step.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    keep_freed_memory()
    if a.model == "vqvae":
        step = vqvae_step(a.size, a.batch_size or 32)
    else:
        step = prior_step(a.size // 4, a.batch_size or 16, a.compiled)
    for _ in range(3):
        step()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(a.steps):
            step()
    seconds = (time.perf_counter() - t) / a.steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / a.steps / 1e6
    parts = {e.key[5:]: e.cpu_time_total / a.steps / 1e6 for e in events if e.key.startswith("part:")}
    ops = sorted(
        ((e.key, e.self_cpu_time_total / a.steps / 1e6) for e in events if not e.key.startswith("part:")),
        key=lambda kv: -kv[1],
    )[: a.rows]
    by_size: dict[str, float] = {}
    for e in prof.key_averages(group_by_input_shape=True):
        shape = e.input_shapes[0] if e.input_shapes else []
        if "conv" in e.key and len(shape) == 4:
            size = f"{shape[2]}x{shape[3]}"
            by_size[size] = by_size.get(size, 0.0) + e.self_cpu_time_total / a.steps / 1e6
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=50))
    result = {
        "model": a.model,
        "threads": a.threads,
        "compiled": a.compiled,
        "seconds_per_step_profiled": seconds,
        "profiled_cpu_seconds_per_step": total,
        "forward_seconds_per_step_by_part": parts,
        "convolution_seconds_per_step_by_input_size": dict(sorted(by_size.items(), key=lambda kv: -kv[1])),
        "top_operators_self_seconds_per_step": dict(ops),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "top_operators_self_seconds_per_step"}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
