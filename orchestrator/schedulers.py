"""Ray Tune trial schedulers by the name the sweep file uses (`scheduler.name`).

Each entry builds the scheduler from the sweep's scheduler spec; `time_attr` is the epoch, and
`max_t` defaults to the most epochs a trial of the sweep can run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.space import SchedulerSpec


def _fifo(spec: SchedulerSpec, max_epochs: int) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(spec: SchedulerSpec, max_epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    args = {"max_t": max_epochs, **spec.args}
    return ASHAScheduler(time_attr="epoch", **args)


def _median(spec: SchedulerSpec, max_epochs: int) -> Any:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="epoch", **spec.args)


def _hyperband(spec: SchedulerSpec, max_epochs: int) -> Any:
    from ray.tune.schedulers import HyperBandScheduler

    args = {"max_t": max_epochs, **spec.args}
    return HyperBandScheduler(time_attr="epoch", **args)


SCHEDULERS: dict[str, Callable[[SchedulerSpec, int], Any]] = {
    "fifo": _fifo,
    "asha": _asha,
    "median": _median,
    "hyperband": _hyperband,
}


def build_scheduler(spec: SchedulerSpec, max_epochs: int) -> Any:
    """The Ray Tune scheduler (metric and mode are given to the TuneConfig)."""
    return SCHEDULERS[spec.name](spec, max_epochs)
