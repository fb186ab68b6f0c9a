"""Classic libpcap files: reader and writer.

Format (tcpdump.org "pcap savefile"): a 24-byte global header — magic, version 2.4, thiszone, sigfigs,
snaplen, link-type field — then records of a 16-byte header (ts_sec, ts_usec or ts_nsec, caplen, len) and
``caplen`` bytes. The magic gives the byte order and the µs/ns resolution. The link-type field carries the
link type in bits 0-15, reserved bits 16-25 (must be zero), and in bits 26-31 whether frames end in an FCS
and its length in 16-bit words.

The reader follows the chain of record lengths in Python (the only per-record work) and does everything else
with numpy over 8 MiB chunks; packet bytes are never copied: the trace's ``data`` column points into the
chunks as read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ndis_replay.errors import LimitExceeded, TraceFormatError
from ndis_replay.importers import limits
from ndis_replay.importers.builder import UNKNOWN, PacketChunk, TraceBuilder, u32_at
from ndis_replay.importers.source import CHUNK_SIZE, PCAP_MAGICS, OpenedSource, _CompressedStreamEnded
from ndis_replay.trace import InterfaceInfo

GLOBAL_HEADER = 24
RECORD_HEADER = 16

#: Largest caplen of the link types whose records are legitimately bigger than the ``record`` limit (Wireshark's
#: per-link-type maxima), in bytes; every other link type has the ``record`` limit (importers/limits.py).
MAX_CAPLEN_BY_LINKTYPE = {
    231: 128 << 20,  # DBUS
    249: 128 << 20,  # USBPCAP
    279: 8 << 20,  # EBHSCR
}


def max_caplen(linktype: int) -> int:
    """The largest record a file of this link type may hold: the ``record`` limit, or Wireshark's larger bound
    for the link types that have one."""
    return max(limits.current().record, MAX_CAPLEN_BY_LINKTYPE.get(linktype, 0))


def read_pcap(source: OpenedSource, builder: TraceBuilder) -> dict[str, object]:
    """Read a pcap stream into ``builder``; returns the file's facts for ``TraceMeta.details``."""
    path = source.path
    header = source.read(GLOBAL_HEADER)
    if len(header) < GLOBAL_HEADER:
        raise TraceFormatError(path, f"pcap global header cut short ({len(header)} of 24 bytes)", offset=0)
    endian, tick_ns = PCAP_MAGICS[header[:4]]
    vmaj, vmin, _thiszone, _sigfigs, snaplen, ltfield = struct.unpack(endian + "HHiIII", header[4:])
    if vmaj != 2:
        raise TraceFormatError(path, f"pcap version {vmaj}.{vmin} is not supported (only 2.x exists)", offset=4)
    reserved = ltfield & 0x03FF0000
    if reserved:
        raise TraceFormatError(
            path, f"reserved bits of the pcap link-type field are not zero (0x{reserved:08x})", offset=20
        )
    linktype = ltfield & 0xFFFF
    fcs_words = (ltfield >> 28) & 0xF if ltfield & 0x04000000 else None
    if ltfield & 0xFC000000 and fcs_words is None:
        builder.warn("linktype-flags", f"link-type field 0x{ltfield:08x} has FCS bits without the F flag: ignored")
    if fcs_words:
        builder.warn("fcs", f"every frame ends in a {fcs_words * 2}-byte FCS, kept as captured data")
    builder.add_interface(
        InterfaceInfo(id=0, linktype=linktype, snaplen=snaplen, ts_resolution="1000" if tick_ns == 1000 else "1")
    )
    for chunk in _records(source, builder, endian, tick_ns, max_caplen(linktype), path):
        builder.add(chunk)
    return {"version": f"{vmaj}.{vmin}", "snaplen": snaplen, "byte_order": "little" if endian == "<" else "big"}


