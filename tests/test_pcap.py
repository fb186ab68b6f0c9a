"""Classic pcap: byte orders, resolutions, the link-type field, truncation, damage, compression, chunking."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
from pathlib import Path

import pytest
import zstandard

from ndis_replay.errors import LimitExceeded, TraceFormatError
from ndis_replay.importers import detect_format, open_trace
from ndis_replay.importers.pcap import write_pcap
from ndis_replay.importers.source import UnknownFormat

T0 = 1_700_000_000_123_456_789  # ns since the epoch

PACKETS = [
    (T0, bytes(range(60))),
    (T0 + 1_500, b"\xff" * 1514),
    (T0 + 2_000_000_000, b"\x00" * 14, 14),
    (T0 + 2_000_000_001, bytes(100), 1514),  # snaplen-truncated: 100 of 1514 captured
]


def _expected_ts(ts: int, nanosecond: bool) -> int:
    return ts if nanosecond else ts // 1000 * 1000


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_round_trip(tmp_path: Path, big_endian: bool, nanosecond: bool) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, PACKETS, nanosecond=nanosecond, big_endian=big_endian, linktype=1)
    trace = open_trace(path)
    f = trace.frame
    assert len(trace) == len(PACKETS)
    assert f["ts_ns"].to_list() == [_expected_ts(p[0], nanosecond) for p in PACKETS]
    assert f["data"].to_list() == [p[1] for p in PACKETS]
    assert f["cap_len"].to_list() == [len(p[1]) for p in PACKETS]
    assert f["wire_len"].to_list() == [p[2] if len(p) > 2 else len(p[1]) for p in PACKETS]  # type: ignore[misc]
    assert f["direction"].to_list() == ["unknown"] * len(PACKETS)
    assert f["index"].to_list() == [0, 1, 2, 3]
    assert trace.meta.format == "pcap"
    assert trace.meta.details["byte_order"] == ("big" if big_endian else "little")
    assert trace.meta.interfaces[0].ts_resolution == ("1" if nanosecond else "1000")
    assert not trace.warnings


def _raw_pcap(ltfield: int, records: list[bytes], version: tuple[int, int] = (2, 4), snaplen: int = 65535) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, *version, 0, 0, snaplen, ltfield)
    for i, data in enumerate(records):
        out += struct.pack("<IIII", 1_000 + i, 0, len(data), len(data)) + data
    return out


def test_fcs_flag_keeps_link_type_and_warns(tmp_path: Path) -> None:
    path = tmp_path / "fcs.pcap"
    path.write_bytes(_raw_pcap(0x04000000 | (2 << 28) | 1, [bytes(64)]))  # F flag, FCS of 2 words = 4 bytes
    trace = open_trace(path)
    assert trace.frame["linktype"].to_list() == [1]
    assert [w.code for w in trace.warnings] == ["fcs"]
    assert "4-byte FCS" in trace.warnings[0].detail


def test_reserved_link_type_bits_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "reserved.pcap"
    path.write_bytes(_raw_pcap(0x00300001, [bytes(64)]))
    with pytest.raises(TraceFormatError, match="reserved bits") as info:
        open_trace(path)
    assert info.value.offset == 20


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.pcap"
    path.write_bytes(_raw_pcap(1, [bytes(64)], version=(1, 4)))
    with pytest.raises(TraceFormatError, match=r"version 1\.4"):
        open_trace(path)


def test_cut_global_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(_raw_pcap(1, [])[:10])
    with pytest.raises(TraceFormatError, match="global header cut short"):
        open_trace(path)


def test_truncated_last_record_is_salvaged_with_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "trunc.pcap"
    whole = _raw_pcap(1, [bytes(60), bytes(70)])
    path.write_bytes(whole[:-30])
    trace = open_trace(path)
    assert len(trace) == 1
    (w,) = trace.warnings
    assert (w.code, w.offset, w.record) == ("truncated", 24 + 16 + 60, 1)
    with pytest.raises(TraceFormatError) as info:
        open_trace(path, strict=True)
    assert (info.value.offset, info.value.record) == (100, 1)


def test_absurd_caplen_is_refused_naming_the_limit(tmp_path: Path) -> None:
    # a caplen over the record limit is refused, not salvaged (importers/limits.py; tests/test_limits.py)
    path = tmp_path / "huge.pcap"
    data = _raw_pcap(1, [bytes(60)]) + struct.pack("<IIII", 5, 0, 0x7FFFFFFF, 60) + bytes(60)
    path.write_bytes(data)
    with pytest.raises(LimitExceeded) as info:
        open_trace(path)
    assert (info.value.offset, info.value.record, info.value.value) == (100, 1, 0x7FFFFFFF)
    assert info.value.limit_name == "record"


@pytest.mark.parametrize(
    "compress,name",
    [
        (gzip.compress, "gzip"),
        (lambda b: zstandard.ZstdCompressor().compress(b), "zstd"),
        (lzma.compress, "xz"),
        (bz2.compress, "bzip2"),
    ],
    ids=["gzip", "zstd", "xz", "bzip2"],
)
def test_compressed_captures_read_transparently(tmp_path: Path, compress: object, name: str) -> None:
    plain = tmp_path / "p.pcap"
    write_pcap(plain, PACKETS)
    packed = tmp_path / "p.pcap.whatever"
    packed.write_bytes(compress(plain.read_bytes()))  # type: ignore[operator]
    a, b = open_trace(plain), open_trace(packed)
    assert b.meta.compression == name
    assert detect_format(packed) == ("pcap", name)
    assert a.frame.equals(b.frame)
    assert b.meta.sha256 != a.meta.sha256  # the hash is of the file as given


def test_cut_gzip_stream_keeps_whole_records(tmp_path: Path) -> None:
    plain = tmp_path / "p.pcap"
    write_pcap(plain, [(T0 + i, bytes([i % 256]) * 200) for i in range(200)])
    packed = tmp_path / "p.pcap.gz"
    blob = gzip.compress(plain.read_bytes())
    packed.write_bytes(blob[: len(blob) // 2])
    trace = open_trace(packed)
    assert 0 < len(trace) < 200
    assert any(w.code == "truncated" for w in trace.warnings)
    assert trace.frame["data"].to_list() == [bytes([i % 256]) * 200 for i in range(len(trace))]


def test_format_comes_from_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "really-a-pcap.pcapng"
    write_pcap(path, PACKETS)
    assert open_trace(path).meta.format == "pcap"


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"hello, this is text", "not a pcap, pcapng or ETW"),
        (b"snoop\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x04", "Sun snoop"),
    ],
    ids=["empty", "text", "snoop"],
)
def test_not_a_capture(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match=match):
        open_trace(path, reader="fast")


def test_foreign_format_is_unknownformat_for_auto_fallback(tmp_path: Path) -> None:
    path = tmp_path / "x.cap"
    path.write_bytes(b"GMBU" + bytes(60))
    with pytest.raises(UnknownFormat) as info:
        open_trace(path, reader="fast")
    assert info.value.foreign == "Microsoft Network Monitor"


@pytest.mark.parametrize("chunk", [17, 100, 4096], ids=lambda c: f"chunk{c}")
def test_records_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    path = tmp_path / "many.pcap"
    packets = [(T0 + i * 1000, bytes([i % 251]) * (60 + i % 300)) for i in range(500)]
    write_pcap(path, packets)
    whole = open_trace(path)
    monkeypatch.setattr("ndis_replay.importers.pcap.CHUNK_SIZE", chunk)
    chunked = open_trace(path)
    assert chunked.frame.equals(whole.frame)
    assert chunked.frame["data"].to_list() == [p[1] for p in packets]


def test_no_data_keeps_lengths_and_header_lengths(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    write_pcap(path, PACKETS)
    full = open_trace(path)
    lean = open_trace(path, keep_data=False)
    assert "data" not in lean.frame.columns and not lean.meta.has_data
    assert lean.frame.equals(full.frame.drop("data"))
