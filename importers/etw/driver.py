"""A driver's own send and send-complete events → a trace with measured per-packet latencies.

Input is either an .etl of TraceLogging events (decoded by :mod:`tracelogging`) or a ``tracerpt -of CSV``
export (:mod:`tracerpt`); an :class:`~ndis_replay.importers.etw.eventmap.EventMap` says which events are sends
and completes and which fields hold the NBL pointer, the frame length and the send-call id.

Every send event becomes one packet: no frame bytes (``cap_len`` 0), ``wire_len`` = the length field,
direction send, interface 0 (link type Ethernet, named after the provider). Sends and completes pair by NBL
pointer in time order: a completion pairs with the latest unpaired send of its NBL. So an NBL sent again
before it completed leaves the earlier send unpaired ("resent before completion"), a send never completed is
kept with ``complete_ts_ns`` null, and a completion with no send before it is counted ("unmatched"). Nothing is
dropped silently: every count goes into ``meta.details["driver"]`` and, when not zero, into a warning.
The pairing is vectorised: events sorted by ``(nbl, ts, record)``; a send pairs with the event right after it
when that is a completion of the same NBL.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers.builder import SEND, PacketChunk, TraceBuilder
from ndis_replay.importers.etw.eventmap import EventMap, EventRule, FieldRef, load_event_map, parse_event_map
from ndis_replay.importers.etw.events import FLAG_32_BIT_HEADER, EventBatch
from ndis_replay.importers.etw.tracelogging import (
    CompiledSchema,
    TraceLoggingDecoder,
    TraceLoggingError,
    encode_tracelogging,
)
from ndis_replay.importers.etw.tracerpt import (
    FILETIME_UNIX_EPOCH,
    format_tracerpt_row,
    iter_tracerpt_rows,
    parse_int,
    tracerpt_header_line,
)
from ndis_replay.importers.source import OpenedSource
from ndis_replay.trace import InterfaceInfo, Trace

LINKTYPE_ETHERNET = 1
U64_MASK = (1 << 64) - 1
#: Event names listed in the "no matching send events" error.
_LISTED_NAMES = 12

#: Provider and event names used by :func:`write_driver_etl` and :data:`DEFAULT_EVENT_MAP`.
SAMPLE_PROVIDER = "ndis-replay-sample-driver"
SAMPLE_SEND_EVENT = "MiniportSendNetBufferLists"
SAMPLE_COMPLETE_EVENT = "NdisMSendNetBufferListsComplete"

#: The event map matching :func:`write_driver_etl` (and :func:`driver_csv_text`) output.
DEFAULT_EVENT_MAP = f"""\
# Event map for the ndis-replay sample driver traces (write_driver_etl / driver_csv_text).
[source]
provider = "{SAMPLE_PROVIDER}"

[send]
event = "{SAMPLE_SEND_EVENT}"
nbl = "Nbl"
length = "Length"
call = "CallId"
fields = ["Nbl", "Length", "CallId"]   # the User Data columns of a tracerpt CSV, in order

[complete]
event = "{SAMPLE_COMPLETE_EVENT}"
nbl = "Nbl"
fields = ["Nbl", "Status"]
"""


def tracelogging_provider_guid(name: str) -> uuid.UUID:
    """The provider GUID TraceLogging and EventSource derive from a provider name (SHA-1 over a fixed
    namespace and the upper-cased name in UTF-16BE; version nibble 5) — the sonde sample's GUID is this."""
    namespace = bytes.fromhex("482C2DB2C39047C887F81A15BFC130FB")
    digest = bytearray(hashlib.sha1(namespace + name.upper().encode("utf-16-be")).digest()[:16])
    digest[7] = (digest[7] & 0x0F) | 0x50
    return uuid.UUID(bytes_le=bytes(digest))


@dataclass
class DriverRead:
    """What a driver reader hands to :meth:`TraceBuilder.build`: ``details`` and the ``extra_columns``
    (``nbl_id``, ``complete_ts_ns``, ``send_call``) aligned with the packets it added."""

    details: dict[str, Any]
    extra_columns: dict[str, pl.Series]


