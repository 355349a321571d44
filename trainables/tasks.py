"""The three tasks of the study and what their labels look like."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: one sentence or a pair, classes or a score range, and its dev metric.

    `num_classes` is set for classification tasks (labels are ints in [0, num_classes));
    `label_range` is set for regression tasks (labels are floats in [lo, hi]).
    """

    name: str
    description: str
    pair: bool
    num_classes: int | None = None
    label_range: tuple[float, float] | None = None
    metric: str = "accuracy"

    @property
    def is_regression(self) -> bool:
        return self.num_classes is None

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2


TASKS: dict[str, TaskSpec] = {
    "sst": TaskSpec("sst", "SST-5 sentiment, 5 classes", pair=False, num_classes=5),
    "para": TaskSpec("para", "Quora paraphrase, binary", pair=True, num_classes=2),
    "sts": TaskSpec(
        "sts", "STS-B similarity, score 0..5", pair=True, label_range=(0.0, 5.0), metric="pearson"
    ),
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
