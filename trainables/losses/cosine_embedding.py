from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.losses.base import Loss
from trainables.tasks import TaskSpec


class CosineEmbeddingLoss(Loss):
    """torch's CosineEmbeddingLoss on the head's similarity: similar pairs (label above the
    middle of the label range, or paraphrase = 1) are pulled to cos = 1, others pushed below
    `margin`. Needs a similarity head.

    Args:
        margin: cos value dissimilar pairs are pushed below, in [-1, 1].
    """

    name = "cosine_embedding"
    kinds = ("regression", "binary")
    needs_similarity = True

    def __init__(self, task: TaskSpec, *, margin: float = 0.0) -> None:
        super().__init__(task)
        self.margin = margin

    def _cos(self, outputs: torch.Tensor) -> torch.Tensor:
        lo, hi = self.output_range or (-1.0, 1.0)
        return (outputs.float().squeeze(-1) - lo) / (hi - lo) * 2 - 1

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self._cos(outputs)
        lo, hi = self.task.label_range or (0.0, 1.0)
        similar = labels.float() > (lo + hi) / 2 if self.task.is_regression else labels > 0
        return torch.where(similar, 1 - cos, F.relu(cos - self.margin)).mean()

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.task.is_binary:
            return (self._cos(outputs) >= 0).long()
        return self._to_label_scale(outputs.float().squeeze(-1))
