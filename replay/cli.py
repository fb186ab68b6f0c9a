"""The ``ndis-replay`` command line.

This module is the only place where errors become text and exit codes: commands raise
:class:`~ndis_replay.errors.ReplayError` subclasses carrying facts, :func:`describe` turns each into one line,
and :class:`ReplayGroup` prints it and exits with the error's :class:`~ndis_replay.errors.ExitCode`.
Tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import os
import shutil
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from ndis_replay import __version__
from ndis_replay.batching import parse_batching
from ndis_replay.errors import (
    ConfigError,
    EmptyTrace,
    ExitCode,
    LimitExceeded,
    MiniportUnavailable,
    NativeCoreMissing,
    NothingToReplay,
    OutputBusy,
    OutputExists,
    OutputUnwritable,
    ReplayError,
    ResultsError,
    ResultsVersionError,
    RunMismatch,
    ToolFailed,
    ToolMissing,
    TraceFileError,
    TraceFormatError,
    UnsupportedLinkType,
)
from ndis_replay.trace import Trace

if TYPE_CHECKING:
    from ndis_replay.atomic import Replaced
    from ndis_replay.importers import EtwOptions
    from ndis_replay.results import RunResult, StrategyResult
    from ndis_replay.runner import RunOptions
    from ndis_replay.worker import StrategySpec

PROG = "ndis-replay"
#: Exit code for a bug in ndis-replay itself (BSD sysexits EX_SOFTWARE); the README asks for a report.
EXIT_INTERNAL = 70
#: Files smaller than this are read without a progress bar (it would only flicker), in bytes.
PROGRESS_MIN_BYTES = 32 << 20

_debug = False


# --- errors → one line ---------------------------------------------------------------------------------------


@functools.singledispatch
def describe(exc: ReplayError) -> str:
    """The one-line message for an error."""
    return str(exc) or type(exc).__name__


@describe.register
def _(exc: TraceFormatError) -> str:
    where = []
    if exc.record is not None:
        where.append(f"record {exc.record}")
    if exc.offset is not None:
        where.append(f"byte {exc.offset}")
    place = f" (at {', '.join(where)})" if where else ""
    hint = f"; {exc.hint}" if exc.hint else ""
    return f"{exc.path}: {exc.reason}{place}{hint}"


@describe.register
def _(exc: LimitExceeded) -> str:
    from ndis_replay.importers.limits import ENV_VAR, MAX_SETTABLE, format_size

    where = [f"record {exc.record}"] if exc.record is not None else []
    where += [f"byte {exc.offset}"] if exc.offset is not None else []
    place = f" (at {', '.join(where)})" if where else ""
    unit = "characters" if exc.limit_name == "line" else "bytes"
    limit = f"{exc.limit:,} characters" if exc.limit_name == "line" else format_size(exc.limit)
    head = f"{exc.path}: {exc.field} claims {exc.value:,} {unit}, over the {exc.limit_name} limit of {limit}{place}"
    if exc.value > MAX_SETTABLE:  # no setting reaches it: the field is damaged or hostile
        return f"{head}; beyond what {ENV_VAR}={exc.limit_name}=SIZE can allow ({format_size(MAX_SETTABLE)}): damaged"
    return f"{head}; if the file is genuine, raise the limit: {ENV_VAR}={exc.limit_name}=SIZE"


@describe.register
def _(exc: TraceFileError) -> str:
    return f"{exc.path}: cannot read: {exc.reason}"


@describe.register
def _(exc: UnsupportedLinkType) -> str:
    from ndis_replay.importers.headers import linktype_name

    return f"{exc.path}: link type {linktype_name(exc.linktype)} is not supported for {exc.operation}"


@describe.register
def _(exc: EmptyTrace) -> str:
    return f"{exc.path}: no {exc.what}"


@describe.register
def _(exc: NothingToReplay) -> str:
    if exc.packets == 0:
        return f"{exc.path}: no packets"
    return (
        f"{exc.path}: no packets to replay: all {exc.received:,} packets are received (direction recv); "
        "only send and unknown-direction packets are replayed"
    )


@describe.register
def _(exc: ResultsError) -> str:
    return f"{exc.path}: {exc.reason}"


@describe.register
def _(exc: ResultsVersionError) -> str:
    known = [str(v) for v in exc.supported]
    versions = f"version {known[0]}" if len(known) == 1 else f"versions {', '.join(known[:-1])} and {known[-1]}"
    return f"{exc.path}: results format version {exc.version!r}; this ndis-replay reads {versions}"


@describe.register
def _(exc: ConfigError) -> str:
    choices = f" (valid: {', '.join(exc.choices)})" if exc.choices else ""
    return f"{exc.what} {exc.value!r}: {exc.reason}{choices}"


@describe.register
def _(exc: OutputExists) -> str:
    return f"{exc.path} exists; pass --force to replace it"


@describe.register
def _(exc: OutputUnwritable) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        full = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return f"{full} writing {exc.path}; nothing was written"
    return f"cannot write {exc.path}: {exc.reason}; nothing was written"


@describe.register
def _(exc: OutputBusy) -> str:
    holder = f" (pid {exc.pid})" if exc.pid is not None else ""
    return f"{exc.path} is being written by another ndis-replay{holder}; wait for it to finish or choose another output"


@describe.register
def _(exc: NativeCoreMissing) -> str:
    return (
        f"the native core is not built ({exc.reason}); reinstall with a C compiler present (pip install -e .), "
        "or run with --engine python"
    )


@describe.register
def _(exc: ToolMissing) -> str:
    return (
        f"{exc.tool} is not installed, and it is needed for {exc.purpose}; "
        f"install the OS package '{exc.package}' (Debian/Ubuntu: sudo apt-get install {exc.package})"
    )


@describe.register
def _(exc: MiniportUnavailable) -> str:
    import errno

    head = f"the {exc.miniport} miniport cannot get {exc.what} ({exc.reason})"
    if exc.errno == errno.ENOENT and "/dev/net/tun" in exc.what:
        remedy = "load the tun module (sudo modprobe tun), or in a container pass it in (--device /dev/net/tun)"
    elif exc.errno in (errno.EPERM, errno.EACCES):
        remedy = "it needs root or the CAP_NET_ADMIN and CAP_SYS_ADMIN capabilities: run as root (e.g. with sudo)"
    else:
        remedy = "check the host's TUN/TAP and network namespace support"
    return f"{head}; {remedy}, or replay with --miniport loopback"


@describe.register
def _(exc: ToolFailed) -> str:
    return f"{exc.tool} failed: {exc.detail}"


@describe.register
def _(exc: RunMismatch) -> str:
    head = f"cannot compare {exc.new_label} with {exc.base_label}"
    if exc.kind == "trace":
        return f"{head}: they replayed different traces (sha256 {str(exc.base)[:12]}… vs {str(exc.new)[:12]}…)"
    if exc.kind == "host":
        assert isinstance(exc.base, dict) and isinstance(exc.new, dict)
        diffs = ", ".join(f"{f} {exc.base[f]!r} vs {exc.new[f]!r}" for f in exc.fields)
        return f"{head}: they ran on different hosts ({diffs}); timings compare only within one host"
    if exc.kind == "measurement":
        assert isinstance(exc.base, dict) and isinstance(exc.new, dict)
        diffs = ", ".join(f"{n} {exc.base[n]} vs {exc.new[n]}" for n in exc.fields)
        return (
            f"{head}: strategies were measured differently ({diffs}); rerun with the baseline's --engine and --timing"
        )
    base = ", ".join(str(n) for n in exc.base) if isinstance(exc.base, tuple) else str(exc.base)
    new = ", ".join(str(n) for n in exc.new) if isinstance(exc.new, tuple) else str(exc.new)
    return f"{head}: no strategy in common ({base} vs {new})"


class ReplayGroup(click.Group):
    """A click group that turns ReplayError, Ctrl-C and unexpected exceptions into one line and an exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["ndis_replay.argv"] = [PROG, *args]  # the command line, recorded in run.json
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except ReplayError as exc:
            if _debug:
                traceback.print_exc()
            click.echo(f"{PROG}: error: {describe(exc)}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo(f"{PROG}: interrupted; nothing was written", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except Exception as exc:
            if _debug:
                traceback.print_exc()
            click.echo(
                f"{PROG}: internal error: {type(exc).__name__}: {exc} "
                "(this is a bug in ndis-replay; rerun with --debug and report the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


# --- shared options -----------------------------------------------------------------------------------------


def _batching_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--batching",
        default="none",
        show_default=True,
        metavar="RULE",
        help="How packets form send calls: none (one packet per call), N (fixed groups), gap=DURATION "
        "(packets at most DURATION apart, e.g. gap=20us), auto (the source's own send calls, else gap=20us).",
    )(f)


def _reader_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option(
                "--reader",
                type=click.Choice(["auto", "fast", "tshark"]),
                default="auto",
                show_default=True,
                help="fast: the built-in pcap/pcapng reader. tshark: anything Wireshark reads (slower). "
                "auto: fast for pcap/pcapng, tshark for other formats when it is installed.",
            ),
            click.option("--dissect", is_flag=True, help="Add each packet's highest protocol (needs tshark)."),
            click.option(
                "--strict",
                is_flag=True,
                help="Fail on damage instead of importing the whole records before it with a warning.",
            ),
            click.option(
                "--etw-layer",
                metavar="M:L,...|all",
                expose_value=False,
                callback=_keep_etw_option,
                help="netsh/NDIS-PacketCapture .etl: the filter layers to keep, as MiniportIfIndex:LowerIfIndex "
                "(`inspect` lists them). Default: the layer directly above each miniport, so no frame counts twice.",
            ),
            click.option(
                "--etw-component",
                metavar="ID,...|all",
                expose_value=False,
                callback=_keep_etw_option,
                help="pktmon .etl: the components whose packets to keep (`inspect` lists them). Default: one "
                "appearance per packet, at the miniport nearest the wire.",
            ),
            click.option(
                "--event-map",
                type=click.Path(path_type=Path, dir_okay=False, exists=True),
                expose_value=False,
                callback=_keep_etw_option,
                help="TOML mapping a driver's own send/complete events (.etl TraceLogging or tracerpt CSV) to sends, "
                "completions, NBL pointers, lengths and send calls: the trace then carries the driver's measured "
                "latency (README, ETW traces).",
            ),
        ]
    ):
        f = opt(f)
    return f


