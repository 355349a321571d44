from __future__ import annotations

import torch
from torch import nn

from trainables.heads.base import Head


class SBertHead(Head):
    """Bi-encoder: [u; v; |u − v|] → dropout → linear (Sentence-BERT's classification head)."""

    name = "sbert"
    input_mode = "separate"

    def __init__(
        self, hidden: int, num_outputs: int, default_dropout: float, *, dropout: float | None = None
    ) -> None:
        super().__init__(hidden, num_outputs, default_dropout, dropout)
        self.drop = nn.Dropout(self.p)
        self.out = nn.Linear(3 * hidden, num_outputs)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        assert b is not None
        features = torch.cat([a, b, (a - b).abs()], dim=-1)  # (B, 3H)
        return self.out(self.drop(features))