def _records(
    source: OpenedSource, builder: TraceBuilder, endian: str, tick_ns: int, limit: int, path: Path
) -> Iterator[PacketChunk]:
    caplen_at = struct.Struct(endian + "I").unpack_from
    base = GLOBAL_HEADER  # stream offset of buf[0]
    buf = b""
    record = 0
    eof = False
    while not eof:
        try:
            more = source.read(CHUNK_SIZE)
        except _CompressedStreamEnded as exc:
            builder.salvage(
                f"{source.compression} stream ends early or is corrupt ({exc})",
                offset=base + len(buf),
                record=record,
                code="truncated",
            )
            more = b""
        eof = not more
        buf = buf + more if buf else more
        # The per-record walk, the only per-packet Python: it follows the caplen chain and nothing else. Every
        # check (a caplen beyond the limit, the last record running past the buffer) is vectorised afterwards.
        starts: list[int] = []
        append = starts.append
        pos, last = 0, len(buf) - RECORD_HEADER
        while pos <= last:
            append(pos)
            pos += RECORD_HEADER + caplen_at(buf, pos + 8)[0]
        if not starts:
            consumed = 0
            chunk = None
        else:
            chunk, consumed, corrupt = _chunk(buf, starts, pos, record, endian, tick_ns, limit)
            if chunk is not None:
                yield chunk
                record += len(chunk)
            if corrupt is not None:
                # refused, not salvaged: the walk above stops at most one chunk past the record's header, so
                # nothing of the claimed size has been read or allocated
                raise LimitExceeded(
                    path, "pcap record caplen", corrupt, limit, "record", offset=base + consumed, record=record
                )
        base += consumed
        buf = buf[consumed:]
    if buf:
        builder.salvage(
            f"the last record is cut short ({len(buf)} bytes left of a record)",
            offset=base,
            record=record,
            code="truncated",
        )


def _chunk(
    buf: bytes, starts: list[int], end_pos: int, first_record: int, endian: str, tick_ns: int, limit: int
) -> tuple[PacketChunk | None, int, int | None]:
    """The whole records among ``starts`` as a chunk: ``(chunk, bytes consumed, bad caplen or None)``.

    ``end_pos`` is where the walk ended (past the last record's claimed end). The records before a caplen
    beyond ``limit`` are kept; so is every record that ends inside ``buf``.
    """
    pos = np.asarray(starts, dtype=np.int64)
    u32 = u32_at(buf, endian)
    caplen = u32[pos + 8].astype(np.int64)
    consumed = end_pos
    corrupt: int | None = None
    bad = np.flatnonzero(caplen > limit)
    if len(bad):
        k = int(bad[0])
        corrupt = int(caplen[k])
        pos, caplen, consumed = pos[:k], caplen[:k], int(pos[k])
    elif end_pos > len(buf):  # only the last record can overrun: every other one is followed by a header
        pos, caplen, consumed = pos[:-1], caplen[:-1], int(pos[-1])
    n = len(pos)
    if n == 0:
        return None, consumed, corrupt
    ts_ns = u32[pos].astype(np.int64) * 1_000_000_000 + u32[pos + 4].astype(np.int64) * tick_ns
    chunk = PacketChunk(
        record=np.arange(first_record, first_record + n, dtype=np.int64),
        ts_ns=ts_ns,
        interface=np.zeros(n, dtype=np.uint16),
        direction=np.full(n, UNKNOWN, dtype=np.int8),
        wire_len=u32[pos + 12],
        buf=buf,
        starts=pos + RECORD_HEADER,
        lengths=caplen,
    )
    return chunk, consumed, corrupt


# --- writer -------------------------------------------------------------------------------------------------


def write_pcap(
    path: str | Path | BinaryIO,
    packets: Iterable[tuple[int, bytes] | tuple[int, bytes, int]],
    *,
    linktype: int = 1,
    nanosecond: bool = True,
    snaplen: int = 262_144,
    big_endian: bool = False,
) -> int:
    """Write ``(ts_ns, data[, wire_len])`` packets as a pcap file; returns the number written.

    With ``nanosecond`` the ns-resolution magic is used and timestamps are exact; otherwise they are
    truncated to µs. ``data`` longer than ``snaplen`` is cut, keeping ``wire_len``.
    """
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    div = 1 if nanosecond else 1000
    rec = struct.Struct(e + "IIII")
    own = not hasattr(path, "write")
    f: BinaryIO = open(path, "wb") if own else path  # type: ignore[arg-type,assignment]  # noqa: SIM115
    count = 0
    try:
        f.write(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        for item in packets:
            ts_ns, data = item[0], item[1]
            wire = item[2] if len(item) > 2 else len(data)
            data = data[:snaplen]
            sec, frac = divmod(ts_ns, 1_000_000_000)
            f.write(rec.pack(sec, frac // div, len(data), max(wire, len(data))))
            f.write(data)
            count += 1
    finally:
        if own:
            f.close()
    return count
