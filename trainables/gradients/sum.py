from __future__ import annotations

import torch
from torch import nn

from trainables.gradients.base import GradientRule


class SumGradients(GradientRule):
    """Backpropagate the sum of the weighted task losses (the ordinary multi-task step)."""

    def __init__(self) -> None:
        pass

    def backward(self, accelerator, model: nn.Module, task_losses: dict[str, torch.Tensor]) -> None:
        accelerator.backward(sum(task_losses.values()))
