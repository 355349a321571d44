from __future__ import annotations

import torch
from torch import nn

from trainables.weighting.base import Weighting


class UncertaintyWeighting(Weighting):
    """Learned homoscedastic-uncertainty weights (Kendall, Gal & Cipolla 2018): each task has a
    trainable log-variance s_t and contributes w_t · (exp(−s_t) · loss_t + s_t), so noisy tasks
    are down-weighted and the s_t term keeps the weights from collapsing to zero.

    Args:
        init: initial log-variance of every task (0 → weight 1).
    """

    def __init__(self, task_weights: dict[str, float], *, init: float = 0.0) -> None:
        super().__init__(task_weights)
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(float(init))) for t in task_weights}
        )

    def forward(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for t, loss in losses.items():
            s = self.log_vars[t]
            out[t] = self.task_weights[t] * (torch.exp(-s) * loss + s)
        return out
