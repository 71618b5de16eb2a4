"""Validation bits per bottom code (the shipped oasis1 VQ-VAE's codes of the validation split) of
the shipped bottom level and of bottom.py's levels: python bits.py DIR ..."""
import json, math, sys
from pathlib import Path
import torch
from brainvq.models.pixelcnn import GatedPixelCNN, PixelCNNConfig
from brainvq.pretrained import load_pretrained
torch.set_num_threads(2)
va_c, va_t, va_p = torch.load(__import__("os").environ["CODES"], weights_only=True)["validate"]
models = {"shipped": load_pretrained("oasis1").prior.bottom}
for d in sys.argv[1:]:
    rec = json.loads((Path(d) / "train.json").read_text())
    m = GatedPixelCNN(PixelCNNConfig(**rec["config"]))
    m.load_state_dict(torch.load(Path(d) / "bottom.pt", weights_only=True))
    models[d] = m
for name, m in models.items():
    m.eval()
    with torch.no_grad():
        nll = sum(torch.nn.functional.cross_entropy(m(va_c[i:i+64], va_p[i:i+64].float(), va_t[i:i+64]), va_c[i:i+64], reduction="sum").item()
                  for i in range(0, len(va_c), 64))
    print(name, "val bits/code", round(nll / va_c.numel() / math.log(2), 4), flush=True)
