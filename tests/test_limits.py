"""Length fields are bounded before allocation (importers/limits.py): a field claiming gigabytes is refused.

Each crafted file claims about 4 GB in one length field and is read by the real command line (``ndis-replay
inspect``) in a subprocess whose address space is capped at 1.5 GiB (``RLIMIT_AS``): honouring the claim would
fail with a MemoryError or a crash, so the test proves the refusal comes first. The refusal must be exit 3 and
one line naming the field and the limit. Then ``NDIS_REPLAY_LIMITS`` is shown to move the bound both ways.
"""

from __future__ import annotations

import codecs
import io
import os
import resource
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ndis_replay.errors import ConfigError
from ndis_replay.importers import limits
from ndis_replay.importers.etw.driver import driver_csv_text
from ndis_replay.importers.etw.pktmon import EVENT_PACKET, PKTMON_PROVIDER, encode_pktmon_packet
from ndis_replay.importers.etw.writer import EtlWriter
from ndis_replay.importers.pcap import write_pcap
from ndis_replay.importers.pcapng import write_pcapng
from tests.conftest import REPO

EVENT_MAP = REPO / "sample_traces" / "driver_sends.toml"
FOUR_GB = 0xFFFFFF00
#: The address-space cap of the subprocess: the CLI needs ~1.2 GiB of address space to start (polars, numpy,
#: pyarrow reserve it), so 1.5 GiB leaves no room for anything near a 4 GB allocation.
ADDRESS_SPACE = 3 << 29

START_NS = 1_700_000_000_000_000_000
FRAME = bytes.fromhex("ffffffffffff020000000001080045000020000100004011f9c60a0000010a000002") + bytes(32)


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def inspect(path: Path, *extra: str, limits_env: str | None = None) -> subprocess.CompletedProcess[str]:
    """``ndis-replay inspect PATH`` in a subprocess with the address space capped."""
    env = {k: v for k, v in os.environ.items() if k != limits.ENV_VAR}
    if limits_env is not None:
        env[limits.ENV_VAR] = limits_env
    return subprocess.run(
        [sys.executable, "-m", "ndis_replay", "inspect", str(path), *extra],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_cap_address_space,
        timeout=120,
        check=False,
    )


