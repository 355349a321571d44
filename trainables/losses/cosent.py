from __future__ import annotations

import torch

from trainables.losses.base import Loss
from trainables.tasks import TaskSpec


class CoSENTLoss(Loss):
    """CoSENT (Su, 2022): for every pair of examples (i, j) in the batch with label_i > label_j,
    push sim_i above sim_j: log(1 + Σ exp(scale·(sim_j − sim_i))). Ranking only, so it suits
    Pearson/Spearman evaluation; needs a similarity head.

    Args:
        scale: the temperature (20 in the paper and in sentence-transformers).
    """

    name = "cosent"
    kinds = ("regression", "binary")
    needs_similarity = True

    def __init__(self, task: TaskSpec, *, scale: float = 20.0) -> None:
        super().__init__(task)
        self.scale = scale

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sim = outputs.float().squeeze(-1)
        lo, hi = self.output_range or (-1.0, 1.0)
        sim = (sim - lo) / (hi - lo) * 2 - 1  # compare cosines, whatever the head's scale
        diff = self.scale * (sim[None, :] - sim[:, None])  # diff[i, j] = s·(sim_j − sim_i)
        mask = labels[:, None].float() > labels[None, :].float()  # label_i > label_j
        diff = diff.masked_fill(~mask, float("-inf"))
        zero = torch.zeros(1, device=sim.device)
        return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        scores = outputs.float().squeeze(-1)
        if self.task.is_binary:
            lo, hi = self.output_range or (-1.0, 1.0)
            return (scores >= (lo + hi) / 2).long()
        return self._to_label_scale(scores)
