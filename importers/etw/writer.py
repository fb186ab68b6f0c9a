"""Writing synthetic .etl files: the container and EVENT_HEADER records, for tests, samples and benchmarks.

The layout is what real files look like (ETW_FORMAT.md §2): an uncompressed header buffer (type 4, flag 0x01)
holding the SYSTEM64 logfile-header record with the LoggerName/LogFileName strings, then data buffers per CPU
(ProcessorNumber set), each flushed when full, so the file order is not the time order once CPUs interleave.
Compressed buffers (flag 0x40) hold MS-XCA plain LZ77 made of literal-only blocks, with
``BufferSize = 0x48 + compressed size`` and ``Offset = 0x48 + decompressed size``, as relogged pktmon files do.

The writer knows the EVENT_HEADER, not any provider's payload: callers pass UserData bytes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ndis_replay.importers.etw.container import (
    BUFFER_FLAG_COMPRESSED,
    BUFFER_HEADER,
    CLOCK_CPU_CYCLES,
    CLOCK_QPC,
    CLOCK_SYSTEM_TIME,
    EVENT_HEADER_SIZE,
    FILETIME_UNIX_EPOCH,
    LOG_FILE_MODE_COMPRESSED,
    SYSTEM_HEADER,
)
from ndis_replay.importers.etw.events import FLAG_32_BIT_HEADER, FLAG_64_BIT_HEADER, FLAG_EXTENDED_INFO

CLOCKS = {"qpc": CLOCK_QPC, "system": CLOCK_SYSTEM_TIME, "cycles": CLOCK_CPU_CYCLES}
#: Default start: 2024-06-10 20:18:35 UTC, a whole number of 100 ns ticks (FILETIME resolution).
DEFAULT_START_NS = 1_718_050_715_000_000_000
#: LogFileMode: sequential file (0x1) | relog mode (0x10000), plus EVENT_TRACE_COMPRESSED_MODE when compressing.
MODE_PLAIN = 0x00010001
MODE_COMPRESSED = MODE_PLAIN | LOG_FILE_MODE_COMPRESSED
#: BufferFlag of data buffers: 0x20 (processor index), plus 0x40 when compressed.
DATA_FLAGS = 0x20
HEADER_BUFFER_TYPE = 4
#: A raw clock value for the header record, as if the machine had been up a while (any value works).
_RAW_BASE_QPC = 2_499_815_729_351

_EVENT = struct.Struct("<HHHHIIq16sHBBBBHQQ16s")  # the 0x50-byte EVENT_HEADER
_BUFFER = struct.Struct("<IIIiqqQBBHIIHH16s")


def lz77_literal_compress(data: bytes) -> bytes:
    """``data`` as MS-XCA plain LZ77 of literal-only blocks: flag dword 0, then up to 32 literals.

    The flag bits after the last literal are set, so decompressors that stop on a match flag at the end of
    input (the MS-XCA reference algorithm) and those that stop when the input runs out both end right there.
    """
    out = bytearray()
    n = len(data)
    for i in range(0, n, 32):
        k = min(32, n - i)
        out += struct.pack("<I", (1 << (32 - k)) - 1 if k < 32 else 0)
        out += data[i : i + k]
    if n % 32 == 0:
        out += b"\xff\xff\xff\xff"  # a final flag word: "match" at the end of input ends decompression
    return bytes(out)


def event_record(
    *,
    raw_ts: int,
    provider: uuid.UUID,
    event_id: int,
    keyword: int = 0,
    version: int = 0,
    level: int = 4,
    opcode: int = 0,
    task: int = 0,
    channel: int = 0,
    pid: int = 0,
    tid: int = 0,
    user_data: bytes = b"",
    extended: Sequence[tuple[int, bytes]] = (),
    header_flags: int = FLAG_64_BIT_HEADER,
) -> bytes:
    """One EVENT_HEADER record (ETW_FORMAT.md §2.3), unpadded; Size = its length (at most 0xFFFF)."""
    ext = bytearray()
    for i, (ext_type, data) in enumerate(extended):
        if len(data) > 0xFFFF:
            raise ValueError(f"extended item {i} is {len(data)} bytes; DataSize is a u16")
        ext += struct.pack("<HHHH", 0, ext_type, int(i + 1 < len(extended)), len(data)) + data
        ext += bytes(-len(ext) % 8)
    size = EVENT_HEADER_SIZE + len(ext) + len(user_data)
    if size > 0xFFFF:
        raise ValueError(f"an EVENT_HEADER record of {size} bytes does not fit its u16 Size")
    head = _EVENT.pack(
        size,
        0xC013 if header_flags & FLAG_64_BIT_HEADER or not header_flags & FLAG_32_BIT_HEADER else 0xC012,
        header_flags,
        0,
        tid,
        pid,
        raw_ts,
        provider.bytes_le,
        event_id,
        version,
        channel,
        level,
        opcode,
        task,
        keyword,
        0,
        bytes(16),
    )
    return head + bytes(ext) + user_data


class EtlWriter:
    """Writes a synthetic ETL file event by event; :meth:`close` (or the ``with`` block) finishes it.

    ``clock`` is ``qpc`` (ticks of ``perf_freq``), ``system`` (100 ns FILETIME) or ``cycles`` (``cpu_speed_mhz``).
    Events are exact to the ns when their distance from ``start_ns`` is a whole number of ticks (QPC at
    10 MHz: multiples of 100 ns); otherwise they are floored to a tick. ``start_ns`` is floored to 100 ns.
    ``compress`` is a bool or a predicate on the data buffer's index (0 = the first data buffer written).
    The target must be seekable: the header buffer is rewritten with the final counts on close.
    ``buffers`` lists ``(file offset, BufferSize, cpu or -1 for the header buffer)`` of every buffer written,
    so tests can damage a chosen one.
    """

    def __init__(
        self,
        target: str | Path | BinaryIO,
        *,
        clock: str = "qpc",
        perf_freq: int = 10_000_000,
        start_ns: int = DEFAULT_START_NS,
        cpus: int = 2,
        buffer_size: int = 65536,
        compress: bool | Callable[[int], bool] = False,
        pointer_size: int = 8,
        os_build: int = 20348,
        logger_name: str = "ndis-replay",
        cpu_speed_mhz: int = 2594,
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, not {clock!r}")
        if pointer_size not in (4, 8):
            raise ValueError("pointer_size must be 4 or 8")
        if buffer_size % 8 or not 0x400 <= buffer_size <= 16 << 20:
            raise ValueError("buffer_size must be a multiple of 8 between 1 KiB and 16 MiB")
        if cpus < 1 or cpus > 256:
            raise ValueError("cpus must be between 1 and 256")
        self._own = isinstance(target, (str, Path))
        self._f: BinaryIO = open(target, "wb") if isinstance(target, (str, Path)) else target  # noqa: SIM115
        # as Windows records it, but only the file's name: the same content wherever the file is written
        self.log_file_name = f"C:\\traces\\{Path(target).name}" if isinstance(target, (str, Path)) else ""
        self.clock = CLOCKS[clock]
        self.perf_freq = perf_freq
        self.cpu_speed_mhz = cpu_speed_mhz
        self.freq = {CLOCK_QPC: perf_freq, CLOCK_SYSTEM_TIME: 10_000_000, CLOCK_CPU_CYCLES: cpu_speed_mhz * 1_000_000}[
            self.clock
        ]
        self.start_filetime = start_ns // 100 + FILETIME_UNIX_EPOCH
        self.start_ns = (self.start_filetime - FILETIME_UNIX_EPOCH) * 100
        self.raw0 = self.start_filetime if self.clock == CLOCK_SYSTEM_TIME else _RAW_BASE_QPC
        self.cpus = cpus
        self.buffer_size = buffer_size
        self._compress = compress
        self.pointer_size = pointer_size
        self.os_build = os_build
        self.logger_name = logger_name
        self.compressing = compress is not False
        self._pending: list[bytearray] = [bytearray() for _ in range(cpus)]
        self._last_raw = [self.raw0] * cpus
        self._data_buffers = 0
        self._position = 0  # file offset of the next buffer
        self._max_ts = self.start_ns
        self.buffers: list[tuple[int, int, int]] = []
        self.events = 0
        self._closed = False
        header = self._header_buffer()
        self._header_size = len(header)
        self._write(header, -1)

    # --- events ------------------------------------------------------------------------------------------

    def raw_ts(self, ts_ns: int) -> int:
        """The raw clock value of Unix time ``ts_ns`` (floored to a tick)."""
        return self.raw0 + (ts_ns - self.start_ns) * self.freq // 1_000_000_000

    def add_event(
        self,
        *,
        cpu: int,
        ts_ns: int,
        provider: uuid.UUID,
        event_id: int,
        keyword: int = 0,
        version: int = 0,
        level: int = 4,
        opcode: int = 0,
        task: int = 0,
        channel: int = 0,
        pid: int = 0,
        tid: int = 0,
        user_data: bytes = b"",
        extended: Sequence[tuple[int, bytes]] = (),
        header_flags: int | None = None,
    ) -> None:
        """Append one EVENT_HEADER event to ``cpu``'s buffer (written out when full).

        ``header_flags`` defaults to the pointer size's 32/64-bit flag, plus EXTENDED_INFO with ``extended``.
        """
        if not 0 <= cpu < self.cpus:
            raise ValueError(f"cpu {cpu} is outside 0..{self.cpus - 1}")
        if header_flags is None:
            header_flags = FLAG_64_BIT_HEADER if self.pointer_size == 8 else FLAG_32_BIT_HEADER
            if extended:
                header_flags |= FLAG_EXTENDED_INFO
        raw = self.raw_ts(ts_ns)
        rec = event_record(
            raw_ts=raw,
            provider=provider,
            event_id=event_id,
            keyword=keyword,
            version=version,
            level=level,
            opcode=opcode,
            task=task,
            channel=channel,
            pid=pid,
            tid=tid,
            user_data=user_data,
            extended=extended,
            header_flags=header_flags,
        )
        padded = len(rec) + (-len(rec) % 8)
        capacity = self.buffer_size - BUFFER_HEADER
        if padded > capacity:
            raise ValueError(f"a record of {len(rec)} bytes does not fit a {self.buffer_size}-byte buffer")
        pending = self._pending[cpu]
        if len(pending) + padded > capacity:
            self.flush(cpu)
            pending = self._pending[cpu]
        pending += rec
        pending += bytes(padded - len(rec))
        self._last_raw[cpu] = raw
        self._max_ts = max(self._max_ts, ts_ns)
        self.events += 1

    def flush(self, cpu: int) -> None:
        """Write ``cpu``'s pending events as one data buffer now (nothing when it has none)."""
        payload = bytes(self._pending[cpu])
        if not payload:
            return
        self._pending[cpu] = bytearray()
        index = self._data_buffers
        self._data_buffers += 1
        compress = self._compress(index) if callable(self._compress) else self._compress
        offset = BUFFER_HEADER + len(payload)
        if compress:
            body = lz77_literal_compress(payload)
            size = BUFFER_HEADER + len(body)
            flags = DATA_FLAGS | BUFFER_FLAG_COMPRESSED
        else:
            # uncompressed buffers keep their full size; the unused tail is 0xFF as in real files
            body = payload + b"\xff" * (self.buffer_size - offset)
            size = self.buffer_size
            flags = DATA_FLAGS
        header = self._buffer_header(size, offset, flags, 0, cpu, self._last_raw[cpu])
        self._write(header + body, cpu)

    # --- the file ----------------------------------------------------------------------------------------

    def _write(self, data: bytes, cpu: int) -> None:
        self.buffers.append((self._position, len(data), cpu))
        self._f.write(data)
        self._position += len(data)

    def _buffer_header(self, size: int, offset: int, flags: int, btype: int, cpu: int, raw_ts: int) -> bytes:
        seq = len(self.buffers) if btype != HEADER_BUFFER_TYPE else 0
        return _BUFFER.pack(size, offset, offset, 0, raw_ts, seq, 0, cpu, 0, 0, 3, offset, flags, btype, bytes(16))

    def _header_buffer(self) -> bytes:
        """The uncompressed first buffer: the logfile-header record (with the counts known so far)."""
        ps = self.pointer_size
        tail = (56 + 2 * ps + 172 + 7) & ~7
        names = (self.logger_name + "\x00" + self.log_file_name + "\x00").encode("utf-16-le")
        body = bytearray(tail + 32)
        struct.pack_into(
            "<IIIIqIIIIIIII",
            body,
            0,
            self.buffer_size,
            0x0002000A,  # Version (as in relogged pktmon files)
            self.os_build,
            self.cpus,
            self._max_ts // 100 + FILETIME_UNIX_EPOCH,  # EndTime
            156_250,  # TimerResolution: 15.625 ms in 100 ns units
            0,  # MaximumFileSize
            MODE_COMPRESSED if self.compressing else MODE_PLAIN,
            len(self.buffers) if self.buffers else 1,  # BuffersWritten, the header buffer included
            1,  # StartBuffers
            ps,
            0,  # EventsLost
            self.cpu_speed_mhz,
        )
        boot = self.start_filetime - 86_400 * 10_000_000  # booted a day before
        struct.pack_into("<qqqII", body, tail, boot, self.perf_freq, self.start_filetime, self.clock, 0)
        record_size = SYSTEM_HEADER + len(body) + len(names)
        record = (
            struct.pack("<HBBHHIIqII", 2, 0x02 if ps == 8 else 0x01, 0xC0, record_size, 0, 0, 0, self.raw0, 0, 0)
            + bytes(body)
            + names
        )
        record += bytes(-len(record) % 8)
        offset = BUFFER_HEADER + len(record)
        # compressed files have a small header buffer (relogged pktmon: 1 KiB); plain ones a full-size one
        size = max(0x400, offset) if self.compressing else max(self.buffer_size, offset)
        header = self._buffer_header(size, offset, 0x01, HEADER_BUFFER_TYPE, 0, self.raw0)
        return header + record + b"\xff" * (size - offset)

    def close(self) -> None:
        """Write every pending buffer (CPU order), then the header buffer with the final counts."""
        if self._closed:
            return
        self._closed = True
        try:
            for cpu in range(self.cpus):
                self.flush(cpu)
            header = self._header_buffer()
            if len(header) != self._header_size:  # cannot happen: the counts are fixed-size fields
                raise AssertionError("the header buffer changed size")
            self._f.seek(-self._position, 1)  # back to where the header buffer was written
            self._f.write(header)
            self._f.seek(self._position - self._header_size, 1)
            self._f.flush()
        finally:
            if self._own:
                self._f.close()

    def __enter__(self) -> EtlWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
