"""The quality-cpu recipe end to end on the OASIS-1 subset, fp32 (bf16 off), seed 0, with another
bottom code: NUM_CODES bottom codes, a bottom grid of 256 / DOWNSAMPLE (default 4) and a top grid
of that / TOP_DOWNSAMPLE (default 4).

Usage: python pipeline_arch.py OUT NUM_CODES [DOWNSAMPLE TOP_DOWNSAMPLE]
DATA (environment, required): the Keras layout of the OASIS-1 subset
(`python ../shared/data/oasis1-subset/to_keras_layout.py DATA`)."""
import dataclasses
import json
import os
import sys
from pathlib import Path

from brainvq.data.sources import DataConfig
from brainvq.models.vqvae_config import VQVAEConfig
from brainvq.pipeline import run_pipeline
from brainvq.recipes import get_recipe

out, k = Path(sys.argv[1]), int(sys.argv[2])
ds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
tds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
recipe = dataclasses.replace(get_recipe("quality-cpu"), precision="32-true")
summary = run_pipeline(
    DataConfig(root=os.environ["DATA"]), out, recipe, seed=0,
    vqvae_model=VQVAEConfig(num_codes=k, downsample=ds, top_downsample=tds), progress=False,
)
print(json.dumps(summary.get("verdict", summary), indent=1, default=str)[:4000])
