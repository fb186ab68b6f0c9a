"""The binary ETL container: buffers, records, the logfile header, as a stream of :class:`EventBatch` es.

Layout (ETW_FORMAT.md §2): a file is a sequence of buffers, each a 0x48-byte ``WMI_BUFFER_HEADER`` and
records; compressed buffers (flag 0x40) hold MS-XCA plain LZ77 ("LZXPRESS") that decompresses to
``Offset - 0x48`` bytes of records. Records are 8-byte aligned, end at ``Offset`` or at a 0xFFFFFFFF marker, and
carry their header type in the marker (byte 3 = 0xC0 flags, byte 2 = type; byte 3 = 0x90 for WPP messages).
The first record of the file is the SYSTEM64 record holding the TRACE_LOGFILE_HEADER (clock, start time).

The reader reads the stream sequentially, about ``batch_bytes`` at a time. The only per-record Python is the
walk along the record sizes inside each buffer; every header field of the EVENT_HEADER records is then gathered
with numpy at the collected offsets. A chunk whose buffers are all uncompressed becomes the batch's ``buf`` as
read (no copy); compressed buffers are decompressed into a new ``buf``.
"""

from __future__ import annotations

import struct
import types
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dissect.util.compression import lzxpress

from ndis_replay.errors import LimitExceeded, TraceFormatError
from ndis_replay.importers import limits
from ndis_replay.importers.builder import TraceBuilder
from ndis_replay.importers.etw.events import FLAG_EXTENDED_INFO, EventBatch
from ndis_replay.importers.source import OpenedSource, _CompressedStreamEnded

BUFFER_HEADER = 0x48
#: Largest first BufferSize :func:`looks_like_etl` takes for ETL, in bytes: any u32, far beyond the ``buffer``
#: limit (importers/limits.py: ETW buffers are at most 16 MiB, the limit 64 MiB), so that a file whose buffers are
#: over the limit is still recognised, and refused naming the limit. pcap and pcapng are told by their magic
#: numbers before; the header's other checks (Offset, a SYSTEM record, a pointer size) keep other files out.
SNIFF_MAX_BUFFER_SIZE = 0xFFFF_FFFF

#: BufferFlag bits (ETW_FORMAT.md §2.1).
BUFFER_FLAG_EVENTS_LOST = 0x02
BUFFER_FLAG_BUFFER_LOST = 0x04
BUFFER_FLAG_COMPRESSED = 0x40
#: LogFileMode bit EVENT_TRACE_COMPRESSED_MODE.
LOG_FILE_MODE_COMPRESSED = 0x04000000

SYSTEM_HEADER = 0x20  # SYSTEM_TRACE_HEADER: marker, Size, HookId, ThreadId, ProcessId, SystemTime, Kernel/User
EVENT_HEADER_SIZE = 0x50
#: FILETIME (100 ns ticks since 1601) of the Unix epoch.
FILETIME_UNIX_EPOCH = 116_444_736_000_000_000

CLOCK_QPC, CLOCK_SYSTEM_TIME, CLOCK_CPU_CYCLES = 1, 2, 3

#: Header types (byte 2 of a 0xC0 marker) and the names the statistics use.
HEADER_TYPE_NAMES = {
    0x01: "SYSTEM",
    0x02: "SYSTEM",
    0x03: "COMPACT",
    0x04: "COMPACT",
    0x0A: "FULL_HEADER",
    0x0B: "INSTANCE",
    0x0F: "MESSAGE",
    0x10: "PERFINFO",
    0x11: "PERFINFO",
    0x12: "EVENT_HEADER",
    0x13: "EVENT_HEADER",
    0x14: "FULL_HEADER",
    0x15: "INSTANCE",
}
#: Types whose record size is the u16 at +4 (their +0 is a version); every other kind has it at +0.
_SIZE_AT_4 = frozenset({0x01, 0x02, 0x03, 0x04, 0x10, 0x11})
_EVENT_HEADER_MARKERS = (0xC012, 0xC013)  # the marker's upper u16: flags byte 0xC0, type 0x12/0x13

# The record walk dispatches on the marker's upper u16: 0 = size at +0, 1 = size at +4, 2 = end of records.
_SIZE_KIND: dict[int, int] = {0xC000 | t: (1 if t in _SIZE_AT_4 else 0) for t in range(256)}
_SIZE_KIND.update({0x9000 | b: 0 for b in range(256)})  # WPP/TraceMessage: MESSAGE_TRACE_HEADER, Size at +0
_SIZE_KIND[0xFFFF] = 2

