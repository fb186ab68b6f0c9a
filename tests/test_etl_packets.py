"""Packet events of ETL files (NDIS-PacketCapture 1001/1003, PktMon 160/170) into the canonical trace.

The real pktmon capture must import to exactly the packets of pktmon's own pcapng export; synthetic files
written with :class:`EtlWriter` must come back exactly as written (bytes, time, direction, original length,
interface) whatever the buffer compression and CPU interleaving.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ndis_replay.errors import TraceFormatError
from ndis_replay.importers import open_trace
from ndis_replay.importers.builder import TraceBuilder
from ndis_replay.importers.etw import ndiscap as nd
from ndis_replay.importers.etw import pktmon as pm
from ndis_replay.importers.etw.packets import read_packet_etl
from ndis_replay.importers.etw.writer import DEFAULT_START_NS, EtlWriter
from ndis_replay.importers.source import open_source
from ndis_replay.trace import Trace
from tests.conftest import CORPUS

PKTMON_ETL = CORPUS / "etw" / "demikernel" / "PktMon.etl"
PKTMON_CAP = CORPUS / "etw" / "demikernel" / "PktMon.cap"
SONDE_ETL = CORPUS / "etw" / "generic-etl-sonde" / "test.etl"

T0 = DEFAULT_START_NS + 1_000_000_000  # first packet, 1 s after the header record
US = 1000


def load(path: Path, *, strict: bool = False, **select: Any) -> Trace:
    """Import an ETL the way the CLI will: read_packet_etl, then build in time order."""
    source = open_source(path)
    try:
        builder = TraceBuilder(path, strict=strict)
        details = read_packet_etl(source, builder, **select)
        sha = source.sha256()
    finally:
        source.close()
    return builder.build(sha256=sha, size=source.size, fmt="etl", compression=None, time_order=True, details=details)


def rows(trace: Trace) -> list[tuple[int, bytes, str, int, str]]:
    """``(ts_ns, data, direction, wire_len, interface name)`` per packet, in trace order."""
    names = {i.id: i.name for i in trace.meta.interfaces}
    f = trace.frame
    return [
        (ts, data, d, w, names[i])
        for ts, data, d, w, i in zip(
            f["ts_ns"].to_list(),
            f["data"].to_list(),
            f["direction"].cast(str).to_list(),
            f["wire_len"].to_list(),
            f["interface"].to_list(),
            strict=True,
        )
    ]


def warning_codes(trace: Trace) -> dict[str, int]:
    return {w.code: w.count for w in trace.meta.warnings}


# --- frames -------------------------------------------------------------------------------------------------


def ipv4(total: int, fill: int = 0x11) -> bytes:
    """An IPv4 packet whose header says ``total`` bytes; the bytes are max(total, 20) long."""
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02")
    return header + bytes([fill]) * max(total - 20, 0)


def ipv6(payload: int) -> bytes:
    header = struct.pack(">IHBB16s16s", 0x60000000, payload, 17, 64, b"\x20" * 16, b"\x30" * 16)
    return header + b"\x66" * payload


def eth(l3: bytes, ethertype: int, vlan: int | None = None) -> bytes:
    tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + tag + struct.pack(">H", ethertype) + l3


def frame(n: int) -> bytes:
    """A distinct Ethernet/IPv4 frame per ``n``."""
    return eth(ipv4(46 + n % 50, fill=n % 251), 0x0800)


# --- NDIS-PacketCapture ---------------------------------------------------------------------------------------


@dataclass
class Ev:
    """One event to write."""

    cpu: int
    tid: int
    ts: int
    user_data: bytes
    keyword: int
    event_id: int = nd.EVENT_FRAGMENT


SINGLE = nd.KW_PACKET_START | nd.KW_PACKET_END
SEND = nd.KW_ETHERNET | SINGLE | nd.KW_SEND
RECV = nd.KW_ETHERNET | SINGLE | nd.KW_RECV
TRUNC = nd.KW_TRUNCATED


def ndis_scenario() -> tuple[list[Ev], list[tuple[int, bytes, str, int, str]], list[tuple[int, bytes, str, int, str]]]:
    """Events, the packets the default selection must give (time order), and those of layer 5:16."""
    evs: list[Ev] = []
    want: list[tuple[int, bytes, str, int, str]] = []
    upper: list[tuple[int, bytes, str, int, str]] = []

    def single(cpu: int, ts: int, m: int, low: int, data: bytes, kw: int, out: tuple[str, int, str] | None) -> None:
        evs.append(Ev(cpu, 7, ts, nd.encode_1001(m, low, data, gft=ts % 3 == 0), kw))
        if out is not None:
            want.append((ts, data, *out))

    # filler: single-event packets alternating CPUs with interleaved times, each also at the LWF layer 5:16
    for n in range(300):
        cpu, ts = n % 2, T0 + n * 10 * US + (n % 2) * 3 * US
        data = frame(n)
        single(cpu, ts, 5, 5, data, SEND if n % 3 else RECV, ("send" if n % 3 else "recv", len(data), "eth:5"))
        evs.append(Ev(cpu, 7, ts + 500, nd.encode_1001(5, 16, data), SEND if n % 3 else RECV))
        upper.append((ts + 500, data, "send" if n % 3 else "recv", len(data), "eth:16"))
    t = T0 + 4_000 * US
    # neither direction keyword
    data = frame(1001)
    single(0, t, 5, 5, data, nd.KW_ETHERNET | SINGLE, ("unknown", len(data), "eth:5"))
    # truncated: IPv4, IPv6, 802.1Q IPv4, LSOv2 (IPv4 length 0), raw IP on a WWAN miniport
    full = eth(ipv4(1500), 0x0800)
    single(1, t + 1 * US, 5, 5, full[:128], SEND | TRUNC, ("send", 1514, "eth:5"))
    full = eth(ipv6(1000), 0x86DD)
    single(0, t + 2 * US, 5, 5, full[:90], RECV | TRUNC, ("recv", 14 + 40 + 1000, "eth:5"))
    full = eth(ipv4(800), 0x0800, vlan=42)
    single(1, t + 3 * US, 5, 5, full[:60], SEND | TRUNC, ("send", 818, "eth:5"))
    lso = eth(ipv4(0), 0x0800) + b"\x55" * 180
    single(0, t + 4 * US, 5, 5, lso, SEND | TRUNC, ("send", len(lso), "eth:5"))
    wwan = (SEND & ~nd.KW_ETHERNET) | nd.KW_WIRELESS_WAN | TRUNC
    single(1, t + 5 * US, 8, 8, ipv4(600)[:64], wwan, ("send", 600, "mbb:8"))
    # native 802.11 on a miniport with no layer directly above it (7:20 only): kept, with a warning
    wifi = b"\x08\x02" + b"\x00" * 22 + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ipv4(40)
    single(0, t + 6 * US, 7, 20, wifi, nd.KW_NATIVE_802_11 | SINGLE | nd.KW_RECV, ("recv", len(wifi), "wifi:20"))
    # multi-event packets: three on CPU 0 (threads 10 and 11 interleaved, thread 12 single in between) and one
    # on CPU 1 thread 10, open at the same time as CPU 0's thread 10
    a, b, c = frame(2001), frame(2002), frame(2003)
    start, end = nd.KW_ETHERNET | nd.KW_SEND | nd.KW_PACKET_START, nd.KW_ETHERNET | nd.KW_SEND | nd.KW_PACKET_END
    mid = nd.KW_ETHERNET | nd.KW_SEND
    t = T0 + 5_000 * US
    evs += [
        Ev(0, 10, t, nd.encode_1001(5, 5, a[:20]), start),
        Ev(1, 10, t + 1 * US, nd.encode_1001(5, 5, c[:30]), start),
        Ev(0, 11, t + 2 * US, nd.encode_1001(5, 5, b[:40]), start),
        Ev(0, 12, t + 3 * US, nd.encode_1001(5, 5, frame(2004)), SEND),
        Ev(0, 10, t + 4 * US, nd.encode_1001(5, 5, a[20:50]), mid),
        Ev(1, 10, t + 5 * US, nd.encode_1001(5, 5, c[30:]), end),
        Ev(0, 11, t + 6 * US, nd.encode_1001(5, 5, b[40:]), end),
        Ev(0, 10, t + 7 * US, nd.encode_1001(5, 5, a[50:]), end),
        # unfinished (PacketStart, then nothing) and an orphan (PacketEnd without a start)
        Ev(1, 30, t + 8 * US, nd.encode_1001(5, 5, frame(2005)[:30]), start),
        Ev(0, 40, t + 9 * US, nd.encode_1001(5, 5, frame(2006)[30:]), end),
    ]
    want += [
        (t, a, "send", len(a), "eth:5"),
        (t + 1 * US, c, "send", len(c), "eth:5"),
        (t + 2 * US, b, "send", len(b), "eth:5"),
        (t + 3 * US, frame(2004), "send", len(frame(2004)), "eth:5"),
    ]
    # VMSwitch fragment with VLAN 42 in its OOB data
    vms = frame(3001)
    evs.append(
        Ev(
            1,
            7,
            t + 10 * US,
            nd.encode_1003(9, 9, vms, source_port_id=3, source_port_name="port", vlan=42, destinations=(1, 2)),
            SEND | nd.KW_VMSWITCH,
            nd.EVENT_VMSWITCH_FRAGMENT,
        )
    )
    want.append((t + 10 * US, vms, "send", len(vms), "eth:9:42"))
    # metadata and attach events are not packets
    evs.append(Ev(0, 7, t + 11 * US, nd.encode_1002(5, 5, b"\x01" * 16), 0, nd.EVENT_METADATA))
    evs.append(Ev(0, 7, t + 12 * US, nd.encode_attach(5, 16, 0), 0, nd.EVENT_ATTACH))
    evs.append(Ev(0, 7, t + 13 * US, nd.encode_attach(11, 11, 16), 0, nd.EVENT_ATTACH))  # no packets
    evs.append(Ev(0, 7, t + 14 * US, nd.encode_5101(2, "NDIS", 5, (5, 16)), 0, nd.EVENT_SOURCE_INFO))
    return evs, sorted(want), sorted(upper)


def write(path: Path, evs: list[Ev], provider: uuid.UUID, **options: Any) -> Path:
    with EtlWriter(path, cpus=2, **options) as w:
        for ev in evs:
            w.add_event(
                cpu=ev.cpu,
                ts_ns=ev.ts,
                provider=provider,
                event_id=ev.event_id,
                keyword=ev.keyword,
                tid=ev.tid,
                user_data=ev.user_data,
            )
    return path


COMPRESSION = {"plain": False, "compressed": True, "mixed": lambda i: i % 2 == 0}


@pytest.mark.parametrize("compress", list(COMPRESSION), ids=list(COMPRESSION))
def test_ndis_synthetic_round_trip(tmp_path: Path, compress: str) -> None:
    evs, want, _ = ndis_scenario()
    path = write(tmp_path / "ndis.etl", evs, nd.NDIS_PROVIDER, buffer_size=4096, compress=COMPRESSION[compress])
    trace = load(path)
    assert rows(trace) == want
    counts = trace.meta.details["etw"]["ndis"]
    assert (counts["unfinished"], counts["orphan_fragments"]) == (1, 1)
    assert (counts["truncated"], counts["original_length_unknown"]) == (5, 1)
    assert counts["metadata_events"] == 1
    codes = warning_codes(trace)
    assert {"etl-fragments", "etl-truncated", "etl-layer"} <= set(codes)
    ifaces = {i.name: i for i in trace.meta.interfaces}
    assert ifaces["eth:5"].description == "miniport IfIndex 5"
    assert ifaces["wifi:20"].description == "LWF over IfIndex 7"
    assert (ifaces["wifi:20"].linktype, ifaces["mbb:8"].linktype, ifaces["eth:9:42"].linktype) == (105, 101, 1)
    layers = {(r["miniport"], r["lower"]): r for r in trace.meta.details["etw"]["layers"]}
    assert layers[(5, 16)]["kept"] is False and layers[(5, 16)]["packets"] == 300
    assert layers[(5, 5)]["kept"] is True and layers[(5, 5)]["sends"] == 200 + 4 + 3
    assert layers[(7, 20)]["media"] == "Native802.11"
    assert layers[(11, 11)] == {**layers[(11, 11)], "media": "Native802.11", "packets": 0, "kept": False}
    assert trace.meta.details["etw"]["ndis_sources"] == [
        {"source_id": 2, "name": "NDIS", "if_index": 5, "layers": [5, 16]}
    ]
    assert {i.ts_resolution for i in trace.meta.interfaces} == {"100"}  # QPC at 10 MHz
    assert json.loads(trace.meta.to_json())["details"]["etw"] == trace.meta.details["etw"]  # for `inspect`


@pytest.mark.parametrize(
    ("layer", "expect"),
    [("5:16", "upper"), ("5:16, 9:9", "upper+vms"), ("all", "everything")],
    ids=["one-pair", "two-pairs", "all"],
)
def test_ndis_layer_selection(tmp_path: Path, layer: str, expect: str) -> None:
    evs, want, upper = ndis_scenario()
    path = write(tmp_path / "ndis.etl", evs, nd.NDIS_PROVIDER)
    got = rows(load(path, layer=layer))
    if expect == "upper":
        assert got == upper
    elif expect == "upper+vms":
        assert got == sorted(upper + [w for w in want if w[4] == "eth:9:42"])
    else:
        assert got == sorted(want + upper)


def test_ndis_unknown_layer_lists_the_layers(tmp_path: Path) -> None:
    evs, _, _ = ndis_scenario()
    path = write(tmp_path / "ndis.etl", evs, nd.NDIS_PROVIDER)
    with pytest.raises(TraceFormatError) as info:
        load(path, layer="3:3")
    assert "5:5, 5:16, 7:20, 8:8, 9:9" in info.value.reason


# --- PktMon ---------------------------------------------------------------------------------------------------

MLX, NETVSC, XDP = 48, 59, 61
INVENTORY = [
    (MLX, pm.COMPONENT_MINIPORT, "mlx5.sys", "Mellanox ConnectX-4 Lx", 24),
    (NETVSC, pm.COMPONENT_MINIPORT, "netvsc.sys", "Hyper-V Network Adapter #3", 5),
    (XDP, 3, "xdp.sys", "XDP Lightweight Filter", 17),
]


def pktmon_scenario(inventory: bool) -> tuple[list[Ev], dict[str, list[tuple[int, bytes, str, int, str]]]]:
    """Events and the packets each selection must give."""
    evs: list[Ev] = []
    by: dict[str, list[tuple[int, bytes, str, int, str]]] = {"all": [], "default": [], "first": [], "61": []}
    names = {MLX: "mlx5.sys", NETVSC: "netvsc.sys", XDP: "xdp.sys"}
    if not inventory:
        names = {k: f"component {k}" for k in names}
    groups = [
        # (group id, dir tag, packet type, path of components, payload, original size)
        (1, pm.DIR_TX, pm.TYPE_ETHERNET, [XDP, NETVSC, MLX], frame(1), len(frame(1))),
        (2, pm.DIR_RX, pm.TYPE_ETHERNET, [NETVSC, XDP], frame(2), len(frame(2))),
        (3, pm.DIR_TX, pm.TYPE_ETHERNET, [XDP, NETVSC, MLX], eth(ipv4(1500), 0x0800)[:128], 1514),
        (4, pm.DIR_TX, pm.TYPE_IP, [MLX], ipv4(60), 60),
        (5, pm.DIR_IN, pm.TYPE_ETHERNET, [NETVSC, XDP], frame(5), len(frame(5))),
    ]
    ts = T0
    for gid, dirtag, ptype, path, payload, original in groups:
        direction = "send" if dirtag == pm.DIR_TX else "recv"
        for n, comp in enumerate(path):
            cpu = (gid + n) % 2
            user = pm.encode_pktmon_packet(gid, 1, n + 1, dirtag, ptype, comp, 1, 0, 0, 0, original, payload)
            evs.append(Ev(cpu, 0, ts, user, pm.KW_PACKET, pm.EVENT_PACKET))
            iface = names[comp] if ptype == pm.TYPE_ETHERNET else f"{names[comp]}"
            row = (ts, payload, direction, original, iface)
            by["all"].append(row)
            if comp == XDP:
                by["61"].append(row)
            if n == 0:
                by["first"].append(row)
            at_wire = (path[-1] if direction == "send" else NETVSC) if comp in (MLX, NETVSC) else None
            if comp == at_wire and (direction == "send" or n == 0):
                by["default"].append(row)
            ts += 2 * US
    # a dropped packet: counted, never imported
    drop = pm.encode_pktmon_packet(6, 1, 1, pm.DIR_TX, 1, XDP, 1, 0, 42, 7, 60, frame(6))
    evs.append(Ev(0, 0, ts, drop, pm.KW_PACKET, pm.EVENT_DROP))
    if inventory:  # written at the end of the log, as pktmon does
        for comp, ctype, name, desc, ifindex in INVENTORY:
            evs.append(Ev(1, 0, ts + US, pm.encode_component(comp, ctype, name, desc), 0, pm.EVENT_COMPONENT))
            prop = pm.encode_component_property(comp, pm.PROPERTY_IFINDEX, ifindex)
            evs.append(Ev(1, 0, ts + 2 * US, prop, 0, pm.EVENT_COMPONENT_PROPERTY))
    return evs, {k: sorted(v) for k, v in by.items()}


@pytest.mark.parametrize("compress", list(COMPRESSION), ids=list(COMPRESSION))
def test_pktmon_synthetic_default(tmp_path: Path, compress: str) -> None:
    evs, want = pktmon_scenario(inventory=True)
    path = write(tmp_path / "pm.etl", evs, pm.PKTMON_PROVIDER, buffer_size=1024, compress=COMPRESSION[compress])
    trace = load(path)
    assert rows(trace) == want["default"]
    linktypes = {(i.name, i.linktype) for i in trace.meta.interfaces}
    assert linktypes == {("mlx5.sys", 1), ("mlx5.sys", 101), ("netvsc.sys", 1)}
    assert {i.description for i in trace.meta.interfaces} >= {"Mellanox ConnectX-4 Lx"}
    etw = trace.meta.details["etw"]
    table = {c["id"]: c for c in etw["components"]}
    assert table[XDP]["drops"] == 1 and table[XDP]["kept"] is False and table[XDP]["ifindex"] == 17
    assert (table[MLX]["tx"], table[NETVSC]["rx"], table[MLX]["kept"]) == (3, 2, True)
    assert etw["drops"] == [{"component": XDP, "reason": 42, "count": 1}]
    assert etw["pktmon"]["truncated"] == 3
    assert "etl-drops" in warning_codes(trace)
    cap = trace.frame.filter(trace.frame["wire_len"] == 1514)["cap_len"].to_list()
    assert cap == [128]


@pytest.mark.parametrize(
    ("component", "expect"), [("all", "all"), ("61", "61"), (" 61 ,48", "61+48")], ids=["all", "one", "two"]
)
def test_pktmon_component_selection(tmp_path: Path, component: str, expect: str) -> None:
    evs, want = pktmon_scenario(inventory=True)
    trace = load(write(tmp_path / "pm.etl", evs, pm.PKTMON_PROVIDER), component=component)
    if expect == "61+48":
        assert rows(trace) == sorted(want["61"] + [r for r in want["all"] if r[4] == "mlx5.sys"])
    else:
        assert rows(trace) == want[expect]


def test_pktmon_without_inventory_keeps_first_appearance(tmp_path: Path) -> None:
    evs, want = pktmon_scenario(inventory=False)
    trace = load(write(tmp_path / "pm.etl", evs, pm.PKTMON_PROVIDER))
    assert rows(trace) == want["first"]
    assert "etl-appearance" in warning_codes(trace)


def test_pktmon_unknown_component_lists_the_components(tmp_path: Path) -> None:
    evs, _ = pktmon_scenario(inventory=True)
    with pytest.raises(TraceFormatError) as info:
        load(write(tmp_path / "pm.etl", evs, pm.PKTMON_PROVIDER), component="77")
    assert "48 (mlx5.sys), 59 (netvsc.sys), 61 (xdp.sys)" in info.value.reason


# --- the real pktmon capture ----------------------------------------------------------------------------------


def test_pktmon_corpus_equals_its_pcapng_export() -> None:
    """``pktmon etl2pcap`` exports every appearance: so does --component all, packet by packet."""
    cap = open_trace(PKTMON_CAP).frame
    trace = load(PKTMON_ETL, component="all")
    f = trace.frame
    assert f.height == cap.height == 114
    assert f["data"].to_list() == cap["data"].to_list()
    assert f["wire_len"].to_list() == cap["wire_len"].to_list()
    assert (f["ts_ns"] // US).to_list() == (cap["ts_ns"] // US).to_list()
    # the .cap has no direction; the ETL's DirTag gives it: 19 pings, Rx at 2 components, Tx at 4
    assert f["direction"].value_counts().sort("direction").rows() == [("send", 76), ("recv", 38)]


def test_pktmon_corpus_default_selection() -> None:
    """By default one appearance per packet, at the miniport nearest the wire: 19 echo requests received by
    netvsc.sys, 19 replies sent by its mlx5.sys VF — each the same bytes and µs as in the .cap."""
    cap = open_trace(PKTMON_CAP).frame
    in_cap = set(zip((cap["ts_ns"] // US).to_list(), cap["data"].to_list(), strict=True))
    trace = load(PKTMON_ETL)
    got = rows(trace)
    assert len(got) == 38
    assert all((ts // US, data) in in_cap for ts, data, *_ in got)
    by_iface = {(d, name) for _, _, d, _, name in got}
    assert by_iface == {("recv", "netvsc.sys"), ("send", "mlx5.sys")}
    assert sum(1 for r in got if r[2] == "send") == 19
    kept = {c["id"] for c in trace.meta.details["etw"]["components"] if c["kept"]}
    assert kept == {48, 59}
    assert json.loads(trace.meta.to_json())["details"]["etw"] == trace.meta.details["etw"]
    assert trace.meta.warnings == ()


# --- bad input ------------------------------------------------------------------------------------------------


def test_no_packet_events_is_a_clear_error() -> None:
    with pytest.raises(TraceFormatError) as info:
        load(SONDE_ETL)
    assert info.value.reason.startswith("no packet events found")
    assert "×" in info.value.reason  # the providers that are there, with counts
    assert info.value.hint is not None and "--event-map" in info.value.hint


@pytest.mark.parametrize("provider", ["ndis", "pktmon"])
@pytest.mark.parametrize("strict", [False, True], ids=["salvage", "strict"])
def test_length_beyond_user_data(tmp_path: Path, provider: str, strict: bool) -> None:
    good = frame(9)
    if provider == "ndis":
        guid, event_id, kw = nd.NDIS_PROVIDER, nd.EVENT_FRAGMENT, SEND
        bad = struct.pack("<III", 5, 5, 1000) + b"x" * 10
        ok = nd.encode_1001(5, 5, good)
    else:
        guid, event_id, kw = pm.PKTMON_PROVIDER, pm.EVENT_PACKET, pm.KW_PACKET
        bad = pm.encode_pktmon_packet(1, 1, 1, 4, 1, 48, 1, 0, 0, 0, 1000, b"x" * 100)[:60]
        ok = pm.encode_pktmon_packet(2, 1, 1, 4, 1, 48, 1, 0, 0, 0, len(good), good)
    evs = [Ev(0, 1, T0, bad, kw, event_id), Ev(0, 1, T0 + US, ok, kw, event_id)]
    path = write(tmp_path / "bad.etl", evs, guid)
    if strict:
        with pytest.raises(TraceFormatError):
            load(path, strict=True)
        return
    trace = load(path, component="all" if provider == "pktmon" else None)
    assert [r[1] for r in rows(trace)] == [good]
    assert warning_codes(trace)["etl-bad-event"] == 1