_ETW_META = "ndis_replay.etw"


def _keep_etw_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Collect --etw-layer / --etw-component / --event-map for :func:`_load` (they only matter to ETW input)."""
    if value is not None and param.name is not None:
        ctx.meta.setdefault(_ETW_META, {})[param.name.removeprefix("etw_")] = value


def _etw_options() -> EtwOptions:
    from ndis_replay.importers import EtwOptions

    ctx = click.get_current_context(silent=True)
    chosen: dict[str, Any] = dict(ctx.meta.get(_ETW_META, {})) if ctx is not None else {}
    return EtwOptions(**chosen)


@contextmanager
def _progress(path: Path, label: str) -> Iterator[Callable[[int], None] | None]:
    """A byte progress bar on stderr for large files read from a terminal; None otherwise."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    console = Console(stderr=True)
    if size < PROGRESS_MIN_BYTES or not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(f"{label} [bold]{path.name}[/]"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=size)
        yield lambda done: bar.update(task, completed=done)


def _load(path: Path, reader: str, dissect: bool, strict: bool, batching: str, keep_data: bool = True) -> Trace:
    """A capture through the importers, or a trace Parquet written by ``import``."""
    from ndis_replay.importers import open_trace

    try:
        with open(path, "rb") as fh:
            is_parquet = fh.read(4) == b"PAR1"
    except OSError:
        is_parquet = False
    if is_parquet:
        trace = Trace.load(path)
        return trace if batching == trace.meta.batching else trace.with_batching(batching)
    with _progress(path, "reading") as progress:
        return open_trace(
            path,
            reader=reader,
            dissect=dissect,
            strict=strict,
            keep_data=keep_data,
            batching=batching,
            progress=progress,
            etw=_etw_options(),
        )


def _print_warnings(trace: Trace) -> None:
    for w in trace.warnings:
        where = []
        if w.record is not None:
            where.append(f"record {w.record}")
        if w.offset is not None:
            where.append(f"byte {w.offset}")
        place = f" at {', '.join(where)}" if where else ""
        times = f" (×{w.count})" if w.count > 1 else ""
        detail = w.detail.translate(_CONTROL)
        click.echo(f"{PROG}: warning: {trace.meta.source}: {detail}{place}{times}", err=True)


def _note_synthetic(trace: Trace) -> None:
    if not trace.meta.has_data:
        source = str(trace.meta.source).translate(_CONTROL)
        click.echo(
            f"{PROG}: note: {source}: the trace has no packet bytes (a driver send/complete trace, or imported with "
            "--no-data): replaying synthesized frames of the recorded lengths",
            err=True,
        )


# --- commands ----------------------------------------------------------------------------------------------


@click.group(cls=ReplayGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
@click.option("--debug", is_flag=True, envvar="NDIS_REPLAY_DEBUG", help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """Replay real packet traces through a model of the NDIS send path.

    Import pcap/pcapng captures (and, through tshark, anything Wireshark reads), look at what is in them,
    and — as the engine lands — replay them through NDIS 5 and NDIS 6 buffer strategies to compare their
    per-packet cost and check their correctness.

    \b
    Exit codes: 0 ok · 1 regression or verifier finding · 2 usage or configuration error
                3 bad input (damaged or unsupported trace) · 4 environment (missing tool or permission)
                130 interrupted · 70 internal error (a bug: please report it)
    """
    global _debug
    _debug = debug


@cli.command("import")
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the canonical trace (Parquet).",
)
@_reader_options
@_batching_option
@click.option("--no-data", is_flag=True, help="Leave the packet bytes out (lengths and times only).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def import_cmd(
    trace_file: Path,
    output: Path,
    reader: str,
    dissect: bool,
    strict: bool,
    batching: str,
    no_data: bool,
    force: bool,
) -> None:
    """Import TRACE (pcap, pcapng, compressed or not) into the canonical Parquet trace.

    The output is written atomically: either the whole file appears or nothing does.
    """
    from ndis_replay.atomic import probe

    parse_batching(batching)
    if output.exists() and not force:
        raise OutputExists(output)
    probe(output)  # a read-only folder fails before the import, not after it
    trace = _load(trace_file, reader, dissect, strict, batching, keep_data=not no_data)
    _print_warnings(trace)
    trace.save(output, overwrite=force)
    click.echo(
        f"{len(trace)} packets from {trace_file} ({trace.meta.format}"
        f"{'+' + trace.meta.compression if trace.meta.compression else ''}) → {output}"
        f"{f' with {len(trace.warnings)} warning(s)' if trace.warnings else ''}"
    )


@cli.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path, dir_okay=False))
@_reader_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of tables.")
def inspect(trace_file: Path, reader: str, dissect: bool, strict: bool, as_json: bool) -> None:
    """Show what TRACE holds: packets, time span, interfaces and link types, sizes, directions, send calls
    under each batching rule, and any warnings from its import.

    TRACE may be a capture or a Parquet trace written by `ndis-replay import`.
    """
    from ndis_replay.summary import summarize

    trace = _load(trace_file, reader, dissect, strict, "none")
    summary = summarize(trace)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _render_summary(summary)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def _safe(text: object) -> Text:
    """Text that came from a trace, shown literally: no rich markup, no terminal control characters."""
    return Text(str(text).translate(_CONTROL))


def _fmt_ns_rate(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:,.1f} {unit}"