_BUFFER = struct.Struct("<IIIiqqQBBHIIHH")
_HH = struct.Struct("<HH")
_H = struct.Struct("<H")

#: Bytes :func:`looks_like_etl` needs: the buffer header, the SYSTEM header and the logfile header up to PointerSize.
ETL_SNIFF_BYTES = BUFFER_HEADER + SYSTEM_HEADER + 48


def _view(buf: bytes, dtype: str) -> np.ndarray:
    """``dtype`` values of ``buf`` at every byte offset (no copy; strides of one byte), like ``u32_at``."""
    width = np.dtype(dtype).itemsize
    return np.ndarray((max(len(buf) - width + 1, 0),), dtype=np.dtype(dtype), buffer=buf, strides=(1,))


def _filetime_ns(ft: int) -> int | None:
    """A FILETIME as Unix ns; ``None`` for 0 (the field is unset)."""
    return None if ft == 0 else (ft - FILETIME_UNIX_EPOCH) * 100


def looks_like_etl(head: bytes) -> bool:
    """Whether ``head`` (the first :data:`ETL_SNIFF_BYTES` or more bytes) starts an ETL file.

    Checks that the first WMI_BUFFER_HEADER is plausible (BufferSize and Offset within bounds, not compressed)
    and that the first record is a SYSTEM record (flags 0xC0) whose body gives a pointer size of 4 or 8.
    pcap, pcapng and text all fail the BufferSize bound already.
    """
    if len(head) < ETL_SNIFF_BYTES:
        return False
    size, _saved, _cur, _ref, _ts, _seq, _clk, _cpu, _align, _lid, _state, offset, flags, _btype = _BUFFER.unpack_from(
        head, 0
    )
    if not BUFFER_HEADER + SYSTEM_HEADER <= offset <= size <= SNIFF_MAX_BUFFER_SIZE or flags & BUFFER_FLAG_COMPRESSED:
        return False
    marker, rec_size = struct.unpack_from("<IH", head, BUFFER_HEADER)
    if marker >> 24 != 0xC0 or (marker >> 16) & 0xFF not in (0x01, 0x02):
        return False
    if not SYSTEM_HEADER + 48 <= rec_size <= offset - BUFFER_HEADER:
        return False
    pointer_size = struct.unpack_from("<I", head, BUFFER_HEADER + SYSTEM_HEADER + 44)[0]
    return pointer_size in (4, 8)


@dataclass(frozen=True)
class LogfileHeader:
    """The TRACE_LOGFILE_HEADER of an ETL file (ETW_FORMAT.md §2.4), with the clock conversion of §2.5.

    Times named ``*_ns`` are Unix ns (``None`` when the field is 0); ``start_time_filetime`` is the raw FILETIME.
    ``header_raw_ts`` is the raw timestamp of the logfile-header record, the base of the conversion.
    """

    buffer_size: int
    version: int
    os_build: int  # ProviderVersion
    number_of_processors: int
    end_time_ns: int | None
    log_file_mode: int
    buffers_written: int
    pointer_size: int
    events_lost: int
    cpu_speed_mhz: int
    boot_time_ns: int | None
    perf_freq: int
    start_time_filetime: int
    clock_type: int  # ReservedFlags: 1 QPC, 2 system time, 3 CPU cycles
    buffers_lost: int
    logger_name: str
    log_file_name: str
    header_raw_ts: int
    timer_resolution: int = 0
    maximum_file_size: int = 0

    @property
    def compressed(self) -> bool:
        """Whether the logger compressed its buffers (LogFileMode EVENT_TRACE_COMPRESSED_MODE)."""
        return bool(self.log_file_mode & LOG_FILE_MODE_COMPRESSED)

    @property
    def start_time_ns(self) -> int:
        """StartTime as Unix ns: the time of the logfile-header record."""
        return (self.start_time_filetime - FILETIME_UNIX_EPOCH) * 100

    @property
    def ticks_per_second(self) -> int:
        """Raw timestamp units per second, from the clock type (QPC: PerfFreq; system time: 10 MHz; cycles)."""
        if self.clock_type == CLOCK_SYSTEM_TIME:
            return 10_000_000
        if self.clock_type == CLOCK_CPU_CYCLES:
            return self.cpu_speed_mhz * 1_000_000
        return self.perf_freq

    def to_ns(self, raw: np.ndarray | int) -> Any:
        """Raw timestamps (int or int64 array) → Unix ns: ``StartTime + (raw - header_raw_ts) / ticks_per_second``.

        Integer arithmetic, exact to the ns when a tick is a whole number of ns (floored otherwise); float only
        for clocks faster than 9 GHz, where the exact product would overflow int64.
        """
        freq = self.ticks_per_second
        start = self.start_time_ns
        if isinstance(raw, (int, np.integer)):
            return start + (int(raw) - self.header_raw_ts) * 1_000_000_000 // freq
        delta = np.asarray(raw, dtype=np.int64) - np.int64(self.header_raw_ts)
        if freq == 10_000_000:  # the common case (QPC at 10 MHz, FILETIME): one tick is 100 ns
            return delta * 100 + start
        if freq <= 9_000_000_000:
            whole, part = np.divmod(delta, np.int64(freq))
            return whole * 1_000_000_000 + part * 1_000_000_000 // freq + start
        return (delta.astype(np.float64) * (1e9 / freq)).astype(np.int64) + start

    def in_range(self, raw: np.ndarray) -> np.ndarray:
        """Which raw timestamps :meth:`to_ns` converts without overflow: their time falls in the years 1677-2262
        an int64 of ns holds (the array arithmetic would wrap silently otherwise)."""
        origin = self.header_raw_ts

        def fits(r: int) -> bool:
            return -(2**63) <= r - origin < 2**63 and -(2**63) <= self.to_ns(r) < 2**63

        # both conditions are monotonic in r, so the raw values that fit form an interval: the extremes decide
        if not len(raw) or (fits(int(raw.min())) and fits(int(raw.max()))):
            return np.ones(len(raw), dtype=bool)
        return np.fromiter((fits(r) for r in raw.tolist()), dtype=bool, count=len(raw))


