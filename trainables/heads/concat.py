from __future__ import annotations

import torch
from torch import nn

from trainables.heads.base import Head


class ConcatHead(Head):
    """Bi-encoder: [u; v] → dropout → linear (the study's eq. 2)."""

    name = "concat"
    input_mode = "separate"

    def __init__(
        self, hidden: int, num_outputs: int, default_dropout: float, *, dropout: float | None = None
    ) -> None:
        super().__init__(hidden, num_outputs, default_dropout, dropout)
        self.drop = nn.Dropout(self.p)
        self.out = nn.Linear(2 * hidden, num_outputs)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        assert b is not None
        return self.out(self.drop(torch.cat([a, b], dim=-1)))  # (B, 2H) -> (B, k)
