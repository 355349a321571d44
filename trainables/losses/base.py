"""What every loss is: head outputs `(batch, k)` + labels `(batch,)` → scalar, and predictions."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.tasks import TaskSpec


def task_kind(task: TaskSpec) -> str:
    """"multiclass", "binary" or "regression"."""
    if task.is_regression:
        return "regression"
    return "binary" if task.is_binary else "multiclass"


class Loss(nn.Module):
    """Base class of the losses in `trainables.losses`.

    Constructor: `(task, *, <user arguments from tasks.<task>.loss_args>)`.

    Class attributes:
        kinds: the task kinds it applies to ("multiclass", "binary", "regression").
        needs_similarity: it only makes sense on a similarity head (e.g. CoSENT).
    Attributes:
        num_outputs: how many values per example the head must give.
    """

    name: ClassVar[str] = "loss"
    kinds: ClassVar[tuple[str, ...]] = ()
    needs_similarity: ClassVar[bool] = False

    def __init__(self, task: TaskSpec) -> None:
        super().__init__()
        from trainables.losses import LOSSES

        kind = task_kind(task)
        if kind not in self.kinds:
            fitting = [n for n in LOSSES if kind in LOSSES.get(n).kinds]
            raise ConfigError(
                f"loss {self.name!r} does not apply to {task.name!r} ({kind}); valid losses "
                f"for it: {', '.join(fitting)}"
            )
        self.task = task
        self.num_outputs = 1
        # Set by the model when the head's outputs are bounded (e.g. a cosine in [-1, 1]).
        self.output_range: tuple[float, float] | None = None

    def bind_output_range(self, output_range: tuple[float, float] | None) -> None:
        self.output_range = output_range

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """(batch, k) → (batch,): class ids (long) or scores in the task's label range."""
        raise NotImplementedError

    # Helpers for scores: map labels into the head's output range and back.
    def _to_output_scale(self, labels: torch.Tensor) -> torch.Tensor:
        if self.output_range is None or self.task.label_range is None:
            return labels
        (lo, hi), (olo, ohi) = self.task.label_range, self.output_range
        return olo + (labels - lo) * (ohi - olo) / (hi - lo)

    def _to_label_scale(self, scores: torch.Tensor) -> torch.Tensor:
        if self.output_range is None or self.task.label_range is None:
            return scores
        (lo, hi), (olo, ohi) = self.task.label_range, self.output_range
        return lo + (scores - olo) * (hi - lo) / (ohi - olo)
