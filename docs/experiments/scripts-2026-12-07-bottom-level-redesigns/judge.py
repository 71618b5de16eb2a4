"""Cheap sampling levers under the prior's-gap judge (issue 35): the shipped oasis1 model on the
OASIS-1 subset; per judge seed: judges fitted once, 256 samples at test positions per variant
(same top grids across variants), each judged against the drawing decoder's reconstructions of
test slices (floor: reconstructed validation), plus the level split at each bottom temperature.

usage: python levers.py DATA OUT SEED VARIANT [VARIANT ...]   (top grid at the shipped default, 1.0)
VARIANT: shipped:T (the shipped bottom PixelCNN at temperature T) or file:DIR:T (bottom.py's
bottom level in DIR); the same top grids for every variant (same seed, same top level)
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
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig

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
shipped_bottom = pair.prior.bottom
# top-k on the bottom level only (variant suffix :kN): the samplers' inverse-CDF draw sees logits
# outside the k largest as -inf while the bottom PixelCNN draws
import brainvq.models.levels as L
import brainvq.models.sampling as S
TOPK = {"k": 0, "on": False}
_cached, _draw = S.sample_cached, S._draw


def _cached_k(model, *a, **kw):
    TOPK["on"] = model is pair.prior.bottom
    try:
        return _cached(model, *a, **kw)
    finally:
        TOPK["on"] = False


def _draw_k(logits, u, temperature):
    if TOPK["on"] and TOPK["k"]:
        kth = logits.topk(TOPK["k"], -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return _draw(logits, u, temperature)


L.sample_cached, S._draw = _cached_k, _draw_k
t_codes, v_codes = pg.encode(pair.vqvae, t_img), pg.encode(pair.vqvae, v_img)
ref = judges.profile(pg.draw(drawer, t_codes), t_pos, t_grp)
base = judges.profile(pg.draw(drawer, v_codes), v_pos, v_grp)
real_test, real_val = judges.profile(t_img, t_pos, t_grp), judges.profile(v_img, v_pos, v_grp)
print(f"fitted and profiled in {time.time() - t0:.0f} s", flush=True)
cands, real_cmp, images, rec_cands = {}, {}, {}, {}
import os
tops = None
for v in variants:
    t1 = time.time()
    kind, *args = v.split(":")
    if kind == "file":
        rec = json.loads((Path(args[0]) / "train.json").read_text())
        bottom = GatedPixelCNN(PixelCNNConfig(**rec["config"]))
        bottom.load_state_dict(torch.load(Path(args[0]) / "bottom.pt", weights_only=True))
        bottom.eval()
        pair.prior.bottom = bottom
    else:
        pair.prior.bottom = shipped_bottom
    TOPK["k"] = int(args[-1][1:]) if args[-1].startswith("k") else 0
    if TOPK["k"]:
        args = args[:-1]
    t = float(args[-1])
    g = generate(pair, positions, temperature=t, top_temperature=1.0, seed=seed, progress=False)
    imgs = g.images
    red = pg.redraw_bottom(pair, v_codes, v_pos, v_img, seed, temperature=t)
    if os.environ.get("RECDEC"):  # the same codes drawn by the reconstruction decoder (deliverable 3)
        rimgs = pg.draw(pair.vqvae, Codes(g.top, g.codes))
        images[f"recdec_samples_{v}"] = rimgs
        rec_cands[f"recdec_samples_{v}"] = generated_profile(judges, rimgs, positions)
        real_cmp[f"recdec_samples_{v}"] = compare(judges, rec_cands[f"recdec_samples_{v}"], real_test, real_val)
        rred = pg.draw(pair.vqvae, red)
        images[f"recdec_bottom_redrawn_{v}"] = rred
        rec_cands[f"recdec_bottom_redrawn_{v}"] = judges.profile(rred, v_pos, v_grp)
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
if rec_cands:  # against the reconstruction decoder's own reconstructions
    r_ref = judges.profile(pg.draw(pair.vqvae, t_codes), t_pos, t_grp)
    r_base_img = pg.draw(pair.vqvae, v_codes)
    r_base = judges.profile(r_base_img, v_pos, v_grp)
    rres = pg.judge_gap(judges, rec_cands, r_ref, r_base)
    rres["recdec_floor"] = rres.pop("floor")
    res.update(rres)
    res["recdec_decoder_gap_vs_real"] = compare(judges, r_base, real_test, real_val)
    images["recdec_recon_test"] = pg.draw(pair.vqvae, t_codes)
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
