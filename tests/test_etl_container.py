"""The ETL container reader and the synthetic ETL writer: real files, round trips, damage, sniffing."""

from __future__ import annotations

import gzip
import hashlib
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dissect.util.compression import lzxpress

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers import open_trace
from ndis_replay.importers.builder import TraceBuilder
from ndis_replay.importers.etw import (
    ETL_SNIFF_BYTES,
    EtlReader,
    EtlWriter,
    EventBatch,
    looks_like_etl,
    lz77_literal_compress,
)
from ndis_replay.importers.etw.events import EXT_PROV_TRAITS, FLAG_32_BIT_HEADER, FLAG_64_BIT_HEADER
from ndis_replay.importers.source import open_source
from tests.conftest import CORPUS, PCAP_CORPUS, SAMPLES

PKTMON_ETL = CORPUS / "etw" / "demikernel" / "PktMon.etl"
PKTMON_CAP = CORPUS / "etw" / "demikernel" / "PktMon.cap"
SONDE_ETL = CORPUS / "etw" / "generic-etl-sonde" / "test.etl"
PKTMON = uuid.UUID("4D4F80D9-C8BD-4D73-BB5B-19C90402C5AC")
OTHER = uuid.UUID("2ED6006E-4729-4609-B423-3EE7BCD678EF")


def _read(
    path: Path, builder: TraceBuilder | None = None, batch_bytes: int = 8 << 20
) -> tuple[EtlReader, list[EventBatch]]:
    source = open_source(path)
    try:
        reader = EtlReader(source, builder, batch_bytes=batch_bytes)
        return reader, list(reader.batches())
    finally:
        source.close()


def _concat(batches: list[EventBatch], column: str) -> np.ndarray:
    return np.concatenate([getattr(b, column) for b in batches]) if batches else np.zeros(0)


def _tracelogging_guid(name: str) -> uuid.UUID:
    """The provider GUID TraceLogging derives from a name (SHA-1 over a fixed namespace + the upper-cased name)."""
    namespace = bytes.fromhex("482C2DB2C39047C887F81A15BFC130FB")
    digest = bytearray(hashlib.sha1(namespace + name.upper().encode("utf-16-be")).digest()[:16])
    digest[7] = (digest[7] & 0x0F) | 0x50
    return uuid.UUID(bytes_le=bytes(digest))


# --- the real files -------------------------------------------------------------------------------------------


def test_pktmon_header_and_stats() -> None:
    reader, batches = _read(PKTMON_ETL)
    h = reader.header
    assert (h.log_file_mode, h.compressed, h.clock_type, h.perf_freq) == (0x04010001, True, 1, 10_000_000)
    assert (h.pointer_size, h.os_build, h.number_of_processors, h.buffers_written) == (8, 20348, 8, 3)
    assert h.logger_name == "Relogger" and h.log_file_name.endswith("\\PktMon.etl")
    assert h.end_time_ns is not None and 0 < h.end_time_ns - h.start_time_ns < 60 * 10**9
    s = reader.stats
    assert (s.buffers, s.compressed_buffers, s.buffer_types) == (3, 2, {4: 1, 0: 2})
    assert s.records == {"SYSTEM": 3, "FULL_HEADER": 61, "EVENT_HEADER": 403}
    assert s.providers == {str(PKTMON): 403} and sum(len(b) for b in batches) == 403
    assert (s.events_lost, s.events_lost_buffers, s.buffer_lost_buffers, s.damaged_buffers) == (0, 0, 0, 0)
    event_id = _concat(batches, "event_id")
    assert int((event_id == 160).sum()) == 114
    assert s.to_dict()["buffer_types"] == {"0": 2, "4": 1}