@dataclass
class EtlStats:
    """What the reader saw, for ``inspect``: buffers, records by header type, losses, providers."""

    buffers: int = 0
    compressed_buffers: int = 0
    buffers_per_cpu: dict[int, int] = field(default_factory=dict)
    buffer_types: dict[int, int] = field(default_factory=dict)  # BufferType → count (4 = header, 0 = generic)
    records: dict[str, int] = field(default_factory=dict)  # header type name → count
    event_header_records: int = 0
    events_lost_buffers: int = 0  # buffers flagged 0x02 (events lost)
    buffer_lost_buffers: int = 0  # buffers flagged 0x04 (a buffer was lost before this one)
    events_lost: int = 0  # the logfile header's EventsLost
    buffers_lost: int = 0  # the logfile header's BuffersLost
    damaged_buffers: int = 0  # buffers skipped wholly or in part
    decompressed_bytes: int = 0  # record bytes after decompression, buffer headers included
    providers: dict[str, int] = field(default_factory=dict)  # ProviderId (lowercase GUID) → EVENT_HEADER count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (integer keys become strings)."""
        out = asdict(self)
        out["buffers_per_cpu"] = {str(k): v for k, v in sorted(self.buffers_per_cpu.items())}
        out["buffer_types"] = {str(k): v for k, v in sorted(self.buffer_types.items())}
        return out


@dataclass
class _Buffer:
    """One whole buffer as placed in a batch's buf: its records lie in ``buf[start + 0x48 : start + offset]``."""

    index: int  # position in the file, from 0
    file_offset: int
    start: int  # in the batch buf (or the chunk, for uncompressed buffers)
    size: int  # BufferSize
    offset: int  # Offset: logical bytes used, header included
    flags: int
    btype: int
    cpu: int


