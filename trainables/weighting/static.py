from __future__ import annotations

import torch

from trainables.weighting.base import Weighting


class StaticWeighting(Weighting):
    """Fixed factors: loss_t × tasks.<t>.weight (the study's loss scaling, e.g. SST ×15)."""

    def __init__(self, task_weights: dict[str, float]) -> None:
        super().__init__(task_weights)

    def forward(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: self.task_weights[t] * loss for t, loss in losses.items()}
