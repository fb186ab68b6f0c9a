"""Packet captures in ETL files: ``netsh trace … capture=yes`` (NDIS-PacketCapture) and ``pktmon start --capture``.

One pass over the container's :class:`~ndis_replay.importers.etw.events.EventBatch`\\ es feeds both decoders
(a file may hold both providers); the choice of layer (ndiscap) and appearance (pktmon) is made after the
pass, because it needs the whole layer table and pktmon's component inventory, which is written at the end.
The caller builds the trace with ``time_order=True``: ETL buffers are per CPU, so file order is not time order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers.builder import PacketChunk, TraceBuilder
from ndis_replay.importers.etw.events import EventBatch, guid_key
from ndis_replay.importers.etw.ndiscap import NDIS_PROVIDER, NDIS_PROVIDER_NAME, NdisCapDecoder
from ndis_replay.importers.etw.ndiscap import PACKET_EVENTS as NDIS_PACKET_EVENTS
from ndis_replay.importers.etw.pktmon import PACKET_EVENTS as PKTMON_PACKET_EVENTS
from ndis_replay.importers.etw.pktmon import PKTMON_PROVIDER, PKTMON_PROVIDER_NAME, PktMonDecoder
from ndis_replay.importers.source import OpenedSource
from ndis_replay.trace import InterfaceInfo

#: Provider names for the events table (others are shown by GUID).
PROVIDER_NAMES = {NDIS_PROVIDER: NDIS_PROVIDER_NAME, PKTMON_PROVIDER: PKTMON_PROVIDER_NAME}


def _count_events(batch: EventBatch, counts: Counter[tuple[int, int, int]]) -> None:
    """Add the batch's events per (provider, event id) to ``counts``, keyed by the GUID's two stored halves."""
    lo, hi, eid = batch.guid_lo, batch.guid_hi, batch.event_id
    if (lo == lo[0]).all() and (hi == hi[0]).all():  # the usual case: one provider per batch
        groups = [(int(lo[0]), int(hi[0]), eid)]
    else:
        pairs, inverse = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        groups = [(int(p[0]), int(p[1]), eid[inverse == j]) for j, p in enumerate(pairs)]
    for glo, ghi, ids in groups:
        values, n = np.unique(ids, return_counts=True)
        for v, k in zip(values.tolist(), n.tolist(), strict=True):
            counts[(glo, ghi, v)] += k


def _learn_names(batch: EventBatch, names: dict[uuid.UUID, str]) -> None:
    """Name the batch's TraceLogging providers from their PROV_TRAITS item (one event of each provider not yet
    named), so that refusals and ``inspect`` say "sonde-gateway", not a GUID."""
    from ndis_replay.importers.etw.events import EXT_PROV_TRAITS
    from ndis_replay.importers.etw.tracelogging import TraceLoggingError, parse_provider_traits

    rows = np.flatnonzero(batch.ext_offset >= 0)
    if not len(rows):
        return
    _, first = np.unique(np.stack([batch.guid_lo[rows], batch.guid_hi[rows]], axis=1), axis=0, return_index=True)
    for i in rows[first].tolist():
        guid = batch.provider(i)
        if guid in names:
            continue
        for ext_type, data in batch.extended_items(i):
            if ext_type == EXT_PROV_TRAITS:
                with contextlib.suppress(TraceLoggingError):  # a damaged name: the GUID stands in
                    names[guid] = parse_provider_traits(data)
                break


def _guid(lo: int, hi: int) -> uuid.UUID:
    return uuid.UUID(bytes_le=lo.to_bytes(8, "little") + hi.to_bytes(8, "little"))


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return value


def read_packet_etl(
    source: OpenedSource, builder: TraceBuilder, *, layer: str | None = None, component: str | None = None
) -> dict[str, object]:
    """Read the packet events of an ETL stream into ``builder``; returns the facts for ``TraceMeta.details``.

    ``layer`` selects NDIS-PacketCapture layers (``"MINIPORT:LOWER"``, comma-separated, or ``"all"``; default
    the layer directly above each miniport); ``component`` selects PktMon components (ids, comma-separated,
    or ``"all"``; default one appearance per packet at a miniport). Raises :class:`TraceFormatError` when the
    file holds neither provider's packet events, or names a layer or component the file does not have.
    """
    from ndis_replay.importers.etw.container import EtlReader

    reader = EtlReader(source, builder)
    ndis = NdisCapDecoder(builder)
    pktmon = PktMonDecoder(builder)
    counts: Counter[tuple[int, int, int]] = Counter()
    names: dict[uuid.UUID, str] = dict(PROVIDER_NAMES)
    for batch in reader.batches():
        if not len(batch):
            continue
        _count_events(batch, counts)
        _learn_names(batch, names)
        rows = np.flatnonzero(batch.provider_mask(NDIS_PROVIDER))
        if len(rows):
            ndis.feed(batch, rows)
        rows = np.flatnonzero(batch.provider_mask(PKTMON_PROVIDER))
        if len(rows):
            pktmon.feed(batch, rows)

    per_provider: Counter[uuid.UUID] = Counter()
    events: list[dict[str, object]] = []
    for (lo, hi, eid), n in sorted(counts.items()):
        guid = _guid(lo, hi)
        per_provider[guid] += n
        events.append({"provider": names.get(guid, str(guid)), "guid": str(guid), "event_id": eid, "count": n})
    ndis_packets = sum(counts[(*guid_key(NDIS_PROVIDER), e)] for e in NDIS_PACKET_EVENTS)
    pktmon_packets = sum(counts[(*guid_key(PKTMON_PROVIDER), e)] for e in PKTMON_PACKET_EVENTS)
    if not ndis_packets and not pktmon_packets:
        there = ", ".join(f"{names.get(g, str(g))} ×{n}" for g, n in per_provider.most_common()) or "none"
        raise TraceFormatError(
            builder.path,
            f"no packet events found: neither {NDIS_PROVIDER_NAME} (1001/1003) nor {PKTMON_PROVIDER_NAME} "
            f"(160/170) events are in this ETL (events by provider: {there})",
            hint="a packet capture comes from `netsh trace start capture=yes` or `pktmon start --capture`; "
            "for a driver's own send/complete events use --event-map",
        )

    etw: dict[str, Any] = {"events": events}
    # ns per raw clock tick, as pcapng states it ("100" for QPC at 10 MHz)
    ticks = int(getattr(reader.header, "ticks_per_second", 0) or 0)
    resolution = str(Fraction(1_000_000_000, ticks)) if ticks > 0 else ""
    first_id = 0
    if ndis_packets or layer:
        chunks, interfaces, found = ndis.finish(layer, first_id)
        _hand_over(builder, chunks, interfaces, resolution)
        first_id += len(interfaces)
        etw.update(found)
    if pktmon_packets or component:
        chunks, interfaces, found = pktmon.finish(component, first_id)
        _hand_over(builder, chunks, interfaces, resolution)
        etw.update(found)
    details: dict[str, object] = {"etw": etw}
    header = getattr(reader, "header", None)
    stats = getattr(reader, "stats", None)
    if header is not None:
        details["etl_header"] = _jsonable(header)
    if stats is not None:
        details["etl_stats"] = _jsonable(stats)
    return details


def _hand_over(
    builder: TraceBuilder, chunks: list[PacketChunk], interfaces: list[InterfaceInfo], resolution: str
) -> None:
    for info in interfaces:  # before the chunks: builder.add looks up each interface's link type
        builder.add_interface(dataclasses.replace(info, ts_resolution=resolution))
    for chunk in chunks:
        builder.add(chunk)