def _render_summary(s: dict[str, Any]) -> None:
    console = Console(highlight=False)
    comp = f" ({s['compression']}-compressed)" if s["compression"] else ""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("file", _safe(s["source"]))
    head.add_row("format", f"{s['format']}{comp}, read by the {s['reader']} reader")
    head.add_row("size", f"{s['size']:,} bytes, sha256 {s['sha256'][:16]}…")
    head.add_row("packets", f"{s['packets']:,}")
    if s["first"]:
        head.add_row("time", f"{s['first']} → {s['last']} ({s['duration_s']:.6f} s)")
    if s["timestamps_missing"]:
        head.add_row("no timestamp", f"{s['timestamps_missing']} packets (Simple Packet Blocks)")
    if s["out_of_order"]:
        head.add_row("out of order", f"{s['out_of_order']} packets earlier than the one before")
    head.add_row("bytes", f"{s['wire_bytes']:,} on the wire, {s['captured_bytes']:,} captured")
    head.add_row("rate", f"{_fmt_ns_rate(s['rate_pps'], 'packets/s')}, {_fmt_ns_rate(s['rate_mbps'], 'Mbit/s')}")
    d = s["directions"]
    head.add_row("directions", f"send {d['send']:,} · recv {d['recv']:,} · unknown {d['unknown']:,} (replayed as send)")
    console.print(head)

    t = Table(title="Interfaces", title_justify="left")
    for col in ("id", "name", "link type", "snaplen", "ns/tick", "packets", "send", "recv", "unknown"):
        t.add_column(col, justify="right" if col not in ("name", "link type") else "left")
    for i in s["interfaces"]:
        name = i["name"] or i["description"] or "—"
        t.add_row(
            str(i["id"]),
            _safe(name),
            i["linktype_name"],
            str(i["snaplen"]),
            i["ts_resolution_ns"],
            f"{i['packets']:,}",
            f"{i['send']:,}",
            f"{i['recv']:,}",
            f"{i['unknown']:,}",
        )
    console.print(t)

    if s["sizes"]:
        z = s["sizes"]
        t = Table(title="Frame sizes (bytes on the wire)", title_justify="left")
        for col in ("min", "p50", "p90", "p99", "max", "mean", "header p50", "truncated"):
            t.add_column(col, justify="right")
        t.add_row(
            str(z["min"]),
            f"{z['p50']:.0f}",
            f"{z['p90']:.0f}",
            f"{z['p99']:.0f}",
            str(z["max"]),
            f"{z['mean']:.1f}",
            f"{z['header_len_p50']:.0f}",
            f"{z['truncated']:,}",
        )
        console.print(t)
        t = Table(title="Size buckets", title_justify="left")
        t.add_column("bytes")
        t.add_column("packets", justify="right")
        t.add_column("share", justify="right")
        for b in z["buckets"]:
            t.add_row(b["bucket"], f"{b['packets']:,}", f"{100 * b['packets'] / max(s['packets'], 1):.1f}%")
        console.print(t)

    t = Table(title="Send calls by batching rule (send + unknown packets)", title_justify="left")
    for col in ("rule", "calls", "packets/call", "largest call"):
        t.add_column(col, justify="left" if col == "rule" else "right")
    for c in s["send_calls"]:
        t.add_row(c["rule"], f"{c['calls']:,}", f"{c['mean_packets']:.2f}", str(c["max_packets"]))
    console.print(t)

    if s["protocols"]:
        t = Table(title="Highest protocols", title_justify="left")
        t.add_column("protocol")
        t.add_column("packets", justify="right")
        for p in s["protocols"]:
            t.add_row(_safe(p["protocol"]), f"{p['packets']:,}")
        console.print(t)

    _render_etw(console, s["details"])
    measured = s.get("measured")
    if measured:
        console.print(
            f"measured by the driver (send → completion): {measured['packets']:,} packets, "
            f"p50 {measured['p50_ns'] / 1e3:,.2f} µs, p99 {measured['p99_ns'] / 1e3:,.2f} µs, "
            f"max {measured['max_ns'] / 1e3:,.2f} µs; {measured['without_completion']:,} sends without a completion"
        )

    if s["warnings"]:
        t = Table(title="Warnings", title_justify="left")
        for col in ("code", "detail", "record", "byte", "count"):
            t.add_column(col, justify="right" if col in ("record", "byte", "count") else "left")
        for w in s["warnings"]:
            t.add_row(
                w["code"],
                _safe(w["detail"]),
                "—" if w["record"] is None else str(w["record"]),
                "—" if w["offset"] is None else str(w["offset"]),
                str(w["count"]),
            )
        console.print(t)


_CLOCKS = {1: "QPC", 2: "system time", 3: "CPU cycles"}
#: PktMon ComponentType values (ETW_FORMAT.md §5.2).
_COMPONENT_TYPES = {1: "NDIS", 2: "miniport", 3: "filter", 4: "protocol", 10: "HTTP", 13: "IPsec", 14: "NetCx"}


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], left: Sequence[str] = ()) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    for row in rows:
        t.add_row(*(_safe(v) if isinstance(v, str) else Text(f"{v:,}" if isinstance(v, int) else str(v)) for v in row))
    return t


def _render_etw(console: Console, details: dict[str, Any]) -> None:
    """The ETW part of ``inspect``: the ETL's header, events by provider, layers or components, drops, and the
    pairing of a driver send/complete trace."""
    header, stats = details.get("etl_header"), details.get("etl_stats")
    if header and stats:
        clock = _CLOCKS.get(header.get("clock_type"), "?")
        lost = f"events lost {header.get('events_lost', 0):,}, buffers lost {header.get('buffers_lost', 0):,}"
        console.print(
            Text(
                f"ETL: Windows build {header.get('os_build')}, {header.get('number_of_processors')} CPUs, "
                f"clock {clock} at {header.get('perf_freq', 0):,} Hz, {stats.get('buffers', 0):,} buffers "
                f"({stats.get('compressed_buffers', 0):,} compressed), {lost}, logger "
            ).append(_safe(header.get("logger_name", "")))
        )
    etw = details.get("etw") or {}
    if etw.get("events"):
        rows: list[tuple[object, ...]] = [(e["provider"], e["event_id"], e["count"]) for e in etw["events"]]
        console.print(_table("ETW events", ("provider", "event id", "events"), rows, left=("provider",)))
    if etw.get("layers"):
        cols: tuple[str, ...] = ("miniport", "lower", "media", "packets", "send", "recv", "kept")
        rows = [
            (
                layer.get("miniport"),
                layer.get("lower"),
                str(layer.get("media", "")),
                layer.get("packets", 0),
                layer.get("sends", 0),
                layer.get("recvs", 0),
                "yes" if layer.get("kept") else "no",
            )
            for layer in etw["layers"]
        ]
        console.print(_table("NDIS-PacketCapture layers (--etw-layer MINIPORT:LOWER)", cols, rows, left=("media",)))
    components = [c for c in etw.get("components", ()) if c.get("packets") or c.get("drops") or c.get("kept")]
    if components:
        cols = ("id", "name", "description", "type", "IfIndex", "packets", "tx", "rx", "drops", "kept")
        rows = [
            (
                c["id"],
                c.get("name") or "",
                c.get("description") or "",
                _COMPONENT_TYPES.get(c.get("type"), str(c.get("type", ""))),
                "—" if c.get("ifindex") is None else c["ifindex"],
                c.get("packets", 0),
                c.get("tx", 0),
                c.get("rx", 0),
                c.get("drops", 0),
                "yes" if c.get("kept") else "no",
            )
            for c in components
        ]
        console.print(
            _table("PktMon components with packets (--etw-component ID)", cols, rows, left=("name", "description"))
        )
    if etw.get("drops"):
        drops = etw["drops"]
        cols = (*(k for k in drops[0] if k != "count"), "count")
        console.print(_table("Dropped packets (PktMon 170)", cols, [tuple(d.get(k) for k in cols) for d in drops]))
    driver = details.get("driver")
    if driver:
        rows = [
            (
                driver.get("sends", 0),
                driver.get("completes", 0),
                driver.get("paired", 0),
                driver.get("unpaired_sends", 0),
                driver.get("unmatched_completes", 0),
                driver.get("resent", 0),
            )
        ]
        cols = ("sends", "completes", "paired", "send never completed", "completion without send", "re-sent early")
        console.print(_table(f"Driver send/complete events ({driver.get('provider') or '?'})", cols, rows))


