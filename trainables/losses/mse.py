from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.losses.regression import ScoreRegressionLoss
from trainables.tasks import TaskSpec


class MSELoss(ScoreRegressionLoss):
    """Mean squared error on the score (L2)."""

    name = "mse"

    def __init__(self, task: TaskSpec) -> None:
        super().__init__(task)

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)
