from __future__ import annotations

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.heads.base import Head

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "none": nn.Identity}


class MLPHead(Head):
    """Dropout + 2-layer MLP over one pooled sentence (the study's eq. 1, for SST).

    Args:
        hidden_size: width of the inner layer (default: the encoder width).
        activation: between the two layers: relu, gelu, tanh or none (the study used none).
        dropout: overrides the encoder's hidden dropout for this head.
    """

    name = "mlp"
    input_mode = "single"

    def __init__(
        self,
        hidden: int,
        num_outputs: int,
        default_dropout: float,
        *,
        dropout: float | None = None,
        hidden_size: int | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__(hidden, num_outputs, default_dropout, dropout)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation: {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        inner = hidden_size or hidden
        self.net = nn.Sequential(
            nn.Dropout(self.p),
            nn.Linear(hidden, inner),
            ACTIVATIONS[activation](),
            nn.Dropout(self.p),
            nn.Linear(inner, num_outputs),
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(a)  # (B, H) -> (B, num_outputs)