@dataclass
class _Collected:
    """Send and complete events as read, plus everything counted on the way."""

    send_ts: list[int] = field(default_factory=list)
    send_rec: list[int] = field(default_factory=list)
    send_nbl: list[int] = field(default_factory=list)
    send_len: list[int] = field(default_factory=list)
    send_call: list[int | None] = field(default_factory=list)
    done_ts: list[int] = field(default_factory=list)
    done_rec: list[int] = field(default_factory=list)
    done_nbl: list[int] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)  # every event seen, by name
    providers: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # matching events that could not be used, by reason
    provider_of_sends: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1


def _as_int(value: Any) -> int | None:
    """An integer field value (TraceLogging int, or tracerpt text in hex or decimal), as unsigned 64-bit."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value) & U64_MASK
    if isinstance(value, str):
        try:
            return parse_int(value) & U64_MASK
        except ValueError:
            return None
    return None


def _take(
    acc: _Collected,
    rule: EventRule,
    get: Callable[[FieldRef], tuple[bool, Any]],
    kind: str,
    ts: int,
    rec: int,
) -> None:
    """Read one matching event's fields through ``get`` and append it to ``acc`` (or count why not)."""
    found, raw = get(rule.nbl)
    nbl = _as_int(raw) if found else None
    if nbl is None:
        acc.skip(f"{kind} event without a readable NBL field {rule.nbl}")
        return
    if kind == "complete":
        acc.done_ts.append(ts)
        acc.done_rec.append(rec)
        acc.done_nbl.append(nbl)
        return
    assert rule.length is not None  # the map requires it for [send]
    found, raw = get(rule.length)
    length = _as_int(raw) if found else None
    if length is None or length > 0xFFFFFFFF:
        acc.skip(f"send event without a readable length field {rule.length}")
        return
    call: int | None = None
    if rule.call is not None:
        found, raw = get(rule.call)
        call = _as_int(raw) if found else None
        if call is None:
            acc.skip(f"send event without a readable call field {rule.call} (kept, no call id)")
    acc.send_ts.append(ts)
    acc.send_rec.append(rec)
    acc.send_nbl.append(nbl)
    acc.send_len.append(length)
    acc.send_call.append(call)


# --- readers -----------------------------------------------------------------------------------------------


def read_driver_etl(source: OpenedSource, builder: TraceBuilder, event_map: EventMap) -> DriverRead:
    """Read the TraceLogging send/complete events of an .etl into ``builder``.

    Events that are not TraceLogging (no EVENT_SCHEMA_TL item) are counted by provider GUID; undecodable
    TraceLogging events are counted by reason (a warning).
    """
    from ndis_replay.importers.etw.container import EtlReader

    reader = EtlReader(source, builder)
    decoder = TraceLoggingDecoder()
    acc = _Collected()
    undecodable: Counter[str] = Counter()
    non_tl: Counter[str] = Counter()
    for batch in reader.batches():
        _read_batch(batch, decoder, event_map, acc, undecodable, non_tl)
    for reason, count in sorted(undecodable.items()):
        builder.warn("tracelogging-undecodable", f"{count} TraceLogging events not decoded: {reason}")
    details: dict[str, Any] = {"etl": _etl_facts(reader)}
    if non_tl:
        details["non_tracelogging_events"] = dict(non_tl.most_common())
    return _finish(source.path, builder, event_map, acc, details)


