"""Which weights a prior keeps: the end of training, or each level at its own best validation
epoch (``PriorTrainConfig.keep``)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from brainvq.models.hierarchical import Prior
from brainvq.models.levels import prior_levels
from brainvq.train.common import restore_best


class BestPerLevel(Callback):
    """Tracks each level of a two-level prior at its own best validation epoch (``keep="best"``
    loads them; ``"last"``, the default, only reports them).

    The top PixelCNN's validation bits are lowest after a few epochs (on the OASIS-1 subset at
    epoch 6-8 of 20) while the bottom one still improves at the end, so one checkpoint chosen by
    the total would mix the two. The states are saved in the training checkpoints, so
    ``--resume`` keeps them."""

    LEVELS = ("top", "bottom")

    def __init__(self) -> None:
        self.best: dict[str, dict] = {}  # level -> {"bits", "epoch", "state"}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for level in self.LEVELS:
            value = trainer.callback_metrics.get(f"val/{level}_bits_per_code")
            if value is None:
                continue
            if level not in self.best or float(value) < self.best[level]["bits"]:
                state = getattr(pl_module.model, level).state_dict()
                self.best[level] = {
                    "bits": float(value),
                    "epoch": trainer.current_epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in state.items()},
                }

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best", {})

    def info(self) -> dict:
        """Each level's best epoch and its validation bits."""
        out = {}
        for level, best in self.best.items():
            out[f"{level}_best_epoch"] = best["epoch"]
            out[f"{level}_best_val_bits_per_code"] = best["bits"]
        return out

    def restore(self, prior: Prior) -> dict:
        """Load each level's best state into a two-level ``prior``; returns :meth:`info` (a
        single-level prior is left alone: {})."""
        levels = prior_levels(prior)
        if len(levels) < 2:
            return {}
        for level, best in self.best.items():
            levels[level].load_state_dict(best["state"])
        return self.info()


def keep_weights(keep: str, trainer: L.Trainer, module: L.LightningModule, per_level: BestPerLevel) -> dict:
    """Leave ``module`` at the end of training (``keep="last"``) or load each level's best
    validation state into it (``"best"``); what was kept, and each level's best epoch."""
    if keep == "best":
        restore_best(trainer, module)
        return {"kept": "best", **per_level.restore(module.model)}
    return {"kept": "last", **per_level.info()}  # empty for a single-level prior: nothing was tracked
