from __future__ import annotations

import torch
from torch import nn

from trainables.heads.base import Head


class CrossHead(Head):
    """Cross-encoder: the pair is encoded together as "[CLS] a [SEP] b [SEP]", pooled → linear.

    Args:
        hidden_size: when set, a hidden layer (tanh) before the output, as BERT's pooler.
        dropout: overrides the encoder's hidden dropout for this head.
    """

    name = "cross"
    input_mode = "pair"

    def __init__(
        self,
        hidden: int,
        num_outputs: int,
        default_dropout: float,
        *,
        dropout: float | None = None,
        hidden_size: int | None = None,
    ) -> None:
        super().__init__(hidden, num_outputs, default_dropout, dropout)
        layers: list[nn.Module] = [nn.Dropout(self.p)]
        if hidden_size:
            layers += [nn.Linear(hidden, hidden_size), nn.Tanh(), nn.Dropout(self.p)]
        layers.append(nn.Linear(hidden_size or hidden, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(a)  # a: pooled pair embedding (B, H) -> (B, k)
