"""Loss weighting across tasks, by the name the YAML uses (`weighting.name`)."""

from __future__ import annotations

from trainables.registry import Registry
from trainables.weighting.base import Weighting

WEIGHTINGS: Registry[Weighting] = Registry(
    "weighting",
    {
        "static": "trainables.weighting.static:StaticWeighting",
        "uncertainty": "trainables.weighting.uncertainty:UncertaintyWeighting",
    },
)

__all__ = ["WEIGHTINGS", "Weighting"]
