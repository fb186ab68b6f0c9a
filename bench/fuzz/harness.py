"""The shared part of the importer fuzz targets (atheris, libFuzzer's engine for Python).

Each target feeds an input to the importer the way a user's file reaches it: written to a file in /dev/shm (RAM,
so no disk cost) and opened with :func:`ndis_replay.importers.open_trace`, the fast reader forced so that an
unknown format is refused instead of handed to tshark. The ``--event-map`` variants read the driver ETL and the
tracerpt CSV with ``sample_traces/driver_sends.toml``. A :class:`~ndis_replay.errors.ReplayError` is a clean
refusal and an expected outcome; any other exception is a finding, and so are a hang (libFuzzer's ``-timeout``)
and memory beyond ``-rss_limit_mb`` / ``-malloc_limit_mb``, which libFuzzer enforces.

Coverage comes from atheris' bytecode instrumentation of the ``ndis_replay`` package (and dissect.util's LZXPRESS
decoder, which hostile ETL buffers drive): :func:`load` imports every importer module inside
``atheris.instrument_imports``, since ``open_trace`` imports its readers lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SEEDS = HERE / "seeds"  # written by make_seeds.py, the same bytes every time; gitignored
CORPUS = HERE / "corpus"  # what libFuzzer adds (the first corpus folder is the one it writes to), kept between runs
ARTIFACTS = HERE / "artifacts"  # crash-*, timeout-*, oom-* inputs; gitignored
EVENT_MAP = REPO / "sample_traces" / "driver_sends.toml"
TARGETS = ("pcap", "pcapng", "etl", "csv")

#: The limits every run uses unless the command line overrides them: RSS in MiB (a limit above what any bounded
#: import of a small input needs, far below what a length field claiming gigabytes would take), one malloc in MiB,
#: seconds per input (an honest input of a few KiB imports in milliseconds; dissect's pure-Python LZXPRESS decoder
#: is the slowest path: a run of one repeated byte costs it ~1.3 s per MiB, up to the size the buffer announces)
DEFAULT_FLAGS = ("-rss_limit_mb=2048", "-malloc_limit_mb=1024", "-timeout=20")

_MODULES = (
    "ndis_replay.errors",
    "ndis_replay.trace",
    "ndis_replay.batching",
    "ndis_replay.importers",
    "ndis_replay.importers.limits",
    "ndis_replay.importers.source",
    "ndis_replay.importers.builder",
    "ndis_replay.importers.headers",
    "ndis_replay.importers.pcap",
    "ndis_replay.importers.pcapng",
    "ndis_replay.importers.etw.container",
    "ndis_replay.importers.etw.events",
    "ndis_replay.importers.etw.packets",
    "ndis_replay.importers.etw.ndiscap",
    "ndis_replay.importers.etw.pktmon",
    "ndis_replay.importers.etw.tracelogging",
    "ndis_replay.importers.etw.eventmap",
    "ndis_replay.importers.etw.driver",
    "ndis_replay.importers.etw.tracerpt",
)


def load() -> dict[str, Any]:
    """Import the importers with coverage instrumentation; returns what the targets call."""
    with atheris.instrument_imports(include=["ndis_replay", "dissect.util.compression.lzxpress"]):
        mods = {name: importlib.import_module(name) for name in _MODULES}
    importers = mods["ndis_replay.importers"]
    event_map = mods["ndis_replay.importers.etw.eventmap"].load_event_map(EVENT_MAP)
    return {
        "open_trace": importers.open_trace,
        "EtwOptions": importers.EtwOptions,
        "ReplayError": mods["ndis_replay.errors"].ReplayError,
        "event_map": event_map,
    }


def _scratch(suffix: str) -> Path:
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(os.environ.get("TMPDIR", "/tmp"))
    return base / f"ndis-replay-fuzz-{os.getpid()}.{suffix}"


def make_one_input(target: str) -> Callable[[bytes], None]:
    """The ``TestOneInput`` of ``target``: import the bytes as a file; only a ReplayError may escape, caught."""
    api = load()
    open_trace, replay_error = api["open_trace"], api["ReplayError"]
    mapped = api["EtwOptions"](event_map=api["event_map"])
    path = _scratch({"csv": "csv", "etl": "etl"}.get(target, target))
    # pcap/pcapng: as a capture; csv: with the event map (a CSV needs one); etl: both ways, as a packet capture
    # (pktmon / NDIS-PacketCapture events) and as a driver trace (TraceLogging events), two decoders behind one reader
    modes: tuple[Any, ...] = {"csv": (mapped,), "etl": (None, mapped)}.get(target, (None,))

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        try:
            for etw in modes:
                with contextlib.suppress(replay_error):  # a clean refusal
                    open_trace(path, reader="fast", etw=etw)
        finally:
            path.unlink()  # (libFuzzer ends the process with exit(): Python's atexit would not run)

    return one_input


def main(target: str, argv: list[str] | None = None) -> None:
    """Run ``target`` under libFuzzer: ``argv`` as libFuzzer takes it (corpus folders, ``-max_total_time=60``, …);
    the default flags and the artifact folder are added unless given."""
    args = list(sys.argv if argv is None else argv)
    given = {a.split("=", 1)[0] for a in args[1:] if a.startswith("-")}
    extra = [f for f in DEFAULT_FLAGS if f.split("=", 1)[0] not in given]
    if "-artifact_prefix" not in given:
        ARTIFACTS.joinpath(target).mkdir(parents=True, exist_ok=True)
        extra.append(f"-artifact_prefix={ARTIFACTS / target}/")
    one_input = make_one_input(target)
    atheris.Setup([args[0], *extra, *args[1:]], one_input)
    atheris.Fuzz()
