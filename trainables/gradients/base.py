"""How the gradients of one step's task losses become the parameters' `.grad`."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class GradientRule:
    """Base class of `trainables.gradients`. Constructor: `(*, <user args>)`.

    `backward(accelerator, model, task_losses)` fills `.grad` of every trainable parameter
    (averaged across processes under DDP).
    """

    # True when the rule only differs from a plain sum with several tasks in a step.
    needs_multi_task_steps: ClassVar[bool] = False
    # True when the rule does its own cross-process gradient averaging; the training loop
    # then runs forward/backward under `accelerator.no_sync`.
    manual_sync: ClassVar[bool] = False

    def backward(
        self, accelerator, model: nn.Module, task_losses: dict[str, torch.Tensor]
    ) -> None:
        raise NotImplementedError
