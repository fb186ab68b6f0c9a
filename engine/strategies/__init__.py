"""Strategies: the built-ins and the ``ndis_replay.strategies`` entry-point plugins.

``STRATEGIES`` is the registry; :func:`get_strategy` looks a name up (ConfigError with the valid choices when
unknown) and :func:`available` lists them. A third-party strategy is a :class:`Strategy` subclass published as::

    [project.entry-points."ndis_replay.strategies"]
    my-reuse = "my_package.module:MyReuse"      # MyReuse.name == "my-reuse"
"""

from __future__ import annotations

from ndis_replay.engine.plugins import PluginWarning, Registry
from ndis_replay.engine.strategies.base import BindContext, SendCall, Strategy, StrategyParams

#: the entry-point group third-party strategies register under
ENTRY_POINT_GROUP = "ndis_replay.strategies"


def _builtins() -> list[type[Strategy]]:
    from ndis_replay.engine.strategies.alloc import AllocStrategy
    from ndis_replay.engine.strategies.cache import CacheStrategy
    from ndis_replay.engine.strategies.clone import CloneStrategy
    from ndis_replay.engine.strategies.copy import CopyStrategy
    from ndis_replay.engine.strategies.ndis5 import Ndis5AllocStrategy, Ndis5ReuseStrategy
    from ndis_replay.engine.strategies.reuse import ReuseStrategy

    return [
        Ndis5AllocStrategy,
        Ndis5ReuseStrategy,
        AllocStrategy,
        ReuseStrategy,
        CopyStrategy,
        CacheStrategy,
        CloneStrategy,
    ]


#: name → Strategy subclass (built-ins, then plugins)
STRATEGIES: Registry[Strategy] = Registry("strategy", ENTRY_POINT_GROUP, Strategy, _builtins)


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``; ``ConfigError("strategy", name, "unknown strategy", choices)``."""
    return STRATEGIES.get(name)


def available() -> list[str]:
    """Names of every strategy: built-ins in their documented order, then plugins."""
    return STRATEGIES.available()


__all__ = [
    "ENTRY_POINT_GROUP",
    "STRATEGIES",
    "BindContext",
    "PluginWarning",
    "SendCall",
    "Strategy",
    "StrategyParams",
    "available",
    "get_strategy",
]
