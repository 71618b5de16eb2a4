"""Cheap sampling levers under the prior's-gap judge (issue 35): the shipped oasis1 model on the
OASIS-1 subset; per judge seed: judges fitted once, 256 samples at test positions per variant
(same top grids across variants), each judged against the drawing decoder's reconstructions of
test slices (floor: reconstructed validation), plus the level split at each bottom temperature.

usage: python levers.py DATA OUT SEED VARIANT [VARIANT ...]   (top grid at the shipped default, 1.0)
VARIANT: pixelcnn:T (the shipped bottom PixelCNN at temperature T) or maskgit:WEIGHTS:STEPS:T
(maskgit.py's bottom level given the same top grids as the first variant, which must be pixelcnn)
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
from brainvq.models.levels import Codes
from brainvq.judges.power import JudgeConfig, compare, fit_judges, generated_profile
from brainvq.pretrained import load_pretrained
from brainvq.sample.generate import generate

data, out, seed = DataConfig(root=sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
variants = sys.argv[4:]
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
t0 = time.time()
pair = load_pretrained("oasis1")
train, val, test = (load_split(data, s, progress=False) for s in ("train", "validate", "test"))
judges = fit_judges(as_tensor(train), np.asarray(train.positions), JudgeConfig(seed=seed))
n = 256
rng = np.random.default_rng(seed)
positions = np.sort(rng.choice(np.asarray(test.positions), n, replace=False))
rng = np.random.default_rng(seed + 1)
(t_img, t_pos, t_grp), (v_img, v_pos, v_grp) = pg.pick_slices(test, n, rng), pg.pick_slices(val, n, rng)
drawer = pair.drawing_vqvae
t_codes, v_codes = pg.encode(pair.vqvae, t_img), pg.encode(pair.vqvae, v_img)
ref = judges.profile(pg.draw(drawer, t_codes), t_pos, t_grp)
base = judges.profile(pg.draw(drawer, v_codes), v_pos, v_grp)
real_test, real_val = judges.profile(t_img, t_pos, t_grp), judges.profile(v_img, v_pos, v_grp)
print(f"fitted and profiled in {time.time() - t0:.0f} s", flush=True)
cands, real_cmp, images = {}, {}, {}
tops = None
for v in variants:
    t1 = time.time()
    kind, *args = v.split(":")
    if kind == "pixelcnn":
        t = float(args[0])
        g = generate(pair, positions, temperature=t, top_temperature=1.0, seed=seed, progress=False)
        imgs, tops = g.images, (g.top if tops is None else tops)
        red = pg.redraw_bottom(pair, v_codes, v_pos, v_img, seed, temperature=t)
    else:
        from maskgit import MaskedBottom, sample
        model = MaskedBottom()
        model.load_state_dict(torch.load(args[0], weights_only=True))
        model.eval()
        steps, t = int(args[1]), float(args[2])
        gen = torch.Generator().manual_seed(seed)
        pos_t = torch.as_tensor(positions, dtype=torch.float32)
        bottom = torch.cat([sample(model, tops[i:i+64], pos_t[i:i+64], steps, t, gen) for i in range(0, n, 64)])
        imgs = pg.draw(drawer, Codes(tops, bottom))
        vp = torch.as_tensor(v_pos, dtype=torch.float32)
        red_b = torch.cat([sample(model, v_codes.top[i:i+64], vp[i:i+64], steps, t, gen) for i in range(0, n, 64)])
        red = Codes(v_codes.top, red_b)
    took = time.time() - t1
    images[f"samples_{v}"] = imgs
    cands[f"samples_{v}"] = generated_profile(judges, imgs, positions)
    real_cmp[f"samples_{v}"] = compare(judges, cands[f"samples_{v}"], real_test, real_val)
    red_img = pg.draw(drawer, red)
    images[f"bottom_redrawn_{v}"] = red_img
    cands[f"bottom_redrawn_{v}"] = judges.profile(red_img, v_pos, v_grp)
    print(f"{v}: sampled 256 (and 256 bottom grids) in {took:.0f} s", flush=True)
res = pg.judge_gap(judges, cands, ref, base)
res["decoder_gap_vs_real"] = compare(judges, base, real_test, real_val)
summary = {
    name: {
        "gap_c2st": r["c2st"]["accuracy"],
        "gap_c2st_stderr": r["c2st"].get("stderr"),
        "gap_frechet_ratio": r["frechet"]["ratio"],
        **({"real_c2st": real_cmp[name]["c2st"]["accuracy"], "real_frechet_ratio": real_cmp[name]["frechet"]["ratio"],
            **{k: real_cmp[name][k]["accept"] for k in ("brain_shape", "ventricles", "symmetry", "tissue")}}
           if name in real_cmp else {}),
    }
    for name, r in res.items()
}
print(json.dumps(summary, indent=1))
(out / "levers.json").write_text(json.dumps({"summary": summary, "seconds": time.time() - t0}, indent=1, default=float))
torch.save({k: (v * 255).round().to(torch.uint8) for k, v in images.items()} | {
    "recon_test": (pg.draw(drawer, t_codes) * 255).round().to(torch.uint8), "real_test": (t_img * 255).round().to(torch.uint8),
    "positions": torch.as_tensor(positions), "test_positions": torch.as_tensor(t_pos), "val_positions": torch.as_tensor(v_pos)},
    out / "images.pt")