def test_pktmon_timestamps_match_its_pcapng_export() -> None:
    _reader, batches = _read(PKTMON_ETL)
    ts = _concat(batches, "ts_ns")[_concat(batches, "event_id") == 160]
    cap = open_trace(PKTMON_CAP).frame["ts_ns"].to_numpy()
    assert len(cap) == len(ts) == 114
    first_in_file = int(ts[0])
    assert first_in_file // 1000 == int(cap[0]) // 1000  # the first event 160 is the first packet, to the µs
    assert np.array_equal(np.sort(ts) // 1000, np.sort(cap) // 1000)


def test_sonde_header_and_events() -> None:
    reader, batches = _read(SONDE_ETL)
    h = reader.header
    assert (h.log_file_mode, h.compressed, h.buffer_size, h.buffers_written) == (0x10001, False, 131072, 9)
    s = reader.stats
    assert (s.buffers, s.compressed_buffers) == (9, 0)
    assert s.records["EVENT_HEADER"] == 9
    guid = _tracelogging_guid("sonde-gateway")
    assert s.providers == {str(guid): 9}
    rows = [(b, i) for b in batches for i in range(len(b))]
    assert len(rows) == 9
    for b, i in rows:
        assert b.provider(i) == guid
        assert (EXT_PROV_TRAITS, b"\x10\x00sonde-gateway\x00") in b.extended_items(i)
        assert b.user_offset[i] > b.offset[i] + 0x50 and b.user_len[i] > 0
    ts = _concat(batches, "ts_ns")
    assert h.start_time_ns <= ts.min() and h.end_time_ns is not None and ts.max() <= h.end_time_ns


# --- the writer, read back -----------------------------------------------------------------------------------


@dataclass
class Written:
    cpu: int
    ts_ns: int
    provider: uuid.UUID
    event_id: int
    keyword: int
    version: int
    level: int
    opcode: int
    task: int
    channel: int
    pid: int
    tid: int
    user_data: bytes
    extended: list[tuple[int, bytes]]


def _random_events(rng: random.Random, n: int, cpus: int, start: int, tick: int) -> list[Written]:
    events = []
    clocks = [start] * cpus
    for i in range(n):
        cpu = rng.randrange(cpus)
        clocks[cpu] += tick * rng.randrange(1, 1000)  # per-CPU time goes forward; across CPUs it interleaves
        extended = [
            (rng.choice([0x0B, 0x0C, 0x05]), rng.randbytes(rng.randrange(0, 40))) for _ in range(rng.randrange(3))
        ]
        events.append(
            Written(
                cpu=cpu,
                ts_ns=clocks[cpu],
                provider=rng.choice([PKTMON, OTHER]),
                event_id=rng.randrange(1 << 16),
                keyword=i | (rng.getrandbits(30) << 33),  # the low bits identify the event when read back
                version=rng.randrange(256),
                level=rng.randrange(256),
                opcode=rng.randrange(256),
                task=rng.randrange(1 << 16),
                channel=rng.randrange(256),
                pid=rng.getrandbits(32),
                tid=rng.getrandbits(32),
                user_data=rng.randbytes(rng.choice([0, 1, 7, 8, 100, 1500])),
                extended=extended,
            )
        )
    return events


COMPRESS: dict[str, bool | Callable[[int], bool]] = {
    "plain": False,
    "compressed": True,
    "mixed": lambda i: i % 3 == 1,
}
CLOCK_CASES = {  # clock, perf_freq, tick in ns: timestamps that are whole ticks read back exactly
    "qpc-10MHz": ("qpc", 10_000_000, 100),
    "qpc-1GHz": ("qpc", 1_000_000_000, 1),
    "system-time": ("system", 10_000_000, 100),
    "cpu-cycles": ("cycles", 10_000_000, 1000),
}


@pytest.mark.parametrize("batch_bytes", [1, 8 << 20], ids=["buffer-per-batch", "8MiB-batches"])
@pytest.mark.parametrize("pointer_size", [8, 4], ids=["64bit", "32bit"])
@pytest.mark.parametrize("compress", list(COMPRESS), ids=list(COMPRESS))
@pytest.mark.parametrize("clock", list(CLOCK_CASES), ids=list(CLOCK_CASES))
def test_writer_round_trip(tmp_path: Path, clock: str, compress: str, pointer_size: int, batch_bytes: int) -> None:
    clock_name, freq, tick = CLOCK_CASES[clock]
    rng = random.Random(f"{clock}-{compress}-{pointer_size}")
    path = tmp_path / "w.etl"
    cpus = 3
    with EtlWriter(
        path,
        clock=clock_name,
        perf_freq=freq,
        cpus=cpus,
        buffer_size=4096,
        compress=COMPRESS[compress],
        pointer_size=pointer_size,
        os_build=19045,
        logger_name="round trip",
    ) as w:
        events = _random_events(rng, 300, cpus, w.start_ns, tick)
        for e in events:
            w.add_event(**vars(e))
    reader, batches = _read(path, batch_bytes=batch_bytes)
    h = reader.header
    assert (h.pointer_size, h.os_build, h.logger_name, h.log_file_name) == (
        pointer_size,
        19045,
        "round trip",
        f"C:\\traces\\{path.name}",
    )
    assert h.compressed == (compress != "plain") and h.buffers_written == len(w.buffers)
    rows = [(b, i) for b in batches for i in range(len(b))]
    assert len(rows) == len(events)
    seen = set()
    for b, i in rows:
        e = events[int(b.keyword[i]) & ((1 << 33) - 1)]
        seen.add(e.keyword)
        got = (
            int(b.cpu[i]),
            int(b.ts_ns[i]),
            b.provider(i),
            int(b.event_id[i]),
            int(b.keyword[i]),
            int(b.version[i]),
            int(b.level[i]),
            int(b.opcode[i]),
            int(b.task[i]),
            int(b.channel[i]),
            int(b.process_id[i]),
            int(b.thread_id[i]),
            b.user_data(i),
            b.extended_items(i),
        )
        assert got == tuple(vars(e).values())
        assert b.raw_ts[i] == w.raw_ts(e.ts_ns)
        assert b.pointer_size(i) == pointer_size
        assert int(b.flags[i]) & (FLAG_64_BIT_HEADER if pointer_size == 8 else FLAG_32_BIT_HEADER)
        assert (b.ext_offset[i] >= 0) == bool(e.extended)
        assert b.size[i] == 0x50 + (b.user_offset[i] - b.offset[i] - 0x50) + len(e.user_data)
    assert len(seen) == len(events)
    # file order: each CPU's events in the order written; record numbers increase (the header record is 0)
    records = _concat(batches, "record")
    assert records[0] >= 1 and np.all(np.diff(records) > 0)
    cpu_col, ts_col = _concat(batches, "cpu"), _concat(batches, "ts_ns")
    for cpu in range(cpus):
        assert list(ts_col[cpu_col == cpu]) == [e.ts_ns for e in events if e.cpu == cpu]
    s = reader.stats
    data_buffers = [(size, cpu) for _off, size, cpu in w.buffers if cpu >= 0]
    assert s.buffers == len(w.buffers) == h.buffers_written
    assert s.buffers_per_cpu == {
        0: 1 + sum(c == 0 for _, c in data_buffers),
        1: sum(c == 1 for _, c in data_buffers),
        2: sum(c == 2 for _, c in data_buffers),
    }
    rule = COMPRESS[compress]
    expect_compressed = sum(bool(rule(k)) if callable(rule) else rule for k in range(len(data_buffers)))
    assert s.compressed_buffers == expect_compressed
    if compress == "mixed":
        assert 0 < expect_compressed < len(data_buffers)
    assert s.records == {"SYSTEM": 1, "EVENT_HEADER": len(events)}
    assert s.providers == {str(p): sum(e.provider == p for e in events) for p in {e.provider for e in events}}


def test_gzipped_etl_reads_the_same(tmp_path: Path) -> None:
    plain = tmp_path / "w.etl"
    with EtlWriter(plain, compress=lambda i: i % 2 == 0, buffer_size=2048) as w:
        for e in _random_events(random.Random(5), 200, 2, w.start_ns, 100):
            w.add_event(**vars(e))
    packed = tmp_path / "w.etl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    _r1, a = _read(plain)
    _r2, b = _read(packed)
    assert np.array_equal(_concat(a, "keyword"), _concat(b, "keyword"))
    assert np.array_equal(_concat(a, "ts_ns"), _concat(b, "ts_ns"))


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 64, 1000, 65536 - 0x48], ids=lambda n: f"{n}B")
def test_lz77_literal_compress_is_valid_ms_xca(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert lzxpress.decompress(lz77_literal_compress(data)) == data


# --- damage ----------------------------------------------------------------------------------------------------


def _damage_fixture(tmp_path: Path, compress: bool) -> tuple[Path, EtlWriter, list[int]]:
    """A small file (2 CPUs, 1 KiB buffers) and the number of events in each buffer, in file order."""
    path = tmp_path / "d.etl"
    with EtlWriter(path, cpus=2, buffer_size=1024, compress=compress) as w:
        for i in range(60):
            w.add_event(
                cpu=i % 2,
                ts_ns=w.start_ns + 100 * i,
                provider=PKTMON,
                event_id=160,
                keyword=i,
                user_data=bytes([i]) * 100,
            )
    _reader, batches = _read(path, batch_bytes=1)  # one batch per buffer
    counts = [len(b) for b in batches]
    assert len(counts) == len(w.buffers) >= 8
    return path, w, counts


def _patch(path: Path, offset: int, fmt: str, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


@dataclass
class Damage:
    compress: bool
    apply: Callable[[Path, EtlWriter], int]  # damages the file; returns the file offset the warning must name
    survivors: Callable[[list[int]], int]  # expected events kept, from the events per buffer
    code: str = "damaged"


K = 3  # the damaged buffer (0 is the header buffer)


def _set_buffer_field(field_offset: int, value: int) -> Callable[[Path, EtlWriter], int]:
    def apply(path: Path, w: EtlWriter) -> int:
        _patch(path, w.buffers[K][0] + field_offset, "<I", value)
        return w.buffers[K][0]

    return apply


def _bad_compressed_block(path: Path, w: EtlWriter) -> int:
    start, size, _cpu = w.buffers[K]
    data = bytearray(path.read_bytes())
    data[start + 0x48 : start + size] = b"\xff" * (size - 0x48)  # every flag bit a match, offsets into nothing
    path.write_bytes(bytes(data))
    return start


def _record_size(value: int, last: bool) -> Callable[[Path, EtlWriter], int]:
    def apply(path: Path, w: EtlWriter) -> int:
        start = w.buffers[K][0]
        data = path.read_bytes()
        pos, end = start + 0x48, start + struct.unpack_from("<I", data, start + 0x30)[0]
        while last and pos + ((struct.unpack_from("<H", data, pos)[0] + 7) & ~7) < end:
            pos += (struct.unpack_from("<H", data, pos)[0] + 7) & ~7
        _patch(path, pos, "<H", value)
        return pos

    return apply


def _truncate(path: Path, w: EtlWriter) -> int:
    start, size, _cpu = w.buffers[-1]
    path.write_bytes(path.read_bytes()[: start + size // 2])
    return start


# (a BufferSize or compressed Offset over the buffer limit is refused, not salvaged: tests/test_limits.py)
DAMAGE = {
    "buffer-size-0": Damage(False, _set_buffer_field(0, 0), lambda c: sum(c[:K])),
    "buffer-size-below-header": Damage(False, _set_buffer_field(0, 0x40), lambda c: sum(c[:K])),
    "buffer-size-beyond-file": Damage(False, _set_buffer_field(0, 1 << 20), lambda c: sum(c[:K]), "truncated"),
    "offset-beyond-buffer": Damage(False, _set_buffer_field(0x30, 2048), lambda c: sum(c) - c[K]),
    "offset-beyond-decompressed": Damage(True, _set_buffer_field(0x30, 4000), lambda c: sum(c) - c[K]),
    "bad-compressed-block": Damage(True, _bad_compressed_block, lambda c: sum(c) - c[K]),
    "record-size-0": Damage(False, _record_size(0, last=False), lambda c: sum(c) - c[K]),
    "record-past-buffer-end": Damage(False, _record_size(0xFFF0, last=True), lambda c: sum(c) - 1),
    "truncated-last-buffer": Damage(False, _truncate, lambda c: sum(c) - c[-1], "truncated"),
    "truncated-compressed": Damage(True, _truncate, lambda c: sum(c) - c[-1], "truncated"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", list(DAMAGE), ids=list(DAMAGE))
def test_damage_is_salvaged_or_refused(tmp_path: Path, name: str) -> None:
    damage = DAMAGE[name]
    path, w, counts = _damage_fixture(tmp_path, damage.compress)
    where = damage.apply(path, w)
    builder = TraceBuilder(path)
    reader, batches = _read(path, builder, batch_bytes=2048)
    assert sum(len(b) for b in batches) == damage.survivors(counts)
    assert [(x.code, x.offset) for x in builder.warnings] == [(damage.code, where)]
    if damage.code == "damaged" and "buffer-size" not in name:
        assert reader.stats.damaged_buffers == 1
    for strict_builder in (TraceBuilder(path, strict=True), None):
        with pytest.raises(TraceFormatError) as err:
            _read(path, strict_builder)
        assert err.value.offset == where


def test_header_damage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.etl"
    with EtlWriter(path) as w:
        w.add_event(cpu=0, ts_ns=w.start_ns, provider=PKTMON, event_id=1)
    good = path.read_bytes()
    for cut in (0, 10, 0x48 + 16):
        path.write_bytes(good[:cut])
        with pytest.raises(TraceFormatError):
            EtlReader(open_source(path))
    data = bytearray(good)
    struct.pack_into("<I", data, 0x48, 0xC0130050)  # the first record is an event, not the logfile header
    path.write_bytes(bytes(data))
    with pytest.raises(TraceFormatError, match="SYSTEM record"):
        EtlReader(open_source(path))


# --- sniffing --------------------------------------------------------------------------------------------------


def _not_etl_files() -> list[Path]:
    samples = sorted(p for p in SAMPLES.iterdir() if p.is_file() and p.suffix != ".etl")  # the ETW samples are
    pcaps = sorted(PCAP_CORPUS.glob("*/*.pcap"))[:6] + sorted(PCAP_CORPUS.glob("*/*.pcapng"))[:6]
    return [*samples, *pcaps, PKTMON_CAP]


@pytest.mark.parametrize("path", [PKTMON_ETL, SONDE_ETL], ids=["PktMon.etl", "sonde-test.etl"])
def test_looks_like_etl_on_real_files(path: Path) -> None:
    head = path.read_bytes()[:ETL_SNIFF_BYTES]
    assert looks_like_etl(head)
    assert not looks_like_etl(head[:-1])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_looks_like_etl_on_written_files(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "w.etl"
    with EtlWriter(path, compress=compress, pointer_size=4) as w:
        w.add_event(cpu=1, ts_ns=w.start_ns, provider=PKTMON, event_id=160)
    assert looks_like_etl(path.read_bytes()[:ETL_SNIFF_BYTES])


@pytest.mark.parametrize("path", _not_etl_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_looks_like_etl_refuses_other_files(path: Path) -> None:
    assert not looks_like_etl(path.read_bytes()[:ETL_SNIFF_BYTES])
