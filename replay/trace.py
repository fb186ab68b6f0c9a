"""The canonical ``Trace``: the one format between the importers and the engine (DESIGN.md, Data flow).

A trace is a polars DataFrame with a fixed schema plus :class:`TraceMeta` (where it came from, its
interfaces and link types, the warnings of its import, the batching rule its ``batch`` column follows).
It is saved as a single Parquet file whose key-value metadata holds the JSON of :class:`TraceMeta`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ndis_replay.atomic import atomic_output
from ndis_replay.errors import OutputExists, TraceFileError, TraceFormatError

#: Version of the on-disk trace format (the Parquet columns plus the JSON metadata). History:
#: 1 — first version (issue 2).
#: 2 — optional column ``send_call`` (the driver's own send-call id, from ETW driver traces; batching ``auto`` uses
#: it). Version 1 files are read unchanged.
TRACE_FORMAT_VERSION = 2
#: Versions :meth:`TraceMeta.from_json` reads.
SUPPORTED_TRACE_VERSIONS = (1, 2)
_META_KEY = "ndis_replay.trace"

DIRECTIONS: tuple[str, ...] = ("send", "recv", "unknown")
Direction = pl.Enum(list(DIRECTIONS))

#: Required columns and their types, in order.
SCHEMA: dict[str, pl.DataType] = {
    "index": pl.UInt32(),
    "ts_ns": pl.Int64(),
    "interface": pl.UInt16(),
    "linktype": pl.UInt16(),
    "direction": Direction,
    "wire_len": pl.UInt32(),
    "cap_len": pl.UInt32(),
    "header_len": pl.UInt16(),
    "batch": pl.UInt32(),
    "data": pl.Binary(),
}
#: Columns a trace may carry besides the required ones. ``data`` may be left out (``--no-data``).
OPTIONAL_SCHEMA: dict[str, pl.DataType] = {
    "nbl_id": pl.UInt64(),
    "complete_ts_ns": pl.Int64(),
    "send_call": pl.UInt64(),
    "protocol": pl.String(),
}


class InvalidTrace(TraceFormatError):
    """A trace (from an importer or a Parquet file) breaks the canonical schema or its invariants."""


@dataclass(frozen=True)
class InterfaceInfo:
    """One capture interface. ``id`` is the value of the ``interface`` column (numbered across sections)."""

    id: int
    linktype: int
    name: str = ""
    description: str = ""
    snaplen: int = 0
    #: pcapng section the interface belongs to (0 for pcap)
    section: int = 0
    #: timestamp resolution of the source, in ns per tick as a string fraction ("1000" for µs, "1/1024"...)
    ts_resolution: str = ""


@dataclass(frozen=True)
class TraceWarning:
    """Something the importer noticed and worked around. ``code`` is stable; the rest is detail."""

    code: str
    detail: str
    offset: int | None = None
    record: int | None = None
    count: int = 1


@dataclass(frozen=True)
class TraceMeta:
    """Everything about a trace that is not a per-packet column."""

    source: str
    sha256: str
    size: int
    format: str
    compression: str | None = None
    reader: str = "fast"
    interfaces: tuple[InterfaceInfo, ...] = ()
    warnings: tuple[TraceWarning, ...] = ()
    batching: str = "none"
    has_data: bool = True
    #: free-form facts of the source (pcap version, snaplen, pcapng section count, tshark version, …)
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def linktypes(self) -> tuple[int, ...]:
        """The distinct link types of the interfaces, in interface order."""
        return tuple(dict.fromkeys(i.linktype for i in self.interfaces))

    def to_json(self) -> str:
        payload = dataclasses.asdict(self)
        payload["format_version"] = TRACE_FORMAT_VERSION
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TraceMeta:
        raw = json.loads(text)
        version = raw.pop("format_version", None)
        if version not in SUPPORTED_TRACE_VERSIONS:
            readable = ", ".join(str(v) for v in SUPPORTED_TRACE_VERSIONS)
            raise ValueError(f"trace format version {version!r}, this tool reads versions {readable}")
        raw["interfaces"] = tuple(InterfaceInfo(**i) for i in raw.get("interfaces", ()))
        raw["warnings"] = tuple(TraceWarning(**w) for w in raw.get("warnings", ()))
        return cls(**raw)


class Trace:
    """A packet trace in canonical form: ``frame`` (polars) plus ``meta``."""

    __slots__ = ("frame", "meta")

    def __init__(self, frame: pl.DataFrame, meta: TraceMeta) -> None:
        self.frame = frame
        self.meta = meta

    def __len__(self) -> int:
        return self.frame.height

    def __repr__(self) -> str:
        return f"Trace({self.meta.source!r}, {len(self)} packets, {self.meta.format}, batching={self.meta.batching})"

    @property
    def warnings(self) -> tuple[TraceWarning, ...]:
        return self.meta.warnings

    def replace(self, frame: pl.DataFrame | None = None, **meta_changes: Any) -> Trace:
        """A copy with another frame and/or changed metadata fields."""
        return Trace(self.frame if frame is None else frame, dataclasses.replace(self.meta, **meta_changes))

    def with_batching(self, rule: str) -> Trace:
        """This trace with its ``batch`` column recomputed under a batching rule (see :mod:`batching`)."""
        from ndis_replay.batching import assign_batches, parse_batching

        parsed = parse_batching(rule)
        return self.replace(self.frame.with_columns(assign_batches(self.frame, parsed)), batching=str(parsed))

    def validate(self) -> Trace:
        """Check the schema and the invariants every importer's output must satisfy; returns ``self``."""
        validate_frame(self.frame, self.meta)
        return self

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the trace as Parquet, atomically: a temporary file in the same folder, then a rename."""
        target = Path(path)
        if target.exists() and not overwrite:
            raise OutputExists(target)
        write_atomically(
            target,
            lambda tmp: self.frame.write_parquet(tmp, metadata={_META_KEY: self.meta.to_json()}, statistics=True),
            replace=overwrite,
        )

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """Read a trace written by :meth:`save`, and validate it."""
        p = Path(path)
        if not p.is_file():
            raise TraceFileError(p, "no such file" if not p.exists() else "not a regular file")
        try:
            kv = pl.read_parquet_metadata(p)
            frame = pl.read_parquet(p)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InvalidTrace(p, f"not a readable Parquet file ({type(exc).__name__})") from exc
        if _META_KEY not in kv:
            raise InvalidTrace(p, "a Parquet file, but not a trace written by ndis-replay (no trace metadata)")
        try:
            meta = TraceMeta.from_json(kv[_META_KEY])
        except (ValueError, TypeError) as exc:
            raise InvalidTrace(p, f"unreadable trace metadata: {exc}") from exc
        if "direction" in frame.columns and frame.schema["direction"] != Direction:
            frame = frame.with_columns(pl.col("direction").cast(pl.String).cast(Direction))
        return cls(frame, meta).validate()


def write_atomically(target: Path, write: Any, *, replace: bool = True) -> None:
    """Call ``write(tmp_path)`` then flush and rename the temporary file onto ``target``
    (:func:`ndis_replay.atomic.atomic_output`); nothing is left on failure. ``replace=False`` refuses a ``target``
    that exists at the rename (OutputExists)."""
    with atomic_output(target, replace=replace) as tmp:
        write(tmp)


def empty_frame(with_data: bool = True) -> pl.DataFrame:
    """A zero-row frame with the canonical schema."""
    schema = {k: v for k, v in SCHEMA.items() if with_data or k != "data"}
    return pl.DataFrame(schema=schema)


def validate_frame(frame: pl.DataFrame, meta: TraceMeta) -> None:
    """Raise :class:`InvalidTrace` unless ``frame`` follows the canonical schema and invariants."""

    def bad(reason: str) -> InvalidTrace:
        return InvalidTrace(meta.source, f"invalid trace: {reason}")

    required = [c for c in SCHEMA if c != "data" or meta.has_data]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise bad(f"missing columns {missing}")
    if not meta.has_data and "data" in frame.columns:
        raise bad("has a data column but its metadata says has_data=False")
    allowed = {**SCHEMA, **OPTIONAL_SCHEMA}
    for name, dtype in frame.schema.items():
        if name not in allowed:
            raise bad(f"unknown column {name!r}")
        if dtype != allowed[name]:
            raise bad(f"column {name!r} is {dtype}, expected {allowed[name]}")
    if frame.height == 0:
        return
    idx = frame["index"]
    if idx.null_count() or (frame.height > 1 and not (idx.diff().drop_nulls() > 0).all()):
        raise bad("index must be strictly increasing and never null")
    for col in ("interface", "linktype", "direction", "wire_len", "cap_len", "header_len"):
        if frame[col].null_count():
            raise bad(f"column {col!r} has nulls")
    if (frame["header_len"].cast(pl.UInt32) > frame["cap_len"]).any():
        raise bad("header_len exceeds cap_len")
    if meta.has_data:
        lens = frame["data"].bin.size().cast(pl.UInt32)
        if not (lens == frame["cap_len"]).all():
            raise bad("cap_len differs from the length of data")
    is_recv = frame["direction"] == "recv"
    if not (frame["batch"].is_null() == is_recv).all():
        raise bad("batch must be set exactly for the packets that are replayed (direction send or unknown)")
    known = {i.id: i.linktype for i in meta.interfaces}
    pairs = frame.select("interface", "linktype").unique()
    for iface, lt in pairs.iter_rows():
        if known.get(iface) != lt:
            raise bad(f"interface {iface} with link type {lt} is not in the interface table")


def interface_table(interfaces: Sequence[InterfaceInfo]) -> dict[int, InterfaceInfo]:
    """Interfaces keyed by id."""
    return {i.id: i for i in interfaces}
