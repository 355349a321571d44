from __future__ import annotations

import numpy as np

from trainables.errors import ConfigError
from trainables.schedules.base import Schedule, Step, sample_tasks


class Proportional(Schedule):
    """Each step trains one task, drawn with probability ∝ (its number of batches)^alpha.

    alpha = 1 samples by data set size, 0 uniformly. The epoch has as many steps as the epoch
    length rule gives batches in all.

    Args:
        alpha: the exponent on the data set size, in [0, 1].
    """

    def __init__(
        self, batches_per_task, epoch_length, steps_per_epoch, epochs, *, alpha: float = 1.0
    ) -> None:
        super().__init__(batches_per_task, epoch_length, steps_per_epoch, epochs)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha: must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def alpha_at(self, epoch: int) -> float:
        return self.alpha

    def plan(self, epoch: int, rng: np.random.Generator) -> list[Step]:
        quota = self.quota()
        a = self.alpha_at(epoch)
        probs = {t: float(self.n[t]) ** a for t in quota}
        return sample_tasks(quota, probs, sum(quota.values()), rng)
