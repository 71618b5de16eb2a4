"""Train only the bottom level of the s25 quality-cpu prior again, with another bottom architecture,
from the same top level, under the recipe's bottom cap (11.76 min); export prior.safetensors.
usage: bottom.py PRIOR_RUN OUT HIDDEN LAYERS KERNEL [SEED]
(PRIOR_RUN: the quality-cpu run's prior folder, runs/s25/qcpu/prior when measured)"""
import dataclasses, json, os, sys, time
from pathlib import Path
import lightning as L
import yaml
from brainvq.checkpoint import VQVAE_FINGERPRINT, save_weights
from brainvq.config import from_dict
from brainvq.io import to_plain
from brainvq.models.weights import load_prior, load_vqvae
from brainvq.train.codes import extract_codes
from brainvq.train.prior import PriorTrainConfig, code_set_bits, prior_config_for, train_phase
from brainvq.models.conditioning import ScaleDistribution
from brainvq.train.common import write_run_config

S25 = sys.argv[1]
out = Path(sys.argv[2]); hidden, layers, k = map(int, sys.argv[3:6]); seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
raw = yaml.safe_load(open(f"{S25}/config.yaml"))["config"]
cfg = from_dict(PriorTrainConfig, raw)
cfg.out_dir = str(out)
cfg.bottom_model = dataclasses.replace(cfg.bottom_model, hidden=hidden, n_layers=layers, kernel_size=k)
cfg.trainer = dataclasses.replace(cfg.trainer, seed=seed)
out.mkdir(parents=True, exist_ok=True)
if not (out / "codes").exists():
    os.symlink(Path(S25, "codes").resolve(), out / "codes")
L.seed_everything(seed, workers=True, verbose=False)
vq_cfg = load_vqvae(cfg.vqvae).config
codes = extract_codes(cfg.vqvae, cfg.data, out / "codes", flip=cfg.flip, progress=False)
train, val, test = codes.train, codes.val, codes.test
scales = ScaleDistribution.fit(train.positions, train.scales)
model_cfg = prior_config_for(cfg, vq_cfg, scales)
write_run_config(out, cfg)
old = load_prior(f"{S25}/prior.safetensors")
from brainvq.models.hierarchical import HierarchicalPrior
fresh = HierarchicalPrior(model_cfg)
fresh.top.load_state_dict(old.top.state_dict())
state = fresh.state_dict()
t0 = time.time()
module, trainer, report = train_phase(cfg, model_cfg, "bottom", cfg.trainer, (train, val, test), state, None)
bits = code_set_bits(module.model, test)
save_weights(module.model, out / "prior.safetensors", "prior", to_plain(model_cfg), {VQVAE_FINGERPRINT: codes.fingerprint})
n = sum(p.numel() for p in module.model.bottom.parameters())
res = {"bottom": [hidden, layers, k], "seed": seed, "bottom_weights": n, "wall": round(time.time() - t0),
       **{k2: report.get(k2) for k2 in ("epochs_run", "bottom_best_epoch", "bottom_best_val_bits_per_code", "warning")},
       **{f"test_{a}": b for a, b in bits.items()}}
json.dump(res, open(out / "result.json", "w"), indent=1, default=str)
print(json.dumps(res, default=str))
