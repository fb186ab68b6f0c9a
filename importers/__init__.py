"""Importers: every supported capture format into the canonical :class:`~ndis_replay.trace.Trace`.

One compact module per format (``pcap``, ``pcapng``; ``etw/`` for .etl files and tracerpt CSV; ``dissect`` reads
anything through tshark). The format is decided from the file's content; gzip, zstd, xz and bzip2 compression
are undone transparently.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ndis_replay.errors import ConfigError
from ndis_replay.importers.builder import TraceBuilder
from ndis_replay.importers.etw.eventmap import EventMap
from ndis_replay.importers.source import UnknownFormat, open_source, sniff_format
from ndis_replay.trace import Trace

READERS = ("auto", "fast", "tshark")

__all__ = ["READERS", "EtwOptions", "detect_format", "open_trace"]


@dataclass(frozen=True)
class EtwOptions:
    """What to take from an ETW trace.

    ``layer``: NDIS-PacketCapture layers, ``"MINIPORT:LOWER"`` (comma-separated) or ``"all"``; default the layer
    directly above each miniport. ``component``: PktMon component ids (comma-separated) or ``"all"``; default one
    appearance per packet, at the miniport nearest the wire. ``event_map``: a TOML event map that makes the file a
    driver send/complete trace (an .etl of TraceLogging events or a tracerpt CSV) instead of a packet capture.
    """

    layer: str | None = None
    component: str | None = None
    event_map: Path | EventMap | None = None


def detect_format(path: str | Path) -> tuple[str, str | None]:
    """``(format, compression)`` of a capture from its magic bytes, e.g. ``("pcapng", "zstd")``."""
    source = open_source(path)
    try:
        return sniff_format(source), source.compression
    finally:
        source.close()


def open_trace(
    path: str | Path,
    *,
    reader: str = "auto",
    dissect: bool = False,
    strict: bool = False,
    keep_data: bool = True,
    batching: str = "none",
    progress: Callable[[int], None] | None = None,
    etw: EtwOptions | None = None,
) -> Trace:
    """Import a capture file into a validated :class:`Trace`.

    ``reader`` is ``fast`` (this package's own pcap/pcapng reader), ``tshark`` (anything Wireshark reads,
    through pyshark) or ``auto``: fast for pcap and pcapng, tshark for other formats when it is installed.
    ``dissect`` adds a ``protocol`` column (the highest protocol tshark finds). ``strict`` turns damage the
    reader would salvage around into an error. ``keep_data=False`` leaves out the packet bytes. ``progress``
    is called with the number of file bytes read so far. ``etw`` chooses what to take from an ETW trace.
    """
    from ndis_replay.batching import parse_batching

    parse_batching(batching)  # refuse a bad rule before reading a large file
    if reader not in READERS:
        raise ConfigError("reader", reader, "unknown reader", READERS)
    if reader == "tshark":
        from ndis_replay.importers.dissect import read_with_tshark

        tshark_trace: Trace = read_with_tshark(
            path, strict=strict, keep_data=keep_data, batching=batching, dissect=dissect
        )
        return tshark_trace
    try:
        trace = _read_fast(
            path, strict=strict, keep_data=keep_data, batching=batching, progress=progress, etw=etw or EtwOptions()
        )
    except UnknownFormat as unknown:
        if etw is not None and etw.event_map is not None:
            # an event map reads driver events (.etl, tracerpt CSV): tshark has nothing to offer for the rest
            unknown.hint = "--event-map reads a driver's .etl (TraceLogging) or a tracerpt CSV export"
            raise
        if reader != "auto" or shutil.which("tshark") is None:
            raise
        from ndis_replay.importers.dissect import TsharkCannotRead, read_with_tshark

        try:
            fallback: Trace = read_with_tshark(
                path, strict=strict, keep_data=keep_data, batching=batching, dissect=dissect
            )
        except TsharkCannotRead as refusal:
            # tshark knows the file no better (a text file, say): the fast reader's refusal — "not a pcap or
            # pcapng capture", naming the format when it recognised one — is the clearer message, with the same
            # exit code (bad input). Its hint to try tshark has been followed already, so it says so instead;
            # tshark's own refusal is chained to it, for --debug.
            unknown.hint = "tshark cannot read it either"
            raise unknown from refusal
        return fallback
    if dissect:
        from ndis_replay.importers.dissect import add_protocols

        trace = add_protocols(trace)
    return trace


def _read_fast(
    path: str | Path,
    *,
    strict: bool,
    keep_data: bool,
    batching: str,
    progress: Callable[[int], None] | None,
    etw: EtwOptions,
) -> Trace:
    from ndis_replay.importers.pcap import read_pcap
    from ndis_replay.importers.pcapng import read_pcapng

    source = open_source(path, progress)
    extra: dict[str, pl.Series] = {}
    try:
        fmt = sniff_format(source)
        if etw.event_map is not None and fmt not in DRIVER_FORMATS:
            raise ConfigError(
                "--event-map",
                str(getattr(etw.event_map, "path", etw.event_map)),
                f"maps driver events of an .etl or tracerpt CSV, and {path} is {fmt}",
            )
        if fmt in DRIVER_FORMATS and etw.event_map is not None:
            from ndis_replay.importers.etw.driver import read_driver_trace

            # driver events carry lengths, not frames: the trace has no bytes (replay synthesizes them)
            builder = TraceBuilder(path, strict=strict, keep_data=False)
            details, columns = read_driver_trace(source, builder, fmt, etw.event_map)
            extra.update(columns)
        elif fmt == "tracerpt-csv":
            raise ConfigError(
                "--event-map",
                "(none)",
                f"{path} is a tracerpt CSV export: say which events are sends and completes with --event-map FILE "
                "(see the README, ETW traces)",
            )
        else:
            builder = TraceBuilder(path, strict=strict, keep_data=keep_data)
            if fmt == "etl":
                from ndis_replay.importers.etw.packets import read_packet_etl

                details = read_packet_etl(source, builder, layer=etw.layer, component=etw.component)
            elif fmt == "pcap":
                details = read_pcap(source, builder)
            else:
                details = read_pcapng(source, builder)
        sha256 = source.sha256()
    finally:
        source.close()
    return builder.build(
        sha256=sha256,
        size=source.size,
        fmt=fmt,
        compression=source.compression,
        reader="fast",
        batching=batching,
        details=details,
        extra_columns=extra or None,
        time_order=fmt in ("etl", "tracerpt-csv"),
    )


#: Formats that hold a driver's own send/complete events (with ``--event-map``).
DRIVER_FORMATS = ("etl", "tracerpt-csv")
