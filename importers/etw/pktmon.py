"""Microsoft-Windows-PktMon (``pktmon start --capture``): packet events into PacketChunks.

ETW_FORMAT.md §5. Events 160 (packet) and 170 (dropped packet) share one packed layout: PktGroupId,
PktNumber, AppearanceCount, DirTag, PacketType, ComponentId, EdgeId, FilterId, DropReason, DropLocation,
OriginalPayloadSize, LoggedPayloadSize, Payload. PktMon logs a packet once per component it passes (the
appearances of one PktGroupId), and writes its component inventory (20: id, type, driver, adapter; 30: a
property of a component) at the *end* of the log, so the appearance to keep is chosen after the pass.

Default selection, one appearance per packet: the appearance at a miniport component (type 2) nearest the
wire — the last one for a send (a send through netvsc.sys to its mlx5.sys VF appears at both miniports; the
VF is the one that puts it on the wire), the first one otherwise. Without an inventory, or when no packet
reaches a miniport, the first appearance of each PktGroupId (with a warning). Dropped packets (170) are
counted, never imported.
"""

from __future__ import annotations

import struct
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers.builder import RECV, SEND, UNKNOWN, PacketChunk, TraceBuilder
from ndis_replay.importers.etw.events import EventBatch
from ndis_replay.importers.etw.ndiscap import view
from ndis_replay.trace import InterfaceInfo

#: Microsoft-Windows-PktMon.
PKTMON_PROVIDER = uuid.UUID("4D4F80D9-C8BD-4D73-BB5B-19C90402C5AC")
PKTMON_PROVIDER_NAME = "Microsoft-Windows-PktMon"

EVENT_COMPONENT = 20
EVENT_COMPONENT_PROPERTY = 30
EVENT_PACKET = 160
EVENT_DROP = 170
#: Events that carry packet bytes (170 is counted, not imported).
PACKET_EVENTS = (EVENT_PACKET, EVENT_DROP)
#: The keyword real pktmon packet events carry.
KW_PACKET = 0x10

#: PacketDirectionTag values.
DIR_NONE, DIR_IN, DIR_OUT, DIR_RX, DIR_TX, DIR_INGRESS, DIR_EGRESS = range(7)
#: PacketType values.
TYPE_UNKNOWN, TYPE_ETHERNET, TYPE_WIFI, TYPE_IP, TYPE_HTTP = range(5)
#: ComponentType of a miniport.
COMPONENT_MINIPORT = 2
#: ComponentPropertyType of the interface index.
PROPERTY_IFINDEX = 1

_HEADER = 0x22
_DIRECTION = np.full(8, UNKNOWN, dtype=np.int8)
_DIRECTION[[DIR_RX, DIR_IN, DIR_INGRESS]] = RECV
_DIRECTION[[DIR_TX, DIR_OUT, DIR_EGRESS]] = SEND
_LINKTYPE = np.array([0, 1, 105, 101, 0], dtype=np.uint16)  # by PacketType; 0 = not a frame


# --- encoders -----------------------------------------------------------------------------------------------


def encode_pktmon_packet(
    group_id: int,
    number: int,
    appearance: int,
    dir_tag: int,
    packet_type: int,
    component: int,
    edge: int,
    filter_id: int,
    drop_reason: int,
    drop_location: int,
    original_size: int,
    payload: bytes,
) -> bytes:
    """UserData of a 160 (packet) or 170 (dropped packet) event; LoggedPayloadSize is ``len(payload)``."""
    return (
        struct.pack(
            "<QHHHHHHHIIHH",
            group_id,
            number,
            appearance,
            dir_tag,
            packet_type,
            component,
            edge,
            filter_id,
            drop_reason,
            drop_location,
            original_size,
            len(payload),
        )
        + payload
    )


def encode_component(component_id: int, component_type: int, name: str, description: str) -> bytes:
    """UserData of a 20 (component) event."""
    return (
        struct.pack("<HH", component_id, component_type)
        + name.encode("utf-16-le")
        + b"\x00\x00"
        + description.encode("utf-16-le")
        + b"\x00\x00"
    )


