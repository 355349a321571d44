from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import ConfigError
from trainables.heads.base import Head


class CosineHead(Head):
    """Bi-encoder similarity (the study's eq. 3): cos(A1·u + b1, A2·v + b2), times `scale`.

    Each sentence is encoded on its own; the output is one score in [-scale, scale]. With a
    binary loss the score is the logit, so the decision threshold is the midpoint (0).

    Args:
        proj_dim: width of the per-sentence linear projections (default: the encoder width).
        shared_projection: one projection for both sentences instead of one each.
        scale: multiplies the cosine (a temperature for logit-based losses).
        init: "random" (PyTorch's default) or "identity": projections start as the identity
            (needs proj_dim = encoder width), so a pre-trained sentence encoder's cosine
            similarity is the starting point rather than a random projection of it.
        dropout: dropout on the embeddings before projecting.
    """

    name = "cosine"
    input_mode = "separate"
    fixed_outputs = 1
    similarity = True

    def __init__(
        self,
        hidden: int,
        num_outputs: int,
        default_dropout: float,
        *,
        dropout: float | None = None,
        proj_dim: int | None = None,
        shared_projection: bool = False,
        scale: float = 1.0,
        init: str = "random",
    ) -> None:
        super().__init__(hidden, num_outputs, default_dropout, dropout)
        width = proj_dim or hidden
        self.drop = nn.Dropout(self.p)
        self.proj_a = nn.Linear(hidden, width)
        self.proj_b = self.proj_a if shared_projection else nn.Linear(hidden, width)
        self.scale = scale
        if init not in ("random", "identity"):
            raise ConfigError(f"init: {init!r}; valid: random, identity")
        if init == "identity":
            if width != hidden:
                raise ConfigError(f"init: identity needs proj_dim = encoder width ({hidden})")
            for proj in {self.proj_a, self.proj_b}:
                nn.init.eye_(proj.weight)
                nn.init.zeros_(proj.bias)

    @property
    def output_range(self) -> tuple[float, float]:
        return (-self.scale, self.scale)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        assert b is not None
        u = self.proj_a(self.drop(a))
        v = self.proj_b(self.drop(b))
        return (self.scale * F.cosine_similarity(u, v, dim=-1, eps=1e-8)).unsqueeze(-1)  # (B, 1)
