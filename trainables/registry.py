"""Name → class registries for the variants a study compares (heads, losses, schedules, ...).

Each kind has one `Registry`. The YAML names a variant by its registry key and passes keyword
arguments; both are checked here so that a typo is an error listing what is valid, never a
silently ignored option.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from trainables.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a YAML name to a class, imported lazily from `"module:Class"` paths.

    Args:
        kind: what is registered ("head", "loss", ...), used in error messages.
        entries: name → "package.module:ClassName".
    """

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str, key: str | None = None) -> type[T]:
        """The class registered as `name`; `key` is the config key named in the error."""
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}"
            )
        module, _, attr = self._entries[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def check_args(self, name: str, args: Mapping[str, Any], key: str | None = None) -> None:
        """Raise if `args` has a key the class's constructor does not take."""
        valid = self.arg_names(name)
        unknown = sorted(set(args) - set(valid))
        if unknown:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown argument(s) {', '.join(unknown)} for {self.kind} {name!r}; "
                f"valid: {', '.join(valid) or '(none)'}"
            )

    def arg_names(self, name: str) -> list[str]:
        """User-settable constructor arguments (those after the `*`, without the wired ones)."""
        cls = self.get(name)
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def build(self, name: str, *args: Any, key: str | None = None, **kwargs: Any) -> T:
        """Instantiate `name`. Positional args are wired by the caller; keyword args come from
        the config and are checked first."""
        self.check_args(name, kwargs, key)
        return self.get(name, key)(*args, **kwargs)