# --- replay: run, verify, strategies, miniports ------------------------------------------------------------------

#: Extensions left out of a trace's name when it names a results directory (capture.pcapng.zst → capture).
_TRACE_SUFFIXES = (".gz", ".zst", ".zstd", ".xz", ".bz2", ".pcap", ".pcapng", ".cap", ".parquet", ".etl")
#: Findings listed per strategy in the terminal (run.json has them all).
FINDINGS_SHOWN = 10


def _trace_stem(path: Path) -> str:
    name = path.name
    stripped = True
    while stripped:
        stripped = False
        for suffix in _TRACE_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                stripped = True
    return name


@contextmanager
def _plugin_warnings() -> Iterator[None]:
    """Print each plugin the registries skipped as one warning line (other warnings pass through)."""
    from ndis_replay.engine.plugins import PluginWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        yield
    for w in caught:
        if isinstance(w.message, PluginWarning):
            reason = w.message.reason.translate(_CONTROL)
            click.echo(f"{PROG}: warning: {w.message.group} plugin {w.message.name!r} skipped: {reason}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "-s",
            "--strategy",
            "strategy_names",
            multiple=True,
            required=True,
            metavar="NAME",
            help="A strategy to replay (repeat for several): a built-in, a plugin, or a variant defined in "
            "--config. `ndis-replay strategies` lists them.",
        ),
        click.option(
            "--miniport",
            "miniport_name",
            default="loopback",
            show_default=True,
            metavar="NAME",
            help="The miniport at the bottom of the stack (`ndis-replay miniports` lists them).",
        ),
        click.option(
            "--tap-device",
            metavar="NAME",
            help="With the tap miniport (implied): write to this existing TAP/TUN device, in the current network "
            "namespace, instead of a device of the run's own in a private namespace. One strategy per run.",
        ),
        click.option(
            "--completion",
            default="sync",
            show_default=True,
            metavar="POLICY",
            help="When the miniport completes sends: sync (inside the send), deferred (on the next poll, like "
            "a DPC), batched:N (chains of N), delay:DURATION (e.g. delay:50us).",
        ),
        _batching_option,
        click.option(
            "--engine",
            type=click.Choice(["native", "python"]),
            default=None,
            help="What runs the timed rounds: the compiled core (default when built; strategies it does not implement "
            "run in Python) or the Python model. The checked pass is always the Python model.",
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path, dir_okay=False),
            help="TOML file with strategy and miniport parameters and named variants ([strategy.NAME]).",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _resolve(
    strategy_names: Sequence[str],
    miniport_name: str,
    completion: str,
    config_path: Path | None,
    tap_device: str | None = None,
    engine: str | None = None,
) -> tuple[list[StrategySpec], RunOptions]:
    """Strategy specs and the base run options, validated before any trace is read. ``engine`` None: native when
    the core is built (else Python, with a note)."""
    from ndis_replay.engine.config import load_config, resolve_miniport, resolve_strategy
    from ndis_replay.engine.miniports import CompletionPolicy
    from ndis_replay.runner import RunOptions
    from ndis_replay.worker import MiniportSpec, StrategySpec

    policy = CompletionPolicy.parse(completion)
    with _plugin_warnings():
        config = load_config(config_path) if config_path is not None else None
        specs = []
        for name in dict.fromkeys(strategy_names):  # the same name twice runs once
            strategy = resolve_strategy(name, config)
            cls = type(strategy)
            specs.append(StrategySpec(name, cls, strategy.params, cls.name))
        if tap_device is not None:
            if miniport_name not in ("loopback", "tap"):  # loopback: the default, not chosen
                raise ConfigError("--tap-device", tap_device, f"needs the tap miniport, not {miniport_name!r}")
            if len(specs) > 1:
                raise ConfigError(
                    "--tap-device", tap_device, "takes one strategy per run (a device takes one writer at a time)"
                )
            miniport_name = "tap"
        miniport = resolve_miniport(miniport_name, config)
    params = miniport.params
    if tap_device is not None:
        params = dataclasses.replace(params, device=tap_device)  # type: ignore[call-arg]
        params.validate()
    mspec = MiniportSpec(type(miniport).name, type(miniport), params)
    from ndis_replay.engine import native

    if engine == "native" and not native.available():
        raise NativeCoreMissing(native.import_error())
    if engine is None:
        engine = "native" if native.available() else "python"
        if engine == "python":
            click.echo("note: the native core is not built; timed rounds run in Python (--engine python)", err=True)
    options = RunOptions(miniport=mspec, completion=policy, command=tuple(_argv()), engine=engine)
    return specs, options


def _argv() -> list[str]:
    ctx = click.get_current_context(silent=True)
    while ctx is not None and "ndis_replay.argv" not in ctx.meta:
        ctx = ctx.parent
    return list(ctx.meta["ndis_replay.argv"]) if ctx is not None else [PROG]


