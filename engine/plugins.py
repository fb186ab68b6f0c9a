"""Registries of strategies and miniports: built-ins registered in code, third-party ones from entry points.

The httpie plugin scheme: a distribution declares ``[project.entry-points."ndis_replay.strategies"]`` (or
``ndis_replay.miniports``) ``name = "module:Class"``; the registry loads every entry point of its group on first
use. A plugin that fails to import, is not a subclass of the base class, or reuses a built-in's name is skipped
with a :class:`PluginWarning` naming it — never a crash.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar, cast

from ndis_replay.errors import ConfigError

T = TypeVar("T")


class PluginWarning(UserWarning):
    """A third-party plugin could not be loaded; ``group``, ``name``, ``reason`` say which and why."""

    def __init__(self, group: str, name: str, reason: str) -> None:
        super().__init__(f"{group} plugin {name!r} skipped: {reason}")
        self.group = group
        self.name = name
        self.reason = reason


class Registry(Generic[T]):
    """Name → class. ``kind`` ("strategy"/"miniport") names what an unknown name was in ConfigError; ``base`` is
    the class every entry must subclass; ``builtins`` a callable returning the built-in classes (imported lazily so
    the registry module stays cheap)."""

    def __init__(self, kind: str, group: str, base: type, builtins: Callable[[], list[type[T]]]) -> None:
        self.kind = kind
        self.group = group
        self.base = base
        self._builtins = builtins
        self._entries: dict[str, type[T]] | None = None
        #: (name, reason) of every plugin skipped on the last load
        self.skipped: list[tuple[str, str]] = []

    def _load(self) -> dict[str, type[T]]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, type[T]] = {}
        for cls in self._builtins():
            entries[getattr(cls, "name")] = cls  # noqa: B009 - ClassVar declared on the subclasses
        self.skipped = []
        for point in sorted(entry_points(group=self.group), key=lambda p: p.name):
            reason = None
            try:
                loaded = point.load()
            except Exception as error:  # any import-time failure of third-party code: skip, warn
                reason = f"failed to load {point.value!r}: {type(error).__name__}: {error}"
            else:
                if not (isinstance(loaded, type) and issubclass(loaded, self.base)):
                    reason = f"{point.value!r} is not a {self.base.__name__} subclass"
                elif point.name in entries:
                    reason = f"the name {point.name!r} is taken"
                elif getattr(loaded, "name", point.name) != point.name:
                    reason = f"its class says name = {getattr(loaded, 'name', None)!r}"
                else:
                    entries[point.name] = cast("type[T]", loaded)
            if reason is not None:
                self.skipped.append((point.name, reason))
                warnings.warn(PluginWarning(self.group, point.name, reason), stacklevel=3)
        self._entries = entries
        return entries

    def reload(self) -> None:
        """Forget what was loaded (the next lookup reads the entry points again)."""
        self._entries = None

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; ``ConfigError(kind, name, "unknown …", choices)`` otherwise."""
        entries = self._load()
        try:
            return entries[name]
        except KeyError:
            raise ConfigError(self.kind, name, f"unknown {self.kind}", sorted(entries)) from None

    def available(self) -> list[str]:
        """Every registered name, built-ins first (in their order), then plugins (sorted)."""
        return list(self._load())

    def register(self, cls: type[T]) -> type[T]:
        """Register a class in code (tests, embedding applications); usable as a decorator."""
        entries = self._load()
        entries[getattr(cls, "name")] = cls  # noqa: B009
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


__all__ = ["PluginWarning", "Registry"]
