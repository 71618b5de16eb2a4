"""Drawing from the top grid alone (issue 35, third redesign): a generation decoder that reads only
the top codes. A detail network at the bottom grid's resolution (the top decoder's features ->
what the bottom codes would have added) feeds the shipped generation decoder; both are trained
on the OASIS-1 subset's training slices (mirrored too) with sharpen's objective: L1 to the real
slice plus a fresh patch discriminator's hinge loss at VQGAN's adaptive weight (after 50
discriminator-only steps); the encoder, codebooks and top decoder stay frozen, so the shipped
prior's top level draws for it unchanged. Budget: CPU seconds = MINUTES x 2 threads (the
quality-cpu generation decoder's 15 minutes on 2 cores). No bottom codes are read, so no noise
input either: a deterministic rendering of the top grid.

usage: python toponly.py DATA OUT MINUTES [WIDTH BLOCKS]
"""

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.models.blocks import ResBlock
from brainvq.models.discriminator import PatchDiscriminator
from brainvq.pretrained import load_pretrained


class TopOnlyDrawer(nn.Module):
    """``decode(codes, top)`` from the top grid alone (``codes`` is ignored), as brainvq's drawers."""

    def __init__(self, vqvae: nn.Module, width: int = 64, blocks: int = 4) -> None:
        super().__init__()
        self.vqvae = vqvae
        cfg = vqvae.config
        self.detail = nn.Sequential(
            nn.Conv2d(cfg.hidden_channels + cfg.code_dim, width, 3, padding=1),
            *[ResBlock(width, 2) for _ in range(blocks)],
            nn.ReLU(),
            nn.Conv2d(width, cfg.code_dim, 3, padding=1),
        )
        nn.init.zeros_(self.detail[-1].weight)
        nn.init.zeros_(self.detail[-1].bias)

    def top_features(self, top: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = self.vqvae
            u = v.top_decoder(v.top_quantizer.embed(top))
            return torch.cat([u, v.top_decoder.to_decoder(u)], 1)

    def render(self, feats: torch.Tensor) -> torch.Tensor:
        d = self.vqvae.config.code_dim
        return self.vqvae.decoder(self.detail(feats) + feats[:, -d:])

    @torch.no_grad()
    def decode(self, codes, top):
        return self.render(self.top_features(top)).float().clamp(0, 1)


def main() -> None:
    data, out, minutes = DataConfig(root=sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    width, blocks = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (64, 4)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    pair = load_pretrained("oasis1")
    vq = copy.deepcopy(pair.drawing_vqvae).eval()
    drawer = TopOnlyDrawer(vq, width, blocks)
    vq.requires_grad_(False)
    vq.decoder.requires_grad_(True)
    train = as_tensor(load_split(data, "train", progress=False))
    train = torch.cat([train, train.flip(-1)])
    with torch.no_grad():  # the frozen top codes of every training slice
        tops = torch.cat([vq.encode_levels(train[i:i + 64])[0] for i in range(0, len(train), 64)])
    disc = PatchDiscriminator(32, 3)
    params = list(drawer.detail.parameters()) + list(vq.decoder.parameters())
    opt_g = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.9))
    last = vq.decoder.last_layer.weight
    gen = torch.Generator().manual_seed(0)
    bs, n, budget = 16, len(train), minutes * 60 * 2
    t0, w0, step = time.process_time(), time.time(), 0
    done = False
    while not done:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):
            if time.process_time() - t0 > budget:
                done = True
                break
            idx = perm[i:i + bs]
            x = train[idx]
            rec = drawer.render(drawer.top_features(tops[idx])).float()
            l1 = F.l1_loss(rec, x)
            adv = -disc(rec).mean()
            w = torch.zeros(())
            if step >= 50:
                g1 = torch.autograd.grad(l1, last, retain_graph=True)[0].norm()
                g2 = torch.autograd.grad(adv, last, retain_graph=True)[0].norm()
                w = (g1 / (g2 + 1e-4)).clamp(0, 1e4).detach()
            opt_g.zero_grad()
            (l1 + w * adv).backward()
            opt_g.step()
            loss_d = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step} epoch {step * bs / n:.2f} l1 {l1.item():.4f} w {float(w):.3f} d {loss_d.item():.3f} "
                      f"cpu-min {(time.process_time() - t0) / 60:.1f}/{budget / 60:.0f} wall {time.time() - w0:.0f}s", flush=True)
    rec = {"steps": step, "epochs": step * bs / n, "cpu_minutes": (time.process_time() - t0) / 60,
           "wall_minutes": (time.time() - w0) / 60, "width": width, "blocks": blocks}
    print(rec, flush=True)
    torch.save({"detail": drawer.detail.state_dict(), "decoder": vq.decoder.state_dict()}, out / "toponly.pt")
    (out / "train.json").write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
