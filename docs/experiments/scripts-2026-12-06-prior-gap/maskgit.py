"""Experiment (issue 35): a non-causal bottom level (masked-code modelling as in MaskGIT, Chang et
al. 2022) over the shipped oasis1 VQ-VAE's 64x64 bottom codes, conditioned on the whole 16x16 top
grid and the slice position; sampled in S parallel steps that keep the most confident codes.

usage: python maskgit.py train DATA OUT MINUTES
       python maskgit.py judge DATA OUT SEED STEPS [TEMP]
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

K, KT, C, BLOCKS = 256, 256, 64, 8


class MaskedBottom(nn.Module):
    """Logits (B,K,64,64) of every bottom code given the visible ones (mask token K), the top grid
    (B,16,16) and the position (B,). Works at 32x32 (space-to-depth of the 64x64 grid)."""

    def __init__(self, c: int = C, blocks: int = BLOCKS) -> None:
        super().__init__()
        self.embed = nn.Embedding(K + 1, 32)
        self.inp = nn.Conv2d(128, c, 1)
        self.top_embed = nn.Embedding(KT, 32)
        self.top = nn.Sequential(nn.Conv2d(32, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1))
        self.location = nn.Parameter(torch.zeros(1, c, 32, 32))
        self.pos = nn.Sequential(nn.Linear(16, c), nn.GELU(), nn.Linear(c, blocks * c))
        dil = [1, 2, 4, 8] * (blocks // 4)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=d, dilation=d) for d in dil)
        self.mix = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in dil)
        self.norms = nn.ModuleList(nn.GroupNorm(8, c) for _ in dil)
        self.head = nn.Conv2d(c, 4 * K, 1)
        self.c = c

    def forward(self, bottom: torch.Tensor, top: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b = bottom.shape[0]
        x = self.embed(bottom).permute(0, 3, 1, 2)
        x = self.inp(F.pixel_unshuffle(x, 2))
        t = self.top(self.top_embed(top).permute(0, 3, 1, 2))
        x = x + F.interpolate(t, scale_factor=2, mode="nearest") + self.location
        freqs = torch.arange(8, device=pos.device, dtype=torch.float32)
        pe = torch.cat([torch.sin(pos[:, None] * math.pi * 2**freqs / 2), torch.cos(pos[:, None] * math.pi * 2**freqs / 2)], 1)
        film = self.pos(pe).view(b, -1, self.c, 1, 1)
        for i, (conv, mix, norm) in enumerate(zip(self.convs, self.mix, self.norms)):
            h = conv(F.gelu(norm(x) + film[:, i]))
            x = x + mix(F.gelu(h))
        return F.pixel_shuffle(self.head(F.gelu(x)), 2)


def masked_loss(model, bottom, top, pos, gen):
    b, n = bottom.shape[0], bottom[0].numel()
    r = torch.cos(math.pi / 2 * torch.rand(b, 1, 1, generator=gen)).clamp(min=1 / n)
    mask = torch.rand(bottom.shape, generator=gen) < r
    logits = model(torch.where(mask, torch.full_like(bottom, K), bottom), top, pos)
    ce = F.cross_entropy(logits, bottom, reduction="none")
    return (ce * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def sample(model, top, pos, steps: int = 12, temperature: float = 1.0, gen=None, choice_temp: float = 4.5):
    """MaskGIT decoding: all masked; each step draws every masked code, keeps the most confident
    (log-prob + annealed Gumbel noise) and masks the rest again on a cosine schedule."""
    b = top.shape[0]
    n = 64 * 64
    codes = torch.full((b, 64, 64), K, dtype=torch.long)
    for s in range(1, steps + 1):
        masked = codes == K
        logits = model(codes, top, pos).permute(0, 2, 3, 1).float() / temperature
        logp = F.log_softmax(logits, -1)
        u = torch.rand(logp.shape, generator=gen).clamp_(1e-20, 1)
        drawn = (logp - torch.log(-torch.log(u))).argmax(-1)
        conf = logp.gather(-1, drawn[..., None])[..., 0]
        g = torch.rand(conf.shape, generator=gen).clamp_(1e-20, 1)
        conf = conf + choice_temp * (1 - s / steps) * (-torch.log(-torch.log(g)))
        conf = torch.where(masked, conf, torch.full_like(conf, float("inf")))
        n_mask = int(math.floor(n * math.cos(math.pi / 2 * s / steps)))
        new = torch.where(masked, drawn, codes)
        if n_mask > 0:
            cut = conf.view(b, -1).sort(1).values[:, n_mask - 1 : n_mask]
            remask = (conf.view(b, -1) <= cut).view_as(conf) & masked
            new = torch.where(remask, torch.full_like(new, K), new)
        codes = new
    return codes


def train(data_root, out, minutes):
    from brainvq.data.sources import DataConfig
    from brainvq.pretrained import load_pretrained
    from brainvq.train.codes import encode_split

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    pair = load_pretrained("oasis1")
    data = DataConfig(root=data_root)
    cs = {s: encode_split(pair.vqvae, data, s, progress=False) for s in ("train", "validate")}
    torch.save({s: (c.codes, c.top, c.positions) for s, c in cs.items()}, out / "codes.pt")
    tr = cs["train"]
    model = MaskedBottom()
    w0 = time.time()
    print("params", sum(p.numel() for p in model.parameters()), flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    bs, n = 32, len(tr.codes)
    t0, step, epoch = time.process_time(), 0, 0.0
    budget = minutes * 60 * torch.get_num_threads()  # CPU seconds: the same compute on a shared machine
    est_steps = None
    while time.process_time() - t0 < budget:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):
            el = time.process_time() - t0
            if el > budget:
                break
            frac = el / budget
            for g_ in opt.param_groups:
                g_["lr"] = 2e-3 * min(1.0, step / 100) * (0.5 * (1 + math.cos(math.pi * frac)))
            idx = perm[i : i + bs]
            bot, top = tr.codes[idx], tr.top[idx]
            loss = masked_loss(model, bot, top, tr.positions[idx], gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 20 == 0:
                print(f"step {step} epoch {step * bs / n:.2f} loss {loss.item():.3f} {el/60/torch.get_num_threads():.1f} cpu-min (2 threads) wall {time.time()-w0:.0f}s", flush=True)
    model.eval()
    va = cs["validate"]
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        vl = [masked_loss(model, va.codes[i:i+64], va.top[i:i+64], va.positions[i:i+64], g).item() for i in range(0, len(va.codes), 64)]
    rec = {"steps": step, "epochs": step * bs / n, "cpu_minutes_per_thread": (time.process_time() - t0) / 60 / torch.get_num_threads(), "wall_minutes": (time.time() - w0) / 60, "val_masked_nats": float(np.mean(vl))}
    print(rec, flush=True)
    torch.save(model.state_dict(), out / "maskgit.pt")
    (out / "train.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    torch.set_num_threads(2)
    if sys.argv[1] == "train":
        train(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]))
