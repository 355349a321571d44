"""Losses, by the name the YAML uses (`tasks.<task>.loss`).

Adding a loss: one module with a `Loss` subclass, one line here.
"""

from __future__ import annotations

from trainables.losses.base import Loss
from trainables.registry import Registry

LOSSES: Registry[Loss] = Registry(
    "loss",
    {
        "ce": "trainables.losses.ce:CrossEntropyLoss",
        "bce": "trainables.losses.bce:BCELoss",
        "mse": "trainables.losses.mse:MSELoss",
        "l1": "trainables.losses.l1:L1Loss",
        "bins": "trainables.losses.bins:ScoreBinsLoss",
        "cosent": "trainables.losses.cosent:CoSENTLoss",
        "cosine_embedding": "trainables.losses.cosine_embedding:CosineEmbeddingLoss",
    },
)

__all__ = ["LOSSES", "Loss"]
