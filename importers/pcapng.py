"""pcapng files (IETF draft-ietf-opsawg-pcapng): reader and writer.

A file is a sequence of blocks ``type u32, total_length u32, body, total_length u32``, grouped into sections
that each start with a Section Header Block (SHB) carrying the section's byte order. Interfaces are numbered
per section (Interface Description Blocks, IDB); the trace numbers them across sections. Packets come in
Enhanced (EPB), Simple (SPB: no timestamp, interface 0) and obsolete Packet Blocks (PB). ``epb_flags`` bits
0-1 give the direction. Every other block type is skipped.

Damage is handled at two levels: a block whose framing is broken (bad length, trailing length mismatch, past
the end) ends the import there — whole records before it are kept, with a warning at that offset; a block
that frames correctly but whose content is wrong (unknown interface, caplen beyond the block) is skipped
with a warning. ``strict`` turns either into :class:`TraceFormatError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ndis_replay.errors import LimitExceeded, TraceFormatError
from ndis_replay.importers import limits
from ndis_replay.importers.builder import RECV, SEND, UNKNOWN, PacketChunk, TraceBuilder, u32_at
from ndis_replay.importers.pcap import max_caplen
from ndis_replay.importers.source import CHUNK_SIZE, OpenedSource, _CompressedStreamEnded
from ndis_replay.trace import InterfaceInfo

SHB, IDB, PB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
#: Option codes
OPT_END, OPT_COMMENT = 0, 1
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_FCSLEN, IF_TSOFFSET = 2, 3, 9, 13, 14
EPB_FLAGS = 2
SHB_HARDWARE, SHB_OS, SHB_USERAPPL = 2, 3, 4
#: Comments kept in ``TraceMeta.details["comments"]`` (the rest are counted): a capture with a comment on every
#: packet must not grow the metadata without bound.
MAX_COMMENTS = 1000
#: Characters kept of one comment (or section description); longer ones are cut and marked with "…".
MAX_COMMENT_CHARS = 2000

#: Block names for messages.
_BLOCK_NAMES = {
    SHB: "Section Header",
    IDB: "Interface Description",
    PB: "Packet",
    SPB: "Simple Packet",
    NRB: "Name Resolution",
    ISB: "Interface Statistics",
    EPB: "Enhanced Packet",
}

_DIRECTION_OF_FLAGS = np.array([UNKNOWN, RECV, SEND, UNKNOWN], dtype=np.int8)


class _OptionError(Exception):
    pass


@dataclass
class _Iface:
    global_id: int
    linktype: int
    snaplen: int
    ts_num: int = 1_000  # ns per tick = ts_num / ts_den
    ts_den: int = 1
    pow2: int | None = None  # when the resolution is 2^-pow2 s
    tsoffset_s: int = 0


@dataclass
class _Section:
    index: int
    endian: str
    offset: int
    ifaces: list[_Iface] = field(default_factory=list)


def parse_options(body: bytes, start: int, endian: str) -> list[tuple[int, bytes]]:
    """The ``(code, value)`` options from ``body[start:]`` up to opt_endofopt; raises on an overrun."""
    out: list[tuple[int, bytes]] = []
    pos, end = start, len(body)
    hdr = struct.Struct(endian + "HH")
    while pos + 4 <= end:
        code, length = hdr.unpack_from(body, pos)
        if code == OPT_END:
            break
        if pos + 4 + length > end:
            raise _OptionError(f"option {code} of length {length} runs past its block")
        out.append((code, body[pos + 4 : pos + 4 + length]))
        pos += 4 + ((length + 3) & ~3)
    return out


def read_pcapng(source: OpenedSource, builder: TraceBuilder) -> dict[str, object]:
    """Read a pcapng stream into ``builder``; returns the file's facts for ``TraceMeta.details``."""
    reader = _Reader(source, builder)
    reader.run()
    details: dict[str, object] = {
        "sections": len(reader.sections),
        "byte_orders": sorted({"little" if s.endian == "<" else "big" for s in reader.sections}),
        "simple_packet_blocks": reader.spb_count,
        "obsolete_packet_blocks": reader.pb_count,
    }
    if reader.section_info:
        details["section_info"] = reader.section_info
    if reader.comments or reader.comment_count:
        details["comments"] = reader.comments
        details["comment_count"] = reader.comment_count
    return details


