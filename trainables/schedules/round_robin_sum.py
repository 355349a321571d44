from __future__ import annotations

import numpy as np

from trainables.schedules.base import Schedule, Step


class RoundRobinSum(Schedule):
    """One batch of each task, their losses summed (or combined by the gradient rule, e.g.
    PCGrad), one optimizer step. With `exhaust`, tasks that ran out drop out of later steps."""

    multi_task_steps = True

    def __init__(self, batches_per_task, epoch_length, steps_per_epoch, epochs) -> None:
        super().__init__(batches_per_task, epoch_length, steps_per_epoch, epochs)

    def batches_per_step(self) -> int:
        return len(self.n)

    def plan(self, epoch: int, rng: np.random.Generator) -> list[Step]:
        left = self.quota()
        steps: list[Step] = []
        while any(left.values()):
            step = tuple(t for t in left if left[t])
            for t in step:
                left[t] -= 1
            steps.append(step)
        return steps
