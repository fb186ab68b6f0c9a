"""Microsoft-Windows-NDIS-PacketCapture (``netsh trace start capture=yes``): packet events into PacketChunks.

ETW_FORMAT.md §4. Event 1001 carries one fragment of a frame (``u32 MiniportIfIndex, u32 LowerIfIndex,
u32 FragmentSize, Fragment`` and, on newer builds, two u64 GFT fields that are ignored); 1003 is the VMSwitch
variant with port names and the NBL's out-of-band array (VLAN); 1002 is Wi-Fi metadata for the next 1001;
1014/1015 announce the (miniport, layer) pairs the capture filter is bound to. The event keyword carries the
media (Ethernet, native 802.11, WWAN raw IP), the direction (SendPath / ReceivePath), truncation and the
PacketStart / PacketEnd pair that frames multi-event packets.

The decoder is vectorised: single-event 1001 packets — nearly all of them since Windows 8.1 — are gathered
with numpy over the batch and stay where they are in ``batch.buf`` (zero copy). Only fragments of multi-event
packets and 1003 events go through Python, one event at a time. Layer selection needs the whole layer table,
so chunks are kept until :meth:`NdisCapDecoder.finish`.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers.builder import RECV, SEND, UNKNOWN, PacketChunk, TraceBuilder
from ndis_replay.importers.etw.events import EventBatch
from ndis_replay.trace import InterfaceInfo

#: Microsoft-Windows-NDIS-PacketCapture.
NDIS_PROVIDER = uuid.UUID("2ED6006E-4729-4609-B423-3EE7BCD678EF")
NDIS_PROVIDER_NAME = "Microsoft-Windows-NDIS-PacketCapture"

EVENT_FRAGMENT = 1001
EVENT_METADATA = 1002
EVENT_VMSWITCH_FRAGMENT = 1003
EVENT_ATTACH = 1014
EVENT_DETACH = 1015
EVENT_SOURCE_INFO = 5101
#: Events that carry packet bytes.
PACKET_EVENTS = (EVENT_FRAGMENT, EVENT_VMSWITCH_FRAGMENT)

# Keyword bits (ETW_FORMAT.md §4.2).
KW_ETHERNET = 0x1
KW_WIRELESS_WAN = 0x200
KW_TUNNEL = 0x8000
KW_NATIVE_802_11 = 0x10000
KW_VMSWITCH = 0x1000000
KW_TRUNCATED = 0x2000000
KW_PACKET_START = 0x40000000
KW_PACKET_END = 0x80000000
KW_SEND = 0x1_0000_0000
KW_RECV = 0x2_0000_0000
KW_STATIC = 0x200_0000_0000 | 0x400_0000_0000
#: What a single-event Ethernet send looks like on a current Windows build.
KW_DEFAULT = KW_ETHERNET | KW_PACKET_START | KW_PACKET_END | KW_STATIC

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IEEE802_11 = 105

#: NDIS_MEDIUM values of events 1014/1015, for the layer table.
NDIS_MEDIUM = {
    0: "802.3",
    1: "802.5",
    2: "FDDI",
    3: "WAN",
    5: "DIX",
    8: "ATM",
    9: "WirelessWAN",
    12: "CoWAN",
    13: "1394",
    14: "InfiniBand",
    15: "Tunnel",
    16: "Native802.11",
    17: "Loopback",
    18: "WiMax",
    19: "IP",
}
_MEDIA_OF_LINKTYPE = {LINKTYPE_ETHERNET: "802.3", LINKTYPE_RAW: "WirelessWAN", LINKTYPE_IEEE802_11: "Native802.11"}
_NAME_PREFIX = {LINKTYPE_ETHERNET: "eth", LINKTYPE_RAW: "mbb", LINKTYPE_IEEE802_11: "wifi"}

#: A multi-event packet growing past this is abandoned (counted unfinished): the largest LSO send is 256 KiB.
MAX_JOINED = 1 << 20
_HEADER_1001 = 12
_OOB_VLAN_INDEX = 4  # NetBufferListInfo[Ieee8021QNetBufferListInfo]


# --- encoders (tests, sample traces, benchmark) -------------------------------------------------------------


def encode_1001(miniport_if: int, lower_if: int, fragment: bytes, *, gft: bool = False) -> bytes:
    """UserData of a 1001 Packet Fragment event; ``gft`` appends the two u64 GFT fields of newer builds."""
    out = struct.pack("<III", miniport_if, lower_if, len(fragment)) + fragment
    return out + struct.pack("<QQ", 0x1122334455667788, 0) if gft else out


def encode_1002(miniport_if: int, lower_if: int, metadata: bytes) -> bytes:
    """UserData of a 1002 Packet Metadata event."""
    return struct.pack("<III", miniport_if, lower_if, len(metadata)) + metadata


def _wsz(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def encode_1003(
    miniport_if: int,
    lower_if: int,
    fragment: bytes,
    *,
    source_port_id: int = 0,
    source_port_name: str = "",
    source_nic_name: str = "",
    source_nic_type: str = "",
    destinations: tuple[int, ...] = (),
    vlan: int | None = None,
    user_priority: int = 0,
    pointer_size: int = 8,
) -> bytes:
    """UserData of a 1003 VMSwitch Packet Fragment event.

    With ``vlan`` the OOB data is a 9-pointer NetBufferListInfo array whose index 4 holds the 802.1Q info
    (priority in bits 0-2, VLAN in bits 4-15); without it the OOB data is empty.
    """
    out = struct.pack("<III", miniport_if, lower_if, source_port_id)
    out += _wsz(source_port_name) + _wsz(source_nic_name) + _wsz(source_nic_type)
    out += struct.pack("<I", len(destinations)) + b"".join(struct.pack("<Q", d) for d in destinations)
    out += struct.pack("<I", len(fragment)) + fragment
    if vlan is None:
        return out + struct.pack("<I", 0)
    slots = [0] * 9
    slots[_OOB_VLAN_INDEX] = (vlan & 0xFFF) << 4 | (user_priority & 7)
    oob = b"".join(s.to_bytes(pointer_size, "little") for s in slots)
    return out + struct.pack("<I", len(oob)) + oob


def encode_attach(miniport_if: int, lower_if: int, media_type: int, reference_context: int = 0) -> bytes:
    """UserData of a 1014 (attach) or 1015 (detach) event."""
    return struct.pack("<IIII", miniport_if, lower_if, media_type, reference_context)


def encode_5101(source_id: int, name: str, if_index: int, layers: tuple[int, ...]) -> bytes:
    """UserData of a 5101 source-info event."""
    return (
        struct.pack("<B", source_id)
        + _wsz(name)
        + struct.pack("<IH", if_index, len(layers))
        + struct.pack(f"<{len(layers)}h", *layers)
    )


# --- helpers ------------------------------------------------------------------------------------------------


def view(buf: bytes, dtype: str) -> np.ndarray:
    """A view of ``buf`` with the given dtype at *every* byte offset (strides of one byte, no copy)."""
    dt = np.dtype(dtype)
    return np.ndarray((max(len(buf) - dt.itemsize + 1, 0),), dtype=dt, buffer=buf, strides=(1,))


def linktype_of_keywords(keyword: np.ndarray) -> np.ndarray:
    """LINKTYPE per event from its media keywords: Native802.11 → 105, WirelessWAN → 101 (raw IP), else 1."""
    return np.where(
        keyword & np.uint64(KW_NATIVE_802_11),
        LINKTYPE_IEEE802_11,
        np.where(keyword & np.uint64(KW_WIRELESS_WAN), LINKTYPE_RAW, LINKTYPE_ETHERNET),
    ).astype(np.uint16)


def direction_of_keywords(keyword: np.ndarray) -> np.ndarray:
    """SEND / RECV / UNKNOWN per event from the SendPath and ReceivePath keywords (send wins if both)."""
    return np.where(keyword & np.uint64(KW_SEND), SEND, np.where(keyword & np.uint64(KW_RECV), RECV, UNKNOWN)).astype(
        np.int8
    )


def infer_wire_len(
    buf: bytes, starts: np.ndarray, lengths: np.ndarray, linktype: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(wire_len, known)`` of truncated frames from their IP header.

    Ethernet (optionally one 802.1Q tag): L2 header + IPv4 total length, or L2 + 40 + IPv6 payload length;
    raw IP (linktype 101) the same without the L2 header (etl2pcapng adds 14 there, wrongly). ``known`` is
    False where nothing larger than the captured length can be inferred (802.11, LSOv2's length 0, a header
    cut short): ``wire_len`` is then the captured length.
    """
    n = len(starts)
    lengths = lengths.astype(np.int64)
    be16 = view(buf, ">u2")
    if n == 0 or len(be16) == 0:
        return lengths.copy(), np.zeros(n, dtype=bool)
    top = len(be16) - 1
    u8 = np.frombuffer(buf, dtype=np.uint8)

    def g16(off: np.ndarray) -> np.ndarray:
        values: np.ndarray = be16[np.minimum(off, top)].astype(np.int64)  # clipped: reads past a frame are masked
        return values

    eth = linktype == LINKTYPE_ETHERNET
    raw = linktype == LINKTYPE_RAW
    etype = g16(starts + 12)
    tagged = eth & (etype == 0x8100) & (lengths >= 18)
    etype = np.where(tagged, g16(starts + 16), etype)
    l2 = np.where(eth, 14 + 4 * tagged.astype(np.int64), 0)
    ip = starts + l2
    version = u8[np.minimum(ip, len(u8) - 1)] >> 4
    is4 = np.where(eth, etype == 0x0800, raw & (version == 4)) & (lengths >= l2 + 4)
    is6 = np.where(eth, etype == 0x86DD, raw & (version == 6)) & (lengths >= l2 + 6)
    inferred = np.where(is4, l2 + g16(ip + 2), np.where(is6, l2 + 40 + g16(ip + 4), 0))
    known = (is4 | is6) & (inferred > lengths)
    return np.where(known, inferred, lengths), known