def encode_component_property(component: int, prop_type: int, value: int) -> bytes:
    """UserData of a 30 (component property) event."""
    return struct.pack("<HHI", component, prop_type, value)


# --- the decoder --------------------------------------------------------------------------------------------


@dataclass
class _Component:
    type: int = 0
    name: str = ""
    description: str = ""
    ifindex: int | None = None
    packets: int = 0
    tx: int = 0
    rx: int = 0
    drops: int = 0


@dataclass
class _Part:
    """The 160 events of one batch: the chunk plus what selection needs."""

    chunk: PacketChunk
    group: np.ndarray  # uint64 PktGroupId
    component: np.ndarray  # int64
    linktype: np.ndarray  # uint16, 0 = not a frame


class PktMonDecoder:
    """Decodes PktMon events batch by batch; :meth:`finish` chooses appearances and makes the chunks."""

    def __init__(self, builder: TraceBuilder) -> None:
        self.builder = builder
        self.parts: list[_Part] = []
        self.components: dict[int, _Component] = {}
        self.inventory = False
        self.drops: Counter[tuple[int, int]] = Counter()
        self.counts = {"packets": 0, "drops": 0, "truncated": 0, "bad_events": 0, "not_frames": 0}

    def feed(self, batch: EventBatch, rows: np.ndarray) -> None:
        """Decode the rows ``rows`` (indices into ``batch``, this provider's events, in file order)."""
        event_id = batch.event_id[rows]
        for i in rows[(event_id == EVENT_COMPONENT) | (event_id == EVENT_COMPONENT_PROPERTY)].tolist():
            self._inventory(batch, i)
        pkt_rows = rows[(event_id == EVENT_PACKET) | (event_id == EVENT_DROP)]
        if not len(pkt_rows):
            return
        buf = batch.buf
        u16 = view(buf, "<u2")
        uo = batch.user_offset[pkt_rows]
        ul = batch.user_len[pkt_rows]
        long_enough = ul >= _HEADER
        logged = np.where(long_enough, u16[np.where(long_enough, uo + 0x20, 0)], 0).astype(np.int64)
        ok = long_enough & (_HEADER + logged <= ul)
        if not ok.all():
            for j in np.flatnonzero(~ok).tolist():
                self.builder.salvage(
                    "PktMon packet event shorter than its LoggedPayloadSize: skipped",
                    offset=None,
                    record=int(batch.record[pkt_rows[j]]),
                    code="etl-bad-event",
                )
            self.counts["bad_events"] += int(np.count_nonzero(~ok))
            pkt_rows, uo, logged = pkt_rows[ok], uo[ok], logged[ok]
        component = u16[uo + 0x10].astype(np.int64)
        dirtag = u16[uo + 0x0C]
        direction = _DIRECTION[np.minimum(dirtag, 7)]
        is_drop = batch.event_id[pkt_rows] == EVENT_DROP
        if is_drop.any():
            reason = view(buf, "<u4")[uo[is_drop] + 0x16]
            pairs, counts = np.unique(
                np.stack([component[is_drop], reason.astype(np.int64)]), axis=1, return_counts=True
            )
            for (comp, why), count in zip(pairs.T.tolist(), counts.tolist(), strict=True):
                self.drops[(comp, why)] += count
                self.components.setdefault(comp, _Component()).drops += count
            self.counts["drops"] += int(np.count_nonzero(is_drop))
            keep = ~is_drop
            pkt_rows, uo, logged, component, direction = (
                pkt_rows[keep],
                uo[keep],
                logged[keep],
                component[keep],
                direction[keep],
            )
            if not len(pkt_rows):
                return
        original = u16[uo + 0x1E].astype(np.int64)
        truncated = logged < original
        self.counts["truncated"] += int(np.count_nonzero(truncated))
        linktype = _LINKTYPE[np.minimum(u16[uo + 0x0E], 4)]
        comps, inverse = np.unique(component, return_inverse=True)
        inverse = inverse.reshape(-1)
        per_packets = np.bincount(inverse, minlength=len(comps))
        per_tx = np.bincount(inverse, weights=direction == SEND, minlength=len(comps))
        per_rx = np.bincount(inverse, weights=direction == RECV, minlength=len(comps))
        for j, comp in enumerate(comps.tolist()):
            info = self.components.setdefault(comp, _Component())
            info.packets += int(per_packets[j])
            info.tx += int(per_tx[j])
            info.rx += int(per_rx[j])
        chunk = PacketChunk(
            record=batch.record[pkt_rows],
            ts_ns=batch.ts_ns[pkt_rows],
            interface=np.zeros(len(pkt_rows), dtype=np.uint16),  # set in finish()
            direction=direction,
            wire_len=np.maximum(original, logged).astype(np.uint32),
            buf=buf,
            starts=uo + _HEADER,
            lengths=logged,
        )
        self.parts.append(_Part(chunk, view(buf, "<u8")[uo], component, linktype))
        self.counts["packets"] += len(pkt_rows)

    def _inventory(self, batch: EventBatch, i: int) -> None:
        data = batch.user_data(i)
        try:
            if int(batch.event_id[i]) == EVENT_COMPONENT:
                comp, ctype = struct.unpack_from("<HH", data, 0)
                text = data[4 : 4 + ((len(data) - 4) & ~1)].decode("utf-16-le", errors="replace").split("\x00")
                info = self.components.setdefault(comp, _Component())
                info.type = ctype
                info.name = text[0]
                info.description = text[1] if len(text) > 1 else ""
                self.inventory = True
            else:
                comp, prop, value = struct.unpack_from("<HHI", data, 0)
                if prop == PROPERTY_IFINDEX:
                    self.components.setdefault(comp, _Component()).ifindex = value
        except struct.error:
            self.builder.warn("etl-bad-event", f"malformed PktMon {int(batch.event_id[i])} event: skipped")

    # --- after the pass ------------------------------------------------------------------------------------

    def finish(
        self, component: str | None, first_id: int
    ) -> tuple[list[PacketChunk], list[InterfaceInfo], dict[str, Any]]:
        """Choose appearances, number the interfaces from ``first_id``: ``(chunks, interfaces, details)``."""
        parts = self.parts
        n = sum(len(p.chunk) for p in parts)
        group = np.concatenate([p.group for p in parts]) if parts else np.zeros(0, dtype=np.uint64)
        comp = np.concatenate([p.component for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        linktype = np.concatenate([p.linktype for p in parts]) if parts else np.zeros(0, dtype=np.uint16)
        keep = self._select(component, parts, group, comp, n)
        frames = linktype != 0
        not_frames = keep & ~frames
        if not_frames.any():
            self.counts["not_frames"] = int(np.count_nonzero(not_frames))
            self.builder.warn(
                "etl-not-frames",
                f"{self.counts['not_frames']} PktMon packets of PacketType Unknown/HTTP (not frames) were left out",
            )
        keep &= frames
        kept_keys = sorted(
            {(int(c), int(lt)) for c, lt in zip(comp[keep].tolist(), linktype[keep].tolist(), strict=True)}
        )
        ids = {k: first_id + n_ for n_, k in enumerate(kept_keys)}
        interfaces = []
        for (c, lt), iid in ids.items():
            info = self.components.get(c, _Component())
            interfaces.append(
                InterfaceInfo(
                    id=iid, linktype=lt, name=info.name or f"component {c}", description=info.description, snaplen=0
                )
            )
        iface = np.zeros(n, dtype=np.uint16)
        if kept_keys:
            lut = {c * 65536 + lt: iid for (c, lt), iid in ids.items()}
            code = comp * 65536 + linktype.astype(np.int64)
            uniq, inverse = np.unique(code[keep], return_inverse=True)
            iface[keep] = np.asarray([lut[int(u)] for u in uniq.tolist()], dtype=np.uint16)[inverse.reshape(-1)]
        chunks: list[PacketChunk] = []
        pos = 0
        for p in parts:
            m = len(p.chunk)
            k = keep[pos : pos + m]
            if k.any():
                pc = p.chunk
                chunks.append(
                    PacketChunk(
                        record=pc.record[k],
                        ts_ns=pc.ts_ns[k],
                        interface=iface[pos : pos + m][k],
                        direction=pc.direction[k],
                        wire_len=pc.wire_len[k],
                        buf=pc.buf,
                        starts=pc.starts[k],
                        lengths=pc.lengths[k],
                    )
                )
            pos += m
        kept_comps = {c for c, _ in kept_keys}
        if self.drops:
            total = sum(self.drops.values())
            top = ", ".join(f"component {c} reason {r} ×{k}" for (c, r), k in self.drops.most_common(5))
            self.builder.warn(
                "etl-drops", f"{total} dropped-packet events (PktMon 170) are not packets of the trace: {top}"
            )
        table = [
            {
                "id": c,
                "type": info.type,
                "name": info.name,
                "description": info.description,
                "ifindex": info.ifindex,
                "packets": info.packets,
                "tx": info.tx,
                "rx": info.rx,
                "drops": info.drops,
                "kept": c in kept_comps,
            }
            for c, info in sorted(self.components.items())
        ]
        details: dict[str, Any] = {
            "components": table,
            "pktmon": dict(self.counts),
            "drops": [{"component": c, "reason": r, "count": k} for (c, r), k in sorted(self.drops.items())],
        }
        return chunks, interfaces, details

    def _label(self, comp: int) -> str:
        info = self.components.get(comp)
        return f"{comp} ({info.name})" if info is not None and info.name else str(comp)

    def _select(
        self, component: str | None, parts: list[_Part], group: np.ndarray, comp: np.ndarray, n: int
    ) -> np.ndarray:
        """Boolean mask over all decoded 160 events, in part order."""
        if component == "all":
            return np.ones(n, dtype=bool)
        if component:
            seen = sorted(set(comp.tolist()))
            wanted: list[int] = []
            for item in component.split(","):
                try:
                    value = int(item.strip())
                except ValueError:
                    value = -1
                if value not in seen:
                    there = ", ".join(
                        f"{c} ({self.components[c].name})"
                        if c in self.components and self.components[c].name
                        else str(c)
                        for c in seen
                    )
                    raise TraceFormatError(
                        self.builder.path,
                        f"no PktMon component {item.strip()!r} with packets in this trace (components: {there})",
                        hint="--etw-component ID (several comma-separated) or --etw-component all",
                    )
                wanted.append(value)
            return np.isin(comp, wanted)
        ts = np.concatenate([p.chunk.ts_ns for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        record = np.concatenate([p.chunk.record for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        direction = np.concatenate([p.chunk.direction for p in parts]) if parts else np.zeros(0, dtype=np.int8)
        miniports = [c for c, info in self.components.items() if info.type == COMPONENT_MINIPORT]
        candidates = np.isin(comp, miniports) if miniports else np.zeros(n, dtype=bool)
        if not candidates.any():
            why = "no component inventory (events 20)" if not self.inventory else "no packet reaches a miniport"
            if n:
                self.builder.warn(
                    "etl-appearance",
                    f"PktMon trace with {why}: kept the first appearance of each PktGroupId "
                    "(choose with --etw-component)",
                )
            candidates = np.ones(n, dtype=bool)
            pick_last = np.zeros(n, dtype=bool)
        else:
            pick_last = direction == SEND  # the miniport nearest the wire: last on the way out
        idx = np.flatnonzero(candidates)
        order = idx[np.lexsort((record[idx], ts[idx], group[idx]))]
        g = group[order]
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        last = np.r_[first[1:] - 1, len(g) - 1] if len(g) else first
        chosen = np.where(pick_last[order[first]], order[last], order[first]) if len(g) else order
        keep = np.zeros(n, dtype=bool)
        keep[chosen] = True
        missing = len(np.unique(group)) - len(first)
        if missing:
            self.counts["groups_without_miniport"] = int(missing)
        return keep