def _read_batch(
    batch: EventBatch,
    decoder: TraceLoggingDecoder,
    event_map: EventMap,
    acc: _Collected,
    undecodable: Counter[str],
    non_tl: Counter[str],
) -> None:
    """Collect one batch's send/complete events: rows grouped by their extended items (events of one kind
    share them, so the schema is resolved once per group), fields gathered with numpy where they sit at a
    fixed offset, decoded per event otherwise."""
    rows = np.flatnonzero(batch.ext_offset >= 0)
    if len(rows):
        buf = batch.buf
        ptr = np.where(batch.flags[rows] & FLAG_32_BIT_HEADER, 4, 8).tolist()
        groups: dict[tuple[bytes, int], list[int]] = {}
        starts, ends = batch.ext_offset[rows].tolist(), batch.user_offset[rows].tolist()
        for row, a, b, p in zip(rows.tolist(), starts, ends, ptr, strict=True):
            groups.setdefault((buf[a:b], p), []).append(row)
        for (_, pointer_size), members in groups.items():
            try:
                found = decoder.schema(batch.extended_items(members[0]), pointer_size)
            except TraceLoggingError as exc:
                undecodable[exc.reason] += len(members)
                continue
            if found is None:  # extended items, but no TraceLogging schema
                for row in members:
                    non_tl[str(batch.provider(row))] += 1
                continue
            provider, compiled = found
            name = compiled.schema.name
            acc.events[name] += len(members)
            acc.providers[provider] += len(members)
            if event_map.provider is not None and provider != event_map.provider:
                continue
            is_send = event_map.send.matches(name)
            if not is_send and not event_map.complete.matches(name):
                continue
            if is_send:
                acc.provider_of_sends[provider] += len(members)
            rule = event_map.send if is_send else event_map.complete
            if not _gather_group(batch, np.asarray(members, dtype=np.int64), compiled, rule, is_send, acc):
                ts_all, rec_all = batch.ts_ns, batch.record
                for row in members:
                    try:
                        values = compiled.decode(batch.user_data(row))
                    except TraceLoggingError as exc:
                        undecodable[exc.reason] += 1
                        continue
                    kind = "send" if is_send else "complete"
                    _take(acc, rule, _picker(values), kind, int(ts_all[row]), int(rec_all[row]))
    # events without extended items cannot be TraceLogging: counted by provider GUID, without a row loop
    plain = batch.ext_offset < 0
    if plain.any():
        pairs = np.stack([batch.guid_lo[plain], batch.guid_hi[plain]], axis=1)
        _, first, counts = np.unique(pairs, axis=0, return_index=True, return_counts=True)
        for row, count in zip(np.flatnonzero(plain)[first].tolist(), counts.tolist(), strict=True):
            non_tl[str(batch.provider(row))] += count


def _gather_group(
    batch: EventBatch, rows: np.ndarray, compiled: CompiledSchema, rule: EventRule, is_send: bool, acc: _Collected
) -> bool:
    """Collect events ``rows`` (one schema) with numpy; False when a field they need is not at a fixed offset
    or a payload is too short (the caller decodes them one by one, counting what fails)."""
    refs = [rule.nbl, rule.length, rule.call] if is_send else [rule.nbl]
    places: list[tuple[int, str] | None] = []
    for ref in refs:
        if ref is None:
            places.append(None)
            continue
        k = ref.index_in(compiled.names)
        place = compiled.fixed_int_field(k) if k is not None else None
        if place is None:
            return False
        places.append(place)
    end = max(off + struct.calcsize("<" + fmt) for off, fmt in (p for p in places if p is not None))
    if (batch.user_len[rows] < end).any():
        return False
    u8 = np.frombuffer(batch.buf, dtype=np.uint8)
    user = batch.user_offset[rows]

    def gather(place: tuple[int, str]) -> np.ndarray:
        offset, fmt = place
        size = struct.calcsize("<" + fmt)
        raw = np.ascontiguousarray(u8[user[:, None] + offset + np.arange(size)])
        kind = "i" if fmt.islower() else "u"
        # wrapping to u64 sign-extends a negative value, as _as_int's mask does
        return raw.view(f"<{kind}{size}").ravel().astype(np.int64).astype(np.uint64)

    nbl = gather(places[0])  # type: ignore[arg-type]
    ts, rec = batch.ts_ns[rows], batch.record[rows]
    if not is_send:
        acc.done_ts.extend(ts.tolist())
        acc.done_rec.extend(rec.tolist())
        acc.done_nbl.extend(nbl.tolist())
        return True
    length = gather(places[1])  # type: ignore[arg-type]
    ok = length <= np.uint64(0xFFFFFFFF)
    if not ok.all():
        acc.skipped[f"send event without a readable length field {rule.length}"] += int((~ok).sum())
    acc.send_ts.extend(ts[ok].tolist())
    acc.send_rec.extend(rec[ok].tolist())
    acc.send_nbl.extend(nbl[ok].tolist())
    acc.send_len.extend(length[ok].tolist())
    if places[2] is None:
        acc.send_call.extend([None] * int(ok.sum()))
    else:
        acc.send_call.extend(gather(places[2])[ok].tolist())
    return True


