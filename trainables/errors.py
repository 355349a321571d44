"""Errors a user can cause. The CLI prints them as one line and exits non-zero (no traceback)."""

from __future__ import annotations


class MtsweepError(Exception):
    """Base class: a problem with the user's input, reported as one clear message."""


class ConfigError(MtsweepError, ValueError):
    """A trial or sweep config is invalid. The message names the file and/or the key path."""


class DataError(MtsweepError, ValueError):
    """A data file is missing, has the wrong columns or holds an impossible label."""


class CheckpointError(MtsweepError):
    """A checkpoint to resume from is missing, incomplete, corrupt or holds more than tensors."""