@contextmanager
def _round_progress(label: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar over checked passes and rounds on stderr, when it is a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(f"{label} [progress.description]{{task.description}}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting workers", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield update


def _fmt_ns(value: float | None) -> str:
    """A duration for a table, at most 7 characters: 850ns, 4.89µs, 14.1µs, 181µs, 1.25ms, 12.3ms, 2.50s."""
    if value is None:
        return "—"
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if value >= scale:
            v = value / scale
            return f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{value:.0f}ns"


#: Counters shown as "allocations per packet": descriptors and buffers handed out.
_ALLOC_COUNTERS = (
    "nbl_allocs",
    "nb_allocs",
    "mdl_allocs",
    "ctx_allocs",
    "packet_allocs",
    "buffer_allocs",
    "data_allocs",
)
#: Counters shown as "locks per packet": interlocked operations and spin-lock acquisitions.
_LOCK_COUNTERS = ("interlocked_ops", "spinlock_acquires")


def _findings_cell(s: StrategyResult) -> Text:
    if s.failure is not None:
        return Text(f"{s.errors} · {s.failure}", style="bold red")
    if s.errors:
        return Text(f"{s.errors} error{'s' * (s.errors != 1)}", style="bold red")
    if s.warnings:
        return Text(f"0 ({s.warnings} warning{'s' * (s.warnings != 1)})", style="yellow")
    return Text("0", style="green")


def _delivery_cell(delivery: dict[str, int] | None) -> Text:
    """The far side of a device-backed miniport: frames delivered intact of those written, and what went wrong."""
    if delivery is None:
        return Text("—")
    text = f"{delivery.get('delivered', 0):,}/{delivery.get('frames', 0):,}"
    if not delivery.get("problems"):
        return Text(text, style="green")
    names = ("dropped", "corrupted", "reordered", "unexpected", "refused", "socket_drops")
    wrong = ", ".join(f"{delivery[n]:,} {n.replace('_', ' ')}" for n in names if delivery.get(n))
    return Text(f"{text} ({wrong})", style="bold red")


def _wide_console() -> Console:
    """stdout; 150 columns when it is not a terminal and COLUMNS is unset (logs of CI jobs, ``make demo``)."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=150)
    return console


def _render_run(result: RunResult, out: Path | None) -> None:
    console = _wide_console()
    t = result.trace
    m = result.miniport
    head = (
        f"{t['replayed']:,} packets in {t['calls']:,} send calls (batching {result.batching}), "
        f"{m['name']} miniport, {m['completion']} completion"
    )
    if not result.check_only:
        head += f", {result.rounds} rounds after {result.warmup} warm-up, pacing {result.pacing}"
    console.print(Text(str(t["path"]).translate(_CONTROL), style="bold"), Text(head))
    modelled = result.cost_profile is not None
    table = Table(
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="per packet: allocs = descriptors and buffers allocated, copied = bytes, locks = interlocked and "
        "spin-lock operations; peak = most NBLs or NDIS_PACKETs outstanding",
        caption_justify="left",
    )
    columns = ["strategy", "packets"]
    if not result.check_only:
        columns += ["p50", "p99", "p99.9", "max", "packets/s", "engine"]
    columns += ["allocs", "copied", "locks", "peak"]
    if modelled:
        columns.append("modelled")
    far_side = any(s.delivery is not None for s in result.strategies)
    if far_side:
        columns.append("far side")
    columns.append("findings")
    for col in columns:
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    for s in result.strategies:
        per = s.counters["per_packet"]
        row: list[str | Text] = [_safe(s.name), f"{t['replayed']:,}"]
        if not result.check_only:
            summary = s.summary or {}
            pps = summary.get("packets_per_s")
            row += [
                _fmt_ns(summary.get("p50_ns")),
                _fmt_ns(summary.get("p99_ns")),
                _fmt_ns(summary.get("p999_ns")),
                _fmt_ns(summary.get("max_ns")),
                "—" if pps is None else f"{pps:,.0f}",
                s.engine or "—",
            ]
        peak = max(s.peak_outstanding.get("nbl", 0), s.peak_outstanding.get("packet", 0))
        row += [
            f"{sum(per.get(c, 0.0) for c in _ALLOC_COUNTERS):.2f}",
            f"{per.get('bytes_copied', 0.0):,.1f}",
            f"{sum(per.get(c, 0.0) for c in _LOCK_COUNTERS):.2f}",
            f"{peak:,}",
        ]
        if modelled:
            row.append(_fmt_ns(s.modelled_ns_per_packet))
        if far_side:
            row.append(_delivery_cell(s.delivery))
        row.append(_findings_cell(s))
        table.add_row(*row)
    console.print(table)
    notes = _clock_notes(result)
    floors = result.measurement_overheads or [result.measurement_overhead or {}]
    for floor in floors:
        if floor.get("p50_ns") is not None:
            how = ", ".join(str(floor[k]) for k in ("engine", "timing") if floor.get(k))
            notes.append(f"harness floor (no-op strategy{', ' + how if how else ''}): p50 {_fmt_ns(floor['p50_ns'])}")
    if modelled and result.cost_profile is not None:
        notes.append(f"modelled cost: profile {result.cost_profile['name']!r}")
    if notes:
        console.print(Text(" · ".join(notes), style="dim"))
    for line in _pace_lines(result):
        console.print(Text(line, style="dim"))
    _render_findings(console, result)
    if out is not None:
        console.print(Text(f"results: {out}"))


def _rate_text(pps: float | None, mbps: float | None) -> str:
    if pps is None:
        return "—"
    return f"{pps:,.0f} packets/s ({mbps or 0:,.2f} Mbit/s)"


def _clock_notes(result: RunResult) -> list[str]:
    """One note per (engine, timing) that timed a strategy: its clock pair's cost and how rounds were timed."""
    seen: dict[tuple[str, str], int | None] = {}
    for s in result.strategies:
        if s.timed and s.engine is not None:
            seen.setdefault((s.engine, s.timing or "call"), s.timer.get("median_ns"))
    if not seen:  # files from before engines were recorded: Python, per call
        if result.timer_overhead_ns is None:
            return []
        return [f"timer: {result.timer_overhead_ns} ns per perf_counter_ns pair"]
    notes = []
    for (engine, timing), pair in seen.items():
        clock = "native clock" if engine == "native" else "perf_counter_ns"
        calls = timing.partition(":")[2]
        how = "per call" if timing == "call" else f"by runs of {calls} calls (a packet: its run's mean)"
        notes.append(f"{engine}: {pair} ns per {clock} pair, timed {how}")
    return notes


def _pace_lines(result: RunResult) -> list[str]:
    """Under a paced run: the requested rate, then per strategy the achieved rate and how late calls started."""
    if result.check_only or result.pacing == "asap":
        return []
    req = result.requested_rate or {}
    lines = [f"pacing {result.pacing}: requested {_rate_text(req.get('packets_per_s'), req.get('mbit_per_s'))}"]
    for s in result.strategies:
        pace = s.pace
        if not pace:
            continue
        achieved = _rate_text(pace.get("packets_per_s"), pace.get("mbit_per_s"))
        lines.append(
            f"  {str(s.name).translate(_CONTROL)}: achieved {achieved}, "
            f"calls late p50 {_fmt_ns(pace.get('lateness_p50_ns'))} p99 {_fmt_ns(pace.get('lateness_p99_ns'))} "
            f"max {_fmt_ns(pace.get('lateness_max_ns'))}"
        )
    return lines


def _render_findings(console: Console, result: RunResult) -> None:
    for s in result.strategies:
        if not s.findings:
            continue
        table = Table(title=f"Findings: {s.name}", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("rule", "packet", "descriptor", "message"):
            table.add_column(col, justify="right" if col == "packet" else "left")
        for f in s.findings[:FINDINGS_SHOWN]:
            style = "red" if f["severity"] == "error" else "yellow"
            index = "—" if f["packet_index"] < 0 else str(f["packet_index"])
            table.add_row(Text(f["rule"], style=style), index, _safe(f["descriptor"]), _safe(f["message"]))
        total = sum(s.finding_counts.values())
        if total > FINDINGS_SHOWN:
            table.caption = f"… {total - FINDINGS_SHOWN:,} more in run.json"
        console.print(table)


def _wire_paths(wire: Path | None, names: Sequence[str], stem: str, several_traces: bool) -> dict[str, Path]:
    """``--wire out.pcap``: that file for one strategy; ``out.<strategy>.pcap`` for several (and
    ``out.<trace>.<strategy>.pcap`` for several traces)."""
    if wire is None:
        return {}
    if len(names) == 1 and not several_traces:
        return {names[0]: wire}
    base = wire.name[: -len(wire.suffix)] if wire.suffix else wire.name
    middle = f".{stem}" if several_traces else ""
    return {name: wire.with_name(f"{base}{middle}.{name}{wire.suffix or '.pcap'}") for name in names}


def _claim_outputs(locks: contextlib.ExitStack, paths: Sequence[Path], force: bool) -> None:
    """Lock each output path for this command (OutputBusy when another command has it), then refuse an existing
    one unless ``force`` (OutputExists): checked under the lock, so two runs cannot both find it free. What a killed
    run left staged beside a path is removed (under the lock no live run has anything staged there)."""
    from ndis_replay.atomic import OutputLock, sweep

    for path in paths:
        locks.enter_context(OutputLock(path))
        sweep(path)
    for path in paths:
        if (path.exists() or path.is_symlink()) and not force:
            raise OutputExists(path)


def _drop(replaced: list[Replaced]) -> None:
    """The run's outputs are final: remove the old versions kept aside."""
    for old in replaced:
        old.drop()
    replaced.clear()


def _remove_outputs(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _baseline_options(baseline_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option(
            "--fail-on-regression",
            "threshold_text",
            metavar="PERCENT",
            help="With --baseline: relative change beyond which a significant difference is a regression (default 5%).",
        )(f)
        return click.option("--baseline", type=click.Path(path_type=Path, file_okay=False), help=baseline_help)(f)

    return decorate


def _threshold(threshold_text: str | None, baseline: Path | None) -> float | None:
    """The regression threshold of --fail-on-regression (which needs --baseline), None without a baseline."""
    from ndis_replay.reports.compare import DEFAULT_THRESHOLD, parse_threshold

    if baseline is None:
        if threshold_text is not None:
            raise ConfigError("--fail-on-regression", threshold_text, "needs --baseline")
        return None
    return parse_threshold(threshold_text) if threshold_text is not None else DEFAULT_THRESHOLD


def _report_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--report",
                "report_html",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Also write the HTML report (one self-contained file) here.",
            ),
            click.option(
                "--markdown",
                "report_markdown",
                metavar="FILE|-",
                help="Also write a Markdown summary here (- for standard output, e.g. >> $GITHUB_STEP_SUMMARY).",
            ),
            click.option(
                "--junit",
                "report_junit",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Also write JUnit XML here (a test case per verifier rule and per comparison).",
            ),
        ]
    ):
        f = option(f)
    return f


def _report_files(html: Path | None, markdown: str | None, junit: Path | None) -> Any:
    from ndis_replay.reports.output import STDOUT, ReportFiles

    md: Path | str | None = None
    if markdown is not None:
        md = STDOUT if markdown == STDOUT else Path(markdown)
    return ReportFiles(html=html, markdown=md, junit=junit)


def _write_reports(
    runs: Sequence[tuple[str, RunResult]],
    files: Any,
    baseline: tuple[str, RunResult] | None = None,
    threshold: float | None = None,
    title: str | None = None,
) -> Any:
    """Build the report of ``runs`` and write the formats ``files`` asks for; returns the Report."""
    from ndis_replay.reports.compare import DEFAULT_THRESHOLD
    from ndis_replay.reports.data import build_report
    from ndis_replay.reports.output import write_report

    if files.html is not None:
        # matplotlib takes ~0.4 s to import, in Python; the statistics below spend most of their time in numpy sorts
        # that release the GIL: importing the charts meanwhile overlaps the two (the import lock makes the later
        # import wait for this one)
        threading.Thread(target=importlib.import_module, args=("ndis_replay.reports.charts",), daemon=True).start()
    report = build_report(
        runs, baseline=baseline, threshold=threshold if threshold is not None else DEFAULT_THRESHOLD, title=title
    )
    if not files.empty:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for path in write_report(report, files, echo=lambda text: click.echo(text, nl=False)):
            err.print(Text(f"report: {path}".translate(_CONTROL)))
    return report


@cli.command()
@click.argument("traces", metavar="TRACE...", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@_engine_options
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True, help="Measured rounds.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Warm-up rounds (timed, not kept)."
)
@click.option(
    "--pace",
    "pace",
    metavar="RULE",
    help="When each send call starts: asap (default), original (the trace's own gaps), xN (N times the captured "
    "rate), pps=N, mbps=N (link-layer bytes). Paced latency is measured from the scheduled time; the requested and "
    "achieved rates and how late calls started are reported.",
)
@click.option("--pacing", "pacing", metavar="RULE", hidden=True, help="Old name of --pace (still accepted).")
@click.option(
    "--timing",
    "timing_rule",
    metavar="RULE",
    default="auto",
    show_default=True,
    help="How timed rounds read the clock: call (before and after every send call: per-packet latency with the "
    "build/send split), runs:N (once per N calls: each packet gets its run's mean; sync completion, --pace asap), "
    "runs (runs:32), auto (runs on the native engine where it applies, else call). The native engine's clock reading "
    "(~20 ns) is as long as reuse's whole send: timed per call its ratios are squeezed towards 1.",
)
@click.option(
    "--cost-profile",
    "cost_profile_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML of nanoseconds per counted operation: adds a modelled cost per packet (no default costs exist).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Results directory (default results/<trace>-<time>); with several traces, a folder for one per trace.",
)
@click.option(
    "--wire",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the frames each strategy's checked pass transmitted to this pcap (out.<strategy>.pcap for several).",
)
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="Run every timed round on one CPU (the highest this process may use; recorded as host.timed_cpu). "
    "Workers timed on different CPUs of a VM differ by tens of percent.",
)
@click.option("--force", is_flag=True, help="Replace an existing results directory (and --wire files).")
@_baseline_options("A results directory to compare this run with (as `ndis-replay compare`); exits 1 on a regression.")
@_report_options
@_reader_options
def run(
    traces: tuple[Path, ...],
    strategy_names: tuple[str, ...],
    miniport_name: str,
    completion: str,
    batching: str,
    config_path: Path | None,
    tap_device: str | None,
    engine: str | None,
    rounds: int,
    warmup: int,
    pace: str | None,
    pacing: str | None,
    timing_rule: str,
    cost_profile_path: Path | None,
    out: Path | None,
    wire: Path | None,
    pin: bool,
    force: bool,
    baseline: Path | None,
    threshold_text: str | None,
    report_html: Path | None,
    report_markdown: str | None,
    report_junit: Path | None,
    reader: str,
    dissect: bool,
    strict: bool,
) -> None:
    """Replay each TRACE through every --strategy: first once under the verifier (untimed; the transmitted bytes
    are compared with the trace), then warm-up and measured rounds, interleaved across strategies, each strategy
    in its own worker process.

    TRACE may be a capture or a Parquet trace written by `ndis-replay import`. Each trace gets a results
    directory (run.json + packets.parquet), written atomically; if the run stops (Ctrl-C, a trace that cannot be
    used) nothing it wrote is kept. Exits 1 when the verifier found anything, or with --baseline on a regression.
    --report, --markdown and --junit write the report of the run (of every trace, with the baseline comparison).
    """
    from ndis_replay.atomic import keep_aside, probe
    from ndis_replay.engine.ndis.counters import CostProfile
    from ndis_replay.engine.replay import parse_pacing, parse_timing
    from ndis_replay.results import save
    from ndis_replay.runner import run_trace

    parse_batching(batching)
    if pace is not None and pacing is not None and pace != pacing:
        raise ConfigError("--pacing", pacing, "is the old name of --pace; give one of them")
    rule = parse_pacing(pace or pacing or "asap")
    timing = parse_timing(timing_rule)
    # the baseline is checked before any replay: a run that cannot be compared is refused up front
    threshold = _threshold(threshold_text, baseline)
    base_run: RunResult | None = None
    if baseline is not None:
        from ndis_replay.results import load

        if len(traces) > 1:
            raise ConfigError("--baseline", str(baseline), "compares one run; give one TRACE")
        base_run = load(baseline)
    specs, options = _resolve(strategy_names, miniport_name, completion, config_path, tap_device, engine)
    profile = CostProfile.from_toml(cost_profile_path) if cost_profile_path is not None else None
    options = dataclasses.replace(
        options, rounds=rounds, warmup=warmup, pacing=rule, cost_profile=profile, pin=pin, timing=timing
    )
    timing.run_calls(options.engine, options.completion, rule)  # runs:N with other completion or pacing: exit 2
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    several = len(traces) > 1
    plan: list[tuple[Path, Path, dict[str, Path]]] = []
    for trace_file in traces:
        stem = _trace_stem(trace_file)
        if out is None:
            target = Path("results") / f"{stem}-{stamp}"
        else:
            target = out / stem if several else out
        wires = _wire_paths(wire, [s.name for s in specs], stem, several)
        plan.append((trace_file, target, wires))
    if len({target for _, target, _ in plan}) != len(plan):
        raise ConfigError("TRACE", ", ".join(str(t) for t in traces), "two traces would share a results directory")

    # folders the results will create (the results/ default, --out for several traces): removed on Ctrl-C if empty
    created = sorted(
        {parent for _, target, _ in plan for parent in target.parents if not parent.exists()},
        key=lambda p: len(p.parts),
        reverse=True,
    )
    files = _report_files(report_html, report_markdown, report_junit)
    written: list[Path] = []
    # with --force, what this run replaced is kept aside until the run succeeds (restored when it does not)
    replaced: list[Replaced] = []
    done: list[tuple[str, RunResult]] = []
    found = False
    # every results directory and --wire file is locked for the whole run (a second run writing there is refused,
    # not mixed in), then checked, all before the first replay; released when the command ends, or below on failure
    locks = click.get_current_context().with_resource(contextlib.ExitStack())
    try:
        _claim_outputs(locks, [p for _, target, wires in plan for p in (target, *wires.values())], force)
        for report_path in (files.html, files.markdown, files.junit):
            if isinstance(report_path, Path):
                probe(report_path)  # a read-only report folder fails now, not after the replay
        for trace_file, target, wires in plan:
            trace = _load(trace_file, reader, dissect, strict, batching)
            _print_warnings(trace)
            _note_synthetic(trace)
            if force:
                replaced.extend(keep_aside(p) for p in wires.values() if p.is_file())
            with _round_progress(trace_file.name) as progress:
                result = run_trace(trace, specs, options, path=trace_file, wire=wires, progress=progress)
            written.extend(p for p in wires.values() if p.exists())
            save(result, target, force=force, keep_old=replaced)
            written.append(target)
            if result.packets is None and result.packets_spilled is not None and (not files.empty or base_run):
                # a huge run's rows went to disk part by part: the report and the comparison read them back from
                # the saved directory, as `ndis-replay report DIR` does
                from ndis_replay.results import load as load_results

                result = load_results(target)
            _render_run(result, target)
            done.append((str(target), result))
            found = found or not result.ok
            if base_run is not None and threshold is not None:
                written.clear()  # the new run is a valid result: kept whatever the comparison says
                _drop(replaced)
                labels = (str(baseline), str(target))
                code = _compare_and_gate(base_run, result, (), threshold, False, labels)
                found = found or code != 0
        if not files.empty:  # inside: a report that cannot be written (full disk) takes the results with it
            base_pair = (str(baseline), base_run) if base_run is not None else None
            _write_reports(done, files, base_pair, threshold)
    except BaseException:  # Ctrl-C, or a later trace that cannot be used: the run leaves all or nothing
        _remove_outputs(written)
        for old in reversed(replaced):
            old.restore()
        locks.close()  # the lock files go first: they would keep the folders below from being empty
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _drop(replaced)
    if found:
        click.get_current_context().exit(int(ExitCode.FINDINGS))


@cli.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path(path_type=Path, dir_okay=False))
@_engine_options
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON instead of tables.")
@_reader_options
def verify(
    trace_file: Path,
    strategy_names: tuple[str, ...],
    miniport_name: str,
    completion: str,
    batching: str,
    config_path: Path | None,
    tap_device: str | None,
    engine: str | None,
    as_json: bool,
    reader: str,
    dissect: bool,
    strict: bool,
) -> None:
    """Replay TRACE once through each --strategy under the verifier (untimed) and print what it found: rule
    violations with the packet index and descriptor, and packets whose transmitted bytes differ from the trace.

    Nothing is written. Exits 1 when anything was found.
    """
    from ndis_replay.results import dumps
    from ndis_replay.runner import run_trace

    parse_batching(batching)
    specs, options = _resolve(strategy_names, miniport_name, completion, config_path, tap_device, engine)
    options = dataclasses.replace(options, check_only=True, baseline=False, keep_packets=False)
    trace = _load(trace_file, reader, dissect, strict, batching)
    _print_warnings(trace)
    _note_synthetic(trace)
    with _round_progress(trace_file.name) as progress:
        result = run_trace(trace, specs, options, path=trace_file, progress=progress)
    if as_json:
        click.echo(dumps(result), nl=False)
    else:
        _render_run(result, None)
        console = _wide_console()
        for s in result.strategies:
            w = s.wire
            if w.get("ok") is None:
                wire_text = "not compared (the pass stopped)"
            else:
                wire_text = f"{w['matched']:,} of {w['packets']:,} packets transmitted exactly"
            console.print(Text(f"{s.name}: {s.status}; wire: {wire_text}"))
    if not result.ok:
        click.get_current_context().exit(int(ExitCode.FINDINGS))