def _picker(values: dict[str, Any]) -> Callable[[FieldRef], tuple[bool, Any]]:
    def get(ref: FieldRef) -> tuple[bool, Any]:
        return ref.pick(values)

    return get


def _etl_facts(reader: Any) -> dict[str, Any]:
    header = reader.header
    return {
        "os_build": header.os_build,
        "pointer_size": header.pointer_size,
        "clock_type": header.clock_type,
        "compressed": header.compressed,
        "events_lost": header.events_lost,
    }


def read_driver_csv(source: OpenedSource, builder: TraceBuilder, event_map: EventMap) -> DriverRead:
    """Read the send/complete rows of a tracerpt CSV export into ``builder``.

    A row matches a rule when the rule's event is its Type, its Event Name or ``"<Event Name>/<Type>"``; the
    map's ``[source] provider`` must then equal its Event Name. Fields are read by position among the row's
    User Data columns (``"#N"``, or a name listed in the section's ``fields``).
    """
    for rule, section in ((event_map.send, "send"), (event_map.complete, "complete")):
        refs = [r for r in (rule.nbl, rule.length, rule.call) if r is not None]
        unplaced = [str(r) for r in refs if rule.position(r) is None]
        if unplaced:
            raise TraceFormatError(
                event_map.path,
                f"event map: [{section}] names field(s) {', '.join(unplaced)}, but a tracerpt CSV has no field names",
                hint=f'name them by position ("#1", "#2", …) or list the fields in order: fields = ["…", …] '
                f"in [{section}]",
            )
    acc = _Collected()

    def bad_row(line: int, reason: str) -> None:
        builder.salvage(reason, offset=None, record=line - 1, code="bad-row")

    for row in iter_tracerpt_rows(source, on_bad_row=bad_row):
        full = f"{row.event_name}/{row.type}"
        label = full if row.type else row.event_name
        acc.events[label] += 1
        acc.providers[row.event_name] += 1
        names = (row.type, row.event_name, full)
        is_send = event_map.send.matches(*names)
        if not is_send and not event_map.complete.matches(*names):
            continue
        if event_map.provider is not None and row.event_name != event_map.provider:
            continue
        rule = event_map.send if is_send else event_map.complete
        user = row.user_data

        def get(ref: FieldRef, rule: EventRule = rule, user: tuple[str, ...] = user) -> tuple[bool, Any]:
            pos = rule.position(ref)
            return (True, user[pos]) if pos is not None and pos < len(user) else (False, None)

        if is_send:
            acc.provider_of_sends[row.event_name] += 1
        _take(acc, rule, get, "send" if is_send else "complete", row.ts_ns, row.line)
    return _finish(source.path, builder, event_map, acc, {})


