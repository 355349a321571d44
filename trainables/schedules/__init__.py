"""Update schedules, by the name the YAML uses (`schedule.name`).

Adding a schedule: one module with a `Schedule` subclass, one line here.
"""

from __future__ import annotations

from trainables.registry import Registry
from trainables.schedules.base import Schedule, Step

SCHEDULES: Registry[Schedule] = Registry(
    "schedule",
    {
        "serial": "trainables.schedules.serial:Serial",
        "round_robin": "trainables.schedules.round_robin:RoundRobin",
        "round_robin_sum": "trainables.schedules.round_robin_sum:RoundRobinSum",
        "proportional": "trainables.schedules.proportional:Proportional",
        "annealed": "trainables.schedules.annealed:Annealed",
    },
)

__all__ = ["SCHEDULES", "Schedule", "Step"]
