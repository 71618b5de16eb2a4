"""Generation decoders judged on reconstructions of 256 held-out validation slices and on 256 samples
(s25 prior, top 0.85, bottom 1.0) against real test slices, one fitted judge per seed.
usage: evaldec.py SEED NAME=VQVAE_RUN,PRIOR,GENDEC ..."""
import json, sys, time
import numpy as np, torch
from brainvq.data.sources import DataConfig, load_split
from brainvq.data.dataset import as_tensor
from brainvq.judges.power import JudgeConfig, fit_judges, generated_profile, judge_generated_on_splits
from brainvq.metrics.reconstruction import reconstruct
from brainvq.models.pair import ModelPair
from brainvq.models.weights import load_vqvae
from brainvq.sample.generate import generate

seed = int(sys.argv[1])
data = DataConfig(root="/work/data/oasis1")
train, val, test = (load_split(data, s, progress=False) for s in ("train", "validate", "test"))
cfg = JudgeConfig(seed=seed)
fitted = fit_judges(as_tensor(train), np.asarray(train.positions), cfg, False)
sub = val.subset(np.sort(np.random.default_rng(seed + 100).permutation(len(val))[:256]))
pos = np.asarray(sub.positions)

def judge(images, positions):
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    j = judge_generated_on_splits(images, positions, train, val, test, cfg, fitted, False, generated_profile(fitted, images, positions))
    g = j["generated_vs_test"]
    return {"c2st": round(g["c2st"]["accuracy"], 3), "frechet": round(g["frechet"]["ratio"], 2),
            "nodetail": round(j["feature_breakdown"]["brain region without fine detail"]["c2st"], 3),
            "tissue": round(g["tissue"]["ratio"], 2), "telling": j.get("telling_features", g.get("telling_features"))}

out = {}
for arg in sys.argv[2:]:
    name, spec = arg.split("=", 1)
    run, prior, gdec = spec.split(",")
    t = time.time()
    torch.manual_seed(seed)
    dec = load_vqvae(gdec)
    vrec = np.asarray(reconstruct(dec, sub, progress=False).reconstructions)
    res = {"recon": judge(vrec, pos)}
    pair = ModelPair.load(run + "/vqvae.safetensors", prior, generation_decoder=gdec)
    positions = np.sort(np.random.default_rng(seed).choice(np.asarray(test.positions), 256, replace=False))
    gen = generate(pair, positions, n=256, temperature=1.0, seed=seed, progress=False, top_temperature=0.85)
    imgs = np.asarray(gen.images)
    res["samples"] = judge(imgs, positions)
    np.savez_compressed(f"/work/runs/s28/imgs_{name}_s{seed}.npz", recon=vrec[:32], samples=imgs[:64], positions=positions[:64])
    res["s"] = round(time.time() - t)
    out[name] = res
    print(name, json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "telling"} if isinstance(v, dict) else v) for k, v in res.items()}), file=sys.stderr, flush=True)
print(json.dumps(out, indent=1, default=str))
