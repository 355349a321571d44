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

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pw = torch.tensor(self.pos_weight, device=outputs.device)
        return F.binary_cross_entropy_with_logits(
            outputs.float().squeeze(-1), labels.float(), pos_weight=pw
        )

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return (outputs.squeeze(-1) >= 0).long()
