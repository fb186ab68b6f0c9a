"""Every finding of the importer fuzzers (bench/fuzz/) as a regression test, the input built in code.

A finding is an exception other than :class:`~ndis_replay.errors.ReplayError`, a hang or unbounded memory; each
test here failed (crashed or hung) before its fix and now passes, with the outcome a user should see.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import pytest
from dissect.util.compression import lzxpress

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers import EtwOptions, open_trace
from ndis_replay.importers.etw import container
from ndis_replay.importers.etw.driver import driver_csv_text
from ndis_replay.importers.etw.pktmon import EVENT_PACKET, PKTMON_PROVIDER, encode_pktmon_packet
from ndis_replay.importers.etw.writer import EtlWriter
from tests.conftest import REPO

EVENT_MAP = REPO / "sample_traces" / "driver_sends.toml"
START_NS = 1_700_000_000_000_000_000
FILETIME_START = START_NS // 100 + 116_444_736_000_000_000


# --- tracerpt CSV: a Clock-Time beyond int64 (OverflowError in the driver reader) ------------------------------


def _csv_with_clock(row: int, clock: str) -> str:
    sends = [(START_NS + i * 1000, 0xFFFF0000 + i, 60, i) for i in range(3)]
    completes = [(ts + 500, nbl) for ts, nbl, _, _ in sends]
    lines = driver_csv_text(sends, completes).split("\r\n")
    cells = lines[row].split(", ")
    cells[16] = clock  # Clock-Time
    lines[row] = ", ".join(cells)
    return "\r\n".join(lines)


@pytest.mark.parametrize(
    "row,clock",
    [(3, "1" + "0" * 30), (2, str(2**63)), (4, "-" + "9" * 25), (3, "0x" + "f" * 40)],
    ids=["complete-1e30", "send-2^63", "send-negative-1e25", "complete-hex-160-bit"],
)
def test_a_clock_time_beyond_int64_is_a_bad_row(tmp_path: Path, row: int, clock: str) -> None:
    path = tmp_path / "clock.csv"
    path.write_text(_csv_with_clock(row, clock), encoding="utf-8", newline="")
    trace = open_trace(path, etw=EtwOptions(event_map=EVENT_MAP))
    bad = [w for w in trace.warnings if w.code == "bad-row"]
    assert len(bad) == 1 and "outside the years 1677-2262" in bad[0].detail and bad[0].record == row
    with pytest.raises(TraceFormatError, match="Clock-Time"):
        open_trace(path, etw=EtwOptions(event_map=EVENT_MAP), strict=True)


# --- ETL: a logfile-header StartTime beyond int64 (OverflowError converting event times) ------------------------


def _etl(pointer_size: int = 8) -> bytes:
    buf = io.BytesIO()
    with EtlWriter(buf, start_ns=START_NS, buffer_size=4096, cpus=1, pointer_size=pointer_size) as w:
        frame = bytes(60)
        w.add_event(cpu=0, ts_ns=START_NS + 1000, provider=PKTMON_PROVIDER, event_id=EVENT_PACKET,
                    user_data=encode_pktmon_packet(1, 0, 1, 1, 1, 3, 1, 0, 0, 0, 60, frame))  # fmt: skip
    return buf.getvalue()


def _start_time_at(pointer_size: int) -> int:
    """File offset of the logfile header's StartTime (ETW_FORMAT.md §2.4)."""
    tail = (56 + 2 * pointer_size + 172 + 7) & ~7
    return 0x48 + 0x20 + tail + 16


@pytest.mark.parametrize("pointer_size", [8, 4], ids=["64-bit", "32-bit"])
@pytest.mark.parametrize("start", [2**63 - 1, 2**62, -(2**62)], ids=["int64-max", "2^62", "-2^62"])
def test_a_start_time_beyond_int64_is_refused(tmp_path: Path, pointer_size: int, start: int) -> None:
    data = bytearray(_etl(pointer_size))
    at = _start_time_at(pointer_size)
    assert struct.unpack_from("<q", data, at)[0] == FILETIME_START  # the field is where the test thinks
    struct.pack_into("<q", data, at, start)
    path = tmp_path / "start.etl"
    path.write_bytes(bytes(data))
    with pytest.raises(TraceFormatError, match="StartTime") as info:
        open_trace(path)
    assert info.value.offset == at


# --- ETL: an event TimeStamp whose time is beyond int64 (the array conversion wrapped to a wrong ts_ns) ----------


def _etl_with_stamp(freq: int, stamp: int) -> tuple[bytes, int]:
    """Three PktMon packet events on one clock, the second one's raw TimeStamp set to ``stamp``; and the exact time
    that stamp stands for (ns, Python integers: not bounded)."""
    buf = io.BytesIO()
    with EtlWriter(buf, start_ns=START_NS, buffer_size=4096, cpus=1, perf_freq=freq) as w:
        raws = [w.raw_ts(START_NS + 7_000_000 * (i + 1)) for i in range(3)]
        for i in range(3):
            w.add_event(cpu=0, ts_ns=START_NS + 7_000_000 * (i + 1), provider=PKTMON_PROVIDER, event_id=EVENT_PACKET,
                        user_data=encode_pktmon_packet(i + 1, 0, 1, 1, 1, 3, 1, 0, 0, 0, 60, bytes(60)))  # fmt: skip
        exact = START_NS + (stamp - w.raw0) * 1_000_000_000 // freq
    data = bytearray(buf.getvalue())
    old = struct.pack("<q", raws[1])
    assert data.count(old) == 1  # the field is where the test thinks
    at = data.index(old)
    data[at : at + 8] = struct.pack("<q", stamp)
    return bytes(data), exact


