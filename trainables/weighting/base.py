"""How per-task losses are weighted into the step's objective."""

from __future__ import annotations

import torch
from torch import nn


class Weighting(nn.Module):
    """Base class of `trainables.weighting`. Constructor: `(task_weights, *, <user args>)`,
    where `task_weights` are the configured `tasks.<task>.weight` factors.

    `forward(losses)` maps each task's raw loss to its weighted contribution; the step's
    objective is their sum (kept per task so that gradient rules such as PCGrad can use them).
    Parameters of a weighting (if any) are trained with the model.
    """

    def __init__(self, task_weights: dict[str, float]) -> None:
        super().__init__()
        self.task_weights = dict(task_weights)

    def forward(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