def _param_rows(params_type: type[Any]) -> list[dict[str, Any]]:
    rows = []
    for f in dataclasses.fields(params_type):
        default: object = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        rows.append(
            {
                "name": f.name,
                "type": f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
                "default": None if default is dataclasses.MISSING else default,
                "help": str(f.metadata.get("help", "")),
            }
        )
    return rows


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _render_catalogue(kind: str, entries: list[dict[str, Any]], footer: str = "") -> None:
    console = Console(highlight=False)
    for e in entries:
        title = Text(e["name"], style="bold")
        extra = f"  (NDIS {e['ndis_version']})" if e.get("ndis_version") else ""
        base = f"  variant of {e['base']}" if e.get("base") and e["base"] != e["name"] else ""
        origin = f"  [{e['origin']}]" if e.get("origin") else ""
        console.print(title, Text(f"{extra}{base}{origin}  {e['summary']}".rstrip()))
        if e.get("doc") and e["doc"] != e["summary"]:
            console.print(Text(f"    {e['doc']}", style="dim"))
        if e["params"]:
            t = Table(box=None, padding=(0, 2), show_edge=False, pad_edge=False)
            for col in ("parameter", "type", "default", "help"):
                t.add_column(col, style="cyan" if col == "parameter" else None, overflow="fold")
            for p in e["params"]:
                t.add_row("  " + p["name"], p["type"], _safe(json.dumps(p["default"])), _safe(p["help"]))
            console.print(t)
        console.print()
    if footer:
        console.print(Text(footer, style="dim"))


