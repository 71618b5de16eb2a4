"""The prior's gap for toponly.py's drawer (it reads the top grid alone), beside the shipped
generation decoder, on the same judges, slices and samples (the shipped prior, top grid at 1.0).

usage: python judge_top.py DATA OUT SEED DIR
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brainvq.data.dataset import as_tensor
from brainvq.data.sources import DataConfig, load_split
from brainvq.judges import prior_gap as pg
from brainvq.judges.power import JudgeConfig, compare, fit_judges, generated_profile
from brainvq.models.levels import Codes
from brainvq.pretrained import load_pretrained
from brainvq.sample.generate import generate
from toponly import TopOnlyDrawer

data, out, seed, tdir = DataConfig(root=sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(2)
t0 = time.time()
pair = load_pretrained("oasis1")
rec = json.loads((tdir / "train.json").read_text())
import copy
top_drawer = TopOnlyDrawer(copy.deepcopy(pair.drawing_vqvae), rec["width"], rec["blocks"])
state = torch.load(tdir / "toponly.pt", weights_only=True)
top_drawer.detail.load_state_dict(state["detail"])
top_drawer.vqvae.decoder.load_state_dict(state["decoder"])
top_drawer.eval()
train, val, test = (load_split(data, s, progress=False) for s in ("train", "validate", "test"))
judges = fit_judges(as_tensor(train), np.asarray(train.positions), JudgeConfig(seed=seed))
n = 256
rng = np.random.default_rng(seed)
positions = np.sort(rng.choice(np.asarray(test.positions), n, replace=False))
rng = np.random.default_rng(seed + 1)
(t_img, t_pos, t_grp), (v_img, v_pos, v_grp) = pg.pick_slices(test, n, rng), pg.pick_slices(val, n, rng)
t_codes, v_codes = pg.encode(pair.vqvae, t_img), pg.encode(pair.vqvae, v_img)
real_test, real_val = judges.profile(t_img, t_pos, t_grp), judges.profile(v_img, v_pos, v_grp)
g = generate(pair, positions, temperature=1.0, top_temperature=1.0, seed=seed, progress=False)
samples = Codes(g.top, g.codes)
summary, images = {}, {"real_test": t_img}
for name, drawer in (("toponly", top_drawer), ("shipped", pair.drawing_vqvae)):
    ref_img, base_img, s_img = pg.draw(drawer, t_codes), pg.draw(drawer, v_codes), pg.draw(drawer, samples)
    ref, base = judges.profile(ref_img, t_pos, t_grp), judges.profile(base_img, v_pos, v_grp)
    cand = generated_profile(judges, s_img, positions)
    res = pg.judge_gap(judges, {"samples": cand}, ref, base)
    real = compare(judges, cand, real_test, real_val)
    dec = compare(judges, base, real_test, real_val)
    summary[name] = {
        "samples_gap": (res["samples"]["c2st"]["accuracy"], res["samples"]["frechet"]["ratio"]),
        "floor": (res["floor"]["c2st"]["accuracy"], res["floor"]["frechet"]["ratio"]),
        "samples_vs_real": (real["c2st"]["accuracy"], real["frechet"]["ratio"],
                            {k: real[k]["accept"] for k in ("brain_shape", "ventricles", "symmetry", "tissue")}),
        "decoder_gap_vs_real": (dec["c2st"]["accuracy"], dec["frechet"]["ratio"]),
    }
    images[f"recon_{name}"], images[f"samples_{name}"] = ref_img, s_img
    print(name, json.dumps(summary[name]), f"{time.time() - t0:.0f} s", flush=True)
(out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
torch.save({k: (v * 255).round().to(torch.uint8) for k, v in images.items()}
           | {"positions": torch.as_tensor(positions), "test_positions": torch.as_tensor(t_pos)}, out / "images.pt")