def _read_wsz(data: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated UTF-16LE string at ``pos`` and the position after it; ValueError when unterminated."""
    end = pos
    while True:
        end = data.find(b"\x00\x00", end)
        if end < 0:
            raise ValueError("unterminated string")
        if (end - pos) % 2 == 0:
            break
        end += 1
    return data[pos:end].decode("utf-16-le", errors="replace"), end + 2


# --- the decoder --------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A multi-event packet being assembled on one (CPU, thread)."""

    record: int
    ts_ns: int
    keyword: int
    miniport: int
    lower: int
    vlan: int
    fragments: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass
class _Layer:
    media: str = ""
    packets: int = 0
    sends: int = 0
    recvs: int = 0
    truncated: int = 0
    attached: bool = False


@dataclass
class _Part:
    """Decoded packets of one batch (or the joined ones); ``key`` indexes the decoder's interface keys."""

    chunk: PacketChunk
    key: np.ndarray  # int64


class NdisCapDecoder:
    """Decodes NDIS-PacketCapture events batch by batch; :meth:`finish` selects layers and makes the chunks."""

    def __init__(self, builder: TraceBuilder) -> None:
        self.builder = builder
        self.parts: list[_Part] = []
        #: interface keys (miniport, lower, linktype, vlan or -1) in order of first appearance
        self.keys: dict[tuple[int, int, int, int], int] = {}
        self.layers: dict[tuple[int, int], _Layer] = {}
        self.sources: list[dict[str, Any]] = []
        self.pending: dict[int, _Pending] = {}
        self.joined: list[tuple[int, int, int, int, int, bytes]] = []  # record, ts, key, direction, wire_len, data
        self.counts = {
            "packets": 0,
            "fragments_joined": 0,
            "unfinished": 0,
            "orphan_fragments": 0,
            "bad_events": 0,
            "truncated": 0,
            "original_length_unknown": 0,
            "metadata_events": 0,
            "vmswitch_packets": 0,
        }

    # --- per batch -----------------------------------------------------------------------------------------

    def feed(self, batch: EventBatch, rows: np.ndarray) -> None:
        """Decode the rows ``rows`` (indices into ``batch``, this provider's events, in file order)."""
        event_id = batch.event_id[rows]
        self.counts["metadata_events"] += int(np.count_nonzero(event_id == EVENT_METADATA))
        for i in rows[(event_id == EVENT_ATTACH) | (event_id == EVENT_DETACH) | (event_id == EVENT_SOURCE_INFO)]:
            self._control(batch, int(i))
        frag_rows = rows[event_id == EVENT_FRAGMENT]
        vms_rows = rows[event_id == EVENT_VMSWITCH_FRAGMENT]
        if not len(frag_rows) and not len(vms_rows) and not self.pending:
            return
        u32 = view(batch.buf, "<u4")
        uo = batch.user_offset[frag_rows]
        ul = batch.user_len[frag_rows]
        size = np.where(ul >= _HEADER_1001, u32[np.where(ul >= _HEADER_1001, uo + 8, 0)], 0).astype(np.int64)
        ok = (ul >= _HEADER_1001) & (_HEADER_1001 + size <= ul)
        if not ok.all():
            for j in np.flatnonzero(~ok).tolist():
                self.builder.salvage(
                    "NDIS 1001 event whose FragmentSize runs past its UserData: skipped",
                    offset=None,
                    record=int(batch.record[frag_rows[j]]),
                    code="etl-bad-event",
                )
            self.counts["bad_events"] += int(np.count_nonzero(~ok))
            frag_rows, uo, size = frag_rows[ok], uo[ok], size[ok]
        kw = batch.keyword[frag_rows]
        both = np.uint64(KW_PACKET_START | KW_PACKET_END)
        single = (kw & both) == both
        cpu_tid = (batch.cpu.astype(np.uint64) << np.uint64(32)) | batch.thread_id.astype(np.uint64)
        if len(vms_rows) or not single.all() or self.pending:
            # a single-event packet on a (CPU, thread) with a packet open must close it first: Python path
            slow_keys = set(self.pending)
            slow_keys.update(cpu_tid[frag_rows[~single]].tolist())
            slow_keys.update(cpu_tid[vms_rows].tolist())
            if slow_keys:
                on_slow = np.isin(cpu_tid[frag_rows], np.fromiter(slow_keys, dtype=np.uint64, count=len(slow_keys)))
                slow = ~single | on_slow
            else:
                slow = ~single
            if slow.any():
                slow_rows = np.sort(np.concatenate([frag_rows[slow], vms_rows]))
                frag_rows, uo, size, kw = frag_rows[~slow], uo[~slow], size[~slow], kw[~slow]
            else:
                slow_rows = vms_rows
            fast_extra = self._python_path(batch, slow_rows, cpu_tid)
        else:
            fast_extra = None
        miniport = u32[uo].astype(np.int64)
        lower = u32[uo + 4].astype(np.int64)
        linktype = linktype_of_keywords(kw)
        chunk_rows = frag_rows
        starts = uo + _HEADER_1001
        vlan = np.full(len(frag_rows), -1, dtype=np.int64)
        if fast_extra is not None and len(fast_extra[0]):
            # single-event 1003 packets (and 1001 ones from the Python path) stay zero copy too
            rows_x, starts_x, size_x, mini_x, lower_x, vlan_x = fast_extra
            chunk_rows = np.concatenate([chunk_rows, rows_x])
            starts = np.concatenate([starts, starts_x])
            size = np.concatenate([size, size_x])
            miniport = np.concatenate([miniport, mini_x])
            lower = np.concatenate([lower, lower_x])
            vlan = np.concatenate([vlan, vlan_x])
            kw = batch.keyword[chunk_rows]
            linktype = linktype_of_keywords(kw)
        if not len(chunk_rows):
            return
        direction = direction_of_keywords(kw)
        truncated = (kw & np.uint64(KW_TRUNCATED)) != 0
        wire = size.copy()
        if truncated.any():
            tw, known = infer_wire_len(batch.buf, starts[truncated], size[truncated], linktype[truncated])
            wire[truncated] = tw
            self.counts["truncated"] += int(np.count_nonzero(truncated))
            self.counts["original_length_unknown"] += int(np.count_nonzero(~known))
        key = self._key_ids(miniport, lower, linktype, vlan, direction, truncated)
        chunk = PacketChunk(
            record=batch.record[chunk_rows],
            ts_ns=batch.ts_ns[chunk_rows],
            interface=np.zeros(len(chunk_rows), dtype=np.uint16),  # set in finish()
            direction=direction,
            wire_len=wire.astype(np.uint32),
            buf=batch.buf,
            starts=starts,
            lengths=size,
        )
        self.parts.append(_Part(chunk, key))
        self.counts["packets"] += len(chunk_rows)

    def _key_ids(
        self,
        miniport: np.ndarray,
        lower: np.ndarray,
        linktype: np.ndarray,
        vlan: np.ndarray,
        direction: np.ndarray,
        truncated: np.ndarray,
    ) -> np.ndarray:
        """Interface key id per packet (registering new keys), and the layer table's counts."""
        if len(miniport) and (miniport.max() | lower.max()) < 1 << 22 and miniport.min() >= 0 and lower.min() >= 0:
            # one int64 per key (IfIndex values are small): a 1-D unique is ~50x faster than unique(axis=0)
            code = miniport << 42 | lower << 20 | linktype.astype(np.int64) << 12 | (vlan & 0xFFF)
            code[vlan < 0] |= 1 << 19  # (VLAN 0 and "no VLAN" differ)
            first = code[0]
            if (code == first).all():
                uniq_rows = np.zeros(1, dtype=np.int64)
                inverse = np.zeros(len(code), dtype=np.int64)
            else:
                _, uniq_rows, inverse = np.unique(code, return_index=True, return_inverse=True)
        else:
            combo = np.stack([miniport, lower, linktype.astype(np.int64), vlan], axis=1)
            _, uniq_rows, inverse = np.unique(combo, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        n = len(uniq_rows)
        ids = np.empty(n, dtype=np.int64)
        packets = np.bincount(inverse, minlength=n)
        sends = np.bincount(inverse, weights=direction == SEND, minlength=n)
        recvs = np.bincount(inverse, weights=direction == RECV, minlength=n)
        truncs = np.bincount(inverse, weights=truncated, minlength=n)
        for j, row in enumerate(uniq_rows.tolist()):
            m, low, lt, v = int(miniport[row]), int(lower[row]), int(linktype[row]), int(vlan[row])
            ids[j] = self.keys.setdefault((m, low, lt, v), len(self.keys))
            layer = self.layers.setdefault((m, low), _Layer())
            if not layer.media:
                layer.media = _MEDIA_OF_LINKTYPE.get(lt, "")
            layer.packets += int(packets[j])
            layer.sends += int(sends[j])
            layer.recvs += int(recvs[j])
            layer.truncated += int(truncs[j])
        result: np.ndarray = ids[inverse]
        return result

    # --- the Python path ------------------------------------------------------------------------------------

    def _python_path(
        self, batch: EventBatch, rows: np.ndarray, cpu_tid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Fragments and 1003 events in file order: returns the single-event packets (zero copy) as
        ``(rows, starts, sizes, miniport, lower, vlan)``; joined packets go to :attr:`joined`."""
        out: list[tuple[int, int, int, int, int, int]] = []
        buf = batch.buf
        for i in rows.tolist():
            parsed = self._parse(batch, i)
            if parsed is None:
                continue
            miniport, lower, start, size, vlan = parsed
            kw = int(batch.keyword[i])
            key = int(cpu_tid[i])
            is_start, is_end = bool(kw & KW_PACKET_START), bool(kw & KW_PACKET_END)
            open_packet = self.pending.get(key)
            if is_start and open_packet is not None:
                self.counts["unfinished"] += 1
                del self.pending[key]
                open_packet = None
            if is_start and is_end:
                out.append((i, start, size, miniport, lower, vlan))
                continue
            if is_start:
                self.pending[key] = _Pending(
                    int(batch.record[i]), int(batch.ts_ns[i]), kw, miniport, lower, vlan, [buf[start : start + size]]
                )
                self.pending[key].size = size
                continue
            if open_packet is None:
                self.counts["orphan_fragments"] += 1
                continue
            open_packet.fragments.append(buf[start : start + size])
            open_packet.size += size
            if open_packet.size > MAX_JOINED:
                self.counts["unfinished"] += 1
                del self.pending[key]
                continue
            if is_end:
                del self.pending[key]
                self._emit_joined(open_packet, kw)
        if not out:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty, empty, empty
        cols = np.asarray(out, dtype=np.int64)
        return cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4], cols[:, 5]

    def _parse(self, batch: EventBatch, i: int) -> tuple[int, int, int, int, int] | None:
        """``(miniport, lower, start in buf, size, vlan or -1)`` of a 1001/1003 event, None when malformed."""
        uo, ul = int(batch.user_offset[i]), int(batch.user_len[i])
        buf = batch.buf
        if int(batch.event_id[i]) == EVENT_FRAGMENT:
            miniport, lower, size = struct.unpack_from("<III", buf, uo)  # checked in feed()
            return miniport, lower, uo + _HEADER_1001, size, -1
        data = buf[uo : uo + ul]
        try:
            miniport, lower, _port = struct.unpack_from("<III", data, 0)
            pos = 12
            for _ in range(3):  # SourcePortName, SourceNicName, SourceNicType
                _text, pos = _read_wsz(data, pos)
            (count,) = struct.unpack_from("<I", data, pos)
            pos += 4 + 8 * count
            (size,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if pos + size > ul:
                raise ValueError("FragmentSize runs past the UserData")
            start = pos
            pos += size
            vlan = -1
            if pos + 4 <= ul:
                (oob_size,) = struct.unpack_from("<I", data, pos)
                ptr = batch.pointer_size(i)
                slot = pos + 4 + _OOB_VLAN_INDEX * ptr
                if oob_size >= (_OOB_VLAN_INDEX + 1) * ptr and slot + ptr <= ul:
                    info = int.from_bytes(data[slot : slot + ptr], "little")
                    vlan = (info >> 4) & 0xFFF or -1
        except (struct.error, ValueError) as exc:
            self.counts["bad_events"] += 1
            self.builder.salvage(
                f"malformed NDIS 1003 event ({exc}): skipped",
                offset=None,
                record=int(batch.record[i]),
                code="etl-bad-event",
            )
            return None
        self.counts["vmswitch_packets"] += 1
        return miniport, lower, uo + start, size, vlan

    def _emit_joined(self, packet: _Pending, end_keyword: int) -> None:
        kw = np.asarray([packet.keyword], dtype=np.uint64)
        lt = int(linktype_of_keywords(kw)[0])
        direction = int(direction_of_keywords(kw)[0])
        truncated = bool((packet.keyword | end_keyword) & KW_TRUNCATED)
        data = b"".join(packet.fragments)
        wire = len(data)
        if truncated:
            inferred, known = infer_wire_len(
                data, np.zeros(1, dtype=np.int64), np.asarray([wire], dtype=np.int64), np.asarray([lt])
            )
            wire = int(inferred[0])
            self.counts["truncated"] += 1
            self.counts["original_length_unknown"] += int(not known[0])
        key = int(
            self._key_ids(
                np.asarray([packet.miniport], dtype=np.int64),
                np.asarray([packet.lower], dtype=np.int64),
                np.asarray([lt], dtype=np.uint16),
                np.asarray([packet.vlan], dtype=np.int64),
                np.asarray([direction]),
                np.asarray([truncated]),
            )[0]
        )
        self.joined.append((packet.record, packet.ts_ns, key, direction, wire, data))
        self.counts["fragments_joined"] += len(packet.fragments)
        self.counts["packets"] += 1

    def _control(self, batch: EventBatch, i: int) -> None:
        data = batch.user_data(i)
        event_id = int(batch.event_id[i])
        try:
            if event_id in (EVENT_ATTACH, EVENT_DETACH):
                miniport, lower, media = struct.unpack_from("<III", data, 0)
                layer = self.layers.setdefault((miniport, lower), _Layer())
                layer.attached = True
                if not layer.media or event_id == EVENT_ATTACH:
                    layer.media = NDIS_MEDIUM.get(media, f"medium {media}")
            else:
                (source_id,) = struct.unpack_from("<B", data, 0)
                name, pos = _read_wsz(data, 1)
                if_index, count = struct.unpack_from("<IH", data, pos)
                layers = struct.unpack_from(f"<{count}h", data, pos + 6)
                self.sources.append(
                    {"source_id": source_id, "name": name, "if_index": if_index, "layers": list(layers)}
                )
        except (struct.error, ValueError):
            self.builder.warn("etl-bad-event", f"malformed NDIS {event_id} event: skipped")

    # --- after the pass ------------------------------------------------------------------------------------

    def finish(self, layer: str | None, first_id: int) -> tuple[list[PacketChunk], list[InterfaceInfo], dict[str, Any]]:
        """Select layers, number the interfaces from ``first_id``: ``(chunks, interfaces, details)``."""
        self.counts["unfinished"] += len(self.pending)  # still open at the end of the capture
        self.pending.clear()
        if self.counts["unfinished"] or self.counts["orphan_fragments"]:
            self.builder.warn(
                "etl-fragments",
                f"{self.counts['unfinished']} multi-event packets never finished and "
                f"{self.counts['orphan_fragments']} fragments without a PacketStart were dropped",
            )
        if self.counts["original_length_unknown"]:
            self.builder.warn(
                "etl-truncated",
                f"{self.counts['original_length_unknown']} of {self.counts['truncated']} truncated packets have no "
                "inferable original length (802.11, LSOv2 length 0, or a header cut short): wire_len = captured",
            )
        kept = self._select(layer)
        # interfaces: kept keys in etl2pcapng's order (miniport, its own layer first, then lower index)
        kept_keys = sorted(
            (k for k in self.keys if (k[0], k[1]) in kept), key=lambda k: (k[0], k[1] != k[0], k[1], k[2], k[3])
        )
        remap = np.full(max(len(self.keys), 1), -1, dtype=np.int64)
        interfaces: list[InterfaceInfo] = []
        for n, k in enumerate(kept_keys):
            m, low, lt, vlan = k
            remap[self.keys[k]] = first_id + n
            name = f"{_NAME_PREFIX.get(lt, 'eth')}:{low}" + (f":{vlan}" if vlan >= 0 else "")
            desc = f"LWF over IfIndex {m}" if m != low else f"miniport IfIndex {m}"
            interfaces.append(InterfaceInfo(id=first_id + n, linktype=lt, name=name, description=desc, snaplen=0))
        chunks = [c for c in (self._select_part(p, remap) for p in self.parts) if c is not None]
        joined = self._joined_chunk(remap)
        if joined is not None:
            chunks.append(joined)
        table = [
            {
                "miniport": m,
                "lower": low,
                "media": info.media,
                "packets": info.packets,
                "sends": info.sends,
                "recvs": info.recvs,
                "truncated": info.truncated,
                "attached": info.attached,  # announced by a 1014/1015 event
                "kept": (m, low) in kept,
            }
            for (m, low), info in sorted(self.layers.items(), key=lambda kv: (kv[0][0], kv[0][1] != kv[0][0], kv[0][1]))
        ]
        details: dict[str, Any] = {"layers": table, "ndis": dict(self.counts)}
        if self.sources:
            details["ndis_sources"] = self.sources
        return chunks, interfaces, details

    def _select(self, layer: str | None) -> set[tuple[int, int]]:
        with_packets = {k for k, v in self.layers.items() if v.packets}
        if layer == "all":
            return with_packets
        if layer:
            wanted: set[tuple[int, int]] = set()
            for item in layer.split(","):
                try:
                    m_text, l_text = item.strip().split(":")
                    pair = (int(m_text), int(l_text))
                except ValueError:
                    pair = (-1, -1)
                if pair not in with_packets:
                    there = ", ".join(f"{m}:{low}" for m, low in sorted(with_packets)) or "none"
                    raise TraceFormatError(
                        self.builder.path,
                        f"no NDIS capture layer {item.strip()!r} in this trace (layers with packets: {there})",
                        hint="--etw-layer MINIPORT:LOWER (several comma-separated) or --etw-layer all",
                    )
                wanted.add(pair)
            return wanted
        kept: set[tuple[int, int]] = set()
        for m in sorted({m for m, _ in with_packets}):
            if (m, m) in with_packets:
                kept.add((m, m))
                continue
            low = min(lo for mm, lo in with_packets if mm == m)
            kept.add((m, low))
            self.builder.warn(
                "etl-layer",
                f"miniport IfIndex {m} has no capture layer directly above it (LowerIfIndex {m}); "
                f"kept its lowest layer {m}:{low} (choose with --etw-layer)",
            )
        return kept

    @staticmethod
    def _select_part(part: _Part, remap: np.ndarray) -> PacketChunk | None:
        iface = remap[part.key]
        keep = iface >= 0
        if not keep.any():
            return None
        c = part.chunk
        if keep.all():
            c.interface = iface.astype(np.uint16)
            return c
        return PacketChunk(
            record=c.record[keep],
            ts_ns=c.ts_ns[keep],
            interface=iface[keep].astype(np.uint16),
            direction=c.direction[keep],
            wire_len=c.wire_len[keep],
            buf=c.buf,
            starts=c.starts[keep],
            lengths=c.lengths[keep],
        )

    def _joined_chunk(self, remap: np.ndarray) -> PacketChunk | None:
        rows = [j for j in self.joined if remap[j[2]] >= 0]
        if not rows:
            return None
        return PacketChunk.from_packets(
            record=[r[0] for r in rows],
            ts_ns=[r[1] for r in rows],
            interface=[int(remap[r[2]]) for r in rows],
            direction=[r[3] for r in rows],
            wire_len=[r[4] for r in rows],
            data=[r[5] for r in rows],
        )
