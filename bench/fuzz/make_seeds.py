"""Write the fuzzers' seed corpus, deterministically, into bench/fuzz/seeds/<target>/ (gitignored).

Seeds are small (libFuzzer's -max_len defaults to the largest seed, and a short input runs faster): the first
packets of the project's own sample traces (sample_traces/) re-written by the project's writers in each variant
the readers distinguish (pcap: µs/ns, both byte orders, link types, FCS bits; pcapng: both byte orders, options,
every block type, two sections; ETL: NDIS-PacketCapture, PktMon and TraceLogging driver events, plain and
LZXPRESS-compressed buffers, 4- and 8-byte pointers; tracerpt CSV: UTF-8, UTF-8 with BOM, UTF-16LE, decimal ids),
plus truncated copies of each. Every run writes the same bytes (the folders are emptied first); libFuzzer keeps
what it adds in bench/fuzz/corpus/, which this script leaves alone.

    python bench/fuzz/make_seeds.py [--out DIR]
"""

from __future__ import annotations

import argparse
import codecs
import hashlib
import io
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from ndis_replay.importers import open_trace
from ndis_replay.importers.etw.driver import (
    SAMPLE_COMPLETE_EVENT,
    SAMPLE_PROVIDER,
    SAMPLE_SEND_EVENT,
    _send_fields,
    driver_csv_text,
    tracelogging_provider_guid,
)
from ndis_replay.importers.etw.ndiscap import (
    EVENT_FRAGMENT,
    EVENT_SOURCE_INFO,
    KW_DEFAULT,
    KW_RECV,
    KW_SEND,
    NDIS_PROVIDER,
    encode_1001,
    encode_5101,
)
from ndis_replay.importers.etw.pktmon import (
    EVENT_COMPONENT,
    EVENT_PACKET,
    PKTMON_PROVIDER,
    encode_component,
    encode_pktmon_packet,
)
from ndis_replay.importers.etw.tracelogging import encode_tracelogging
from ndis_replay.importers.etw.writer import EtlWriter
from ndis_replay.importers.pcap import write_pcap
from ndis_replay.importers.pcapng import EPB, IDB, ISB, NRB, PB, SPB, WriterInterface, write_pcapng

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent.parent / "sample_traces"
#: Packets taken from each sample: enough for every record kind to repeat, few enough to keep seeds ~ 4 KiB.
PACKETS = 6
START_NS = 1_700_000_000_000_000_000


def sample_packets() -> list[tuple[int, bytes, str]]:
    """``(ts_ns, frame, direction)`` of the first packets of the sample captures, in a fixed order."""
    out: list[tuple[int, bytes, str]] = []
    for name in ("request_response.pcapng", "small_packets.pcapng", "bulk_tcp.pcapng"):
        frame = open_trace(SAMPLES / name).frame.head(PACKETS)
        for ts, data, direction in zip(frame["ts_ns"], frame["data"], frame["direction"], strict=True):
            out.append((int(ts), bytes(data), str(direction)))
    return out


