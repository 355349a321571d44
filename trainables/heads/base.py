"""What every task head is: pooled sentence embedding(s) in, `(batch, num_outputs)` out."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.tasks import TaskSpec


class Head(nn.Module):
    """Base class of the heads in `trainables.heads`.

    Constructor: `(hidden, num_outputs, default_dropout, *, dropout=None, <user arguments>)` —
    the first three are wired by the model (encoder width, what the loss needs, the encoder's
    hidden dropout); the keyword-only ones come from `tasks.<task>.head_args` (`dropout`
    overrides the encoder's value for this head).

    Class attributes:
        input_mode: "single" (one sentence), "separate" (bi-encoder: each sentence of a pair
            encoded on its own) or "pair" (cross-encoder: "[CLS] a [SEP] b [SEP]" encoded once).
        fixed_outputs: set when the head always gives that many values (a similarity score).
        similarity: the output is a similarity in `output_range`, not a free logit.
    """

    input_mode: ClassVar[str] = "single"
    fixed_outputs: ClassVar[int | None] = None
    similarity: ClassVar[bool] = False

    def __init__(
        self, hidden: int, num_outputs: int, default_dropout: float, dropout: float | None = None
    ) -> None:
        super().__init__()
        if dropout is not None and not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {dropout}")
        self.hidden = hidden
        self.num_outputs = num_outputs
        self.p = default_dropout if dropout is None else dropout

    @property
    def output_range(self) -> tuple[float, float] | None:
        """The interval outputs lie in, when bounded (used to map regression targets)."""
        return None

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """a, b: (batch, hidden) pooled embeddings (b only for "separate") → (batch, k)."""
        raise NotImplementedError

    @classmethod
    def check_compatible(cls, task: TaskSpec, loss: nn.Module, key: str) -> None:
        """Raise ConfigError (naming `key`) when this head cannot serve `task` with `loss`."""
        from trainables.heads import HEADS

        name = _registry_name(cls)
        if task.pair != (cls.input_mode != "single"):
            fitting = [
                n for n in HEADS if (HEADS.get(n).input_mode != "single") == task.pair
            ]
            what = "sentence pairs" if task.pair else "single sentences"
            raise ConfigError(
                f"{key}.head: head {name!r} does not fit task {task.name!r}, which has {what}; "
                f"valid heads for it: {', '.join(fitting)}"
            )
        needs = loss.num_outputs
        if cls.fixed_outputs is not None and cls.fixed_outputs != needs:
            raise ConfigError(
                f"{key}: head {name!r} gives {cls.fixed_outputs} similarity score but loss "
                f"{loss.name!r} needs {needs} outputs for task {task.name!r}"
            )
        if getattr(loss, "needs_similarity", False) and not cls.similarity:
            sims = [n for n in HEADS if HEADS.get(n).similarity]
            raise ConfigError(
                f"{key}: loss {loss.name!r} needs a similarity head ({', '.join(sims)}), "
                f"not {name!r}"
            )


def _registry_name(cls: type) -> str:
    return getattr(cls, "name", cls.__name__)
