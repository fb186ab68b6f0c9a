"""Properties of the fast reader, with hypothesis.

- What the project's own writers write reads back identically (pcap and pcapng, both byte orders).
- A capture cut anywhere reads as a prefix of its packets plus a warning, or is refused with TraceFormatError.
- Random byte flips give a valid trace (possibly with warnings) or TraceFormatError — no other exception.
"""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndis_replay.errors import TraceFormatError, UnsupportedLinkType
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcap import write_pcap
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng
from ndis_replay.trace import Trace

T0 = 1_600_000_000_000_000_000
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

packet = st.tuples(
    st.integers(0, 1),  # interface
    st.integers(0, 10**12),  # ns after T0
    st.binary(min_size=0, max_size=300),
    st.integers(0, 2000),  # bytes not captured
    st.sampled_from(["send", "recv", "unknown"]),
)


def _read(content: bytes, suffix: str) -> Trace:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(content)
        return open_trace(path, reader="fast")


def _pcapng(packets: list[tuple[int, int, bytes, int, str]], big_endian: bool) -> bytes:
    buf = io.BytesIO()
    rows = [(i, T0 + t, d, len(d) + extra, direction) for i, t, d, extra, direction in packets]
    write_pcapng(buf, rows, interfaces=[WriterInterface(), WriterInterface(linktype=101)], big_endian=big_endian)
    return buf.getvalue()


def _pcap(packets: list[tuple[int, int, bytes, int, str]], big_endian: bool) -> bytes:
    buf = io.BytesIO()
    write_pcap(buf, [(T0 + t, d, len(d) + extra) for _, t, d, extra, _ in packets], big_endian=big_endian)
    return buf.getvalue()


def _boundaries(content: bytes, ng: bool, big_endian: bool) -> set[int]:
    """Offsets where a block (pcapng) or record (pcap) ends."""
    e = ">" if big_endian else "<"
    pos, out = (0, set()) if ng else (24, {24})
    while pos < len(content):
        if ng:
            pos += struct.unpack_from(e + "I", content, pos + 4)[0]
        else:
            pos += 16 + struct.unpack_from(e + "I", content, pos + 8)[0]
        out.add(pos)
    return out


@SETTINGS
@given(st.lists(packet, max_size=40), st.booleans())
def test_pcapng_round_trip(packets: list[tuple[int, int, bytes, int, str]], big_endian: bool) -> None:
    trace = _read(_pcapng(packets, big_endian), ".pcapng")
    f = trace.frame
    assert f["interface"].to_list() == [p[0] for p in packets]
    assert f["ts_ns"].to_list() == [T0 + p[1] for p in packets]
    assert f["data"].to_list() == [p[2] for p in packets]
    assert f["wire_len"].to_list() == [len(p[2]) + p[3] for p in packets]
    assert f["direction"].to_list() == [p[4] for p in packets]
    assert not trace.warnings


@SETTINGS
@given(st.lists(packet, max_size=40), st.booleans())
def test_pcap_round_trip(packets: list[tuple[int, int, bytes, int, str]], big_endian: bool) -> None:
    trace = _read(_pcap(packets, big_endian), ".pcap")
    f = trace.frame
    assert f["ts_ns"].to_list() == [T0 + p[1] for p in packets]
    assert f["data"].to_list() == [p[2] for p in packets]
    assert f["wire_len"].to_list() == [len(p[2]) + p[3] for p in packets]
    assert not trace.warnings


@SETTINGS
@given(st.lists(packet, min_size=1, max_size=20), st.booleans(), st.booleans(), st.data())
def test_cut_anywhere_gives_a_prefix_or_a_clear_refusal(
    packets: list[tuple[int, int, bytes, int, str]], ng: bool, big_endian: bool, data: st.DataObject
) -> None:
    write = _pcapng if ng else _pcap
    whole = write(packets, big_endian)
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut")
    try:
        trace = _read(whole[:cut], ".cap")
    except TraceFormatError:
        return
    got = trace.frame["data"].to_list()
    assert got == [p[2] for p in packets[: len(got)]]
    if cut not in _boundaries(whole, ng, big_endian):  # a cut exactly between blocks leaves a valid file
        assert any(w.code == "truncated" and w.offset is not None for w in trace.warnings)


@SETTINGS
@given(st.lists(packet, min_size=1, max_size=20), st.booleans(), st.data())
def test_byte_flips_never_escape_as_other_exceptions(
    packets: list[tuple[int, int, bytes, int, str]], ng: bool, data: st.DataObject
) -> None:
    content = bytearray(_pcapng(packets, False) if ng else _pcap(packets, True))
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        at = data.draw(st.integers(0, len(content) - 1))
        content[at] ^= data.draw(st.integers(1, 255))
    try:
        trace = _read(bytes(content), ".cap")
    except (TraceFormatError, UnsupportedLinkType):
        return
    trace.validate()
    assert len(trace) <= len(packets) + 1 or trace.meta.format == "pcapng"