def _truncations(data: bytes) -> Iterator[tuple[str, bytes]]:
    for cut in (len(data) // 3, len(data) - 1):
        yield f"cut{cut}", data[:cut]


# --- pcap ---------------------------------------------------------------------------------------------------


def pcap_seeds(pkts: list[tuple[int, bytes, str]]) -> Iterator[tuple[str, bytes]]:
    small = [(ts, data) for ts, data, _ in pkts[:PACKETS]]
    for ns in (True, False):
        for big in (False, True):
            buf = io.BytesIO()
            write_pcap(buf, small, nanosecond=ns, big_endian=big)
            name = f"eth-{'ns' if ns else 'us'}-{'be' if big else 'le'}"
            yield name, buf.getvalue()
            if ns and not big:
                yield from ((f"{name}-{k}", v) for k, v in _truncations(buf.getvalue()))
    raw_ip = [(ts, data[14:]) for ts, data in small]  # the same packets without their Ethernet header
    for linktype in (101, 228, 229, 113):  # RAW, IPV4, IPV6, LINUX_SLL (any header walk, right or wrong)
        buf = io.BytesIO()
        write_pcap(buf, raw_ip, linktype=linktype)
        yield f"linktype{linktype}", buf.getvalue()
    buf = io.BytesIO()
    write_pcap(buf, small, linktype=1 | 0x04000000 | (2 << 28), snaplen=64)  # FCS of 4 bytes; snaplen cut
    yield "fcs-snaplen64", buf.getvalue()
    buf = io.BytesIO()
    write_pcap(buf, [(ts, data, len(data) + 100) for ts, data in small])  # wire length beyond caplen
    yield "wire-longer", buf.getvalue()


# --- pcapng -------------------------------------------------------------------------------------------------


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng_seeds(pkts: list[tuple[int, bytes, str]]) -> Iterator[tuple[str, bytes]]:
    small = [(i % 2, ts, data, len(data), direction) for i, (ts, data, direction) in enumerate(pkts[:PACKETS])]
    ifaces = (
        WriterInterface(name="eth0", description="first", comment="an interface comment"),
        WriterInterface(name="eth1", tsresol=6, snaplen=1500),
    )
    for big in (False, True):
        buf = io.BytesIO()
        write_pcapng(buf, small, interfaces=ifaces, big_endian=big, comment="a section", packet_comments={1: "pkt"})
        name = f"two-ifaces-{'be' if big else 'le'}"
        yield name, buf.getvalue()
        if not big:
            yield from ((f"{name}-{k}", v) for k, v in _truncations(buf.getvalue()))
    # every block type and the timestamp options, hand-built (little-endian section, then a big-endian one)
    frame = pkts[0][1]
    for e, tag in (("<", "le"), (">", "be")):
        shb = _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(e, 0, b""))
        idb_opts = _opt(e, 9, bytes([0x80 | 20])) + _opt(e, 14, struct.pack(e + "q", 3600)) + _opt(e, 0, b"")
        idb = _block(e, IDB, struct.pack(e + "HHI", 1, 0, 65535) + idb_opts)
        epb_opts = _opt(e, 2, struct.pack(e + "I", 2)) + _opt(e, 1, b"comment") + _opt(e, 0, b"")
        epb = _block(e, EPB, struct.pack(e + "IIIII", 0, 1, 2, len(frame), len(frame)) + frame + epb_opts)
        spb = _block(e, SPB, struct.pack(e + "I", len(frame)) + frame)
        pb = _block(e, PB, struct.pack(e + "HHIIII", 0, 0, 1, 3, len(frame), len(frame)) + frame)
        nrb = _block(
            e, NRB, struct.pack(e + "HH", 1, 8) + bytes([10, 0, 0, 1]) + b"a.b\x00" + struct.pack(e + "HH", 0, 0)
        )
        isb = _block(e, ISB, struct.pack(e + "III", 0, 1, 2) + _opt(e, 0, b""))
        custom = _block(e, 0x00000BAD, struct.pack(e + "I", 32473) + b"custom")
        yield f"all-blocks-{tag}", shb + idb + epb + spb + pb + nrb + isb + custom
    le, be = (dict(pcapng_seeds_pair(e)) for e in ("<", ">"))
    yield "two-sections", le["section"] + be["section"]


def pcapng_seeds_pair(e: str) -> Iterator[tuple[str, bytes]]:
    buf = io.BytesIO()
    write_pcapng(buf, [(0, START_NS, b"\x00" * 60, 60, "send")], big_endian=e == ">")
    yield "section", buf.getvalue()


# --- ETL ----------------------------------------------------------------------------------------------------


