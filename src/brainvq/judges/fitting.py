"""How the judges' small networks are trained: downsampled copies of the slices, a short AdamW run."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def downsample(images: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Area-downsample (N,1,H,W) images to (N,1,size,size), chunk by chunk."""
    if images.shape[-1] == size:
        return images.float()
    return torch.cat(
        [
            F.interpolate(images[i : i + chunk].float(), size=(size, size), mode="area")
            for i in range(0, len(images), chunk)
        ]
    )


def fit(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = 2e-3,
    flip: bool = True,
    desc: str = "fit",
    progress: bool = False,
) -> float:
    """Train ``model`` with AdamW on random mini-batches for ``steps`` steps; returns the last loss.

    ``flip`` mirrors images (and their targets when these are images too) left-right at random.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=gen)
        x, y = inputs[idx], targets[idx]
        if flip:
            mirror = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
            if y.dim() == 3:  # per-pixel targets follow their image
                y = torch.where(mirror[:, None, None], y.flip(-1), y)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """``fn`` applied to ``x`` chunk by chunk, without gradients, results concatenated."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])
