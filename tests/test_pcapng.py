"""pcapng: sections and byte orders, interfaces, timestamp resolutions and offsets, every packet block kind,
direction flags, skipped blocks, and damage at block level."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcapng import EPB, IDB, PB, SPB, WriterInterface, write_pcapng

T0 = 1_700_000_000_123_456_789


def _blk(e: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _shb(e: str = "<", version: tuple[int, int] = (1, 0)) -> bytes:
    body = struct.pack(e + "IHHq", 0x1A2B3C4D, *version, -1)
    return _blk(e, 0x0A0D0D0A, body)


def _idb(e: str, linktype: int = 1, snaplen: int = 0, *opts: bytes) -> bytes:
    return _blk(
        e, IDB, struct.pack(e + "HHI", linktype, 0, snaplen) + b"".join(opts) + (_opt(e, 0, b"") if opts else b"")
    )


def _epb(e: str, iface: int, ticks: int, data: bytes, wire: int | None = None, flags: int | None = None) -> bytes:
    body = struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire or len(data))
    body += data + b"\x00" * (-len(data) % 4)
    if flags is not None:
        body += _opt(e, 2, struct.pack(e + "I", flags)) + _opt(e, 0, b"")
    return _blk(e, EPB, body)


def _file(tmp_path: Path, content: bytes, name: str = "t.pcapng") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_round_trip_with_interfaces_and_directions(tmp_path: Path, big_endian: bool) -> None:
    packets = [
        (0, T0, b"\x01" * 60, 60, "send"),
        (1, T0 + 7, b"\x02" * 100, 1500, "recv"),
        (0, T0 + 9, b"\x03" * 61, 61, "unknown"),
    ]
    ifaces = [WriterInterface(name="eth0", description="uplink"), WriterInterface(linktype=101, name="tun0")]
    path = tmp_path / "rt.pcapng"
    write_pcapng(path, packets, interfaces=ifaces, big_endian=big_endian)
    trace = open_trace(path)
    f = trace.frame
    assert f["interface"].to_list() == [0, 1, 0]
    assert f["linktype"].to_list() == [1, 101, 1]
    assert f["ts_ns"].to_list() == [T0, T0 + 7, T0 + 9]
    assert f["direction"].to_list() == ["send", "recv", "unknown"]
    assert f["wire_len"].to_list() == [60, 1500, 61]
    assert f["data"].to_list() == [p[2] for p in packets]
    assert [(i.name, i.description) for i in trace.meta.interfaces] == [("eth0", "uplink"), ("tun0", "")]
    assert trace.frame["batch"].to_list() == [0, None, 1]  # the received packet is not replayed


@pytest.mark.parametrize(
    "tsresol,ticks,expected",
    [
        (6, 1_700_000_000_123_456, 1_700_000_000_123_456_000),
        (9, 1_700_000_000_123_456_789, 1_700_000_000_123_456_789),
        (3, 1_700_000_000_123, 1_700_000_000_123_000_000),
        (0x80 | 10, (1_700_000_000 << 10) | 512, 1_700_000_000_500_000_000),  # 2^-10 s ticks
        (0x80 | 8, (1_700_000_000 << 8) | 1, 1_700_000_000_003_906_250),  # 1/256 s = 3,906,250 ns
        (0x80 | 40, (10_000_000 << 40) | (1 << 39), 10_000_000_500_000_000),  # beyond the int64 fast path
        (12, 10_000_000 * 10**12 + 123_456_789_123, 10_000_000_123_456_789),  # ps → ns, truncated
    ],
    ids=["us", "ns", "ms", "pow2-10", "pow2-8", "pow2-40", "ps"],
)
def test_timestamp_resolutions(tmp_path: Path, tsresol: int, ticks: int, expected: int) -> None:
    e = "<"
    content = _shb(e) + _idb(e, 1, 0, _opt(e, 9, bytes([tsresol]))) + _epb(e, 0, ticks, bytes(60)) * 3
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["ts_ns"].to_list() == [expected] * 3


@pytest.mark.parametrize("flags", [None, 1], ids=["plain-epb", "epb-with-options"])
def test_timestamp_beyond_int64_ns_is_null_with_a_warning(tmp_path: Path, flags: int | None) -> None:
    e = "<"
    huge = 18_446_744_073_204 * 10**6  # µs ticks of 18,446,744,073,204 s, as in a real corpus file
    content = _shb(e) + _idb(e) + _epb(e, 0, 1_700_000_000 * 10**6, bytes(60), flags=flags)
    content += _epb(e, 0, huge, bytes(60), flags=flags)
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["ts_ns"].to_list() == [1_700_000_000 * 10**9, None]
    (warning,) = trace.warnings
    assert (warning.code, warning.record) == ("timestamp-out-of-range", 1)


def test_tsoffset_adds_seconds(tmp_path: Path) -> None:
    e = ">"
    content = _shb(e) + _idb(e, 1, 0, _opt(e, 14, struct.pack(e + "q", 1_000))) + _epb(e, 0, 5_000_000, bytes(60))
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["ts_ns"].to_list() == [1_000 * 10**9 + 5_000_000 * 1000]


def test_sections_with_different_byte_orders_number_interfaces_across_sections(tmp_path: Path) -> None:
    le, be = io.BytesIO(), io.BytesIO()
    write_pcapng(le, [(0, T0, b"a" * 60, 60, "send")], interfaces=[WriterInterface(name="a")])
    write_pcapng(
        be,
        [(1, T0 + 1, b"b" * 60, 60, "recv"), (0, T0 + 2, b"c" * 60, 60, "send")],
        interfaces=[WriterInterface(name="b0"), WriterInterface(linktype=113, name="b1")],
        big_endian=True,
    )
    trace = open_trace(_file(tmp_path, le.getvalue() + be.getvalue()))
    assert trace.frame["interface"].to_list() == [0, 2, 1]
    assert [(i.id, i.name, i.section, i.linktype) for i in trace.meta.interfaces] == [
        (0, "a", 0, 1),
        (1, "b0", 1, 1),
        (2, "b1", 1, 113),
    ]
    assert trace.meta.details["byte_orders"] == ["big", "little"]


def test_simple_packet_block_has_no_timestamp(tmp_path: Path) -> None:
    e = "<"
    spb = _blk(e, SPB, struct.pack(e + "I", 100) + bytes(100))
    content = _shb(e) + _idb(e, 1, 64) + _epb(e, 0, 1, bytes(60)) + spb
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["ts_ns"].to_list() == [1000, None]
    assert trace.frame["cap_len"].to_list() == [60, 64]  # SPB: captured = min(original, snaplen)
    assert trace.frame["wire_len"].to_list() == [60, 100]
    assert [w.code for w in trace.warnings] == ["no-timestamp"]
    assert trace.frame["batch"].to_list() == [0, 1]


def test_obsolete_packet_block_with_flags(tmp_path: Path) -> None:
    e = "<"
    data = bytes(range(60))
    body = struct.pack(e + "HHIIII", 0, 0, 0, 2_000, len(data), 80) + data + _opt(e, 2, struct.pack(e + "I", 2))
    content = _shb(e) + _idb(e) + _blk(e, PB, body + _opt(e, 0, b""))
    trace = open_trace(_file(tmp_path, content))
    row = trace.frame.row(0, named=True)
    assert (row["ts_ns"], row["wire_len"], row["direction"], row["data"]) == (2_000_000, 80, "send", data)


def test_other_blocks_are_skipped(tmp_path: Path) -> None:
    e = "<"
    isb = _blk(e, 5, struct.pack(e + "III", 0, 0, 0))
    nrb = _blk(e, 4, struct.pack(e + "HH", 0, 0))
    custom = _blk(e, 0x00000BAD, struct.pack(e + "I", 32473) + b"whatever")
    journal = _blk(e, 9, b"__REALTIME_TIMESTAMP=1\n")
    content = _shb(e) + nrb + _idb(e) + custom + _epb(e, 0, 1, bytes(60)) + isb + journal + _epb(e, 0, 2, bytes(61))
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["cap_len"].to_list() == [60, 61]
    assert not trace.warnings


def test_packet_for_an_undeclared_interface_is_skipped_and_counted(tmp_path: Path) -> None:
    e = "<"
    content = _shb(e) + _idb(e) + _epb(e, 0, 1, bytes(60)) + _epb(e, 7, 2, bytes(60)) + _epb(e, 0, 3, bytes(62))
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["index"].to_list() == [0, 2]  # the skipped block keeps its place in the numbering
    (w,) = trace.warnings
    assert w.record == 1 and "interface 7" in w.detail
    with pytest.raises(TraceFormatError, match="interface 7"):
        open_trace(_file(tmp_path, content), strict=True)


@pytest.mark.parametrize(
    "damage,code",
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:-4] + struct.pack("<I", 999), "damaged"),  # trailer ≠ header length
        (lambda b: b[:-52] + struct.pack("<II", EPB, 8) + b[-44:], "damaged"),  # length below the minimum
    ],
    ids=["cut", "trailer-mismatch", "too-short"],
)
def test_damaged_last_block_keeps_the_whole_ones(tmp_path: Path, damage: object, code: str) -> None:
    e = "<"
    good = _shb(e) + _idb(e) + _epb(e, 0, 1, bytes(60)) + _epb(e, 0, 2, bytes(61))
    content = damage(good + _epb(e, 0, 3, bytes(20)))  # type: ignore[operator]
    trace = open_trace(_file(tmp_path, content))
    assert trace.frame["cap_len"].to_list() == [60, 61]
    assert [w.code for w in trace.warnings] == [code]
    assert trace.warnings[0].offset == len(good)
    with pytest.raises(TraceFormatError):
        open_trace(_file(tmp_path, content), strict=True)


@pytest.mark.parametrize("version", [(0, 1), (1, 1), (2, 0)], ids=["0.1", "1.1", "2.0"])
def test_unknown_version(tmp_path: Path, version: tuple[int, int]) -> None:
    e = "<"
    with pytest.raises(TraceFormatError, match=f"version {version[0]}.{version[1]}"):
        open_trace(_file(tmp_path, _shb(e, version) + _idb(e) + _epb(e, 0, 1, bytes(60))))
    # a bad later section ends the import there, keeping the first section's packets
    content = _shb(e) + _idb(e) + _epb(e, 0, 1, bytes(60)) + _shb(e, version) + _idb(e) + _epb(e, 0, 2, bytes(60))
    trace = open_trace(_file(tmp_path, content))
    assert len(trace) == 1 and trace.warnings[0].code == "damaged"


@pytest.mark.parametrize("chunk", [16, 50, 1000], ids=lambda c: f"chunk{c}")
def test_blocks_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    packets = [
        (i % 2, T0 + i, bytes([i % 256]) * (60 + i % 90), 1514, ("send", "recv", "unknown")[i % 3]) for i in range(300)
    ]
    path = tmp_path / "m.pcapng"
    write_pcapng(path, packets, interfaces=[WriterInterface(), WriterInterface(linktype=113)])
    whole = open_trace(path)
    monkeypatch.setattr("ndis_replay.importers.pcapng.CHUNK_SIZE", chunk)
    assert open_trace(path).frame.equals(whole.frame)
    assert whole.frame["data"].to_list() == [p[2] for p in packets]


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_comments_come_through(tmp_path: Path, big_endian: bool) -> None:
    # section, interface and packet opt_comments (what etl2pcapng and Wireshark users write) reach the metadata
    path = tmp_path / "c.pcapng"
    packets = [(0, 1_000 * i, bytes(60), 60, "send") for i in range(4)]
    iface = WriterInterface(name="eth0", comment="the uplink")
    write_pcapng(
        path, packets, interfaces=[iface], big_endian=big_endian, comment="lab run 7", packet_comments={2: "é ✓"}
    )
    details = open_trace(path).meta.details
    assert details["comments"] == [
        {"where": "section", "section": 0, "text": "lab run 7"},
        {"where": "interface", "interface": 0, "text": "the uplink"},
        {"where": "packet", "packet": 2, "text": "é ✓"},
    ]
    assert details["comment_count"] == 3


def test_comments_are_bounded(tmp_path: Path) -> None:
    from ndis_replay.importers.pcapng import MAX_COMMENT_CHARS, MAX_COMMENTS

    path = tmp_path / "many.pcapng"
    count = MAX_COMMENTS + 5
    packets = [(0, i, bytes(60), 60, "send") for i in range(count)]
    write_pcapng(path, packets, packet_comments=dict.fromkeys(range(count), "x" * (MAX_COMMENT_CHARS + 10)))
    details = open_trace(path).meta.details
    assert len(details["comments"]) == MAX_COMMENTS and details["comment_count"] == count
    assert len(details["comments"][0]["text"]) == MAX_COMMENT_CHARS + 1  # cut, and marked with "…"
