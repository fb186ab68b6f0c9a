"""Assembling a :class:`~ndis_replay.trace.Trace` from the chunks a reader produces.

Every reader (pcap, pcapng, tshark, later ETW) hands over :class:`PacketChunk`\\ s — numpy columns plus the
buffer the chunk's packets lie in, with each packet's start and length — and records interfaces and warnings here.
The builder derives what all formats share (header length, link-layer direction, link type per packet,
batching) and produces the canonical frame. It keeps no per-packet Python objects: a chunk becomes polars
columns (through a zero-copy Arrow view of its buffer) as soon as it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ndis_replay.batching import assign_batches, parse_batching
from ndis_replay.errors import TraceFormatError
from ndis_replay.importers.headers import header_lengths, link_directions, link_header_known, linktype_name
from ndis_replay.trace import DIRECTIONS, SCHEMA, Direction, InterfaceInfo, Trace, TraceMeta, TraceWarning

SEND, RECV, UNKNOWN = 0, 1, 2  # direction codes, in the order of trace.DIRECTIONS

U8 = np.dtype(np.uint8)


@dataclass
class PacketChunk:
    """Consecutive packets of one reader, as columns over one buffer.

    Packet ``i`` is ``buf[starts[i] : starts[i] + lengths[i]]``: readers point into the chunk of the file they
    read (record headers and block framing stay in between), so no packet byte is copied on import. ``buf``
    must be immutable and not reused: the trace's ``data`` column keeps referring to it.
    """

    record: np.ndarray  # int64, index of the record in the source
    ts_ns: np.ndarray  # int64
    interface: np.ndarray  # uint16
    direction: np.ndarray  # int8 codes SEND/RECV/UNKNOWN
    wire_len: np.ndarray  # uint32
    buf: bytes
    starts: np.ndarray  # int64, byte offset of each packet in buf
    lengths: np.ndarray  # int64, captured length of each packet
    ts_missing: np.ndarray | None = None  # bool; True where the source has no timestamp

    def __len__(self) -> int:
        return len(self.record)

    @classmethod
    def from_packets(
        cls,
        record: Sequence[int],
        ts_ns: Sequence[int],
        interface: Sequence[int],
        direction: Sequence[int],
        wire_len: Sequence[int],
        data: Sequence[bytes],
        ts_missing: Sequence[bool] | None = None,
    ) -> PacketChunk:
        """Build a chunk from per-packet Python values (slow readers such as tshark)."""
        lengths = np.fromiter((len(d) for d in data), dtype=np.int64, count=len(data))
        starts = np.zeros(len(data), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return cls(
            record=np.asarray(record, dtype=np.int64),
            ts_ns=np.asarray(ts_ns, dtype=np.int64),
            interface=np.asarray(interface, dtype=np.uint16),
            direction=np.asarray(direction, dtype=np.int8),
            wire_len=np.asarray(wire_len, dtype=np.uint32),
            buf=b"".join(data),
            starts=starts,
            lengths=lengths,
            ts_missing=None if ts_missing is None else np.asarray(ts_missing, dtype=bool),
        )


def u32_at(buf: bytes, endian: str) -> np.ndarray:
    """A uint32 view of ``buf`` at *every* byte offset: ``u32_at(buf, "<")[i]`` is the value at ``buf[i:i+4]``.

    No copy (strides of one byte), so gathering one field of many records is a single fancy index.
    """
    return np.ndarray((max(len(buf) - 3, 0),), dtype=np.dtype(endian + "u4"), buffer=buf, strides=(1,))


#: Arrow's BinaryView layout: 16 bytes per value; a value of up to 12 bytes is stored inline.
_VIEW_INLINE = 12


def binary_views(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """The packets ``buf[starts[i] : starts[i] + lengths[i]]`` as a polars Binary series, without copying them.

    Builds Arrow BinaryView entries (length, 4-byte prefix, buffer 0, offset; or the bytes inline when 12 or
    fewer) with numpy, over ``buf`` as the one data buffer; polars stores Binary as views, so the column refers
    to ``buf`` itself. Offsets are int32 in the format: ``buf`` must be under 2 GiB (chunks are 8 MiB).
    """
    n = len(starts)
    if len(buf) >= 1 << 31:
        raise ValueError("binary_views: a buffer of 2 GiB or more cannot be viewed")
    views = np.zeros((n, 4), dtype="<u4")
    views[:, 0] = lengths
    views[:, 3] = starts
    if n and len(buf) >= 4:
        # the prefix of a long value; garbage (masked below) for short ones near the end of buf
        u32 = u32_at(buf, "<")
        views[:, 1] = u32[np.minimum(starts, len(u32) - 1)]  # (take(mode="clip") is 10x slower on this view)
    short = np.flatnonzero(lengths <= _VIEW_INLINE)
    if len(short):
        pos = np.arange(_VIEW_INLINE)
        inline = np.frombuffer(buf, dtype=U8).take(starts[short, None] + pos, mode="clip") if buf else 0
        inline = np.where(pos < lengths[short, None], inline, 0).astype(U8)
        as_bytes = views.view(U8).reshape(n, 16)
        as_bytes[short, 4:] = inline
    arrow = pa.Array.from_buffers(pa.binary_view(), n, [None, pa.py_buffer(views), pa.py_buffer(buf)])
    series = pl.Series("data", arrow)
    return series


class TraceBuilder:
    """Collects chunks, interfaces and warnings from one reader and builds the Trace."""

    def __init__(self, path: str | Path, *, strict: bool = False, keep_data: bool = True) -> None:
        self.path = Path(path)
        self.strict = strict
        self.keep_data = keep_data
        self.interfaces: dict[int, InterfaceInfo] = {}
        self._warnings: dict[tuple[str, str], TraceWarning] = {}
        self._parts: list[pl.DataFrame] = []
        self._unwalked: dict[int, int] = {}
        self.packets = 0

    # --- interfaces and warnings ------------------------------------------------------------------------

    def add_interface(self, info: InterfaceInfo) -> None:
        self.interfaces[info.id] = info

    def warn(self, code: str, detail: str, *, offset: int | None = None, record: int | None = None) -> None:
        """Record a warning; repeats of the same code and detail are counted, the first place kept."""
        key = (code, detail)
        prev = self._warnings.get(key)
        if prev is None:
            self._warnings[key] = TraceWarning(code, detail, offset, record)
        else:
            self._warnings[key] = TraceWarning(code, detail, prev.offset, prev.record, prev.count + 1)

    def salvage(self, detail: str, *, offset: int | None, record: int | None, code: str = "damaged") -> None:
        """Damage that costs records: a warning, or :class:`TraceFormatError` under ``strict``."""
        if self.strict:
            raise TraceFormatError(self.path, detail, offset=offset, record=record)
        self.warn(code, detail, offset=offset, record=record)

    @property
    def warnings(self) -> tuple[TraceWarning, ...]:
        return tuple(self._warnings.values())

    # --- packets -----------------------------------------------------------------------------------------

    def add(self, chunk: PacketChunk) -> None:
        """Turn a chunk into canonical columns (all but ``batch``) right away."""
        n = len(chunk)
        if n == 0:
            return
        lt_of = np.zeros(max(self.interfaces, default=0) + 1, dtype=np.uint16)
        for iface in self.interfaces.values():
            lt_of[iface.id] = iface.linktype
        linktype = lt_of[chunk.interface]
        u8 = np.frombuffer(chunk.buf, dtype=U8)
        hdr = header_lengths(linktype, u8, chunk.starts, chunk.lengths)
        direction = chunk.direction.astype(np.uint8, copy=True)
        unknown = direction == UNKNOWN
        if unknown.any():
            derived = link_directions(linktype, u8, chunk.starts, chunk.lengths)
            direction[unknown] = derived[unknown]
        for lt in np.unique(linktype).tolist():
            if not link_header_known(lt):
                self._unwalked[lt] = self._unwalked.get(lt, 0) + int((linktype == lt).sum())
        ts = pl.Series("ts_ns", chunk.ts_ns, dtype=pl.Int64)
        if chunk.ts_missing is not None and chunk.ts_missing.any():
            ts = pl.select(pl.when(pl.Series(chunk.ts_missing)).then(None).otherwise(ts).alias("ts_ns")).to_series()
        cols: dict[str, Any] = {
            "index": pl.Series("index", chunk.record, dtype=pl.UInt32),
            "ts_ns": ts,
            "interface": pl.Series("interface", chunk.interface, dtype=pl.UInt16),
            "linktype": pl.Series("linktype", linktype, dtype=pl.UInt16),
            "direction": pl.Series("direction", direction, dtype=pl.UInt8),  # codes; the Enum is made in build()
            "wire_len": pl.Series("wire_len", chunk.wire_len, dtype=pl.UInt32),
            "cap_len": pl.Series("cap_len", chunk.lengths, dtype=pl.UInt32),
            "header_len": pl.Series("header_len", hdr, dtype=pl.UInt16),
        }
        if self.keep_data:
            cols["data"] = binary_views(chunk.buf, chunk.starts, chunk.lengths)
        self._parts.append(pl.DataFrame(cols))
        self.packets += n

    # --- result ------------------------------------------------------------------------------------------

    def build(
        self,
        *,
        sha256: str,
        size: int,
        fmt: str,
        compression: str | None,
        reader: str = "fast",
        batching: str = "none",
        details: dict[str, Any] | None = None,
        extra_columns: dict[str, pl.Series] | None = None,
        time_order: bool = False,
    ) -> Trace:
        """The finished, validated Trace.

        ``time_order`` is for sources whose records are not in time order (ETL files: buffers are per CPU):
        packets are sorted by ``(ts_ns, index)`` and ``index`` is renumbered to the position in that order.
        ``extra_columns`` (e.g. ``nbl_id``) are aligned with the packets as added, before any sorting.
        """
        for lt, count in sorted(self._unwalked.items()):
            self.warn(
                "link-header-only",
                f"link type {linktype_name(lt)} is not walked beyond its link header; "
                f"header_len covers the link header only ({count} packets)",
            )
        schema: dict[str, Any] = {k: v for k, v in SCHEMA.items() if k != "batch" and (self.keep_data or k != "data")}
        schema["direction"] = pl.UInt8()
        if self._parts:
            frame = pl.concat(self._parts, how="vertical", rechunk=True)
        else:
            frame = pl.DataFrame(schema=schema)
        self._parts.clear()
        frame = frame.with_columns(
            pl.col("direction").replace_strict(list(range(len(DIRECTIONS))), DIRECTIONS, return_dtype=Direction)
        )
        if extra_columns:
            frame = frame.with_columns(**extra_columns)
        if time_order and frame.height:
            frame = frame.sort(["ts_ns", "index"], nulls_last=True, maintain_order=True).with_columns(
                pl.int_range(frame.height, dtype=pl.UInt32).alias("index")
            )
        rule = parse_batching(batching)
        frame = frame.with_columns(assign_batches(frame, rule))
        order = [c for c in SCHEMA if c in frame.columns] + [c for c in frame.columns if c not in SCHEMA]
        frame = frame.select(order)
        meta = TraceMeta(
            source=str(self.path),
            sha256=sha256,
            size=size,
            format=fmt,
            compression=compression,
            reader=reader,
            interfaces=tuple(self.interfaces[k] for k in sorted(self.interfaces)),
            warnings=self.warnings,
            batching=str(rule),
            has_data=self.keep_data,
            details=details or {},
        )
        return Trace(frame, meta).validate()
