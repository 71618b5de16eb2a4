"""How a run folder becomes a shipped model (a maintainer's step, not run by users).

``python -m brainvq.pretrained.package RUN DATA NAME`` copies ``RUN``'s VQ-VAE and prior into
``src/brainvq/pretrained/NAME/`` (the prior re-saved with its VQ-VAE's codebook fingerprint),
and ``RUN/generation_decoder/vqvae.safetensors`` as ``generation_decoder.safetensors`` when the
run has one (checked to have the VQ-VAE's codebooks), writes ``reference.json`` from the real
splits of ``DATA`` (statistics only, never slices), and prints the SHA-256 lines to put in
:data:`brainvq.pretrained.PRETRAINED`. The model card is written by hand from
``brainvq evaluate --pretrained NAME``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from brainvq.checkpoint import VQVAE_FINGERPRINT, codebook_fingerprint, read_weights, save_weights
from brainvq.data.sources import DataConfig
from brainvq.models.pair import check_generation_decoder
from brainvq.models.weights import load_prior, load_vqvae
from brainvq.pretrained import GENERATION_DECODER_FILE, sha256
from brainvq.pretrained.reference import write_reference
from brainvq.runs import RunLayout


def package(run: str | Path, data: str | Path, name: str) -> dict[str, str]:
    """Copy ``run``'s weights (its generation decoder's too, when it has one) into the package
    folder ``name``; returns each copied file's SHA-256."""
    layout = RunLayout(run)
    vq_path = layout.vqvae_weights  # the reconstruction decoder's: reconstructions, anomaly maps, the prior's codes
    folder = Path(__file__).parent / name
    folder.mkdir(exist_ok=True)
    shutil.copyfile(vq_path, folder / "vqvae.safetensors")
    vqvae = load_vqvae(vq_path)
    _, config = read_weights(layout.prior_weights, "prior")
    mark = {VQVAE_FINGERPRINT: codebook_fingerprint(vqvae)}
    save_weights(load_prior(layout.prior_weights), folder / "prior.safetensors", "prior", config, mark)
    files = ["vqvae.safetensors", "prior.safetensors"]
    if layout.generation_decoder.is_file():
        check_generation_decoder(vqvae, load_vqvae(layout.generation_decoder), vq_path, layout.generation_decoder)
        shutil.copyfile(layout.generation_decoder, folder / GENERATION_DECODER_FILE)
        files.append(GENERATION_DECODER_FILE)
    else:
        (folder / GENERATION_DECODER_FILE).unlink(missing_ok=True)  # none left from an earlier packaging
    write_reference(DataConfig(root=str(data)), folder / "reference.json")
    return {f: sha256(folder / f) for f in files}


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m brainvq.pretrained.package RUN DATA NAME")
    for file, digest in package(*sys.argv[1:]).items():
        print(f"{file}: {digest}")
