"""Draw a bank of code grids with the s25 prior at training-slice positions (top 0.85, bottom 1.0).
usage: bank.py N OUT.pt SEED"""
import sys, time
import numpy as np, torch
from brainvq.data.sources import DataConfig, load_split
from brainvq.models.pair import ModelPair
from brainvq.sample.generate import generate

n, out, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
A = "/work/runs/s25/qcpu"
train = load_split(DataConfig(root="/work/data/oasis1"), "train", progress=False)
pos = np.random.default_rng(seed).choice(np.asarray(train.positions), n, replace=True).astype(np.float32)
pair = ModelPair.load(A + "/vqvae/vqvae.safetensors", A + "/prior/prior.safetensors")
t = time.time()
g = generate(pair, pos, temperature=1.0, seed=seed, progress=False, top_temperature=0.85)
torch.save({"top": g.top.to(torch.int16), "bottom": g.codes.to(torch.int16), "positions": torch.from_numpy(pos)}, out)
print(f"{n} grids in {time.time() - t:.0f} s", flush=True)