class EtlReader:
    """Streaming reader of a binary .etl file: :attr:`header` at once, then :meth:`batches` in file order.

    ``source`` comes from :func:`ndis_replay.importers.source.open_source` and is read only sequentially.
    Damage that can be worked around is reported to ``builder.salvage`` (a warning, or an error under strict);
    without a builder it raises :class:`TraceFormatError`.
    """

    def __init__(
        self, source: OpenedSource, builder: TraceBuilder | None = None, *, batch_bytes: int = 8 << 20
    ) -> None:
        self.source = source
        self.builder = builder
        self.path: Path = source.path
        self.batch_bytes = max(int(batch_bytes), 1)
        #: the ``buffer`` limit: the largest BufferSize, and Offset (decompressed size), accepted
        self.limit = limits.current().buffer
        self.stats = EtlStats()
        self.header = self._read_header()
        self.stats.events_lost = self.header.events_lost
        self.stats.buffers_lost = self.header.buffers_lost
        self._record = 0  # sequence number of the next record (all kinds)
        self._buffer = 0  # index of the next buffer
        self._providers: dict[tuple[int, int], int] = {}
        self._started = False

    # --- the logfile header -------------------------------------------------------------------------------

    def _read_header(self) -> LogfileHeader:
        path = self.source.path
        head = self.source.head(BUFFER_HEADER)
        if len(head) < BUFFER_HEADER:
            what = "empty" if not head else f"only {len(head)} bytes long"
            raise TraceFormatError(path, f"not an ETL file: it is {what}", offset=0)
        size, *_, offset, flags, _btype = _BUFFER.unpack_from(head, 0)
        if size > self.limit:
            raise LimitExceeded(path, "ETL buffer BufferSize", size, self.limit, "buffer", offset=0)
        if size < BUFFER_HEADER + SYSTEM_HEADER:
            raise TraceFormatError(path, f"not an ETL file: the first BufferSize is {size}", offset=0)
        first = self.source.head(size)
        if len(first) < size:
            raise TraceFormatError(
                path, f"the header buffer is cut short ({len(first)} of {size} bytes)", offset=len(first)
            )
        if flags & BUFFER_FLAG_COMPRESSED:
            if offset > self.limit:
                raise LimitExceeded(path, "compressed ETL buffer Offset", offset, self.limit, "buffer", offset=0x30)
            payload = _decompress(first[BUFFER_HEADER:], offset - BUFFER_HEADER)
            if payload is None:
                raise TraceFormatError(path, "the compressed header buffer does not decompress", offset=0)
            records, end = first[:BUFFER_HEADER] + payload, offset
        else:
            if not BUFFER_HEADER < offset <= size:
                raise TraceFormatError(path, f"the header buffer's Offset {offset} is outside the buffer", offset=0x30)
            records, end = first, offset
        return parse_logfile_header(path, records, BUFFER_HEADER, end)

    # --- batches -----------------------------------------------------------------------------------------

    def batches(self) -> Iterator[EventBatch]:
        """The EVENT_HEADER records of the file as batches over whole buffers, in file order (once only)."""
        if self._started:
            raise RuntimeError("EtlReader.batches() can be iterated once")
        self._started = True
        data = b""
        base = 0  # file offset of data[0]
        need = self.batch_bytes
        while True:
            try:
                more = self.source.read(need)
            except _CompressedStreamEnded as exc:
                self._damage(
                    f"{self.source.compression} stream ends early or is corrupt ({exc})",
                    offset=base + len(data),
                    code="truncated",
                )
                more = b""
            eof = len(more) < need
            data = data + more if data else more
            buffers, consumed, framing = self._frame(data, base)
            yield from self._batches_of(data, buffers)
            if framing is not None:  # a BufferSize that breaks the chain: nothing after it can be found
                self._damage(framing, offset=base + consumed)
                return
            rest = len(data) - consumed
            if eof:
                if rest:
                    claimed = _BUFFER.unpack_from(data, consumed)[0] if rest >= BUFFER_HEADER else None
                    of = f"{rest} of its {claimed} bytes" if claimed else f"{rest} bytes, not even its header"
                    self._damage(
                        f"the last buffer (buffer {self._buffer}) is cut short ({of}); its records are lost",
                        offset=base + consumed,
                        code="truncated",
                    )
                return
            data = data[consumed:]
            base += consumed
            # read at least enough to complete the partial buffer whose header is already in
            need = self.batch_bytes
            if len(data) >= BUFFER_HEADER:  # (_frame has checked this BufferSize against the limit)
                need = max(need, min(_BUFFER.unpack_from(data, 0)[0], self.limit) - len(data))

    def _frame(self, data: bytes, base: int) -> tuple[list[_Buffer], int, str | None]:
        """The whole buffers in ``data``: ``(buffers, bytes they span, framing damage or None)``."""
        buffers: list[_Buffer] = []
        pos = 0
        unpack = _BUFFER.unpack_from
        while len(data) - pos >= BUFFER_HEADER:
            size, _s, _c, _r, _t, _q, _k, cpu, _a, _l, _st, offset, flags, btype = unpack(data, pos)
            if size > self.limit:
                # refused before reading on to the buffer's claimed end (the stream is read sequentially)
                raise LimitExceeded(self.path, "ETL buffer BufferSize", size, self.limit, "buffer", offset=base + pos)
            if size < BUFFER_HEADER:
                return (
                    buffers,
                    pos,
                    f"buffer {self._buffer + len(buffers)} has BufferSize {size} (smaller than its own header); "
                    f"the rest of the file cannot be framed and is skipped",
                )
            if pos + size > len(data):
                break
            buffers.append(_Buffer(self._buffer + len(buffers), base + pos, pos, size, offset, flags, btype, cpu))
            pos += size
        return buffers, pos, None

    def _batches_of(self, data: bytes, buffers: list[_Buffer]) -> Iterator[EventBatch]:
        """Group ``buffers`` (whole, in ``data``) into batches of about ``batch_bytes`` decompressed bytes."""
        group: list[_Buffer] = []
        logical = 0
        for b in buffers:
            group.append(b)
            logical += b.offset if BUFFER_HEADER <= b.offset <= self.limit else 0
            if logical >= self.batch_bytes:
                yield self._batch(data, group)
                group, logical = [], 0
        if group:
            yield self._batch(data, group)

    def _batch(self, data: bytes, group: list[_Buffer]) -> EventBatch:
        """Decompress what needs it, walk the records, gather the EVENT_HEADER columns."""
        stats = self.stats
        good: list[_Buffer] = []
        if any(b.flags & BUFFER_FLAG_COMPRESSED for b in group):
            pieces: list[bytes] = []
            at = 0
            for b in group:
                payload = self._payload(data, b)
                if payload is None:
                    continue
                if not b.flags & BUFFER_FLAG_COMPRESSED:
                    payload = data[b.start + BUFFER_HEADER : b.start + b.offset]
                pieces.append(data[b.start : b.start + BUFFER_HEADER])
                pieces.append(payload)
                good.append(_Buffer(b.index, b.file_offset, at, b.size, b.offset, b.flags, b.btype, b.cpu))
                at += BUFFER_HEADER + len(payload)
            buf = b"".join(pieces)
        else:
            buf = data
            good = [b for b in group if self._payload(data, b) is not None]
        self._buffer = group[-1].index + 1
        for b in group:
            stats.buffers += 1
            stats.buffers_per_cpu[b.cpu] = stats.buffers_per_cpu.get(b.cpu, 0) + 1
            stats.buffer_types[b.btype] = stats.buffer_types.get(b.btype, 0) + 1
            stats.compressed_buffers += bool(b.flags & BUFFER_FLAG_COMPRESSED)
            stats.events_lost_buffers += bool(b.flags & BUFFER_FLAG_EVENTS_LOST)
            stats.buffer_lost_buffers += bool(b.flags & BUFFER_FLAG_BUFFER_LOST)
        for b in good:
            stats.decompressed_bytes += b.offset
        offsets, counts = self._walk(buf, good)
        return self._columns(buf, good, offsets, counts)

    def _payload(self, data: bytes, b: _Buffer) -> bytes | None:
        """The buffer's record bytes (decompressed when compressed), or ``None`` after reporting damage."""
        if b.flags & BUFFER_FLAG_COMPRESSED and b.offset > self.limit:
            # Offset is the decompressed size: the bound on what LZXPRESS may produce
            raise LimitExceeded(
                self.path, "compressed ETL buffer Offset", b.offset, self.limit, "buffer", offset=b.file_offset + 0x30
            )
        if not BUFFER_HEADER <= b.offset <= self.limit:
            self._bad_buffer(b, f"its Offset {b.offset} is outside [0x48, {limits.format_size(self.limit)}]")
            return None
        if b.flags & BUFFER_FLAG_COMPRESSED:
            payload = _decompress(data[b.start + BUFFER_HEADER : b.start + b.size], b.offset - BUFFER_HEADER)
            if payload is None:
                self._bad_buffer(
                    b, f"its LZXPRESS data does not decompress to the {b.offset - BUFFER_HEADER} bytes Offset announces"
                )
            return payload
        if b.offset > b.size:
            self._bad_buffer(b, f"its Offset {b.offset} is beyond its BufferSize {b.size}")
            return None
        return b""  # uncompressed: the records stay where they are in data

    def _bad_buffer(self, b: _Buffer, why: str) -> None:
        self.stats.damaged_buffers += 1
        self._damage(f"buffer {b.index} is damaged ({why}); its records are skipped", offset=b.file_offset)

    def _walk(self, buf: bytes, buffers: list[_Buffer]) -> tuple[list[int], list[int]]:
        """Offsets in ``buf`` of every record of ``buffers``, and how many each buffer holds.

        The tight loop follows the size chain only; a record that cannot be framed ends its buffer's walk.
        """
        offsets: list[int] = []
        counts: list[int] = []
        append = offsets.append
        hh = _HH.unpack_from
        h = _H.unpack_from
        kind_of = _SIZE_KIND.get
        for b in buffers:
            before = len(offsets)
            pos = b.start + BUFFER_HEADER
            end = b.start + b.offset
            last = end - 8  # a record needs at least its 8-byte marker and size
            size = 8
            bad: str | None = None
            while pos <= last:
                size, upper = hh(buf, pos)
                kind = kind_of(upper, -1)
                if kind == 1:
                    size = h(buf, pos + 4)[0]
                elif kind == 2:
                    break
                elif kind < 0:
                    bad = f"unknown record marker 0x{upper:04x}"
                    break
                if size < 8:
                    bad = f"a record size of {size}"
                    break
                append(pos)
                pos += (size + 7) & ~7
            else:
                if len(offsets) > before and offsets[-1] + size > end:
                    bad = f"a record of {size} bytes running past the buffer's end"
                    pos = offsets.pop()
            if bad is not None:
                where = pos - b.start
                self.stats.damaged_buffers += 1
                self._damage(
                    f"buffer {b.index}: {bad} at offset 0x{where:x} of the buffer; "
                    f"the rest of the buffer ({b.offset - where} bytes) is skipped",
                    offset=b.file_offset + (0 if b.flags & BUFFER_FLAG_COMPRESSED else where),
                    record=self._record + len(offsets),
                )
            counts.append(len(offsets) - before)
        return offsets, counts

    def _columns(self, buf: bytes, buffers: list[_Buffer], offsets: list[int], counts: list[int]) -> EventBatch:
        stats = self.stats
        offs = np.asarray(offsets, dtype=np.int64)
        first_record = self._record
        self._record += len(offs)
        u16 = _view(buf, "<u2")
        u32 = _view(buf, "<u4")
        upper = u16[offs + 2] if len(offs) else np.zeros(0, dtype=np.uint16)
        # statistics by header type: the marker's upper u16 names it
        kinds, kind_counts = np.unique(upper, return_counts=True)
        for k, c in zip(kinds.tolist(), kind_counts.tolist(), strict=True):
            name = _record_name(k)
            stats.records[name] = stats.records.get(name, 0) + c
        is_event = (upper == _EVENT_HEADER_MARKERS[0]) | (upper == _EVENT_HEADER_MARKERS[1])
        seq = np.flatnonzero(is_event)
        cpu_of_record = np.repeat(np.asarray([b.cpu for b in buffers], dtype=np.uint16), counts)
        eo = offs[seq]
        size = u16[eo].astype(np.int64)
        short = size < EVENT_HEADER_SIZE
        if short.any():
            k = int(np.flatnonzero(short)[0])
            self._damage(
                f"{int(short.sum())} EVENT_HEADER records are shorter than their 0x50-byte header; skipped",
                offset=None,
                record=first_record + int(seq[k]),
            )
            keep = ~short
            seq, eo, size = seq[keep], eo[keep], size[keep]
        raw_ts = _view(buf, "<i8")[eo + 0x10] if len(eo) else np.zeros(0, dtype=np.int64)
        fits = self.header.in_range(raw_ts)
        if not fits.all():
            # a hostile TimeStamp would wrap to a wrong ts_ns silently: such an event has no usable time
            k = int(np.flatnonzero(~fits)[0])
            self._damage(
                f"{int((~fits).sum())} events have a TimeStamp outside the years 1677-2262 (the first: "
                f"{int(raw_ts[k])}); skipped",
                offset=None,
                record=first_record + int(seq[k]),
            )
            seq, eo, size, raw_ts = seq[fits], eo[fits], size[fits], raw_ts[fits]
        n = len(eo)
        u64 = _view(buf, "<u8")
        flags = u16[eo + 4]
        rec_end = eo + size
        user_offset = eo + EVENT_HEADER_SIZE
        ext_offset = np.full(n, -1, dtype=np.int64)
        has_ext = np.flatnonzero(flags & FLAG_EXTENDED_INFO)
        if len(has_ext):
            ext_offset[has_ext] = user_offset[has_ext]
            user_offset[has_ext] = self._skip_extended(buf, u16, ext_offset[has_ext], rec_end[has_ext], first_record)
        stats.event_header_records += n
        if n:
            pairs = np.stack([u64[eo + 0x18], u64[eo + 0x20]], axis=1)
            uniq, ucount = np.unique(pairs, axis=0, return_counts=True)
            for (lo, hi), c in zip(uniq.tolist(), ucount.tolist(), strict=True):
                key = str(uuid.UUID(bytes_le=struct.pack("<QQ", lo, hi)))
                stats.providers[key] = stats.providers.get(key, 0) + c
        u8 = np.frombuffer(buf, dtype=np.uint8)
        return EventBatch(
            buf=buf,
            record=seq.astype(np.int64) + first_record,
            cpu=cpu_of_record[seq],
            offset=eo,
            size=size,
            flags=flags,
            thread_id=u32[eo + 0x08],
            process_id=u32[eo + 0x0C],
            raw_ts=raw_ts,
            ts_ns=self.header.to_ns(raw_ts),
            guid_lo=u64[eo + 0x18],
            guid_hi=u64[eo + 0x20],
            event_id=u16[eo + 0x28],
            version=u8[eo + 0x2A],
            channel=u8[eo + 0x2B],
            level=u8[eo + 0x2C],
            opcode=u8[eo + 0x2D],
            task=u16[eo + 0x2E],
            keyword=u64[eo + 0x30],
            user_offset=user_offset,
            user_len=rec_end - user_offset,
            ext_offset=ext_offset,
        )

    def _skip_extended(
        self, buf: bytes, u16: np.ndarray, start: np.ndarray, rec_end: np.ndarray, first_record: int
    ) -> np.ndarray:
        """Where UserData starts after each record's chain of extended items (vectorised over the records).

        Each step advances at least 8 bytes and stops at the record's end, so the loop is bounded by the
        longest record / 8. A chain running past its record is cut there (UserData empty) with a warning.
        """
        pos = start.copy()
        active = np.arange(len(pos))
        overrun = 0
        while len(active):
            p = pos[active]
            room = p + 8 <= rec_end[active]
            if not room.all():  # linkage promised another item, but the record ends
                overrun += int((~room).sum())
                pos[active[~room]] = rec_end[active[~room]]
                active, p = active[room], p[room]
            data_end = p + 8 + u16[p + 6].astype(np.int64)
            past = data_end > rec_end[active]
            if past.any():
                overrun += int(past.sum())
                pos[active[past]] = rec_end[active[past]]
            nxt = (data_end + 7) & ~7
            more = (~past) & ((u16[p + 4] & 1) == 1) & (nxt < rec_end[active])
            done = (~past) & ~more
            pos[active[done]] = np.minimum(nxt[done], rec_end[active[done]])
            pos[active[more]] = nxt[more]
            active = active[more]
        if overrun:
            self._damage(
                f"the extended items of {overrun} EVENT_HEADER records run past the record; their UserData is empty",
                offset=None,
                record=first_record,
            )
        return pos

    # --- damage ------------------------------------------------------------------------------------------

    def _damage(self, detail: str, *, offset: int | None, record: int | None = None, code: str = "damaged") -> None:
        if self.builder is None:
            raise TraceFormatError(self.path, detail, offset=offset, record=record)
        self.builder.salvage(detail, offset=offset, record=record, code=code)


