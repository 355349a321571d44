from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.losses.base import Loss
from trainables.tasks import TaskSpec


class BCELoss(Loss):
    """Binary cross-entropy on one logit; predicts 1 when sigmoid(logit) ≥ 0.5.

    Args:
        pos_weight: weight of positive examples (class imbalance), 1.0 = none.
    """

    name = "bce"
    kinds = ("binary",)

    def __init__(self, task: TaskSpec, *, pos_weight: float = 1.0) -> None:
        super().__init__(task)
        self.pos_weight = pos_weight
        # A buffer, so that it moves with the model: a tensor made from the float at every
        # call would be a copy from the host that a GPU step waits for. Not in checkpoints.
        self.register_buffer("_pos_weight", torch.tensor(pos_weight), persistent=False)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            outputs.float().squeeze(-1), labels.float(),
            pos_weight=None if self.pos_weight == 1.0 else self._pos_weight,
        )

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return (outputs.squeeze(-1) >= 0).long()
