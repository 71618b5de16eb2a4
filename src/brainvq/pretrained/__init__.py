"""Pretrained weights shipped inside the package, usable offline in one line.

``brainvq sample --pretrained oasis1`` (and ``evaluate``, ``anomaly``, ``evaluate-anomaly``)
take the weights from here instead of a run folder. A model ships a VQ-VAE (its decoder is the
reconstruction decoder), a prior over its codes and, optionally, a generation decoder (the same
VQ-VAE with its decoder fine-tuned adversarially by ``brainvq sharpen``) that draws generated
slices; ``sample`` and ``evaluate`` draw with it unless ``--no-generation-decoder``, while
reconstructions and anomaly maps always use the reconstruction decoder. Each model's files are
listed below with their SHA-256; every load checks them all, so a missing or altered file stops
with one line (:class:`~brainvq.errors.CheckpointError`) instead of using the wrong weights.
The model card (``MODEL_CARD.md`` beside the weights) says what the weights were trained on,
with which command, and how well they do.

From Python::

    from brainvq.pretrained import load_pretrained
    pair = load_pretrained("oasis1")  # a brainvq.models.pair.ModelPair: pair.vqvae, pair.prior
    pair.drawing_decoder  # "generation": pair.draw uses the shipped generation decoder
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from brainvq.errors import CheckpointError

if TYPE_CHECKING:
    from brainvq.models.pair import ModelPair

GENERATION_DECODER_FILE = "generation_decoder.safetensors"


@dataclass(frozen=True)
class PretrainedModel:
    """One shipped VQ-VAE + prior pair (and generation decoder, when ``generation_decoder_sha256``
    is set; None: none shipped): its folder in this package and its files' SHA-256."""

    name: str
    vqvae_sha256: str
    prior_sha256: str
    summary: str
    generation_decoder_sha256: str | None = None

    @property
    def folder(self) -> Path:
        return Path(str(resources.files(__package__) / self.name))

    @property
    def card(self) -> Path:
        return self.folder / "MODEL_CARD.md"

    def files(self) -> dict[str, str]:
        """``{file name: SHA-256}`` of every file the model ships (weights only)."""
        files = {"vqvae.safetensors": self.vqvae_sha256, "prior.safetensors": self.prior_sha256}
        if self.generation_decoder_sha256 is not None:
            files[GENERATION_DECODER_FILE] = self.generation_decoder_sha256
        return files


PRETRAINED: dict[str, PretrainedModel] = {
    "oasis1": PretrainedModel(
        "oasis1",
        vqvae_sha256="7935a006438d55ea430ed7a883c2a4c53deb3a17bc7d1797c3d075ab1a576e19",
        prior_sha256="f6be4e5d08fad2340a69ef79259ce781ac9a334fc852999c6a2bb6be88425007",
        summary="two-level VQ-VAE + gated PixelCNN prior trained on the OASIS-1 subset (quality-cpu recipe)",
        generation_decoder_sha256="e9d9d020c7c7fb6b66a339ef06ef2559f0582893d4491a4b29bbcb171a87b60c",
    ),
}


def sha256(path: Path) -> str:
    """The file's SHA-256, computed once per process for each (path, inode, size, modification and
    change times): a rewritten file (its change time moves even when its modification time is set
    back) is hashed again."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_pretrained(name: str) -> PretrainedModel:
    if name not in PRETRAINED:
        raise CheckpointError(f"unknown pretrained model {name!r}; shipped: {', '.join(sorted(PRETRAINED))}")
    return PRETRAINED[name]


def checked_files(name: str) -> dict[str, Path]:
    """``{file name: path}`` of every file the shipped model ``name`` ships, each checked against
    its recorded SHA-256 (CheckpointError, one line, when missing or altered)."""
    model = get_pretrained(name)
    paths = {}
    for file, expected in model.files().items():
        path = paths[file] = model.folder / file
        if not path.is_file():
            raise CheckpointError(f"pretrained model {name!r}: {path} is missing; reinstall brainvq")
        if sha256(path) != expected:
            raise CheckpointError(
                f"pretrained model {name!r}: {path} has been altered (SHA-256 differs from the one shipped); reinstall brainvq"
            )
    return paths


def pretrained_paths(name: str) -> tuple[Path, Path]:
    """``(vqvae.safetensors, prior.safetensors)`` of the shipped model ``name``; every file it
    ships is checked (:func:`checked_files`)."""
    paths = checked_files(name)
    return paths["vqvae.safetensors"], paths["prior.safetensors"]


def pretrained_generation_decoder(name: str) -> Path | None:
    """The shipped model ``name``'s generation decoder (checked like every file it ships,
    :func:`checked_files`), or None when it ships none."""
    return checked_files(name).get(GENERATION_DECODER_FILE)


def load_pretrained(name: str = "oasis1", device: str | None = None, generation_decoder: bool = True) -> ModelPair:
    """The shipped VQ-VAE and prior ``name`` as a :class:`~brainvq.models.pair.ModelPair`,
    hash-checked and checked to belong together; it draws generated slices with the shipped
    generation decoder when there is one, unless ``generation_decoder`` is False."""
    from brainvq.models.pair import ModelPair

    paths = checked_files(name)
    drawer = paths.get(GENERATION_DECODER_FILE) if generation_decoder else None
    return ModelPair.load(
        paths["vqvae.safetensors"], paths["prior.safetensors"], device=device, generation_decoder=drawer
    )
