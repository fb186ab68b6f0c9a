"""ndis-replay: replay real packet traces through a model of the NDIS send path.

The public face of the package: the canonical :class:`Trace`, :func:`open_trace` to import a capture, and the
error root :class:`ReplayError`. The CLI lives in :mod:`ndis_replay.cli`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ndis_replay.errors import ExitCode, ReplayError
from ndis_replay.trace import Trace, TraceMeta

try:
    __version__ = version("ndis-replay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["ExitCode", "ReplayError", "Trace", "TraceMeta", "__version__", "open_trace"]


def open_trace(*args: object, **kwargs: object) -> Trace:
    """Import a capture; see :func:`ndis_replay.importers.open_trace`."""
    from ndis_replay.importers import open_trace as _open_trace

    return _open_trace(*args, **kwargs)  # type: ignore[arg-type]