def _etl(build: object, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    with EtlWriter(buf, start_ns=START_NS - 1_000_000, buffer_size=4096, **kwargs) as w:  # type: ignore[arg-type]
        build(w)  # type: ignore[operator]
    return buf.getvalue()


def etl_seeds(pkts: list[tuple[int, bytes, str]]) -> Iterator[tuple[str, bytes]]:
    frames = [(START_NS + i * 1000, data, direction) for i, (_, data, direction) in enumerate(pkts[:PACKETS])]

    def netsh(w: EtlWriter) -> None:
        w.add_event(cpu=0, ts_ns=START_NS, provider=NDIS_PROVIDER, event_id=EVENT_SOURCE_INFO,
                    user_data=encode_5101(7, "Ethernet 1", 12, (1, 2)))  # fmt: skip
        for ts, data, direction in frames:
            keyword = KW_DEFAULT | (KW_SEND if direction == "send" else KW_RECV)
            w.add_event(cpu=ts // 1000 % 2, ts_ns=ts, provider=NDIS_PROVIDER, event_id=EVENT_FRAGMENT,
                        keyword=keyword, user_data=encode_1001(7, 8, data))  # fmt: skip

    def pktmon(w: EtlWriter) -> None:
        w.add_event(cpu=0, ts_ns=START_NS, provider=PKTMON_PROVIDER, event_id=EVENT_COMPONENT,
                    user_data=encode_component(3, 1, "NIC", "a miniport"))  # fmt: skip
        for i, (ts, data, direction) in enumerate(frames):
            payload = encode_pktmon_packet(1, i, 1, 1 if direction == "send" else 2, 1, 3, 1, 0, 0, 0, len(data), data)
            w.add_event(cpu=0, ts_ns=ts, provider=PKTMON_PROVIDER, event_id=EVENT_PACKET, user_data=payload)

    for name, build in (("netsh", netsh), ("pktmon", pktmon)):
        for compress in (False, True):
            data = _etl(build, compress=compress, cpus=2)
            label = f"{name}-{'lzx' if compress else 'plain'}"
            yield label, data
            if not compress:
                yield from ((f"{label}-{k}", v) for k, v in _truncations(data))
    sends = [(START_NS + i * 1000, 0xFFFF0000 + 0x100 * (i % 3), 60 + i, i // 2) for i in range(PACKETS)]
    completes = [(ts + 500, nbl) for ts, nbl, _, _ in sends]
    for compress in (False, True):
        for pointer in (8, 4):
            buf = io.BytesIO()
            _driver_etl(buf, sends, completes, compress=compress, pointer_size=pointer)
            label = f"driver-p{pointer}-{'lzx' if compress else 'plain'}"
            yield label, buf.getvalue()
            if pointer == 8 and not compress:
                yield from ((f"{label}-{k}", v) for k, v in _truncations(buf.getvalue()))


def _driver_etl(
    buf: io.BytesIO,
    sends: list[tuple[int, int, int, int]],
    completes: list[tuple[int, int]],
    *,
    compress: bool,
    pointer_size: int,
) -> None:
    """:func:`write_driver_etl`'s events in 4 KiB buffers (it writes 64 KiB ones: seeds 16 times larger)."""
    guid = tracelogging_provider_guid(SAMPLE_PROVIDER)
    events = [(ts, 0, _send_fields(nbl, n, call), SAMPLE_SEND_EVENT) for ts, nbl, n, call in sends]
    events += [
        (ts, 1, [("Nbl", "pointer", nbl), ("Status", "int32", 0)], SAMPLE_COMPLETE_EVENT) for ts, nbl in completes
    ]
    with EtlWriter(buf, start_ns=START_NS - 1000, buffer_size=4096, compress=compress, pointer_size=pointer_size) as w:
        for ts, cpu, fields, name in sorted(events, key=lambda e: e[0]):
            extended, user_data = encode_tracelogging(SAMPLE_PROVIDER, name, fields, pointer_size=pointer_size)
            w.add_event(cpu=cpu, ts_ns=ts, provider=guid, event_id=0, channel=11, level=4, user_data=user_data,
                        extended=extended)  # fmt: skip


# --- tracerpt CSV -------------------------------------------------------------------------------------------


def csv_seeds() -> Iterator[tuple[str, bytes]]:
    sends = [(START_NS + i * 1000, 0xFFFF0000 + 0x100 * (i % 3), 60 + i, i // 2) for i in range(PACKETS)]
    completes = [(ts + 500, nbl) for ts, nbl, _, _ in sends]
    text = driver_csv_text(sends, completes)
    yield "utf8", text.encode()
    yield "utf8-bom", codecs.BOM_UTF8 + text.encode()
    yield "utf16", codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    yield "decimal-ids", driver_csv_text(sends, completes, hex_ids=False).encode()
    yield "lf-quoted", text.replace("\r\n", "\n").replace('"0x', '"multi\nline 0x', 1).encode()
    yield from _truncations(text.encode())


SEEDS = {"pcap": pcap_seeds, "pcapng": pcapng_seeds, "etl": etl_seeds, "csv": lambda _pkts: csv_seeds()}


def main(argv: list[str] | None = None) -> int:
    """Write every target's seeds; prints how many and their total size per target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "seeds")
    args = parser.parse_args(argv)
    pkts = sample_packets()
    for target, make in SEEDS.items():
        folder = args.out / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        seeds = list(make(pkts))  # type: ignore[no-untyped-call]
        for name, data in seeds:
            (folder / f"seed-{name}").write_bytes(data)
        digest = hashlib.sha256(b"".join(d for _, d in seeds)).hexdigest()[:12]
        total = sum(len(d) for _, d in seeds)
        print(f"{target:7} {len(seeds):3} seeds, {total:7,} bytes, sha256 {digest} -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