def _record_name(upper: int) -> str:
    """The statistics name of a record kind from its marker's upper u16."""
    flags, htype = upper >> 8, upper & 0xFF
    if flags == 0xC0:
        return HEADER_TYPE_NAMES.get(htype, f"TYPE_0x{htype:02X}")
    return "WPP"  # 0x90: MESSAGE_TRACE_HEADER (WPP / TraceMessage)


class _OutputBound(Exception):
    """The decompressor's output went past the size the buffer header announces."""


# dissect.util's LZXPRESS decoder has no output bound: a match length is up to 32 bits, so a few bytes of hostile
# input ask for 4 GiB of output (or, with nothing to copy yet, 4 billion empty copy steps). It builds its output in
# ``dst = bytearray()`` and grows it by ``dst += ...`` once per copy step, so the same code run with ``bytearray``
# bound to the class of :func:`_bounded_decompressor` (in a globals mapping of its own: the module is not changed)
# stops a stream as soon as it asks for more than ``expected`` bytes or steps. Literals (``dst.append``) need no
# check: each costs an input byte. tests/test_fuzz_regressions.py fails if a dissect.util release changes this.
_LZX_HOOKABLE = "bytearray" in lzxpress.decompress.__code__.co_names


def _bounded_decompressor(expected: int) -> Any:
    """dissect's ``lzxpress.decompress`` with its output buffer refusing to grow past ``expected`` bytes."""
    steps = expected  # every copy step of a valid stream adds at least one byte: steps are bounded by it too
    grow = bytearray.__iadd__

    class _Output(bytearray):
        __slots__ = ()

        def __iadd__(self, other: Any) -> _Output:  # type: ignore[misc]  # (returns self, as bytearray's does)
            nonlocal steps
            steps -= 1
            if steps < 0 or len(self) + len(other) > expected:
                raise _OutputBound
            grow(self, other)
            return self

    scope = dict(vars(lzxpress), bytearray=_Output)
    code = lzxpress.decompress
    return types.FunctionType(code.__code__, scope, code.__name__, code.__defaults__, code.__closure__)


