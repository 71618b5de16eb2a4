"""Train a bottom-level gated PixelCNN (brainvq's GatedPixelCNN, any PixelCNNConfig fields) on the
shipped oasis1 VQ-VAE's cached codes (train split; the shipped top level unchanged), for a budget of
CPU seconds = MINUTES x 2 threads (the quality-cpu bottom level's 12 minutes on 2 cores), whatever
the load. AdamW 3e-3, batch 16, warmup 50 steps then cosine over the budget (as train-prior).

usage: CODES=codes.pt python bottom.py OUT MINUTES field=value ...
e.g. hidden=24 n_layers=4 kernel_size=3 top_blocks=4; codes.pt: the cached codes that
../scripts-2026-12-06-prior-gap/maskgit.py train writes; top_blocks needs brainvq at commit 82262f2.
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from brainvq.models.pixelcnn import GatedPixelCNN
from brainvq.pretrained import load_pretrained

out, minutes = Path(sys.argv[1]), float(sys.argv[2])
fields = {k: int(v) for k, v in (a.split("=") for a in sys.argv[3:])}
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
threads = int(__import__("os").environ.get("THREADS", "1"))
torch.set_num_threads(threads)
pair = load_pretrained("oasis1")
cfg = dataclasses.replace(pair.prior.bottom.config, **fields)
model = GatedPixelCNN(cfg)
codes = torch.load(__import__("os").environ["CODES"], weights_only=True)
tr_c, tr_t, tr_p = codes["train"]
va_c, va_t, va_p = codes["validate"]
print("params", sum(p.numel() for p in model.parameters()), cfg, flush=True)
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-5)
gen = torch.Generator().manual_seed(0)
bs, n = 16, len(tr_c)
budget = minutes * 60 * 2
t0, w0, step = time.process_time(), time.time(), 0
done = False
while not done:
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n - bs + 1, bs):
        el = time.process_time() - t0
        if el > budget:
            done = True
            break
        lr = 3e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * el / budget))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = perm[i : i + bs]
        logits = model(tr_c[idx], tr_p[idx].float(), tr_t[idx])
        loss = torch.nn.functional.cross_entropy(logits, tr_c[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} epoch {step * bs / n:.2f} bits {loss.item() / math.log(2):.3f} "
                  f"cpu-min {el / 60:.1f}/{budget / 60:.0f} wall {time.time() - w0:.0f}s", flush=True)
model.eval()
with torch.no_grad():
    bits = [torch.nn.functional.cross_entropy(model(va_c[i:i+64], va_p[i:i+64].float(), va_t[i:i+64]), va_c[i:i+64]).item()
            for i in range(0, len(va_c), 64)]
rec = {"steps": step, "epochs": step * bs / n, "cpu_minutes": (time.process_time() - t0) / 60,
       "wall_minutes": (time.time() - w0) / 60, "threads": threads,
       "val_bits_per_code": sum(bits) / len(bits) / math.log(2), "config": dataclasses.asdict(cfg)}
print(rec, flush=True)
torch.save(model.state_dict(), out / "bottom.pt")
(out / "train.json").write_text(json.dumps(rec, indent=1))
