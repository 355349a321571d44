"""What every update schedule is: the plan of one epoch, as a list of optimizer steps.

A step is a tuple of task names: the tasks whose next batch goes into that step's forward and
backward. ("sst",) is one batch of SST and one optimizer step; ("sst", "para", "sts") is one
batch of each, their losses combined, one step.

The epoch length rule says how many batches of each task an epoch holds when the data sets
differ in size (`n[t]` = batches in one pass over task t's training data):
    shortest  every task contributes min(n) batches
    longest   every task contributes max(n) batches (smaller sets cycle, reshuffled)
    exhaust   every task contributes n[t] batches: one pass each, tasks drop out as they run out
    fixed     `steps_per_epoch` optimizer steps in all
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

Step = tuple[str, ...]


class Schedule:
    """Base class of the schedules in `trainables.schedules`.

    Constructor: `(batches_per_task, epoch_length, steps_per_epoch, epochs, *, <user args>)`.
    `plan(epoch, rng)` must depend only on its arguments (every DDP rank computes the same plan,
    and a resumed run recomputes it).
    """

    # True when a step can hold several tasks (what PCGrad needs).
    multi_task_steps: ClassVar[bool] = False

    def __init__(
        self,
        batches_per_task: dict[str, int],
        epoch_length: str,
        steps_per_epoch: int | None,
        epochs: int,
    ) -> None:
        self.n = dict(batches_per_task)
        self.tasks = list(self.n)
        self.epoch_length = epoch_length
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs

    def quota(self) -> dict[str, int]:
        """Batches of each task in one epoch under the epoch length rule."""
        n, rule = self.n, self.epoch_length
        if rule == "shortest":
            return {t: min(n.values()) for t in n}
        if rule == "longest":
            return {t: max(n.values()) for t in n}
        if rule == "exhaust":
            return dict(n)
        assert self.steps_per_epoch is not None
        per, extra = divmod(self.steps_per_epoch * self.batches_per_step(), len(n))
        return {t: per + (i < extra) for i, t in enumerate(n)}

    def batches_per_step(self) -> int:
        return 1

    def plan(self, epoch: int, rng: np.random.Generator) -> list[Step]:
        raise NotImplementedError

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self.plan(epoch, np.random.default_rng(0)))


def interleave(quota: dict[str, int]) -> list[Step]:
    """Round-robin over tasks, one batch each in turn, skipping tasks whose quota is used up."""
    left = dict(quota)
    steps: list[Step] = []
    while any(left.values()):
        for t in left:
            if left[t]:
                steps.append((t,))
                left[t] -= 1
    return steps


def sample_tasks(
    quota: dict[str, int], probs: dict[str, float], total: int, rng: np.random.Generator
) -> list[Step]:
    """`total` single-task steps, each task drawn with probability `probs[t]`."""
    tasks = list(quota)
    p = np.array([probs[t] for t in tasks], dtype=float)
    draws = rng.choice(len(tasks), size=total, p=p / p.sum())
    return [(tasks[i],) for i in draws]
