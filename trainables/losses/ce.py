from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.errors import ConfigError
from trainables.losses.base import Loss
from trainables.tasks import TaskSpec


class CrossEntropyLoss(Loss):
    """Cross-entropy over `num_classes` logits (SST: 5; paraphrase: 2-class CE).

    Args:
        label_smoothing: in [0, 1).
    """

    name = "ce"
    kinds = ("multiclass", "binary")

    def __init__(self, task: TaskSpec, *, label_smoothing: float = 0.0) -> None:
        super().__init__(task)
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.num_outputs = task.num_classes or 0
        self.label_smoothing = label_smoothing

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels, label_smoothing=self.label_smoothing)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=-1)
