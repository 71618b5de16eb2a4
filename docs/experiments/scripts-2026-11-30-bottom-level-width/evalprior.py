"""Priors judged on 256 samples (s25 VQ-VAE and generation decoder, top 0.85, bottom 1.0) against real
test slices, one fitted judge per seed. usage: evalprior.py RUN DATA OUT SEED NAME=PRIOR ...
(RUN: the quality-cpu run folder, runs/s25/qcpu when measured; DATA: the OASIS-1 subset in the
Keras layout; OUT: where the first 64 samples of each prior are saved)"""
import json, sys, time
import numpy as np, torch
from brainvq.data.sources import DataConfig, load_split
from brainvq.data.dataset import as_tensor
from brainvq.judges.power import JudgeConfig, fit_judges, generated_profile, judge_generated_on_splits
from brainvq.models.pair import ModelPair
from brainvq.sample.generate import generate

RUN, data, OUT = sys.argv[1], DataConfig(root=sys.argv[2]), sys.argv[3]
seed = int(sys.argv[4])
train, val, test = (load_split(data, s, progress=False) for s in ("train", "validate", "test"))
cfg = JudgeConfig(seed=seed)
fitted = fit_judges(as_tensor(train), np.asarray(train.positions), cfg, False)

def judge(images, positions):
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    j = judge_generated_on_splits(images, positions, train, val, test, cfg, fitted, False, generated_profile(fitted, images, positions))
    g = j["generated_vs_test"]
    return {"c2st": round(g["c2st"]["accuracy"], 3), "frechet": round(g["frechet"]["ratio"], 2),
            "nodetail": round(j["feature_breakdown"]["brain region without fine detail"]["c2st"], 3),
            "tissue": round(g["tissue"]["ratio"], 2), "ventricles": round(g["ventricles"]["ratio"], 2)}

out = {}
for arg in sys.argv[5:]:
    name, prior = arg.split("=", 1)
    t = time.time()
    pair = ModelPair.load(RUN + "/vqvae/vqvae.safetensors", prior, generation_decoder=RUN + "/generation_decoder/vqvae.safetensors")
    positions = np.sort(np.random.default_rng(seed).choice(np.asarray(test.positions), 256, replace=False))
    gen = generate(pair, positions, n=256, temperature=1.0, seed=seed, progress=False, top_temperature=0.85)
    imgs = np.asarray(gen.images)
    ts = round(time.time() - t)
    res = judge(imgs, positions)
    np.savez_compressed(f"{OUT}/imgs_{name}_s{seed}.npz", samples=imgs[:64], positions=positions[:64])
    res["sample_s"], res["s"] = ts, round(time.time() - t)
    out[name] = res
    print(name, json.dumps(res), file=sys.stderr, flush=True)
print(json.dumps(out, indent=1))
