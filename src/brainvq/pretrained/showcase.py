"""What a shipped model draws, in seconds and without data: the demo's first stage.

Slices sampled at a few positions, and completions: the upper half of some of those slices kept
and the lower half drawn again by the prior (the package ships no real slices to complete).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from brainvq.io import write_json
from brainvq.pretrained import get_pretrained, load_pretrained
from brainvq.report import figures
from brainvq.sample.generate import complete_lower_half, generate, save_generated

SHOWCASE_POSITIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def showcase(
    name: str,
    out_dir: str | Path,
    *,
    positions: tuple[float, ...] = SHOWCASE_POSITIONS,
    per_position: int = 2,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Sample ``per_position`` slices at each of ``positions`` with the shipped model ``name``,
    complete the lower halves of the first row, and write ``sample_grid.png``, ``completions.png``,
    the individual PNGs and ``showcase.json`` under ``out_dir``."""
    t0 = time.time()
    out = Path(out_dir)
    model = get_pretrained(name)
    pair = load_pretrained(name, device="cpu")
    grid_pos = np.tile(np.asarray(positions, np.float32), per_position)  # one row per repeat
    gen = generate(pair, grid_pos, seed=seed, progress=progress)
    samples = save_generated(
        gen,
        out,
        pair.num_codes,
        ncols=len(positions),
        suptitle=f"drawn by the pretrained {name} model's {pair.drawing_decoder} decoder (no training), "
        "one column per slice position",
    )["grid"]
    titles = [f"pos {p:.2f}" for p in grid_pos]
    first = slice(0, len(positions))
    kept, done = complete_lower_half(pair, gen.images[first], grid_pos[first], seed=seed + 1)
    completions = figures.image_grid(
        torch.cat([gen.images[first], kept, done]),
        out / "completions.png",
        ncols=len(positions),
        titles=titles[first] + ["upper half kept"] * len(positions) + ["lower half completed"] * len(positions),
        suptitle=f"completions by the pretrained {name} model: upper half kept, lower half drawn again "
        f"(drawn by the {pair.drawing_decoder} decoder)",
    )
    summary = {
        "model": name,
        "about": model.summary,
        "model_card": str(model.card),
        "samples": samples,
        "completions": str(completions),
        "positions": [round(float(p), 3) for p in grid_pos],
        "seed": seed,
        "seconds": round(time.time() - t0, 1),
    }
    write_json(out / "showcase.json", summary)
    return summary