def _origin(cls: type[Any]) -> str:
    return "built-in" if cls.__module__.startswith("ndis_replay.") else f"plugin {cls.__module__}"


@cli.command("strategies")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="Also list its variants."
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def strategies_cmd(config_path: Path | None, as_json: bool) -> None:
    """List the strategies — built-in, plugins (entry-point group ndis_replay.strategies) and, with --config, its
    variants — with their parameters (name, type, default, help)."""
    from ndis_replay.engine.config import load_config, resolve_strategy
    from ndis_replay.engine.strategies import STRATEGIES

    with _plugin_warnings():
        config = load_config(config_path) if config_path is not None else None
        names = config.strategy_names() if config is not None else STRATEGIES.available()
        entries = []
        for name in names:
            strategy = resolve_strategy(name, config)
            cls = type(strategy)
            params = _param_rows(cls.Params)
            values = strategy.params.as_dict()
            for p in params:
                p["default"] = values.get(p["name"], p["default"])  # a variant's own values
            entries.append(
                {
                    "name": name,
                    "base": cls.name,
                    "origin": _origin(cls),
                    "ndis_version": getattr(cls, "ndis_version", None),
                    "summary": getattr(cls, "summary", "") or _first_line(cls.describe()),
                    "doc": _first_line(cls.describe()),
                    "params": params,
                }
            )
    if as_json:
        click.echo(json.dumps(entries, indent=2, default=str))
        return
    _render_catalogue("strategy", entries)


@cli.command("miniports")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option(
    "--cleanup",
    is_flag=True,
    help="Instead of listing: remove the network namespaces (ndis-replay-*) that runs of the tap miniport left "
    "behind when killed outright, and with them their devices.",
)
def miniports_cmd(as_json: bool, cleanup: bool) -> None:
    """List the miniports — built-in and plugins (entry-point group ndis_replay.miniports) — with their parameters,
    and the completion policies."""
    from ndis_replay.engine.miniports import COMPLETION_CHOICES, MINIPORTS

    if cleanup:
        _cleanup_namespaces(as_json)
        return

    with _plugin_warnings():
        entries = []
        for name in MINIPORTS.available():
            cls = MINIPORTS.get(name)
            doc = _first_line(cls.__doc__ or "")
            entries.append(
                {
                    "name": name,
                    "origin": _origin(cls),
                    "summary": getattr(cls, "summary", "") or doc,
                    "doc": doc,
                    "params": _param_rows(cls.Params),
                }
            )
    if as_json:
        click.echo(json.dumps({"miniports": entries, "completion": list(COMPLETION_CHOICES)}, indent=2, default=str))
        return
    _render_catalogue("miniport", entries, f"completion policies (--completion): {', '.join(COMPLETION_CHOICES)}")


