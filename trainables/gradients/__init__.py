"""Gradient rules for multi-task steps, by the name the YAML uses (`gradient.name`)."""

from __future__ import annotations

from trainables.gradients.base import GradientRule
from trainables.registry import Registry

GRADIENTS: Registry[GradientRule] = Registry(
    "gradient rule",
    {
        "sum": "trainables.gradients.sum:SumGradients",
        "pcgrad": "trainables.gradients.pcgrad:PCGrad",
    },
)

__all__ = ["GRADIENTS", "GradientRule"]
