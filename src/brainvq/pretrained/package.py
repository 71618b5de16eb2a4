"""How a run folder becomes a shipped model (a maintainer's step, not run by users).

``python -m brainvq.pretrained.package RUN DATA NAME`` copies ``RUN``'s VQ-VAE and prior into
``src/brainvq/pretrained/NAME/`` (the prior re-saved with its VQ-VAE's codebook fingerprint),
writes ``reference.json`` from the real splits of ``DATA`` (statistics only, never slices), and
prints the SHA-256 lines to put in :data:`brainvq.pretrained.PRETRAINED`. The model card is
written by hand from ``brainvq evaluate --pretrained NAME``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, read_weights, save_weights
from brainvq.data.sources import DataConfig
from brainvq.models.weights import load_prior, load_vqvae
from brainvq.pretrained import sha256
from brainvq.pretrained.reference import write_reference
from brainvq.runs import RunLayout


def package(run: str | Path, data: str | Path, name: str) -> dict[str, str]:
    """Copy ``run``'s weights into the package folder ``name``; returns each file's SHA-256."""
    layout = RunLayout(run)
    vq_path = layout.vqvae_weights  # the reconstruction decoder's; the registry ships no generation decoder yet
    folder = Path(__file__).parent / name
    folder.mkdir(exist_ok=True)
    shutil.copyfile(vq_path, folder / "vqvae.safetensors")
    _, config = read_weights(layout.prior_weights, "prior")
    mark = {VQVAE_FINGERPRINT: codebook_fingerprint(load_vqvae(vq_path))}
    save_weights(load_prior(layout.prior_weights), folder / "prior.safetensors", "prior", config, mark)
    write_reference(DataConfig(root=str(data)), folder / "reference.json")
    return {f: sha256(folder / f) for f in ("vqvae.safetensors", "prior.safetensors")}


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m brainvq.pretrained.package RUN DATA NAME")
    for file, digest in package(*sys.argv[1:]).items():
        print(f"{file}: {digest}")
