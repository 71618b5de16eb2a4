"""Rows of slices at the nearest positions: python fig2.py IMAGES.pt OUT.png "key|label[|test]" ..."""
import sys, torch, numpy as np, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = torch.load(sys.argv[1], weights_only=True)
pos, tpos = d["positions"].numpy(), d["test_positions"].numpy()
cols = np.linspace(0, len(pos) - 1, 6).round().astype(int)
rows = [a.split("|") for a in sys.argv[3:]]
fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.05 * len(rows)))
for r, row in enumerate(rows):
    key, label = row[0], row[1]
    p = tpos if len(row) > 2 else pos
    for c, i in enumerate(cols):
        j = int(np.abs(p - pos[i]).argmin())
        img = d[key][j, 0]
        axes[r, c].imshow(img.numpy(), cmap="gray", vmin=0, vmax=255)
        axes[r, c].set_xticks([]); axes[r, c].set_yticks([])
        if c == 0: axes[r, c].set_ylabel(label, fontsize=8)
        if r == 0: axes[r, c].set_title(f"position {pos[i]:.2f}", fontsize=8)
plt.tight_layout(); plt.savefig(sys.argv[2], dpi=80)
