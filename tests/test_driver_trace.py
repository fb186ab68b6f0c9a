"""Driver send/complete traces: the event map, tracerpt CSV, pairing by NBL, measured latencies, bad input."""

from __future__ import annotations

import codecs
import random
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ndis_replay.errors import ConfigError, TraceFormatError
from ndis_replay.importers.etw.container import looks_like_etl
from ndis_replay.importers.etw.driver import (
    DEFAULT_EVENT_MAP,
    CompleteEvent,
    SendEvent,
    default_event_map,
    driver_csv_text,
    open_driver_trace,
    pair_events,
    tracelogging_provider_guid,
    write_driver_etl,
)
from ndis_replay.importers.etw.eventmap import FieldRef, load_event_map, parse_event_map
from ndis_replay.importers.etw.tracelogging import encode_tracelogging
from ndis_replay.importers.etw.tracerpt import (
    format_tracerpt_row,
    iter_tracerpt_rows,
    looks_like_tracerpt_csv,
    tracerpt_header_line,
)
from ndis_replay.importers.etw.writer import EtlWriter
from ndis_replay.importers.source import open_source
from ndis_replay.trace import Trace
from tests.conftest import CORPUS, SAMPLES

T0 = 1_718_050_716_000_000_000  # ns; a multiple of 100 (the 10 MHz clock and FILETIME resolution)
A, B, C = 0xFFFF_A001_0000_1000, 0xFFFF_A001_0000_2000, 0xFFFF_A001_0000_3000
US = 1_000

# scenario: sends (ts, nbl, len, call), completes (ts, nbl), expected complete_ts per send in time order
# (None = not completed), expected counts (paired, unpaired, resent, unmatched)
SCENARIOS: list[tuple[str, list[SendEvent], list[CompleteEvent], list[int | None], tuple[int, int, int, int]]] = [
    (
        "in-order",
        [(T0, A, 60, 1), (T0 + 1 * US, B, 1514, 2), (T0 + 2 * US, C, 100, 3)],
        [(T0 + 10 * US, A), (T0 + 11 * US, B), (T0 + 12 * US, C)],
        [T0 + 10 * US, T0 + 11 * US, T0 + 12 * US],
        (3, 0, 0, 0),
    ),
    (
        "out-of-order-completions",
        [(T0, A, 60, 1), (T0 + 1 * US, B, 60, 1), (T0 + 2 * US, C, 60, 1)],
        [(T0 + 30 * US, C), (T0 + 31 * US, A), (T0 + 32 * US, B)],
        [T0 + 31 * US, T0 + 32 * US, T0 + 30 * US],
        (3, 0, 0, 0),
    ),
    (
        "unpaired-send",
        [(T0, A, 60, 1), (T0 + 1 * US, B, 60, 2)],
        [(T0 + 5 * US, A)],
        [T0 + 5 * US, None],
        (1, 1, 0, 0),
    ),
    (
        "unmatched-completion",
        [(T0 + 2 * US, A, 60, 1)],
        [(T0 + 1 * US, A), (T0 + 4 * US, A), (T0 + 5 * US, B)],  # one before the send, one of an unsent NBL
        [T0 + 4 * US],
        (1, 0, 0, 2),
    ),
    (
        "nbl-reused-after-completion",
        [(T0, A, 60, 1), (T0 + 20 * US, A, 70, 2)],
        [(T0 + 10 * US, A), (T0 + 25 * US, A)],
        [T0 + 10 * US, T0 + 25 * US],
        (2, 0, 0, 0),
    ),
    (
        "resent-before-completion",
        [(T0, A, 60, 1), (T0 + 5 * US, A, 60, 2), (T0 + 6 * US, B, 60, 2)],
        [(T0 + 9 * US, A), (T0 + 7 * US, B)],
        [None, T0 + 9 * US, T0 + 7 * US],
        (2, 0, 1, 0),
    ),
]


def _write(kind: str, path: Path, sends: list[SendEvent], completes: list[CompleteEvent], **kw: Any) -> Path:
    if kind == "csv":
        path = path.with_suffix(".csv")
        path.write_text(driver_csv_text(sends, completes), encoding="utf-8", newline="")
    else:
        path = path.with_suffix(".etl")
        write_driver_etl(path, sends, completes, compress=kind == "etl-compressed", **kw)
    return path


