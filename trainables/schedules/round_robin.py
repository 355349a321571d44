from __future__ import annotations

import numpy as np

from trainables.schedules.base import Schedule, Step, interleave


class RoundRobin(Schedule):
    """One batch of each task in turn, an optimizer step after every batch."""

    def __init__(self, batches_per_task, epoch_length, steps_per_epoch, epochs) -> None:
        super().__init__(batches_per_task, epoch_length, steps_per_epoch, epochs)

    def plan(self, epoch: int, rng: np.random.Generator) -> list[Step]:
        return interleave(self.quota())