def assert_refused(done: subprocess.CompletedProcess[str], field: str, limit: str) -> None:
    """Exit 3 and a single stderr line naming the field and the limit (no traceback, no MemoryError), and what the
    user can do: raise the limit, or nothing when the claim is beyond any setting (then the field is damaged)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1, done.stderr
    assert field in lines[0] and f"over the {limit} limit" in lines[0], lines[0]
    assert f"{limits.ENV_VAR}={limit}=SIZE" in lines[0]
    claimed = int(lines[0].split(" claims ")[1].split()[0].replace(",", ""))
    if claimed > limits.MAX_SETTABLE:
        assert lines[0].endswith("can allow (1 GiB): damaged"), lines[0]
    else:
        assert "raise the limit" in lines[0], lines[0]


# --- crafted files ------------------------------------------------------------------------------------------


def _pcap(*records: bytes, linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype) + b"".join(records)


def _record(data: bytes, caplen: int | None = None) -> bytes:
    return struct.pack("<IIII", 1, 0, len(data) if caplen is None else caplen, len(data)) + data


def _block(btype: int, body: bytes, total: int | None = None) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n if total is None else total) + body + struct.pack("<I", n)


SHB = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB = _block(1, struct.pack("<HHI", 1, 0, 0))


def _epb(data: bytes, caplen: int | None = None) -> bytes:
    return _block(6, struct.pack("<IIIII", 0, 0, 0, len(data) if caplen is None else caplen, len(data)) + data)


def _etl(buffer_size: int = 4096, compress: bool = False, events: int = 4) -> tuple[bytes, EtlWriter]:
    buf = io.BytesIO()
    with EtlWriter(buf, start_ns=START_NS, buffer_size=buffer_size, compress=compress, cpus=1) as w:
        for i in range(events):
            payload = encode_pktmon_packet(1, i, 1, 1, 1, 3, 1, 0, 0, 0, len(FRAME), FRAME)
            w.add_event(cpu=0, ts_ns=START_NS + 1000 * (i + 1), provider=PKTMON_PROVIDER, event_id=EVENT_PACKET,
                        user_data=payload)  # fmt: skip
        w.flush(0)
    return buf.getvalue(), w


def _etl_with(field_offset: int, value: int, *, buffer: int, compress: bool = False) -> bytes:
    data, w = _etl(compress=compress)
    out = bytearray(data)
    struct.pack_into("<I", out, w.buffers[buffer][0] + field_offset, value)
    return bytes(out)


def _lzx_bomb() -> bytes:
    """A compressed ETL whose data buffer holds a literal and one match of length 0xFFFFFFFF (4 GiB of output
    from 16 bytes), its Offset announcing 4 KiB."""
    data, w = _etl(compress=True, events=40)  # two data buffers: the first becomes the bomb
    assert len(w.buffers) == 3
    start, size, _cpu = w.buffers[1]
    stream = (
        struct.pack("<I", 0x40000000)
        + b"A"
        + struct.pack("<H", 7)
        + bytes([0x0F, 0xFF])
        + struct.pack("<HI", 0, FOUR_GB | 0xFF)
    )
    body = stream + bytes(-len(stream) % 8)
    header = bytearray(data[start : start + 0x48])
    struct.pack_into("<I", header, 0, 0x48 + len(body))  # BufferSize: the compressed bytes
    struct.pack_into("<I", header, 0x30, 0x48 + 4096)  # Offset: the size it claims to decompress to
    return data[:start] + bytes(header) + body + data[start + size :]


def _csv_header() -> str:
    return driver_csv_text([], []).splitlines()[0] + "\r\n"


def _sparse_csv(path: Path) -> None:
    """A CSV whose second line claims ~4 GB: the header, then a sparse run of zero bytes with no line end."""
    with path.open("wb") as f:
        f.write(_csv_header().encode())
        f.truncate(FOUR_GB)


CLAIMS: dict[str, tuple[Callable[[Path], None], str, str, tuple[str, ...]]] = {
    # name: (write the file, field named in the message, limit, extra CLI arguments)
    "pcap-record-caplen": (
        lambda p: p.write_bytes(_pcap(_record(FRAME), _record(FRAME, caplen=FOUR_GB))),
        "pcap record caplen",
        "record",
        (),
    ),
    "pcap-usbpcap-caplen": (  # a link type with a larger standard maximum (128 MiB) is bounded too
        lambda p: p.write_bytes(_pcap(_record(FRAME, caplen=FOUR_GB), linktype=249)),
        "pcap record caplen",
        "record",
        (),
    ),
    "pcapng-shb-length": (
        lambda p: p.write_bytes(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1), total=FOUR_GB)),
        "Section Header block total length",
        "block",
        (),
    ),
    "pcapng-block-length": (
        lambda p: p.write_bytes(SHB + IDB + _epb(FRAME) + _block(6, bytes(20), total=FOUR_GB)),
        "Enhanced Packet block total length",
        "block",
        (),
    ),
    "pcapng-unknown-block-length": (
        lambda p: p.write_bytes(SHB + _block(0x0BAD, bytes(8), total=FOUR_GB)),
        "type 0x00000bad block total length",
        "block",
        (),
    ),
    "pcapng-epb-caplen": (
        lambda p: p.write_bytes(SHB + IDB + _epb(FRAME, caplen=FOUR_GB)),
        "Enhanced Packet Block caplen",
        "record",
        (),
    ),
    "pcapng-pb-caplen": (
        lambda p: p.write_bytes(SHB + IDB + _block(2, struct.pack("<HHIIII", 0, 0, 0, 0, FOUR_GB, 60) + FRAME)),
        "pcapng Packet Block caplen",
        "record",
        (),
    ),
    "pcapng-spb-length": (
        lambda p: p.write_bytes(SHB + IDB + _block(3, struct.pack("<I", FOUR_GB) + FRAME)),
        "Simple Packet Block original length",
        "record",
        (),
    ),
    "etl-first-buffer-size": (  # below any setting's reach: "raise the limit"
        lambda p: p.write_bytes(_etl_with(0, (1 << 30) - 8, buffer=0)),
        "ETL buffer BufferSize",
        "buffer",
        (),
    ),
    "etl-first-buffer-size-4gb": (  # still recognised as ETL (it was "not a pcap, pcapng or ETW capture")
        lambda p: p.write_bytes(_etl_with(0, FOUR_GB, buffer=0)),
        "ETL buffer BufferSize",
        "buffer",
        (),
    ),
    "etl-buffer-size": (
        lambda p: p.write_bytes(_etl_with(0, FOUR_GB, buffer=1)),
        "ETL buffer BufferSize",
        "buffer",
        (),
    ),
    "etl-compressed-offset": (
        lambda p: p.write_bytes(_etl_with(0x30, FOUR_GB, buffer=1, compress=True)),
        "compressed ETL buffer Offset",
        "buffer",
        (),
    ),
    "csv-line": (_sparse_csv, "tracerpt CSV line 2", "line", ("--event-map", str(EVENT_MAP))),
    "csv-field-across-lines": (
        lambda p: p.write_text(_csv_header() + 'X, Y, "' + "a\r\n" * 600_000 + '"\r\n'),
        "tracerpt CSV field (quoted across lines)",
        "line",
        ("--event-map", str(EVENT_MAP)),
    ),
}


@pytest.mark.parametrize("name", list(CLAIMS), ids=list(CLAIMS))
def test_a_length_claiming_gigabytes_is_refused_before_allocation(tmp_path: Path, name: str) -> None:
    write, field, limit, extra = CLAIMS[name]
    path = tmp_path / name
    write(path)
    assert_refused(inspect(path, *extra), field, limit)


def test_an_lzxpress_bomb_is_stopped_at_the_announced_size(tmp_path: Path) -> None:
    # 16 compressed bytes asking for 4 GiB: decompression stops at the buffer's Offset (4 KiB), the buffer is
    # reported damaged and skipped (salvaged), or refused with --strict; never decompressed in full
    path = tmp_path / "bomb.etl"
    path.write_bytes(_lzx_bomb())
    done = inspect(path, "--json")
    assert done.returncode == 0, done.stderr
    assert "does not decompress" in done.stdout
    strict = inspect(path, "--strict")
    assert strict.returncode == 3 and len(strict.stderr.strip().splitlines()) == 1, strict.stderr
    assert "does not decompress" in strict.stderr


def test_the_section_length_of_a_pcapng_is_never_used_to_allocate(tmp_path: Path) -> None:
    # SHB Section Length is a 64-bit hint (-1: unknown); a huge one is ignored, not a limit breach
    path = tmp_path / "section.pcapng"
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, 1 << 62))
    path.write_bytes(shb + IDB + _epb(FRAME))
    done = inspect(path)
    assert done.returncode == 0, done.stderr


# --- the limits move the bound --------------------------------------------------------------------------------


def _big_pcap(p: Path) -> None:
    write_pcap(p, [(START_NS, FRAME + bytes(300 << 10))], snaplen=1 << 20)  # one 300 KiB record


def _big_pcapng(p: Path) -> None:
    write_pcapng(p, [(0, START_NS, FRAME + bytes(300 << 10), 0, "send")])


def _etl_64k(p: Path) -> None:
    p.write_bytes(_etl(buffer_size=65536)[0])


def _long_csv_line(p: Path) -> None:
    text = driver_csv_text([(START_NS, 0xFFFF0000, 60, 0)], [(START_NS + 500, 0xFFFF0000)])
    lines = text.split("\r\n")
    lines[2] += ', "' + "x" * (2 << 20) + '"'  # the send row gets a 2 Mi-character extra field
    p.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode())


ADJUSTED = {
    # name: (write, extra CLI arguments, NDIS_REPLAY_LIMITS that refuses it, one that reads it, field, limit)
    "pcap-record-raised": (_big_pcap, (), None, "record=1MiB", "pcap record caplen", "record"),
    "pcapng-record-raised": (_big_pcapng, (), None, "record=512KiB", "Enhanced Packet Block caplen", "record"),
    "pcapng-block-lowered": (_big_pcapng, (), "record=1MiB,block=256KiB", "record=1MiB", "block total", "block"),
    "etl-buffer-lowered": (_etl_64k, (), "buffer=32KiB", None, "ETL buffer BufferSize", "buffer"),
    "csv-line-raised": (
        _long_csv_line,
        ("--event-map", str(EVENT_MAP)),
        None,
        "line=4MiB",
        "tracerpt CSV line 3",
        "line",
    ),
}


@pytest.mark.parametrize("name", list(ADJUSTED), ids=list(ADJUSTED))
def test_the_limits_are_adjustable(tmp_path: Path, name: str) -> None:
    write, extra, refusing, reading, field, limit = ADJUSTED[name]
    path = tmp_path / name
    write(path)
    assert_refused(inspect(path, *extra, limits_env=refusing), field, limit)
    done = inspect(path, *extra, limits_env=reading)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "value,complaint",
    [
        ("record=lots", "'lots' is not a size"),
        ("records=1MiB", "known NAME"),
        ("record", "known NAME"),
        ("block=0", "between 1 byte and 1 GiB"),
        ("buffer=2GiB", "between 1 byte and 1 GiB"),
    ],
    ids=["not-a-size", "unknown-name", "no-value", "zero", "over-1GiB"],
)
def test_a_bad_limits_value_is_a_usage_error(tmp_path: Path, value: str, complaint: str) -> None:
    path = tmp_path / "ok.pcap"
    write_pcap(path, [(START_NS, FRAME)])
    done = inspect(path, limits_env=value)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert limits.ENV_VAR in lines[0] and complaint in lines[0]


# --- the parser, in process ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("262144", 262144), ("1KiB", 1024), ("64MiB", 64 << 20), ("1 GiB", 1 << 30), ("512kib", 512 << 10), ("7B", 7)],
    ids=["bytes", "KiB", "MiB", "GiB-spaced", "lowercase", "B"],
)
def test_parse_size(text: str, expected: int) -> None:
    assert limits.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "1.5MiB", "-1", "1MB", "1 M i B"], ids=str)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        limits.parse_size(text)


def test_parse_limits_changes_only_what_it_names() -> None:
    got = limits.parse_limits(" record=1MiB , line=2MiB,")
    assert got == limits.Limits(record=1 << 20, block=64 << 20, buffer=64 << 20, line=2 << 20)
    assert limits.parse_limits("") == limits.DEFAULTS
    with pytest.raises(ConfigError):
        limits.parse_limits("block=64MiB,nope=1")


def test_current_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.ENV_VAR, "record=1MiB")
    limits.reset()
    try:
        assert limits.current().record == 1 << 20
        monkeypatch.setenv(limits.ENV_VAR, "record=2MiB")
        assert limits.current().record == 1 << 20  # read once
    finally:
        limits.reset()
    monkeypatch.delenv(limits.ENV_VAR)
    assert limits.current() == limits.DEFAULTS


@pytest.mark.parametrize(
    "n,text", [(64 << 20, "64 MiB"), (1 << 30, "1 GiB"), (262144, "256 KiB"), (1000, "1,000 bytes")], ids=str
)
def test_format_size(n: int, text: str) -> None:
    assert limits.format_size(n) == text
