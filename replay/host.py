"""The machine a run happened on (results are comparable only within one host) and its peak memory."""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_record() -> dict[str, Any]:
    """Hostname, platform, CPU model and count, Python, polars and numpy versions."""
    import numpy
    import polars

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "polars": polars.__version__,
        "numpy": numpy.__version__,
    }


def peak_rss_bytes() -> int:
    """This process's peak resident set size, bytes.

    ``VmHWM`` of ``/proc/self/status`` on Linux: ``ru_maxrss`` survives ``execve`` there and would report a parent's
    peak for a child it started (bench/import_bench.py explains).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB (KiB)
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB elsewhere


__all__ = ["cpu_model", "host_record", "peak_rss_bytes"]
