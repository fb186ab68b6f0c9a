"""Miniports: the built-ins ``loopback`` and ``tap`` and the ``ndis_replay.miniports`` entry-point plugins.

``MINIPORTS`` is the registry; :func:`get_miniport` looks a name up (ConfigError with the valid choices when
unknown), :func:`available` lists them. A third-party miniport is a :class:`Miniport` subclass published under the
entry-point group ``ndis_replay.miniports`` (``tap = "pkg.module:TapMiniport"``).
"""

from __future__ import annotations

from ndis_replay.engine.miniports.base import (
    COMPLETION_CHOICES,
    CompletionPolicy,
    ListWire,
    Miniport,
    MiniportInfo,
    MiniportParams,
    PcapWire,
    WireSink,
)
from ndis_replay.engine.plugins import PluginWarning, Registry

#: the entry-point group third-party miniports register under
ENTRY_POINT_GROUP = "ndis_replay.miniports"


def _builtins() -> list[type[Miniport]]:
    from ndis_replay.engine.miniports.loopback import LoopbackMiniport
    from ndis_replay.engine.miniports.tap import TapMiniport

    return [LoopbackMiniport, TapMiniport]


#: name → Miniport subclass (built-ins, then plugins)
MINIPORTS: Registry[Miniport] = Registry("miniport", ENTRY_POINT_GROUP, Miniport, _builtins)


def get_miniport(name: str) -> type[Miniport]:
    """The miniport class registered as ``name``; ``ConfigError("miniport", name, "unknown miniport", choices)``."""
    return MINIPORTS.get(name)


def available() -> list[str]:
    """Names of every miniport."""
    return MINIPORTS.available()


__all__ = [
    "COMPLETION_CHOICES",
    "ENTRY_POINT_GROUP",
    "MINIPORTS",
    "CompletionPolicy",
    "ListWire",
    "Miniport",
    "MiniportInfo",
    "MiniportParams",
    "PcapWire",
    "PluginWarning",
    "WireSink",
    "available",
    "get_miniport",
]