@pytest.mark.parametrize("kind", ["etl", "etl-compressed", "csv"])
@pytest.mark.parametrize(
    ("sends", "completes", "expected", "counts"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_pairing(
    tmp_path: Path,
    kind: str,
    sends: list[SendEvent],
    completes: list[CompleteEvent],
    expected: list[int | None],
    counts: tuple[int, int, int, int],
) -> None:
    path = _write(kind, tmp_path / "t", sends, completes, cpus=3)
    trace = open_driver_trace(path, default_event_map())
    f = trace.frame
    by_time = sorted(sends, key=lambda s: s[0])
    assert f["ts_ns"].to_list() == [s[0] for s in by_time]
    assert f["nbl_id"].to_list() == [s[1] for s in by_time]
    assert f["wire_len"].to_list() == [s[2] for s in by_time]
    assert f["send_call"].to_list() == [s[3] for s in by_time]
    assert f["complete_ts_ns"].to_list() == expected
    assert f["cap_len"].to_list() == [0] * len(sends)
    assert set(f["direction"].to_list()) == {"send"}
    assert "data" not in f.columns and not trace.meta.has_data
    d = trace.meta.details["driver"]
    _, unpaired, resent, unmatched = counts
    assert (d["sends"], d["completes"]) == (len(sends), len(completes))
    assert (d["paired"], d["unpaired_sends"], d["resent"], d["unmatched_completes"]) == counts
    codes = {w.code: w.detail for w in trace.warnings}
    assert ("unpaired-send" in codes) == bool(unpaired)
    assert ("resent-before-completion" in codes) == bool(resent)
    assert ("unmatched-complete" in codes) == bool(unmatched)
    if unmatched:
        assert codes["unmatched-complete"].startswith(f"{unmatched} ")
    assert trace.meta.interfaces[0].name == "ndis-replay-sample-driver"
    assert trace.meta.interfaces[0].linktype == 1


@pytest.mark.parametrize("kind", ["etl", "csv"])
def test_call_ids_drive_auto_batching(tmp_path: Path, kind: str) -> None:
    sends: list[SendEvent] = [
        (T0, A, 60, 7),
        (T0 + US, B, 60, 7),
        (T0 + 2 * US, C, 60, 8),
        (T0 + 3 * US, A + 8, 60, None),  # no call id: its own call
    ]
    completes: list[CompleteEvent] = [(T0 + 9 * US, n) for _, n, _, _ in sends]
    path = _write(kind, tmp_path / "t", sends, completes)
    trace = open_driver_trace(path, default_event_map(), batching="auto")
    assert trace.frame["send_call"].to_list() == [7, 7, 8, None]
    assert trace.frame["batch"].to_list() == [0, 0, 1, 2]
    # the same events with a map that has no call field: no send_call column; auto falls back to time gaps
    no_call = parse_event_map(DEFAULT_EVENT_MAP.replace('call = "CallId"\n', ""))
    assert "send_call" not in open_driver_trace(path, no_call).frame.columns


@pytest.mark.parametrize(
    ("kind", "pointer_size", "cpus"),
    [("etl", 8, 4), ("etl", 4, 2), ("etl-compressed", 8, 3), ("csv", 8, 1)],
    ids=["etl-ptr64-4cpu", "etl-ptr32-2cpu", "etl-compressed", "csv"],
)
def test_measured_latencies_equal_what_was_written(tmp_path: Path, kind: str, pointer_size: int, cpus: int) -> None:
    rng = random.Random(5)
    pool = [0xFFFF_C000_0000_0000 + 0x200 * i for i in range(64)]
    if pointer_size == 4:
        pool = [p & 0xFFFFFFFF for p in pool]
    free_at = dict.fromkeys(pool, 0)
    sends: list[SendEvent] = []
    completes: list[CompleteEvent] = []
    latency: dict[tuple[int, int], int] = {}
    t = T0
    for i in range(3000):
        t += rng.randrange(1, 50) * 100
        nbl = rng.choice([p for p in pool if free_at[p] <= t] or pool[:1])
        if free_at[nbl] > t:
            t = free_at[nbl]
        lat = rng.randrange(1, 2000) * 100
        sends.append((t, nbl, rng.randrange(42, 1515), i // 4))
        completes.append((t + lat, nbl))
        latency[(t, nbl)] = lat
        free_at[nbl] = t + lat + 100
    path = _write(kind, tmp_path / "t", sends, completes, pointer_size=pointer_size, cpus=cpus)
    trace = open_driver_trace(path, default_event_map())
    f = trace.frame
    assert len(f) == len(sends)
    got = dict(
        zip(zip(f["ts_ns"].to_list(), f["nbl_id"].to_list(), strict=True), f["complete_ts_ns"].to_list(), strict=True)
    )
    assert {k: got[k] - k[0] for k in latency} == latency
    d = trace.meta.details["driver"]
    assert (d["paired"], d["unpaired_sends"], d["resent"], d["unmatched_completes"]) == (3000, 0, 0, 0)
    assert not trace.warnings
    out = tmp_path / "t.parquet"
    trace.save(out)
    assert Trace.load(out).frame.equals(f)


def test_pair_events_matches_a_reference_loop() -> None:
    """The vectorised pairing against the rule spelled out as a loop, on random events with heavy NBL reuse."""
    rng = np.random.default_rng(11)
    n_send, n_done = 400, 380
    send_ts, done_ts = rng.integers(0, 5000, n_send), rng.integers(0, 5000, n_done)
    send_nbl, done_nbl = rng.integers(0, 20, n_send).astype(np.uint64), rng.integers(0, 20, n_done).astype(np.uint64)
    send_rec, done_rec = np.arange(n_send), np.arange(n_send, n_send + n_done)
    got = pair_events(send_ts, send_rec, send_nbl, done_ts, done_rec, done_nbl)
    events = sorted(
        [(int(send_ts[i]), int(send_rec[i]), "s", i, int(send_nbl[i])) for i in range(n_send)]
        + [(int(done_ts[j]), int(done_rec[j]), "c", j, int(done_nbl[j])) for j in range(n_done)]
    )
    pending: dict[int, int] = {}
    want = [-1] * n_send
    resent = [False] * n_send
    unmatched = 0
    for _, _, kind, idx, nbl in events:
        if kind == "s":
            if nbl in pending:
                resent[pending[nbl]] = True
            pending[nbl] = idx
        elif nbl in pending:
            want[pending.pop(nbl)] = idx
        else:
            unmatched += 1
    assert got.complete_of_send.tolist() == want
    assert got.resent.tolist() == resent
    assert got.unmatched_completes == unmatched


# --- tracerpt CSV ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"], ids=["utf8", "utf8-bom", "utf16le-bom"])
@pytest.mark.parametrize("hex_ids", [True, False], ids=["hex-pid", "decimal-pid"])
def test_tracerpt_csv_encodings(tmp_path: Path, encoding: str, hex_ids: bool) -> None:
    sends: list[SendEvent] = [(T0, A, 60, 1), (T0 + US, B, 61, 1)]
    completes: list[CompleteEvent] = [(T0 + 3 * US, B), (T0 + 4 * US, A)]
    text = driver_csv_text(sends, completes, hex_ids=hex_ids)
    raw = text.encode(encoding)
    if encoding == "utf-16":  # Python writes the BOM in native order: make sure it is UTF-16LE with a BOM
        raw = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    path = tmp_path / "dumpfile.csv"
    path.write_bytes(raw)
    assert looks_like_tracerpt_csv(raw[:4096])
    trace = open_driver_trace(path, default_event_map())
    assert trace.frame["complete_ts_ns"].to_list() == [T0 + 4 * US, T0 + 3 * US]
    assert trace.meta.format == "tracerpt-csv"


def test_tracerpt_rows_read_positionally(tmp_path: Path) -> None:
    lines = [
        tracerpt_header_line(),
        "EventTrace, Header, 0, 2, 0, 0, 0, 0, 0x0, 0x00000000, 0x00000000, 0, , , , , 0, 0, 0, 65536, 1",
        format_tracerpt_row("Prov", "Start ", 133_625_243_160_000_123, ("a, b", 5), pid=0x1234, tid=99, cpu=3),
        format_tracerpt_row("Prov", "Stop", 133_625_243_160_000_456, (), hex_ids=False, pid=17),
    ]
    path = tmp_path / "x.csv"
    path.write_text("\n".join(lines) + "\n")
    source = open_source(path)
    try:
        rows = list(iter_tracerpt_rows(source))
    finally:
        source.close()
    assert [(r.event_name, r.type) for r in rows] == [("Prov", "Start"), ("Prov", "Stop")]
    first, second = rows
    assert first.user_data == ("a, b", "5")  # quoted field with a comma and a leading space
    assert (first.pid, first.tid, first.cpu) == (0x1234, 99, 3)
    assert second.pid == 17 and second.user_data == ()
    assert first.ts_ns == (133_625_243_160_000_123 - 116_444_736_000_000_000) * 100
    assert first.line == 3


def test_tracerpt_missing_columns_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Event Name, Type, Event ID, PID, TID, Clock-Time\nProv, Send, 0, 1, 2, 133625243160000000\n")
    with pytest.raises(TraceFormatError, match=r"lacks the column\(s\) User Data") as exc:
        open_driver_trace(path, default_event_map())
    assert exc.value.hint is not None and "Clock-Time" in exc.value.hint


def test_tracerpt_bad_clock_time_is_salvaged_or_strict(tmp_path: Path) -> None:
    text = driver_csv_text([(T0, A, 60, 1), (T0 + US, B, 60, 1)], [(T0 + 2 * US, A)])
    lines = text.split("\r\n")
    lines[3] = lines[3].replace(str((T0 + US) // 100 + 116_444_736_000_000_000), "garbage")
    path = tmp_path / "d.csv"
    path.write_text("\r\n".join(lines))
    trace = open_driver_trace(path, default_event_map())
    assert len(trace) == 1
    assert [w.code for w in trace.warnings] == ["bad-row"]
    with pytest.raises(TraceFormatError, match="Clock-Time 'garbage' is not a number"):
        open_driver_trace(path, default_event_map(), strict=True)


def test_csv_field_names_need_a_fields_list(tmp_path: Path) -> None:
    path = _write("csv", tmp_path / "t", [(T0, A, 60, 1)], [])
    named = parse_event_map(DEFAULT_EVENT_MAP.replace('fields = ["Nbl", "Length", "CallId"]', ""))
    with pytest.raises(TraceFormatError, match="a tracerpt CSV has no field names"):
        open_driver_trace(path, named)
    positional = parse_event_map(
        DEFAULT_EVENT_MAP.replace('fields = ["Nbl", "Length", "CallId"]', "").replace(
            'nbl = "Nbl"\nlength = "Length"\ncall = "CallId"', 'nbl = "#1"\nlength = "#2"\ncall = "#3"'
        )
    )
    assert open_driver_trace(path, positional).frame["nbl_id"].to_list() == [A]


def test_looks_like_tracerpt_csv_only_for_tracerpt(tmp_path: Path) -> None:
    assert looks_like_tracerpt_csv(driver_csv_text([(T0, A, 60, 1)], []).encode())
    others = [p for p in SAMPLES.iterdir() if p.is_file() and p.suffix != ".csv"]  # the samples hold one
    others += [CORPUS / "etw" / "demikernel" / "PktMon.etl", CORPUS / "etw" / "demikernel" / "PktMon.cap"]
    for p in others:
        assert not looks_like_tracerpt_csv(p.read_bytes()[:4096]), p.name
    assert not looks_like_tracerpt_csv(b"Event Name, Type, Time\n1, 2, 3\n")


# --- event map ---------------------------------------------------------------------------------------------

BAD_MAPS = [
    ("unknown-key", DEFAULT_EVENT_MAP.replace('nbl = "Nbl"\nlength', 'nbl = "Nbl"\nlenght = "x"\nlength'), "'lenght'"),
    ("unknown-table", DEFAULT_EVENT_MAP + "\n[sends]\nevent = 'x'\n", r"unknown table \[sends\]"),
    ("missing-key", DEFAULT_EVENT_MAP.replace('length = "Length"\n', ""), r"missing key 'length' in \[send\]"),
    ("missing-table", "[send]\nevent = 'S'\nnbl = 'n'\nlength = 'l'\n", r"missing table \[complete\]"),
    ("wrong-type", DEFAULT_EVENT_MAP.replace('length = "Length"', "length = 3"), "length must be a string"),
    ("event-list-of-ints", DEFAULT_EVENT_MAP.replace('event = "Miniport', "event = [1]\n#"), "event must be a string"),
    ("bad-position", DEFAULT_EVENT_MAP.replace('nbl = "Nbl"\nlength', 'nbl = "#0"\nlength'), "1-based"),
    ("same-event", DEFAULT_EVENT_MAP.replace("NdisMSendNetBufferListsComplete", "MiniportSendNetBufferLists"), "both"),
    ("field-not-listed", DEFAULT_EVENT_MAP.replace('call = "CallId"', 'call = "Call"'), "not in its fields list"),
    ("not-toml", "[send\n", "not valid TOML"),
    ("section-not-table", 'send = "x"\n', "must be a table"),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD_MAPS], ids=[b[0] for b in BAD_MAPS])
def test_bad_event_maps(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=message) as exc:
        load_event_map(path)
    assert exc.value.path == str(path)
    assert "\n" not in exc.value.reason
    assert exc.value.exit_code == 3


def test_event_map_parsed() -> None:
    m = parse_event_map(
        '[source]\nprovider = "MyDriver"\n[send]\nevent = ["Send", "SendChain"]\nnbl = "#2"\nlength = "Len"\n'
        '[complete]\nevent = "Done"\nnbl = "Nbl"\n'
    )
    assert m.provider == "MyDriver"
    assert m.send.events == ("Send", "SendChain") and m.send.matches("SendChain")
    assert m.send.nbl == FieldRef(position=2) and m.send.call is None
    assert m.send.nbl.pick({"a": 1, "b": 2}) == (True, 2)
    assert m.complete.nbl.pick({"a": 1}) == (False, None)


# --- no matching events, other providers, undecodable events ----------------------------------------------


def test_no_matching_send_events_lists_what_is_there() -> None:
    sonde = CORPUS / "etw" / "generic-etl-sonde" / "test.etl"
    with pytest.raises(TraceFormatError, match="no send events matching the event map found") as exc:
        open_driver_trace(sonde, default_event_map())
    reason = exc.value.reason
    assert "event crates\\sonde-gateway\\src\\engine.rs:581 ×2" in reason
    assert "providers: sonde-gateway ×9" in reason
    assert "'MiniportSendNetBufferLists'" in reason


def test_sonde_events_as_sends_with_a_map(tmp_path: Path) -> None:
    """A map over the real sample: its 'seq' field as NBL, 'battery_mv' as length — the ETL path end to end."""
    path = tmp_path / "sonde.toml"
    path.write_text(
        '[source]\nprovider = "sonde-gateway"\n'
        '[send]\nevent = "event crates\\\\sonde-gateway\\\\src\\\\engine.rs:586"\nnbl = "seq"\nlength = "battery_mv"\n'
        '[complete]\nevent = "event crates\\\\sonde-gateway\\\\src\\\\engine.rs:581"\nnbl = "seq"\n'
    )
    trace = open_driver_trace(CORPUS / "etw" / "generic-etl-sonde" / "test.etl", load_event_map(path))
    assert trace.frame["wire_len"].to_list() == [3300, 3300]
    d = trace.meta.details["driver"]
    # each "session created" (the complete here) comes before its "WAKE received" (the send): none pair
    assert (d["sends"], d["completes"], d["paired"], d["unmatched_completes"]) == (2, 2, 0, 2)


def test_other_providers_and_undecodable_events_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "mixed.etl"
    guid = tracelogging_provider_guid("ndis-replay-sample-driver")
    with EtlWriter(path, start_ns=T0 - 1_000_000) as w:
        ext, ud = encode_tracelogging(
            "ndis-replay-sample-driver",
            "MiniportSendNetBufferLists",
            [("Nbl", "pointer", A), ("Length", "uint32", 60), ("CallId", "uint64", 1)],
        )
        w.add_event(cpu=0, ts_ns=T0, provider=guid, event_id=0, channel=11, user_data=ud, extended=ext)
        # a manifest event of another provider (no schema item), twice
        other = uuid.UUID("4d4f80d9-c8bd-4d73-bb5b-19c90402c5ac")
        for k in range(2):
            w.add_event(cpu=1, ts_ns=T0 + 100 * k, provider=other, event_id=160, user_data=b"\0" * 8)
        # a TraceLogging event whose schema holds a struct field: refused, counted
        body = b"\x00Ev\x00s\x00" + bytes([0x80 | 24, 1])
        bad_schema = struct.pack("<H", len(body) + 2) + body
        w.add_event(cpu=0, ts_ns=T0 + 200, provider=guid, event_id=0, extended=[(0x0B, bad_schema)])
        # a send whose NBL field is missing: skipped, counted
        ext2, ud2 = encode_tracelogging(
            "ndis-replay-sample-driver", "MiniportSendNetBufferLists", [("Length", "uint32", 60)]
        )
        w.add_event(cpu=0, ts_ns=T0 + 300, provider=guid, event_id=0, user_data=ud2, extended=ext2)
    assert looks_like_etl(path.read_bytes()[:4096])
    trace = open_driver_trace(path, default_event_map())
    assert len(trace) == 1
    assert trace.meta.details["non_tracelogging_events"] == {str(other): 2}
    assert trace.meta.details["driver"]["skipped"] == {"send event without a readable NBL field Nbl": 1}
    codes = {w.code: w.detail for w in trace.warnings}
    assert codes["tracelogging-undecodable"] == "1 TraceLogging events not decoded: struct field"
    assert codes["unpaired-send"].startswith("1 ")


def test_not_a_driver_trace(tmp_path: Path) -> None:
    # an event map given for a pcap is a usage mistake (exit 2), named as such
    with pytest.raises(ConfigError, match=r"maps driver events of an \.etl or tracerpt CSV, and .* is pcap"):
        open_driver_trace(SAMPLES / "small_packets.pcap", default_event_map())


@pytest.mark.parametrize(
    "prefix",
    [[], [("Miniport", "ansistring", "mlx5")], [("Weight", "double", 0.5)]],
    ids=["fixed-layout-gathered", "string-before-decoded-per-event", "double-before-gathered"],
)
def test_field_layouts_give_the_same_packets(tmp_path: Path, prefix: list[tuple[str, str, object]]) -> None:
    """Fields at a fixed offset are gathered with numpy, others decoded per event: same result either way."""
    path = tmp_path / "layout.etl"
    guid = tracelogging_provider_guid("ndis-replay-sample-driver")
    sends = [(T0 + k * US, A + 0x100 * k, 60 + k, k // 2) for k in range(6)]
    with EtlWriter(path, start_ns=T0 - 1_000_000, cpus=2) as w:
        for k, (ts, nbl, length, call) in enumerate(sends):
            fields = [*prefix, ("Nbl", "pointer", nbl), ("Length", "int32", length), ("CallId", "uint32", call)]
            ext, ud = encode_tracelogging("ndis-replay-sample-driver", "MiniportSendNetBufferLists", fields)
            w.add_event(cpu=k % 2, ts_ns=ts, provider=guid, event_id=0, user_data=ud, extended=ext)
            ext, ud = encode_tracelogging(
                "ndis-replay-sample-driver", "NdisMSendNetBufferListsComplete", [*prefix, ("Nbl", "pointer", nbl)]
            )
            w.add_event(cpu=(k + 1) % 2, ts_ns=ts + 50 * US, provider=guid, event_id=0, user_data=ud, extended=ext)
        # a negative length (int32 -1) is not a length: skipped and counted
        ext, ud = encode_tracelogging(
            "ndis-replay-sample-driver",
            "MiniportSendNetBufferLists",
            [*prefix, ("Nbl", "pointer", C), ("Length", "int32", -1), ("CallId", "uint32", 9)],
        )
        w.add_event(cpu=0, ts_ns=T0 + 90 * US, provider=guid, event_id=0, user_data=ud, extended=ext)
    trace = open_driver_trace(path, default_event_map())
    f = trace.frame
    assert f["nbl_id"].to_list() == [s[1] for s in sends]
    assert f["wire_len"].to_list() == [s[2] for s in sends]
    assert f["send_call"].to_list() == [s[3] for s in sends]
    assert (f["complete_ts_ns"] - f["ts_ns"]).to_list() == [50 * US] * len(sends)
    assert trace.meta.details["driver"]["skipped"] == {"send event without a readable length field Length": 1}
