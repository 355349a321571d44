"""mtsweep's trainable: one multi-task BERT fine-tuning run, config → metrics.

Importable and runnable without Ray, Optuna or MLflow:

    >>> from trainables import TrialConfig, Runtime, train
    >>> metrics = train(TrialConfig.load("search_spaces/trials/tiny_demo.yaml"), Runtime(cpu=True))
"""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.errors import ConfigError, DataError, MtsweepError
from trainables.runtime import Runtime


def train(config, runtime=None, callbacks=()):
    """See `trainables.training.train` (imported lazily: torch and transformers load there)."""
    from trainables.training import train as _train

    return _train(config, runtime, callbacks)


__all__ = ["ConfigError", "DataError", "MtsweepError", "Runtime", "TrialConfig", "train"]