def _text(value: bytes) -> str:
    """An option's UTF-8 text (invalid bytes replaced, trailing NULs dropped), cut at MAX_COMMENT_CHARS."""
    text = value.decode("utf-8", "replace").rstrip("\x00")
    return text if len(text) <= MAX_COMMENT_CHARS else text[:MAX_COMMENT_CHARS] + "…"


class _Reader:
    def __init__(self, source: OpenedSource, builder: TraceBuilder) -> None:
        self.source = source
        self.builder = builder
        self.path = source.path
        self.sections: list[_Section] = []
        self.record = 0
        self.spb_count = 0
        self.pb_count = 0
        self.next_iface = 0
        #: per section that has any: {"section", "comment", "hardware", "os", "userappl"}
        self.section_info: list[dict[str, object]] = []
        #: {"where": "section"|"interface"|"packet", "section"|"interface"|"packet": number, "text"}
        self.comments: list[dict[str, object]] = []
        self.comment_count = 0
        self.block_limit = limits.current().block

    def comment(self, where: str, number: int, value: bytes) -> None:
        """Keep an opt_comment (the first MAX_COMMENTS of the file; all are counted)."""
        self.comment_count += 1
        if len(self.comments) < MAX_COMMENTS:
            self.comments.append({"where": where, where: number, "text": _text(value)})

    def salvage(self, detail: str, offset: int, code: str = "damaged") -> None:
        self.builder.salvage(detail, offset=offset, record=self.record, code=code)

    def _take_record(self) -> int:
        """The source index of the packet block being read (kept or skipped, every one counts)."""
        rec = self.record
        self.record += 1
        return rec

    def _check_block(self, btype: int, blen: int, offset: int) -> None:
        """Refuse a block claiming more than the ``block`` limit before waiting for (buffering) that much."""
        if blen > self.block_limit:
            name = _BLOCK_NAMES.get(btype, f"type 0x{btype:08x}")
            raise LimitExceeded(
                self.path, f"pcapng {name} block total length", blen, self.block_limit, "block", offset=offset
            )

    def _check_caplen(self, section: _Section, local: int, what: str, caplen: int, offset: int) -> None:
        """Refuse a packet claiming more than the ``record`` limit of its interface's link type."""
        linktype = section.ifaces[local].linktype if local < len(section.ifaces) else 0
        limit = max_caplen(linktype)
        if caplen > limit:
            raise LimitExceeded(self.path, what, caplen, limit, "record", offset=offset, record=self.record)

    def run(self) -> None:
        for chunk in self._blocks():
            self.builder.add(chunk)

    def _blocks(self) -> Iterator[PacketChunk]:
        base = 0  # stream offset of buf[0]
        buf = b""
        eof = False
        while True:
            if not eof:
                try:
                    more = self.source.read(CHUNK_SIZE)
                except _CompressedStreamEnded as exc:
                    self.salvage(
                        f"{self.source.compression} stream ends early or is corrupt ({exc})",
                        base + len(buf),
                        "truncated",
                    )
                    more = b""
                eof = not more
                buf = buf + more if buf else more
            pos, stop, chunk = self._walk(buf, base, eof)
            if chunk is not None:
                yield chunk
            if stop:
                return
            base += pos
            buf = buf[pos:]
            if eof and len(buf) == 0:
                return
            if eof and pos == 0:
                # nothing more could be framed from what is left
                self.salvage(f"the last block is cut short ({len(buf)} bytes left)", base, "truncated")
                return

    def _walk(self, buf: bytes, base: int, eof: bool) -> tuple[int, bool, PacketChunk | None]:
        """Walk whole blocks in ``buf``; return (bytes consumed, stop reading, packets of one section)."""
        pos, end = 0, len(buf)
        section = self.sections[-1] if self.sections else None
        plain: list[int] = []  # offsets of EPBs without options, extracted vectorised
        special: list[tuple[int, int, int, int, int, int, int]] = []  # (kind, iface, ts, wire, dir, data start, caplen)
        order: list[tuple[int, int]] = []  # (0 plain EPB | 1 special, source record index), in file order
        while pos + 12 <= end:
            if buf[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
                if order:
                    break  # emit the current section's packets before switching byte order
                consumed = self._shb(buf, pos, base, eof)
                if consumed is None:
                    return pos, False, None
                if consumed < 0:
                    return pos, True, None
                pos += consumed
                section = self.sections[-1]
                continue
            if section is None:
                raise TraceFormatError(self.path, "pcapng file does not start with a Section Header Block", offset=0)
            e = section.endian
            btype, blen = struct.unpack_from(e + "II", buf, pos)
            self._check_block(btype, blen, base + pos)
            if blen < 12:
                self.salvage(f"block of type 0x{btype:08x} has an invalid length {blen}", base + pos)
                return pos, True, self._emit(buf, plain, special, order, section)
            # A length that is not a multiple of 4 is read as padded when the trailer sits at the padded
            # position (writers that forgot the padding in the length field; Wireshark reads these too).
            padded = (blen + 3) & ~3
            if pos + padded > end:
                break
            (trailer,) = struct.unpack_from(e + "I", buf, pos + padded - 4)
            if padded != blen and trailer == blen:
                self.builder.warn(
                    "block-length", f"block length {blen} is not a multiple of 4; read as padded", offset=base + pos
                )
                blen = padded
            elif trailer != blen or padded != blen:
                self.salvage(f"block of type 0x{btype:08x} has mismatched lengths ({blen} and {trailer})", base + pos)
                return pos, True, self._emit(buf, plain, special, order, section)
            if btype == EPB:
                self._epb(buf, pos, blen, base, section, plain, special, order)
            elif btype == IDB:
                self._idb(buf, pos, blen, base, section)
            elif btype == SPB:
                self._spb(buf, pos, blen, base, section, special, order)
            elif btype == PB:
                self._pb(buf, pos, blen, base, section, special, order)
            pos += blen
        return pos, False, self._emit(buf, plain, special, order, section)

    # --- blocks ------------------------------------------------------------------------------------------

    def _shb(self, buf: bytes, pos: int, base: int, eof: bool) -> int | None:
        """Parse an SHB at ``pos``: its length, None when more data is needed, -1 to stop reading."""
        if pos + 28 > len(buf):
            if eof:
                self.salvage("Section Header Block cut short", base + pos, "truncated")
                return -1
            return None
        (bom,) = struct.unpack_from("<I", buf, pos + 8)
        if bom == BYTE_ORDER_MAGIC:
            e = "<"
        elif bom == 0x4D3C2B1A:
            e = ">"
        else:
            return self._refuse_section(f"Section Header Block has no byte-order magic (0x{bom:08x})", base + pos)
        blen: int
        blen, _bom, vmaj, vmin = struct.unpack_from(e + "IIHH", buf, pos + 4)
        self._check_block(SHB, blen, base + pos)
        if blen < 28 or blen % 4:
            return self._refuse_section(f"Section Header Block has an invalid length {blen}", base + pos)
        if pos + blen > len(buf):
            if eof:
                self.salvage("Section Header Block cut short", base + pos, "truncated")
                return -1
            return None
        (trailer,) = struct.unpack_from(e + "I", buf, pos + blen - 4)
        if trailer != blen:
            return self._refuse_section(f"Section Header Block has mismatched lengths ({blen}, {trailer})", base + pos)
        if vmaj != 1 or vmin not in (0, 2):
            return self._refuse_section(f"pcapng version {vmaj}.{vmin} is not supported (1.0 is)", base + pos)
        try:
            options = parse_options(buf[pos + 8 : pos + blen - 4], 16, e)
        except _OptionError as exc:
            self.builder.warn("bad-option", f"Section Header Block: {exc}; its options ignored", offset=base + pos)
            options = []
        index = len(self.sections)
        info: dict[str, object] = {}
        names = {SHB_HARDWARE: "hardware", SHB_OS: "os", SHB_USERAPPL: "userappl"}
        for code, value in options:
            if code == OPT_COMMENT:
                self.comment("section", index, value)
            elif code in names:
                info[names[code]] = _text(value)
        if info:
            self.section_info.append({"section": index, **info})
        self.sections.append(_Section(index, e, base + pos))
        return blen

    def _refuse_section(self, detail: str, offset: int) -> int:
        if not self.sections:
            raise TraceFormatError(self.path, detail, offset=offset)
        self.salvage(f"{detail}; the rest of the file is not read", offset)
        return -1

    def _idb(self, buf: bytes, pos: int, blen: int, base: int, section: _Section) -> None:
        e = section.endian
        if blen < 20:
            self.salvage(f"Interface Description Block too short ({blen} bytes)", base + pos)
            return
        linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", buf, pos + 8)
        iface = _Iface(self.next_iface, linktype, snaplen)
        name = description = ""
        try:
            options = parse_options(buf[pos + 8 : pos + blen - 4], 8, e)
        except _OptionError as exc:
            self.builder.warn("bad-option", f"Interface Description Block: {exc}", offset=base + pos)
            options = []
        resolution = "1000"
        for code, value in options:
            if code == IF_NAME:
                name = value.decode("utf-8", "replace").rstrip("\x00")
            elif code == IF_DESCRIPTION:
                description = value.decode("utf-8", "replace").rstrip("\x00")
            elif code == OPT_COMMENT:
                self.comment("interface", iface.global_id, value)
            elif code == IF_TSRESOL and value:
                v = value[0]
                if v & 0x80:
                    iface.pow2 = v & 0x7F
                    resolution = str(Fraction(10**9, 2**iface.pow2))
                else:
                    frac = Fraction(10**9, 10**v)
                    iface.ts_num, iface.ts_den = frac.numerator, frac.denominator
                    resolution = str(frac)
            elif code == IF_TSOFFSET and len(value) >= 8:
                (iface.tsoffset_s,) = struct.unpack_from(e + "q", value)
        section.ifaces.append(iface)
        self.next_iface += 1
        self.builder.add_interface(
            InterfaceInfo(
                id=iface.global_id,
                linktype=linktype,
                name=name,
                description=description,
                snaplen=snaplen,
                section=section.index,
                ts_resolution=resolution,
            )
        )

    def _iface_or_skip(self, section: _Section, local: int, base: int, pos: int, kind: str) -> _Iface | None:
        if local < len(section.ifaces):
            return section.ifaces[local]
        self.salvage(f"{kind} names interface {local}, but the section defines {len(section.ifaces)}", base + pos)
        self.record += 1
        return None

    def _epb(
        self,
        buf: bytes,
        pos: int,
        blen: int,
        base: int,
        section: _Section,
        plain: list[int],
        special: list[tuple[int, int, int, int, int, int, int]],
        order: list[tuple[int, int]],
    ) -> None:
        e = section.endian
        if blen < 32:
            self.salvage(f"Enhanced Packet Block too short ({blen} bytes)", base + pos)
            self.record += 1
            return
        local, ts_hi, ts_lo, caplen, wire = struct.unpack_from(e + "IIIII", buf, pos + 8)
        self._check_caplen(section, local, "pcapng Enhanced Packet Block caplen", caplen, base + pos)
        if 28 + caplen > blen - 4:
            self.salvage(f"Enhanced Packet Block claims {caplen} captured bytes, more than it holds", base + pos)
            self.record += 1
            return
        iface = self._iface_or_skip(section, local, base, pos, "Enhanced Packet Block")
        if iface is None:
            return
        opt_start = 28 + ((caplen + 3) & ~3)
        if opt_start >= blen - 4:
            plain.append(pos)
            order.append((0, self._take_record()))
            return
        direction = UNKNOWN
        try:
            for code, value in parse_options(buf[pos : pos + blen - 4], opt_start, e):
                if code == EPB_FLAGS and len(value) >= 4:
                    direction = int(_DIRECTION_OF_FLAGS[struct.unpack_from(e + "I", value)[0] & 3])
                elif code == OPT_COMMENT:
                    self.comment("packet", self.record, value)
        except _OptionError as exc:
            self.builder.warn("bad-option", f"Enhanced Packet Block: {exc}", offset=base + pos, record=self.record)
        ts = _to_ns(iface, (ts_hi << 32) | ts_lo)
        special.append((1, iface.global_id, ts, wire, direction, pos + 28, caplen))
        order.append((1, self._take_record()))

    def _spb(
        self,
        buf: bytes,
        pos: int,
        blen: int,
        base: int,
        section: _Section,
        special: list[tuple[int, int, int, int, int, int, int]],
        order: list[tuple[int, int]],
    ) -> None:
        self.spb_count += 1
        if blen < 16:
            self.salvage(f"Simple Packet Block too short ({blen} bytes)", base + pos)
            self.record += 1
            return
        iface = self._iface_or_skip(section, 0, base, pos, "Simple Packet Block")
        if iface is None:
            return
        (wire,) = struct.unpack_from(section.endian + "I", buf, pos + 8)
        self._check_caplen(section, 0, "pcapng Simple Packet Block original length", wire, base + pos)
        room = blen - 16
        caplen = min(wire, room, iface.snaplen) if iface.snaplen else min(wire, room)
        if self.spb_count == 1:
            self.builder.warn("no-timestamp", "Simple Packet Blocks carry no timestamp; ts_ns is null for them")
        special.append((2, iface.global_id, 0, wire, UNKNOWN, pos + 12, caplen))
        order.append((1, self._take_record()))

    def _pb(
        self,
        buf: bytes,
        pos: int,
        blen: int,
        base: int,
        section: _Section,
        special: list[tuple[int, int, int, int, int, int, int]],
        order: list[tuple[int, int]],
    ) -> None:
        self.pb_count += 1
        e = section.endian
        if blen < 32:
            self.salvage(f"Packet Block too short ({blen} bytes)", base + pos)
            self.record += 1
            return
        local, _drops, ts_hi, ts_lo, caplen, wire = struct.unpack_from(e + "HHIIII", buf, pos + 8)
        self._check_caplen(section, local, "pcapng Packet Block caplen", caplen, base + pos)
        if 28 + caplen > blen - 4:
            self.salvage(f"Packet Block claims {caplen} captured bytes, more than it holds", base + pos)
            self.record += 1
            return
        iface = self._iface_or_skip(section, local, base, pos, "Packet Block")
        if iface is None:
            return
        direction = UNKNOWN
        opt_start = 28 + ((caplen + 3) & ~3)
        try:
            for code, value in parse_options(buf[pos : pos + blen - 4], opt_start, e):
                if code == EPB_FLAGS and len(value) >= 4:  # pack_flags, same layout as epb_flags
                    direction = int(_DIRECTION_OF_FLAGS[struct.unpack_from(e + "I", value)[0] & 3])
                elif code == OPT_COMMENT:
                    self.comment("packet", self.record, value)
        except _OptionError as exc:
            self.builder.warn("bad-option", f"Packet Block: {exc}", offset=base + pos, record=self.record)
        ts = _to_ns(iface, (ts_hi << 32) | ts_lo)
        special.append((1, iface.global_id, ts, wire, direction, pos + 28, caplen))
        order.append((1, self._take_record()))

    # --- columns -----------------------------------------------------------------------------------------

    def _emit(
        self,
        buf: bytes,
        plain: list[int],
        special: list[tuple[int, int, int, int, int, int, int]],
        order: list[tuple[int, int]],
        section: _Section | None,
    ) -> PacketChunk | None:
        """Packets of one walk, in file order: plain EPBs vectorised, the others from their tuples."""
        n = len(order)
        if n == 0 or section is None:
            return None
        kinds = np.fromiter((k for k, _ in order), dtype=np.int8, count=n)
        record = np.fromiter((r for _, r in order), dtype=np.int64, count=n)
        ts = np.zeros(n, dtype=np.int64)
        iface = np.zeros(n, dtype=np.uint16)
        direction = np.full(n, UNKNOWN, dtype=np.int8)
        wire = np.zeros(n, dtype=np.uint32)
        caplen = np.zeros(n, dtype=np.int64)
        missing = np.zeros(n, dtype=bool)
        starts = np.zeros(n, dtype=np.int64)
        is_plain = kinds == 0
        if plain:
            pos = np.asarray(plain, dtype=np.int64)
            u32 = u32_at(buf, section.endian)
            local = u32[pos + 8]
            raw_ts = (u32[pos + 12].astype(np.uint64) << np.uint64(32)) | u32[pos + 16].astype(np.uint64)
            pts = np.zeros(len(pos), dtype=np.int64)
            for li in np.unique(local).tolist():
                sel = local == li
                pts[sel] = _to_ns_array(section.ifaces[li], raw_ts[sel])
            ts[is_plain] = pts
            gid = np.asarray([i.global_id for i in section.ifaces], dtype=np.uint16)
            iface[is_plain] = gid[local]
            wire[is_plain] = u32[pos + 24]
            caplen[is_plain] = u32[pos + 20]
            starts[is_plain] = pos + 28
        if special:
            sp = ~is_plain
            ts[sp] = [s[2] for s in special]
            iface[sp] = [s[1] for s in special]
            wire[sp] = [s[3] for s in special]
            direction[sp] = [s[4] for s in special]
            starts[sp] = [s[5] for s in special]
            caplen[sp] = [s[6] for s in special]
            missing[sp] = [s[0] == 2 for s in special]
        out_of_range = ts == OUT_OF_RANGE
        if out_of_range.any():
            # a timestamp ts_ns cannot hold (tshark cannot show it either): null, with a warning, never clamped
            first = int(np.flatnonzero(out_of_range)[0])
            self.builder.warn(
                "timestamp-out-of-range",
                f"interface {int(iface[first])} has timestamps outside the years 1677-2262; ts_ns is null for them",
                record=int(record[first]),
            )
            missing |= out_of_range
        plain.clear()
        special.clear()
        order.clear()
        return PacketChunk(
            record=record,
            ts_ns=ts,
            interface=iface,
            direction=direction,
            wire_len=wire,
            buf=buf,
            starts=starts,
            lengths=caplen,
            ts_missing=missing if missing.any() else None,
        )


#: ``ts_ns`` is int64 ns since the epoch (years 1677-2262); a timestamp outside it cannot be represented.
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
#: Stands in, inside the readers, for a timestamp out of that range; the builder turns it into a null.
OUT_OF_RANGE = _NS_MIN


def _to_ns(iface: _Iface, ticks: int) -> int:
    """Timestamp ticks of an interface → ns since the epoch (exact integer arithmetic); :data:`OUT_OF_RANGE`
    when the result does not fit ``ts_ns``."""
    if iface.pow2 is not None:
        ns = (ticks * 1_000_000_000) >> iface.pow2
    else:
        ns = ticks * iface.ts_num // iface.ts_den
    ns += iface.tsoffset_s * 1_000_000_000
    return ns if _NS_MIN < ns <= _NS_MAX else OUT_OF_RANGE


def _to_ns_array(iface: _Iface, ticks: np.ndarray) -> np.ndarray:
    """Vectorised :func:`_to_ns` for the common resolutions; exact Python integers for the rest."""
    top = int(ticks.max(initial=0))
    offset_ns = iface.tsoffset_s * 1_000_000_000
    if iface.pow2 is not None and iface.pow2 <= 33 and top < 2**62:
        # ticks * 1e9 >> v, split so nothing exceeds 2^63: seconds part, then the fraction (< 2^33 * 1e9)
        v = np.uint64(iface.pow2)
        sec = (ticks >> v).astype(np.int64)
        frac = ticks & np.uint64((1 << iface.pow2) - 1)
        frac_ns = ((frac * np.uint64(1_000_000_000)) >> v).astype(np.int64)
        if int(sec.max(initial=0)) < 9_000_000_000 and abs(offset_ns) < 2**60:
            return sec * 1_000_000_000 + frac_ns + offset_ns
    elif iface.pow2 is None and iface.ts_den == 1 and top < (2**62) // iface.ts_num and abs(offset_ns) < 2**60:
        return ticks.astype(np.int64) * iface.ts_num + offset_ns
    return np.fromiter((_to_ns(iface, int(t)) for t in ticks), dtype=np.int64, count=len(ticks))


# --- writer -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterInterface:
    """An interface for :func:`write_pcapng`. ``tsresol`` is the raw if_tsresol byte (9 = ns)."""

    linktype: int = 1
    snaplen: int = 262_144
    name: str = ""
    description: str = ""
    tsresol: int = 9
    comment: str = ""


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(e: str, btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def write_pcapng(
    path: str | Path | BinaryIO,
    packets: Iterable[tuple[int, int, bytes, int, str]],
    *,
    interfaces: Iterable[WriterInterface] = (WriterInterface(),),
    big_endian: bool = False,
    userappl: str = "ndis-replay",
    comment: str = "",
    packet_comments: Mapping[int, str] | None = None,
) -> int:
    """Write one section of ``(interface, ts_ns, data, wire_len, direction)`` packets as pcapng.

    ``direction`` is ``send``/``recv``/``unknown``; send and recv become ``epb_flags`` outbound/inbound.
    Timestamps are stored in each interface's resolution (ns by default, so they round-trip exactly).
    ``comment`` is the section's opt_comment, ``packet_comments`` maps a packet's position to its opt_comment.
    """
    packet_comments = packet_comments or {}
    e = ">" if big_endian else "<"
    ifaces = list(interfaces)
    own = not hasattr(path, "write")
    f: BinaryIO = open(path, "wb") if own else path  # type: ignore[arg-type,assignment]  # noqa: SIM115
    count = 0
    try:
        shb_opts = _opt(e, OPT_COMMENT, comment.encode()) if comment else b""
        shb_opts += _opt(e, SHB_USERAPPL, userappl.encode()) + _opt(e, OPT_END, b"")
        f.write(_block(e, SHB, struct.pack(e + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + shb_opts))
        for i in ifaces:
            opts = _opt(e, IF_TSRESOL, bytes([i.tsresol]))
            if i.name:
                opts += _opt(e, IF_NAME, i.name.encode())
            if i.description:
                opts += _opt(e, IF_DESCRIPTION, i.description.encode())
            if i.comment:
                opts += _opt(e, OPT_COMMENT, i.comment.encode())
            opts += _opt(e, OPT_END, b"")
            f.write(_block(e, IDB, struct.pack(e + "HHI", i.linktype, 0, i.snaplen) + opts))
        flags = {"recv": 1, "send": 2}
        for local, ts_ns, data, wire, direction in packets:
            res = ifaces[local].tsresol
            ticks = (ts_ns << (res & 0x7F)) // 10**9 if res & 0x80 else ts_ns * 10**res // 10**9
            body = struct.pack(e + "IIIII", local, ticks >> 32, ticks & 0xFFFFFFFF, len(data), max(wire, len(data)))
            body += data + b"\x00" * (-len(data) % 4)
            opts = _opt(e, EPB_FLAGS, struct.pack(e + "I", flags[direction])) if direction in flags else b""
            if count in packet_comments:
                opts += _opt(e, OPT_COMMENT, packet_comments[count].encode())
            if opts:
                body += opts + _opt(e, OPT_END, b"")
            f.write(_block(e, EPB, body))
            count += 1
    finally:
        if own:
            f.close()
    return count
