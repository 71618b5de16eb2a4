"""Real test slices, the generation decoder's reconstructions of them and samples, at the nearest
positions, for each run folder: python fig.py DATA OUT.png LABEL=RUN [LABEL=RUN ...]
(RUN holds vqvae/, generation_decoder/, generation/samples/ written by `brainvq pipeline`)."""
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from brainvq.data.sources import DataConfig, load_split  # noqa: E402
from brainvq.models.weights import load_vqvae  # noqa: E402

torch.set_num_threads(1)
test = load_split(DataConfig(root=sys.argv[1]), "test", progress=False)
runs = [a.split("=", 1) for a in sys.argv[3:]]
cols = [0.1, 0.3, 0.5, 0.7, 0.9]
case = np.unique(test.case_ids)[3]
own = np.flatnonzero(test.case_ids == case)
picks = [own[np.abs(test.positions[own] - p).argmin()] for p in cols]
real = torch.from_numpy(test.images[picks]).float().div(255).unsqueeze(1)
rows = [("real test", real.squeeze(1).numpy())]
for label, run in runs:
    run = Path(run)
    gen = load_vqvae(run / "generation_decoder" / "vqvae.safetensors", "cpu").eval()
    with torch.no_grad():
        rec = gen(real).reconstruction
    rows.append((f"{label}: reconstructions", rec.clamp(0, 1).squeeze(1).numpy()))
    meta = torch.load(run / "generation" / "samples" / "sample_codes.pt", weights_only=True)
    pos = meta["positions"].numpy()
    idx = [int(np.abs(pos - test.positions[i]).argmin()) for i in picks]
    imgs = [np.asarray(Image.open(run / "generation" / "samples" / "images" / f"sample_{i:03d}.png")) / 255 for i in idx]
    rows.append((f"{label}: samples", np.stack(imgs)))
fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.1 * len(cols), 2.15 * len(rows)))
for r, (label, imgs) in enumerate(rows):
    for c in range(len(cols)):
        ax = axes[r, c]
        ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        if c == 0:
            ax.set_ylabel(label, fontsize=8)
        if r == 0:
            ax.set_title(f"position {test.positions[picks[c]]:.2f}", fontsize=8)
plt.tight_layout()
plt.savefig(sys.argv[2], dpi=80)
