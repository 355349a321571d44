from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.losses.regression import ScoreRegressionLoss
from trainables.tasks import TaskSpec


class L1Loss(ScoreRegressionLoss):
    """Mean absolute error on the score (L1)."""

    name = "l1"

    def __init__(self, task: TaskSpec) -> None:
        super().__init__(task)

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target)