@pytest.mark.parametrize(
    "freq,stamp,fits",
    [
        (10_000_000, 2**63 - 1, False),  # 29,000 years of 100 ns ticks
        (10_000_000, 2**62, False),
        (10_000_000, -(2**63), False),
        (3_000_000_000, 2**63 - 1, True),  # 97 years of 3 GHz ticks: the year 2121, kept and exact
        (3_000_000_000, -(2**63), False),  # the tick difference itself overflows
        (20_000_000_000, 2**63 - 1, True),  # the float conversion (clocks over 9 GHz)
        (20_000_000_000, -(2**63), False),
    ],
    ids=["10MHz-max", "10MHz-2^62", "10MHz-min", "3GHz-max", "3GHz-min", "20GHz-max", "20GHz-min"],
)
def test_an_event_time_beyond_int64_is_a_damaged_event(tmp_path: Path, freq: int, stamp: int, fits: bool) -> None:
    path = tmp_path / "stamp.etl"
    data, exact = _etl_with_stamp(freq, stamp)
    path.write_bytes(data)
    # 3GHz-min and 20GHz-min stand for a time an int64 holds (1926), but their tick difference from the logfile
    # header's does not: refused too (no real clock runs 292 years back from its own start)
    assert fits == (-(2**63) <= exact < 2**63) or stamp == -(2**63)
    trace = open_trace(path)
    damaged = [w for w in trace.warnings if "TimeStamp outside the years 1677-2262" in w.detail]
    ts = trace.frame["ts_ns"].to_list()
    if fits:
        assert not damaged and len(ts) == 3
        assert max(ts) == pytest.approx(exact, abs=1_000)  # a wrapped value would be off by 2^64
        return
    assert len(damaged) == 1 and f"(the first: {stamp})" in damaged[0].detail
    assert len(ts) == 2 and all(START_NS < t < START_NS + 10**9 for t in ts)
    with pytest.raises(TraceFormatError, match="TimeStamp outside"):
        open_trace(path, strict=True)


def test_the_range_check_lets_every_ordinary_time_through() -> None:
    header = container.LogfileHeader.__new__(container.LogfileHeader)
    for name, value in {"start_time_filetime": FILETIME_START, "header_raw_ts": 5_000, "clock_type": 1,
                        "perf_freq": 10_000_000, "cpu_speed_mhz": 0}.items():  # fmt: skip
        object.__setattr__(header, name, value)
    raw = __import__("numpy").array([5_000 - 10**15, 5_000, 5_000 + 10**16], dtype="int64")  # ±3 years, +30 years
    assert header.in_range(raw).all()


# --- LZXPRESS: no output bound in dissect.util (4 GiB from 16 bytes; 4 billion empty steps) ---------------------


def _match_of(length: int) -> bytes:
    """A match token of offset 1 and ``length`` (>= 22: the nibble 15, byte 255, u16 0, u32 escape)."""
    return struct.pack("<H", 7) + bytes([0x0F, 0xFF]) + struct.pack("<HI", 0, length)


BOMBS = {
    # a literal, then a 4 GiB copy of it: memory
    "literal-then-4GiB-match": struct.pack("<I", 0x40000000) + b"A" + _match_of(0xFFFFFFFF),
    # a 4 GiB copy with nothing to copy: no memory, 4 billion steps of nothing (a hang)
    "4GiB-match-of-nothing": struct.pack("<I", 0x80000000) + _match_of(0xFFFFFFFF),
    # many medium matches, each within the bound, together past it
    "matches-past-the-bound": struct.pack("<I", 0x7FFFFFFF) + b"A" + _match_of(70_000) * 31,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", list(BOMBS), ids=list(BOMBS))
def test_an_lzxpress_stream_asking_for_more_than_announced_is_stopped(name: str) -> None:
    assert container._LZX_HOOKABLE, "dissect.util's LZXPRESS decoder changed: the output bound no longer applies"
    started = time.process_time()
    assert container._decompress(BOMBS[name], 4096) is None
    assert time.process_time() - started < 5  # stopped at 4 KiB (generous: the machine may be loaded)


def test_the_bounded_decoder_decodes_what_dissect_decodes() -> None:
    # one literal, then 3-byte matches at distance 3: the match path exercised on every step
    stream = struct.pack("<I", 0x7FFFFFFF) + b"A" + b"\x00\x00" * 31
    stream += (struct.pack("<I", 0xFFFFFFFF) + b"\x10\x00" * 32) * 50
    expected = lzxpress.decompress(stream)
    assert container._decompress(stream, len(expected)) == expected
    assert container._decompress(stream, len(expected) - 1) is None  # one byte more than announced is refused