def _cleanup_namespaces(as_json: bool) -> None:
    from ndis_replay.engine.miniports import netns

    done = netns.cleanup()
    if as_json:
        click.echo(json.dumps({"removed": list(done.removed), "in_use": list(done.in_use)}, indent=2))
        return
    for name in done.removed:
        click.echo(f"removed network namespace {name}")
    for name in done.in_use:
        click.echo(f"kept network namespace {name}: the run that made it is still going")
    if not done.removed and not done.in_use:
        click.echo("no network namespace of ndis-replay was left behind")


# --- compare -----------------------------------------------------------------------------------------------------

#: Metric names for --metric (the keys of reports.compare.METRICS; listed here so --help needs no scipy import).
_METRIC_CHOICES = ("p50", "p90", "p99", "p999", "mean", "packets_per_s")


def _fmt_metric(metric: str, value: float) -> str:
    return f"{value:,.0f}/s" if metric == "packets_per_s" else _fmt_ns(value)


def _render_comparison(comparison: Any, gate_result: Any) -> None:
    """The comparison table, strategies left out, and the gate's answer."""
    console = _wide_console()
    table = Table(
        title=f"{comparison.new_label} vs baseline {comparison.base_label}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("strategy", "metric", "base", "new", "change", "interval", "p", "test", "verdict"):
        table.add_column(col, justify="left" if col in ("strategy", "metric", "test", "verdict") else "right")
    styles = {"regressed": "bold red", "improved": "green", "unchanged": ""}
    for c in comparison.comparisons:
        interval = "—" if c.interval is None else f"[{c.interval[0]:+.1%}, {c.interval[1]:+.1%}]"
        noisy = " (noisy)" if c.noisy_base or c.noisy_new else ""
        table.add_row(
            _safe(c.strategy),
            c.metric,
            _fmt_metric(c.metric, c.base),
            _fmt_metric(c.metric, c.new),
            f"{c.change:+.1%}",
            interval,
            "—" if c.p_value is None else f"{c.p_value:.3g}",
            c.test,
            Text(c.verdict + noisy, style=styles.get(c.verdict, "")),
        )
    console.print(table)
    for label, names in (
        (f"only in {comparison.base_label}", comparison.only_base),
        (f"only in {comparison.new_label}", comparison.only_new),
        ("not timed on both sides", comparison.untimed),
    ):
        if names:
            console.print(Text(f"not compared ({label}): {', '.join(names)}".translate(_CONTROL), style="yellow"))
    threshold = comparison.comparisons[0].threshold if comparison.comparisons else None
    if gate_result.ok:
        console.print(Text("gate: pass", style="bold green"))
    else:
        parts = []
        if gate_result.regressions:
            parts.append(f"{len(gate_result.regressions)} regression(s) beyond {threshold:.1%}")
        if gate_result.findings:
            parts.append(f"{len(gate_result.findings)} error finding(s) in {comparison.new_label}")
        console.print(Text(f"gate: fail ({'; '.join(parts)})", style="bold red"))


def _compare_and_gate(
    base: Any, new: Any, metrics: Sequence[str], threshold: float, as_json: bool, labels: tuple[str, str] | None = None
) -> int:
    """Compare, print, and return the gate's exit code."""
    from ndis_replay.reports.compare import compare_runs
    from ndis_replay.reports.gate import error_findings, gate
    from ndis_replay.results import RunResult, load

    new_run = new if isinstance(new, RunResult) else load(new)
    labels = labels or (str(base), str(new))
    comparison = compare_runs(base, new_run, metric=list(metrics) or ["p50"], threshold=threshold, labels=labels)
    result = gate(comparison.comparisons, error_findings(new_run))
    if as_json:
        doc = {
            "base": comparison.base_label,
            "new": comparison.new_label,
            "threshold": threshold,
            "comparisons": [c.to_dict() for c in comparison.comparisons],
            "only_base": list(comparison.only_base),
            "only_new": list(comparison.only_new),
            "untimed": list(comparison.untimed),
            "gate": {"ok": result.ok, "regressions": len(result.regressions), "findings": list(result.findings)},
        }
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        _render_comparison(comparison, result)
    return int(result.exit_code)


@cli.command()
@click.argument("base_dir", metavar="BASE_DIR", type=click.Path(path_type=Path, file_okay=False))
@click.argument("new_dir", metavar="NEW_DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--fail-on-regression",
    "threshold_text",
    default="5%",
    show_default=True,
    metavar="PERCENT",
    help="Relative change beyond which a significant difference is a regression (5% or 0.05).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    type=click.Choice(_METRIC_CHOICES),
    help="Metric to compare (repeat for several; default p50). packets_per_s is better higher.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of a table.")
@_report_options
def compare(
    base_dir: Path,
    new_dir: Path,
    threshold_text: str,
    metrics: tuple[str, ...],
    as_json: bool,
    report_html: Path | None,
    report_markdown: str | None,
    report_junit: Path | None,
) -> None:
    """Compare the results directory NEW_DIR with the baseline BASE_DIR, strategy by strategy (those both ran).

    The runs must have replayed the same trace on the same host. A difference is a regression only when it
    exceeds the threshold and the significance test agrees. Exits 1 on a regression or on any error finding in
    NEW_DIR, 0 otherwise. --report, --markdown and --junit write the report of NEW_DIR against BASE_DIR.
    """
    from ndis_replay.reports.compare import parse_threshold
    from ndis_replay.results import load

    threshold = parse_threshold(threshold_text)
    files = _report_files(report_html, report_markdown, report_junit)
    base_run, new_run = load(base_dir), load(new_dir)
    labels = (str(base_dir), str(new_dir))
    code = _compare_and_gate(base_run, new_run, metrics, threshold, as_json, labels)
    if not files.empty:
        _write_reports([(str(new_dir), new_run)], files, (str(base_dir), base_run), threshold)
    if code:
        click.get_current_context().exit(code)


@cli.command("report")
@click.argument(
    "run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False)
)
@click.option(
    "-o",
    "--output",
    "html",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The HTML report (default report.html when no other format is asked for).",
)
@click.option(
    "--markdown", "markdown", metavar="FILE|-", help="A Markdown summary (- for standard output), for CI summaries."
)
@click.option("--junit", "junit", type=click.Path(path_type=Path, dir_okay=False), help="JUnit XML for CI test panels.")
@_baseline_options("A results directory to compare each run with (same trace and host).")
@click.option("--title", help="The report's title (default: the traces' names).")
def report_cmd(
    run_dirs: tuple[Path, ...],
    html: Path | None,
    markdown: str | None,
    junit: Path | None,
    baseline: Path | None,
    threshold_text: str | None,
    title: str | None,
) -> None:
    """Write the report of one or more results directories: an HTML file that opens offline (verdict, summary per
    strategy, NDIS 5 vs NDIS 6 with ratios and intervals, latency by packet and send-call size, distributions,
    latency over the trace, operations per packet, verifier findings, trace, host and the command to reproduce),
    and on request a Markdown summary and JUnit XML.

    Exits 1 when a run has a verifier finding or, with --baseline, a regression (as `run` and `compare` do), so a
    CI step can both publish the report and fail.
    """
    from ndis_replay.results import load

    threshold = _threshold(threshold_text, baseline)
    if html is None and markdown is None and junit is None:
        html = Path("report.html")
    files = _report_files(html, markdown, junit)
    runs = [(str(d), load(d)) for d in run_dirs]
    base_pair = (str(baseline), load(baseline)) if baseline is not None else None
    report = _write_reports(runs, files, base_pair, threshold, title)
    if not report.exit_ok:
        click.get_current_context().exit(int(ExitCode.FINDINGS))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name=PROG)


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["cli", "describe", "main"]
