"""Decoders judged on held-out validation slices decoded from *unquantised* latents (and from codes)
against real test slices. usage: evalcont.py SEED NAME=WEIGHTS[:cont|:codes] ..."""
import json, sys
import numpy as np, torch
from brainvq.data.sources import DataConfig, load_split
from brainvq.data.dataset import as_tensor
from brainvq.judges.power import JudgeConfig, fit_judges, generated_profile, judge_generated_on_splits
from brainvq.metrics.reconstruction import reconstruct
from brainvq.models.weights import load_vqvae
from brainvq.train.sharpen import continuous_decoder_input
from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

seed = int(sys.argv[1])
data = DataConfig(root="/work/data/oasis1")
train, val, test = (load_split(data, s, progress=False) for s in ("train", "validate", "test"))
cfg = JudgeConfig(seed=seed)
fitted = fit_judges(as_tensor(train), np.asarray(train.positions), cfg, False)
sub = val.subset(np.sort(np.random.default_rng(seed + 100).permutation(len(val))[:256]))
pos = np.asarray(sub.positions); x = as_tensor(sub)

def judge(images):
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    j = judge_generated_on_splits(images, pos, train, val, test, cfg, fitted, False, generated_profile(fitted, images, pos))
    g = j["generated_vs_test"]
    return {"c2st": round(g["c2st"]["accuracy"], 3), "frechet": round(g["frechet"]["ratio"], 2),
            "nodetail": round(j["feature_breakdown"]["brain region without fine detail"]["c2st"], 3),
            "tissue": round(g["tissue"]["ratio"], 2), "ssim": round(float(ssim_fn(images, x, data_range=1.0)), 4)}

out = {}
for arg in sys.argv[2:]:
    name, spec = arg.split("=", 1)
    path, mode = spec.rsplit(":", 1)
    m = load_vqvae(path)
    with torch.no_grad():
        if mode == "cont":
            rec = torch.cat([m.decoder(continuous_decoder_input(m, x[i:i + 32])).clamp(0, 1) for i in range(0, len(x), 32)])
        else:
            rec = torch.as_tensor(np.asarray(reconstruct(m, sub, progress=False).reconstructions))
    out[name] = judge(rec.numpy())
    np.savez_compressed(f"/work/runs/s28/cont_{name}_s{seed}.npz", recon=rec[:32].numpy())
    print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
print(json.dumps(out, indent=1))
