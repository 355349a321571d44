"""Shared base of the score-regression losses (MSE, L1)."""

from __future__ import annotations

import torch

from trainables.losses.base import Loss


class ScoreRegressionLoss(Loss):
    """One output per example, compared to the label; bounded heads (cosine) get the label
    mapped into their range, and predictions are mapped back to the task's range."""

    kinds = ("regression",)

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = self._to_output_scale(labels.float())
        return self.distance(outputs.float().squeeze(-1), target)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return self._to_label_scale(outputs.float().squeeze(-1))
