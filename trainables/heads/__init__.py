"""Task heads, by the name the YAML uses (`tasks.<task>.head`).

Adding a head: one module with a `Head` subclass, one line here.
"""

from __future__ import annotations

from trainables.heads.base import Head
from trainables.registry import Registry

HEADS: Registry[Head] = Registry(
    "head",
    {
        "mlp": "trainables.heads.mlp:MLPHead",
        "cosine": "trainables.heads.cosine:CosineHead",
        "concat": "trainables.heads.concat:ConcatHead",
        "sbert": "trainables.heads.sbert:SBertHead",
        "cross": "trainables.heads.cross:CrossHead",
    },
)

__all__ = ["HEADS", "Head"]
