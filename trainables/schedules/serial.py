from __future__ import annotations

import numpy as np

from trainables.schedules.base import Schedule, Step


class Serial(Schedule):
    """Each epoch: all SST batches, then all paraphrase, then all STS; a step per batch
    (the study's "serial" baseline)."""

    def __init__(self, batches_per_task, epoch_length, steps_per_epoch, epochs) -> None:
        super().__init__(batches_per_task, epoch_length, steps_per_epoch, epochs)

    def plan(self, epoch: int, rng: np.random.Generator) -> list[Step]:
        return [(t,) for t, k in self.quota().items() for _ in range(k)]