# --- pairing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """The outcome of :func:`pair_events`, per send in the order given: the paired completion's index or -1;
    and the counts."""

    complete_of_send: np.ndarray  # int64, index into the completes, -1 when unpaired
    resent: np.ndarray  # bool: the NBL was sent again before this send completed
    unmatched_completes: int


def pair_events(
    send_ts: np.ndarray,
    send_rec: np.ndarray,
    send_nbl: np.ndarray,
    done_ts: np.ndarray,
    done_rec: np.ndarray,
    done_nbl: np.ndarray,
) -> Pairing:
    """Pair sends and completions by NBL in time order (ties: record order).

    A completion pairs with the latest unpaired send of its NBL: in the events of one NBL sorted by time, a
    send followed directly by a completion pairs with it; a send followed by another send was resent before
    completion; a completion not preceded by a send is unmatched.
    """
    n_send, n_done = len(send_ts), len(done_ts)
    nbl = np.concatenate([send_nbl.astype(np.uint64), done_nbl.astype(np.uint64)])
    ts = np.concatenate([send_ts.astype(np.int64), done_ts.astype(np.int64)])
    rec = np.concatenate([send_rec.astype(np.int64), done_rec.astype(np.int64)])
    is_send = np.zeros(n_send + n_done, dtype=bool)
    is_send[:n_send] = True
    order = np.lexsort((rec, ts, nbl))
    s_nbl, s_send = nbl[order], is_send[order]
    same_next = np.zeros(len(order), dtype=bool)
    same_next[:-1] = s_nbl[1:] == s_nbl[:-1]
    next_send = np.zeros(len(order), dtype=bool)
    next_send[:-1] = s_send[1:]
    paired = s_send & same_next & ~next_send  # sorted position of a send whose next event completes it
    resent_sorted = s_send & same_next & next_send
    complete_of_send = np.full(n_send, -1, dtype=np.int64)
    where = np.flatnonzero(paired)
    complete_of_send[order[where]] = order[where + 1] - n_send
    resent = np.zeros(n_send, dtype=bool)
    resent[order[np.flatnonzero(resent_sorted)]] = True
    unmatched = n_done - len(where)
    return Pairing(complete_of_send, resent, unmatched)


def _finish(
    path: Path, builder: TraceBuilder, event_map: EventMap, acc: _Collected, details: dict[str, Any]
) -> DriverRead:
    if not acc.send_ts:
        names = ", ".join(f"{n} ×{c}" for n, c in acc.events.most_common(_LISTED_NAMES)) or "none"
        if len(acc.events) > _LISTED_NAMES:
            names += f", … ({len(acc.events)} names)"
        providers = ", ".join(f"{p or '(unnamed)'} ×{c}" for p, c in acc.providers.most_common()) or "none"
        wanted = " or ".join(repr(e) for e in event_map.send.events)
        where = f" of provider {event_map.provider!r}" if event_map.provider is not None else ""
        skipped = "; ".join(f"{c}× {r}" for r, c in acc.skipped.items())
        raise TraceFormatError(
            path,
            f"no send events matching the event map found (send event {wanted}{where}); "
            f"events in the trace: {names}; providers: {providers}" + (f"; skipped: {skipped}" if skipped else ""),
            hint=f"check the event map {event_map.path}",
        )
    send_ts = np.asarray(acc.send_ts, dtype=np.int64)
    send_rec = np.asarray(acc.send_rec, dtype=np.int64)
    send_nbl = np.asarray(acc.send_nbl, dtype=np.uint64)
    send_len = np.asarray(acc.send_len, dtype=np.uint32)
    has_call = np.fromiter((c is not None for c in acc.send_call), dtype=bool, count=len(acc.send_call))
    send_call = np.fromiter((c or 0 for c in acc.send_call), dtype=np.uint64, count=len(acc.send_call))
    done_ts = np.asarray(acc.done_ts, dtype=np.int64)
    pairing = pair_events(
        send_ts,
        send_rec,
        send_nbl,
        done_ts,
        np.asarray(acc.done_rec, dtype=np.int64),
        np.asarray(acc.done_nbl, dtype=np.uint64),
    )
    # packets in time order (ties: record order), numbered 0.. so build(time_order=True) keeps this order
    order = np.lexsort((send_rec, send_ts))
    n = len(order)
    done_idx = pairing.complete_of_send[order]
    complete = np.where(done_idx >= 0, done_ts[np.maximum(done_idx, 0)] if len(done_ts) else 0, 0)
    provider = event_map.provider or (acc.provider_of_sends.most_common(1)[0][0] if acc.provider_of_sends else "")
    builder.add_interface(InterfaceInfo(id=0, linktype=LINKTYPE_ETHERNET, name=provider or "driver"))
    builder.add(
        PacketChunk(
            record=np.arange(n, dtype=np.int64),
            ts_ns=send_ts[order],
            interface=np.zeros(n, dtype=np.uint16),
            direction=np.full(n, SEND, dtype=np.int8),
            wire_len=send_len[order],
            buf=b"",
            starts=np.zeros(n, dtype=np.int64),
            lengths=np.zeros(n, dtype=np.int64),
        )
    )
    paired = int((done_idx >= 0).sum())
    resent = int(pairing.resent.sum())
    unpaired = n - paired - resent
    extra = {
        "nbl_id": pl.Series("nbl_id", send_nbl[order], dtype=pl.UInt64),
        "complete_ts_ns": _with_nulls("complete_ts_ns", complete, done_idx < 0, pl.Int64()),
    }
    if event_map.send.call is not None:
        extra["send_call"] = _with_nulls("send_call", send_call[order], ~has_call[order], pl.UInt64())
    if unpaired:
        builder.warn("unpaired-send", f"{unpaired} send events never completed (kept, without a completion time)")
    if resent:
        builder.warn(
            "resent-before-completion",
            f"{resent} sends of an NBL that was sent again before completing (kept, without a completion time)",
        )
    if pairing.unmatched_completes:
        builder.warn(
            "unmatched-complete", f"{pairing.unmatched_completes} completion events with no send of their NBL before"
        )
    for reason, count in sorted(acc.skipped.items()):
        builder.warn("driver-event-skipped", f"{count} events: {reason}")
    details["driver"] = {
        "sends": n,
        "completes": len(done_ts),
        "paired": paired,
        "unpaired_sends": unpaired,
        "unmatched_completes": pairing.unmatched_completes,
        "resent": resent,
        "provider": provider,
        "events": dict(acc.events.most_common()),
        "providers": dict(acc.providers.most_common()),
        "skipped": dict(acc.skipped),
        "event_map": event_map.path,
    }
    return DriverRead(details, extra)


def _with_nulls(name: str, values: np.ndarray, null: np.ndarray, dtype: pl.DataType) -> pl.Series:
    series = pl.Series(name, values, dtype=dtype)
    if not null.any():
        return series
    return pl.select(pl.when(pl.Series(null)).then(None).otherwise(series).alias(name)).to_series()


# --- the whole import --------------------------------------------------------------------------------------


def read_driver_trace(
    source: OpenedSource, builder: TraceBuilder, fmt: str, event_map: EventMap | Path
) -> tuple[dict[str, Any], dict[str, pl.Series]]:
    """Read a driver send/complete trace of format ``fmt`` (``etl`` or ``tracerpt-csv``, as
    :func:`~ndis_replay.importers.source.sniff_format` says) into ``builder`` (made with ``keep_data=False``):
    ``(details, extra_columns)`` for :meth:`TraceBuilder.build`. ``event_map`` is an :class:`EventMap` or the path
    of its TOML file."""
    mapping = event_map if isinstance(event_map, EventMap) else load_event_map(event_map)
    read = read_driver_etl if fmt == "etl" else read_driver_csv
    result = read(source, builder, mapping)
    return result.details, result.extra_columns


def open_driver_trace(
    path: str | Path,
    event_map: EventMap | Path,
    *,
    strict: bool = False,
    batching: str = "none",
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """Import a driver send/complete trace (.etl or tracerpt CSV, decided by content) into a Trace: what
    :func:`ndis_replay.importers.open_trace` does with an ``event_map``."""
    from ndis_replay.importers import EtwOptions, open_trace

    return open_trace(
        path, reader="fast", strict=strict, batching=batching, progress=progress, etw=EtwOptions(event_map=event_map)
    )


#: One send: (ts_ns, NBL pointer, frame length, send-call id or None).
SendEvent = tuple[int, int, int, int | None]
#: One completion: (ts_ns, NBL pointer).
CompleteEvent = tuple[int, int]


def _send_fields(nbl: int, length: int, call: int | None) -> list[tuple[str, str, object]]:
    fields: list[tuple[str, str, object]] = [("Nbl", "pointer", nbl), ("Length", "uint32", length)]
    if call is not None:
        fields.append(("CallId", "uint64", call))
    return fields


def write_driver_etl(
    path: str | Path | BinaryIO,
    sends: Sequence[SendEvent],
    completes: Sequence[CompleteEvent],
    provider_name: str = SAMPLE_PROVIDER,
    cpus: int = 2,
    compress: bool = False,
    *,
    pointer_size: int = 8,
    start_ns: int | None = None,
) -> None:
    """Write an .etl of TraceLogging send/complete events that :data:`DEFAULT_EVENT_MAP` reads.

    Sends are ``MiniportSendNetBufferLists {Nbl: pointer, Length: uint32[, CallId: uint64]}``, completes
    ``NdisMSendNetBufferListsComplete {Nbl: pointer, Status: int32 = 0}``. Events spread over ``cpus`` per-CPU
    buffers (send ``i`` on CPU ``i % cpus``, a completion on the next CPU), so the file is not in time order.
    Timestamps should be multiples of 100 ns (the writer's 10 MHz QPC clock).
    """
    from ndis_replay.importers.etw.writer import EtlWriter

    guid = tracelogging_provider_guid(provider_name)
    events: list[tuple[int, int, list[tuple[str, str, object]], str]] = []
    for i, (ts, nbl, length, call) in enumerate(sends):
        events.append((ts, i % cpus, _send_fields(nbl, length, call), SAMPLE_SEND_EVENT))
    for i, (ts, nbl) in enumerate(completes):
        events.append((ts, (i + 1) % cpus, [("Nbl", "pointer", nbl), ("Status", "int32", 0)], SAMPLE_COMPLETE_EVENT))
    first = min((e[0] for e in events), default=1_700_000_000_000_000_000)
    writer = EtlWriter(
        path,
        start_ns=start_ns if start_ns is not None else first - first % 100 - 1_000_000,
        cpus=cpus,
        compress=compress,
        pointer_size=pointer_size,
    )
    with writer:
        for ts, cpu, fields, name in sorted(events, key=lambda e: e[0]):
            extended, user_data = encode_tracelogging(provider_name, name, fields, pointer_size=pointer_size)
            writer.add_event(
                cpu=cpu,
                ts_ns=ts,
                provider=guid,
                event_id=0,
                channel=11,  # TraceLogging's channel
                level=4,
                keyword=0,
                pid=4,
                tid=1000 + cpu,
                user_data=user_data,
                extended=extended,
            )


def driver_csv_text(
    sends: Sequence[SendEvent],
    completes: Sequence[CompleteEvent],
    provider_name: str = SAMPLE_PROVIDER,
    *,
    hex_ids: bool = True,
) -> str:
    """The same events as :func:`write_driver_etl`, as a tracerpt CSV export would show them (rows in time
    order, NBL pointers in hex), readable with :data:`DEFAULT_EVENT_MAP`."""
    rows: list[tuple[int, str]] = []
    for ts, nbl, length, call in sends:
        ud: tuple[object, ...] = (f"0x{nbl:016X}", length) + (() if call is None else (call,))
        rows.append((ts, format_tracerpt_row(provider_name, SAMPLE_SEND_EVENT, _filetime(ts), ud, hex_ids=hex_ids)))
    for ts, nbl in completes:
        ud = (f"0x{nbl:016X}", 0)
        rows.append((ts, format_tracerpt_row(provider_name, SAMPLE_COMPLETE_EVENT, _filetime(ts), ud, hex_ids=hex_ids)))
    rows.sort(key=lambda r: r[0])
    header = "EventTrace, Header, 0, 2, 0, 0, 0, 0, 0x0000000000000000, 0x00000000, 0x00000000, 0, , , , , 0, 0, 0"
    return "\r\n".join([tracerpt_header_line(), header, *(r for _, r in rows)]) + "\r\n"


def _filetime(ts_ns: int) -> int:
    if ts_ns % 100:
        raise ValueError("tracerpt Clock-Time has 100 ns resolution: ts_ns must be a multiple of 100")
    return ts_ns // 100 + FILETIME_UNIX_EPOCH


def default_event_map() -> EventMap:
    """:data:`DEFAULT_EVENT_MAP`, parsed."""
    return parse_event_map(DEFAULT_EVENT_MAP, "<default event map>")
