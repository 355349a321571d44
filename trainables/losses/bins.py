from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.errors import ConfigError
from trainables.losses.base import Loss
from trainables.tasks import TaskSpec


class ScoreBinsLoss(Loss):
    """STS as classification: cross-entropy over `n_bins` evenly spaced score bins; the
    prediction is the expected score under the softmax (so Pearson r sees a real number).

    Args:
        n_bins: number of bin centres over the label range (26 = steps of 0.2 on 0..5).
        soft: split each label between its two neighbouring bins (linear interpolation)
            instead of the nearest bin only.
    """

    name = "bins"
    kinds = ("regression",)

    def __init__(self, task: TaskSpec, *, n_bins: int = 26, soft: bool = True) -> None:
        super().__init__(task)
        if n_bins < 2:
            raise ConfigError(f"n_bins: must be ≥ 2, got {n_bins}")
        lo, hi = task.label_range or (0.0, 1.0)
        self.num_outputs = n_bins
        self.soft = soft
        self.register_buffer("centres", torch.linspace(lo, hi, n_bins), persistent=False)

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) scores → (B, n_bins) target distributions."""
        centres = self.centres
        step = centres[1] - centres[0]
        pos = ((labels.float() - centres[0]) / step).clamp(0, len(centres) - 1)
        if not self.soft:
            return F.one_hot(pos.round().long(), len(centres)).float()
        left = pos.floor().long().clamp(max=len(centres) - 2)
        frac = (pos - left).unsqueeze(-1)
        t = torch.zeros(labels.shape[0], len(centres), device=labels.device)
        t.scatter_(1, left.unsqueeze(-1), 1 - frac)
        t.scatter_add_(1, (left + 1).unsqueeze(-1), frac)
        return t

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), self._targets(labels))

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(-1) @ self.centres
