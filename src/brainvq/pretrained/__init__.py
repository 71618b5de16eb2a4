"""Pretrained weights shipped inside the package, usable offline in one line.

``brainvq sample --pretrained oasis1`` (and ``evaluate``, ``anomaly``, ``evaluate-anomaly``)
take the weights from here instead of a run folder. Each model's files are listed below with
their SHA-256; every load checks them, so a missing or altered file stops with one line
(:class:`~brainvq.data.errors.CheckpointError`) instead of sampling from the wrong weights.
The model card (``MODEL_CARD.md`` beside the weights) says what the weights were trained on,
with which command, and how well they do.

From Python::

    from brainvq.pretrained import load_pretrained
    pair = load_pretrained("oasis1")  # a brainvq.models.pair.ModelPair: pair.vqvae, pair.prior
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from brainvq.data.errors import CheckpointError


@dataclass(frozen=True)
class PretrainedModel:
    """One shipped VQ-VAE + prior pair: its folder in this package and its files' SHA-256."""

    name: str
    vqvae_sha256: str
    prior_sha256: str
    summary: str

    @property
    def folder(self) -> Path:
        return Path(str(resources.files(__package__) / self.name))

    @property
    def card(self) -> Path:
        return self.folder / "MODEL_CARD.md"

    def files(self) -> dict[str, str]:
        return {"vqvae.safetensors": self.vqvae_sha256, "prior.safetensors": self.prior_sha256}


PRETRAINED: dict[str, PretrainedModel] = {
    "oasis1": PretrainedModel(
        "oasis1",
        vqvae_sha256="7935a006438d55ea430ed7a883c2a4c53deb3a17bc7d1797c3d075ab1a576e19",
        prior_sha256="f6be4e5d08fad2340a69ef79259ce781ac9a334fc852999c6a2bb6be88425007",
        summary="two-level VQ-VAE + gated PixelCNN prior trained on the OASIS-1 subset (quality-cpu recipe)",
    ),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_pretrained(name: str) -> PretrainedModel:
    if name not in PRETRAINED:
        raise CheckpointError(f"unknown pretrained model {name!r}; shipped: {', '.join(sorted(PRETRAINED))}")
    return PRETRAINED[name]


def pretrained_paths(name: str) -> tuple[Path, Path]:
    """``(vqvae.safetensors, prior.safetensors)`` of the shipped model ``name``, each checked
    against its recorded SHA-256 (CheckpointError, one line, when missing or altered)."""
    model = get_pretrained(name)
    for file, expected in model.files().items():
        path = model.folder / file
        if not path.is_file():
            raise CheckpointError(f"pretrained model {name!r}: {path} is missing; reinstall brainvq")
        if sha256(path) != expected:
            raise CheckpointError(
                f"pretrained model {name!r}: {path} has been altered (SHA-256 differs from the one shipped); reinstall brainvq"
            )
    vqvae, prior = (model.folder / file for file in model.files())
    return vqvae, prior


def load_pretrained(name: str = "oasis1", device: str | None = None):
    """The shipped VQ-VAE and prior ``name`` as a :class:`~brainvq.models.pair.ModelPair`,
    hash-checked and checked to belong together."""
    from brainvq.models.pair import ModelPair

    return ModelPair.load(*pretrained_paths(name), device=device)
