"""The ``ndis-replay`` command line.

This module is the only place where errors become text and exit codes: commands raise
:class:`~ndis_replay.errors.ReplayError` subclasses carrying facts, :func:`describe` turns each into one line,
and :class:`ReplayGroup` prints it and exits with the error's :class:`~ndis_replay.errors.ExitCode`.
Tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
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
    OutputExists,
    OutputUnwritable,
    ReplayError,
    ToolFailed,
    ToolMissing,
    TraceFileError,
    TraceFormatError,
    UnsupportedLinkType,
)
from ndis_replay.trace import Trace

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
def _(exc: ConfigError) -> str:
    choices = f" (valid: {', '.join(exc.choices)})" if exc.choices else ""
    return f"{exc.what} {exc.value!r}: {exc.reason}{choices}"


@describe.register
def _(exc: OutputExists) -> str:
    return f"{exc.path} exists; pass --force to replace it"


@describe.register
def _(exc: OutputUnwritable) -> str:
    return f"cannot write {exc.path}: {exc.reason}; nothing was written"


@describe.register
def _(exc: ToolMissing) -> str:
    return (
        f"{exc.tool} is not installed, and it is needed for {exc.purpose}; "
        f"install the OS package '{exc.package}' (Debian/Ubuntu: sudo apt-get install {exc.package})"
    )


@describe.register
def _(exc: ToolFailed) -> str:
    return f"{exc.tool} failed: {exc.detail}"


class ReplayGroup(click.Group):
    """A click group that turns ReplayError, Ctrl-C and unexpected exceptions into one line and an exit code."""

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
        ]
    ):
        f = opt(f)
    return f


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
    parse_batching(batching)
    if output.exists() and not force:
        raise OutputExists(output)
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name=PROG)


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["cli", "describe", "main"]