def _decompress(data: bytes, expected: int) -> bytes | None:
    """MS-XCA plain LZ77 ``data`` → exactly ``expected`` bytes, or ``None`` when it is damaged (including a stream
    that asks for more than ``expected`` bytes: it is stopped there, never decompressed in full)."""
    decompress = _bounded_decompressor(expected) if _LZX_HOOKABLE else lzxpress.decompress
    try:
        out = decompress(data)
    except Exception:  # dissect raises struct.error/TypeError/ValueError on damaged input; all mean "bad block"
        return None
    return out if len(out) == expected else None


def parse_logfile_header(path: str | Path, buf: bytes, pos: int, end: int) -> LogfileHeader:
    """The logfile header from the SYSTEM record at ``buf[pos:]`` (records end at ``end``)."""
    if end - pos < SYSTEM_HEADER + 48:
        raise TraceFormatError(path, "not an ETL file: the header buffer is too short for a logfile header", offset=pos)
    marker, rec_size = struct.unpack_from("<IH", buf, pos)
    if marker >> 24 != 0xC0 or (marker >> 16) & 0xFF not in (0x01, 0x02):
        raise TraceFormatError(
            path, f"not an ETL file: the first record is not a SYSTEM record (marker 0x{marker:08x})", offset=pos
        )
    raw_ts = struct.unpack_from("<q", buf, pos + 0x10)[0]
    body = pos + SYSTEM_HEADER
    (
        buffer_size,
        version,
        os_build,
        nproc,
        end_time,
        timer_res,
        max_file,
        mode,
        written,
        _start_buffers,
        ptr,
        events_lost,
        cpu_mhz,
    ) = struct.unpack_from("<IIIIqIIIIIIII", buf, body)
    if ptr not in (4, 8):
        raise TraceFormatError(path, f"the logfile header's PointerSize is {ptr}, not 4 or 8", offset=body + 44)
    tail = (56 + 2 * ptr + 172 + 7) & ~7  # two pointers, TIME_ZONE_INFORMATION (172 bytes), align 8
    strings = tail + 32
    rec_end = min(pos + rec_size, end)
    if body + strings > rec_end:
        raise TraceFormatError(
            path, f"the logfile header record is too short ({rec_size} bytes) for its fields", offset=pos
        )
    boot, perf_freq, start, clock, buffers_lost = struct.unpack_from("<qqqII", buf, body + tail)
    names = buf[body + strings : rec_end].decode("utf-16-le", errors="replace").split("\x00")
    if clock not in (CLOCK_QPC, CLOCK_SYSTEM_TIME, CLOCK_CPU_CYCLES):
        raise TraceFormatError(path, f"unknown clock type {clock} in the logfile header", offset=body + tail + 24)
    if (clock == CLOCK_QPC and perf_freq <= 0) or (clock == CLOCK_CPU_CYCLES and cpu_mhz == 0):
        raise TraceFormatError(path, "the logfile header gives no clock frequency", offset=body + tail + 8)
    if not -(2**63) <= (start - FILETIME_UNIX_EPOCH) * 100 < 2**63:
        # found by fuzzing: every event time is StartTime + an offset, in the int64 ts_ns column
        raise TraceFormatError(
            path, f"the logfile header's StartTime {start} is outside the years 1677-2262", offset=body + tail + 16
        )
    return LogfileHeader(
        buffer_size=buffer_size,
        version=version,
        os_build=os_build,
        number_of_processors=nproc,
        end_time_ns=_filetime_ns(end_time),
        log_file_mode=mode,
        buffers_written=written,
        pointer_size=ptr,
        events_lost=events_lost,
        cpu_speed_mhz=cpu_mhz,
        boot_time_ns=_filetime_ns(boot),
        perf_freq=perf_freq,
        start_time_filetime=start,
        clock_type=clock,
        buffers_lost=buffers_lost,
        logger_name=names[0] if names else "",
        log_file_name=names[1] if len(names) > 1 else "",
        header_raw_ts=raw_ts,
        timer_resolution=timer_res,
        maximum_file_size=max_file,
    )
