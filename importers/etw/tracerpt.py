"""``tracerpt x.etl -of CSV`` exports (dumpfile.csv): a streaming row reader (ETW_FORMAT.md §6).

The first line names the columns::

    Event Name, Type, Event ID, Version, Channel, Level, Opcode, Task, Keyword, PID, TID, Processor Number,
    Instance ID, Parent Instance ID, Activity ID, Related Activity ID, Clock-Time, Kernel(ms), User(ms), User Data

Values are padded with spaces; strings are quoted and start with a space (``, "text"``). The "User Data"
column is ragged: an event's payload fields follow it, one column each, as many as the event has, so they
are kept per row as a tuple and read by position. PID and TID are hex (``0x…``, Windows 11) or decimal.
Clock-Time is the raw FILETIME (100 ns ticks since 1601). The first data row is ``EventTrace, Header`` (the
logfile header's values), skipped. Text is UTF-8 with or without a BOM, or UTF-16LE with a BOM.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ndis_replay.errors import LimitExceeded, TraceFormatError
from ndis_replay.importers import limits
from ndis_replay.importers.source import CHUNK_SIZE, OpenedSource

#: The columns tracerpt writes, in order.
TRACERPT_COLUMNS: tuple[str, ...] = (
    "Event Name",
    "Type",
    "Event ID",
    "Version",
    "Channel",
    "Level",
    "Opcode",
    "Task",
    "Keyword",
    "PID",
    "TID",
    "Processor Number",
    "Instance ID",
    "Parent Instance ID",
    "Activity ID",
    "Related Activity ID",
    "Clock-Time",
    "Kernel(ms)",
    "User(ms)",
    "User Data",
)
#: Columns without which rows cannot be read.
REQUIRED_COLUMNS: tuple[str, ...] = ("Event Name", "Type", "Clock-Time", "User Data")
#: FILETIME of the Unix epoch, in 100 ns ticks.
FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
#: The range of ``ts_ns`` (int64 ns since the Unix epoch).
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
#: Lines looked at for the header line (tools may put a preamble before it).
_HEADER_SEARCH_LINES = 20


@dataclass(frozen=True)
class TracerptRow:
    """One event row. ``line`` is 1-based; ints are None when the column is absent or empty."""

    line: int
    event_name: str
    type: str
    event_id: int | None
    task: str
    pid: int | None
    tid: int | None
    cpu: int | None
    clock_time: int  # raw FILETIME
    ts_ns: int  # Clock-Time as ns since the Unix epoch
    user_data: tuple[str, ...]


def _decode_head(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF16_LE):
        return head[2:].decode("utf-16-le", errors="ignore")
    return head.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="ignore")


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def looks_like_tracerpt_csv(head: bytes) -> bool:
    """True when ``head`` (the first KiB or so of a file) starts like a tracerpt CSV export."""
    text = _decode_head(head[:8192])
    # as iter_tracerpt_rows finds the header: it then names what the header lacks
    return any(_is_header({_norm(c) for c in line.split(",")}) for line in text.splitlines()[:_HEADER_SEARCH_LINES])


#: Column names of tracerpt's header line (ETW_FORMAT.md §6).
_KNOWN_COLUMNS = frozenset(
    {
        "event name", "type", "event id", "version", "channel", "level", "opcode", "task", "keyword", "pid", "tid",
        "processor number", "instance id", "parent instance id", "activity id", "related activity id",
        "clock-time", "kernel(ms)", "user(ms)", "user data",
    }
)  # fmt: skip


def _is_header(cols: set[str]) -> bool:
    """A tracerpt header line: "Event Name" and at least four more of its columns (so one that lacks a required
    column is still recognised, and refused naming it)."""
    return "event name" in cols and len(cols & _KNOWN_COLUMNS) >= 5


def parse_int(text: str) -> int:
    """A tracerpt number: ``0x…`` hex or decimal, padding and quotes ignored; ValueError otherwise."""
    t = text.strip().strip('"').strip()
    if t[:2].lower() == "0x":
        return int(t[2:], 16)
    return int(t, 10)


def _opt_int(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_int(text)
    except ValueError:
        return None


def _text_lines(source: OpenedSource, limit: int) -> Iterator[str]:
    """Decoded lines (with their line ends) of the stream, in order, read ``CHUNK_SIZE`` at a time.

    A line longer than ``limit`` characters is refused (:class:`LimitExceeded`) as soon as that much of it is in:
    a file without line ends is not gathered whole.
    """
    first = source.read(CHUNK_SIZE)
    if first.startswith(codecs.BOM_UTF16_LE):
        encoding, first = "utf-16-le", first[2:]
    else:
        encoding, first = "utf-8", first.removeprefix(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    rest = ""
    chunk = first
    number = 0  # lines yielded so far
    while True:
        final = not chunk
        text = rest + decoder.decode(chunk, final=final)
        lines = text.splitlines(keepends=True)
        # a line is complete once its "\n" is seen (a "\r" at the chunk's end may be half of "\r\n")
        rest = lines.pop() if lines and not final and not lines[-1].endswith("\n") else ""
        longest = max(len(rest), max(map(len, lines), default=0))
        if longest > limit:
            line = number + next((i for i, x in enumerate(lines) if len(x) > limit), len(lines)) + 1
            raise LimitExceeded(source.path, f"tracerpt CSV line {line}", longest, limit, "line", record=line - 1)
        number += len(lines)
        yield from lines
        if final:
            return
        chunk = source.read(CHUNK_SIZE)


def iter_tracerpt_rows(
    source: OpenedSource, on_bad_row: Callable[[int, str], None] | None = None
) -> Iterator[TracerptRow]:
    """The event rows of a tracerpt CSV, in file order (the ``EventTrace, Header`` row left out).

    A missing header line or missing required columns raise :class:`TraceFormatError`. A row that cannot be
    read (no Clock-Time number) goes to ``on_bad_row(line, reason)``, or raises when it is None.
    """
    path = source.path

    def bad_row(line: int, reason: str) -> None:
        if on_bad_row is None:
            raise TraceFormatError(path, reason, record=line - 1)
        on_bad_row(line, reason)

    limit = limits.current().line
    # csv's own bound on one field (a quoted field may span lines; 128 Ki characters by default) is process-wide:
    # set to the line limit while this file is read, and put back after
    previous = csv.field_size_limit(limit)
    try:
        yield from _rows(source, csv.reader(_text_lines(source, limit), skipinitialspace=True), bad_row, limit)
    finally:
        csv.field_size_limit(previous)


def _rows(source: OpenedSource, reader: Any, bad_row: Callable[[int, str], None], limit: int) -> Iterator[TracerptRow]:
    path = source.path
    try:
        yield from _parse(path, reader, bad_row)
    except csv.Error as exc:
        line = reader.line_num
        if "field limit" in str(exc):  # a field quoted across lines, over the limit (its length: at least limit + 1)
            field = f"tracerpt CSV field (quoted across lines) ending on line {line}"
            raise LimitExceeded(path, field, limit + 1, limit, "line", record=line - 1) from exc
        raise TraceFormatError(path, f"line {line} is not CSV ({exc})", record=line - 1) from exc


def _parse(path: Path, reader: Any, bad_row: Callable[[int, str], None]) -> Iterator[TracerptRow]:
    header: list[str] | None = None
    for row in reader:
        cols = [_norm(c) for c in row]
        if _is_header(set(cols)):
            header = [c.strip() for c in row]
            break
        if reader.line_num >= _HEADER_SEARCH_LINES:
            break
    if header is None:
        raise TraceFormatError(
            path,
            "not a tracerpt CSV export: no header line naming 'Event Name' and 'Clock-Time' columns",
            hint="make it with: tracerpt trace.etl -of CSV -o trace.csv",
        )
    index = {_norm(name): i for i, name in enumerate(header) if name}
    missing = [c for c in REQUIRED_COLUMNS if _norm(c) not in index]
    if missing:
        raise TraceFormatError(
            path,
            f"tracerpt CSV header lacks the column(s) {', '.join(missing)}",
            record=reader.line_num - 1,
            hint=f"the header names: {', '.join(h for h in header if h)}",
        )
    i_name, i_type = index["event name"], index["type"]
    i_clock, i_user = index["clock-time"], index["user data"]
    i_id, i_task = index.get("event id"), index.get("task")
    i_pid, i_tid, i_cpu = index.get("pid"), index.get("tid"), index.get("processor number")
    width = i_user  # columns before the ragged payload

    def col(row: list[str], i: int | None) -> str | None:
        return row[i].strip() if i is not None and i < len(row) else None

    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < width:
            bad_row(line, f"line {line} has {len(row)} columns, fewer than the {width} before User Data")
            continue
        name, kind = row[i_name].strip(), row[i_type].strip()
        if name == "EventTrace" and kind == "Header":
            continue
        clock_text = row[i_clock].strip()
        try:
            clock = parse_int(clock_text)
        except ValueError:
            bad_row(line, f"line {line}: Clock-Time {clock_text!r} is not a number")
            continue
        ts_ns = (clock - FILETIME_UNIX_EPOCH) * 100
        if not _NS_MIN <= ts_ns <= _NS_MAX:  # found by fuzzing: the trace's ts_ns column is int64
            bad_row(line, f"line {line}: Clock-Time {clock} is outside the years 1677-2262 a timestamp can hold")
            continue
        yield TracerptRow(
            line=line,
            event_name=name,
            type=kind,
            event_id=_opt_int(col(row, i_id)),
            task=col(row, i_task) or "",
            pid=_opt_int(col(row, i_pid)),
            tid=_opt_int(col(row, i_tid)),
            cpu=_opt_int(col(row, i_cpu)),
            clock_time=clock,
            ts_ns=ts_ns,
            user_data=tuple(v.strip() for v in row[i_user:]),
        )


def format_tracerpt_row(
    event_name: str,
    type_: str,
    clock_time: int,
    user_data: tuple[object, ...] = (),
    *,
    event_id: int = 0,
    pid: int = 0,
    tid: int = 0,
    cpu: int = 0,
    hex_ids: bool = True,
) -> str:
    """One row as tracerpt writes it (padded values, quoted strings with a leading space), for tests and
    sample traces. ``user_data`` strings are quoted, other values written as they print."""
    ids = (f"0x{pid:08X}", f"0x{tid:08X}") if hex_ids else (str(pid), str(tid))
    cells = [
        event_name,
        type_,
        f"{event_id:>5}",
        "0",
        "11",
        "4",
        "0",
        "0",
        "0x0000000000000000",
        *ids,
        f"{cpu:>3}",
        "",
        "",
        "{00000000-0000-0000-0000-000000000000}",
        "",
        str(clock_time),
        "0",
        "0",
    ]
    for v in user_data:
        cells.append(f'"{v}"' if isinstance(v, str) else str(v))
    return ", ".join(cells)


def tracerpt_header_line() -> str:
    """The column-names line tracerpt writes first."""
    return ", ".join(TRACERPT_COLUMNS)
