import sys, torch, numpy as np, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = torch.load(sys.argv[1], weights_only=True)
out = sys.argv[2]
pos, tpos = d["positions"].numpy(), d["test_positions"].numpy()
cols = np.linspace(0, len(pos) - 1, 6).round().astype(int)
rows = [("real test", "real_test", tpos), ("reconstruction (gen. decoder)", "recon_test", tpos)]
keep = sys.argv[3:]  # sample variants to show (default: all)
rows += [(k.replace("samples_", "samples ").split("/")[-1] if "maskgit" in k else k.replace("_", " "), k, pos)
         for k in d if k.startswith("samples_") and (not keep or k[len("samples_"):] in keep)]
if keep and len(keep) == 1:
    rows = [("real test slices", "real_test", tpos), ("reconstructions", "recon_test", tpos), ("generated", rows[-1][1], pos)]
fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.1 * len(rows)))
for r, (title, key, p) in enumerate(rows):
    for c, i in enumerate(cols):
        j = int(np.abs(p - pos[i]).argmin())
        axes[r, c].imshow(d[key][j, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        axes[r, c].set_xticks([]); axes[r, c].set_yticks([])
        if c == 0: axes[r, c].set_ylabel(title.replace("maskgit.pt:", "MaskGIT ")[:34], fontsize=8)
        if r == 0: axes[r, c].set_title(f"position {pos[i]:.2f}", fontsize=8)
plt.tight_layout(); plt.savefig(out, dpi=80)
