"""Import benchmark: ``open_trace`` against the loops a user would write with dpkt and scapy, on one pcap.

The issue's target: reading a 1,000,000-packet Ethernet pcap into every canonical column is at least as fast as
a bare ``dpkt.pcap.Reader`` loop (ratio ≥ 1.0) with peak memory under 1 GB.

The file (``bench/data/imix_1000000.pcap``, ~374 MB, made once and reused while its sha256 matches) holds
Ethernet/IPv4 TCP and UDP frames with real headers and checksums in a simple-IMIX mix: 7:4:1 of 64-, 594- and
1518-byte frames counting the 4-byte FCS, i.e. 60, 590 and 1514 captured bytes (pcap does not keep the FCS).

Contenders, each timed in a fresh subprocess so that its peak RSS (``VmHWM``, see :func:`peak_rss_bytes`) is its
own:

``open_trace``
    ``open_trace(path, reader="fast")``: all canonical columns, packet bytes included;
``open_trace-nodata``
    the same with ``keep_data=False``;
``dpkt``
    ``for ts, buf in dpkt.pcap.Reader(f)``, counting packets and summing ``len(buf)``;
``scapy``
    ``for pkt, meta in RawPcapReader(path)``, likewise.

The machine may be shared and noisy, so the contenders run interleaved (A B C D, A B C D, …) for ``--repeat``
rounds; the table gives the median time, packets/s at the median, the ratio to dpkt (median of the per-round
ratios dpkt time / contender time: > 1 is faster than dpkt) and the largest peak RSS. Import time of the
libraries is excluded from the timings (it is in the JSON).

Run ``python bench/import_bench.py [--repeat 5] [--json results.json]``; ``--profile`` prints where
``open_trace``'s time goes (cProfile) instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
DEFAULT_PACKETS = 1_000_000
SEED = 20240312
#: sha256 of the file the generator makes, by packet count; a mismatch after generating means the generator
#: changed (update the value) or is not deterministic (a bug).
KNOWN_SHA256 = {
    DEFAULT_PACKETS: "34d5f6746e7586fdcd99269c719353d2c9fc7a9dbf8ef86fa0c6f473514f638f",
}
#: 2024-03-12 09:00:00 UTC, in ns since the Unix epoch.
BASE_NS = 1_710_234_000 * 1_000_000_000

CONTENDERS = ("open_trace", "open_trace-nodata", "dpkt", "scapy")
REFERENCE = "dpkt"
#: A child taking longer than this (s) is stuck.
CHILD_TIMEOUT = 1800

#: Captured frame lengths of the simple IMIX (7 × 64, 4 × 594, 1 × 1518 bytes on the wire, less the FCS).
IMIX = (60,) * 7 + (590,) * 4 + (1514,)


# --- the benchmark file ---------------------------------------------------------------------------------------


def _sum16(data: bytes) -> int:
    """Ones'-complement sum of 16-bit big-endian words, modulo 0xFFFF (2**16 ≡ 1, so one big integer will do)."""
    if len(data) % 2:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF


def _fold(total: int) -> int:
    """The checksum field for a ones'-complement sum modulo 0xFFFF (0 there is 0xFFFF, "negative zero")."""
    return ~((total % 0xFFFF) or 0xFFFF) & 0xFFFF


@dataclass
class _Flow:
    """One conversation of the benchmark file; ``out``: its data goes from the host (10.1.x.x) to the peer."""

    proto: int
    out: bool
    host_ip: bytes
    peer_ip: bytes
    host_port: int
    peer_port: int
    seq: int  # next sequence number of the data sender
    ack: int  # next sequence number of the other side
    ident: int  # IPv4 identification, one counter per flow


def imix_frames(count: int, seed: int = SEED) -> Iterator[tuple[int, bytes]]:
    """``(ts_ns, frame)`` for ``count`` deterministic IMIX frames over 48 TCP and 16 UDP flows.

    Payloads come from a fixed pool whose checksum sums are precomputed, so each frame costs only its headers:
    IPv4 header checksum, TCP/UDP checksum over pseudo-header + header + the payload's known sum.
    """
    rng = random.Random(seed)
    host_mac, peer_mac = bytes.fromhex("00155d0a0a0a"), bytes.fromhex("0050569e2c41")
    eth_out = peer_mac + host_mac + b"\x08\x00"
    eth_in = host_mac + peer_mac + b"\x08\x00"
    pool: dict[int, list[tuple[bytes, int]]] = {}
    for size in set(IMIX):
        for l4_hdr in (20, 8):  # TCP and UDP header lengths
            n = size - 14 - 20 - l4_hdr
            pool[n] = [(p, _sum16(p)) for p in (rng.randbytes(n) for _ in range(32))]
    flows = []
    for f in range(64):
        proto = 6 if f < 48 else 17
        flows.append(
            _Flow(
                proto=proto,
                out=rng.random() < 0.6,
                host_ip=bytes([10, 1, f // 8, 10 + f % 8]),
                peer_ip=bytes([172, 16, rng.randrange(256), rng.randrange(1, 255)]),
                host_port=rng.randrange(49152, 65536),
                peer_port=rng.choice((443, 445, 3260, 5201)) if proto == 6 else rng.choice((5201, 9000, 9001, 12000)),
                seq=rng.randrange(1 << 32),
                ack=rng.randrange(1 << 32),
                ident=rng.randrange(1 << 16),
            )
        )
    ip_hdr = struct.Struct("!BBHHHBBH4s4s")
    tcp_hdr = struct.Struct("!HHIIBBHHH")
    udp_hdr = struct.Struct("!HHHH")
    pattern = list(IMIX)
    ts = BASE_NS
    for i in range(count):
        if i % len(pattern) == 0:
            rng.shuffle(pattern)  # 7:4:1 exactly in every 12 frames, in a varying order
        size = pattern[i % len(pattern)]
        fl = flows[rng.randrange(64)]
        fl.ident = (fl.ident + 1) & 0xFFFF
        proto = fl.proto
        if proto == 6 and size == 60:
            # a pure ACK from the receiving side: 54 bytes of headers, padded to the 60-byte Ethernet minimum
            src, dst, sport, dport = fl.peer_ip, fl.host_ip, fl.peer_port, fl.host_port
            payload, psum, pad = b"", 0, b"\x00" * 6
            seq, ack, flags = fl.ack, fl.seq, 0x10  # ACK
        else:
            src, dst, sport, dport = fl.host_ip, fl.peer_ip, fl.host_port, fl.peer_port
            payload, psum = pool[size - 34 - (20 if proto == 6 else 8)][rng.randrange(32)]
            pad = b""
            seq, ack, flags = fl.seq, fl.ack, 0x18  # PSH | ACK
            if proto == 6:
                fl.seq = (fl.seq + len(payload)) & 0xFFFFFFFF
        if not fl.out:  # this flow's data comes from the peer
            src, dst, sport, dport = dst, src, dport, sport
        l4_len = (20 if proto == 6 else 8) + len(payload)
        ip = ip_hdr.pack(0x45, 0, 20 + l4_len, fl.ident, 0x4000, 64, proto, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _fold(_sum16(ip))) + ip[12:]
        pseudo = _sum16(src + dst + struct.pack("!BBH", 0, proto, l4_len))
        if proto == 6:
            hdr = tcp_hdr.pack(sport, dport, seq, ack, 5 << 4, flags, 2053, 0, 0)
            l4 = hdr[:16] + struct.pack("!H", _fold(pseudo + _sum16(hdr) + psum)) + hdr[18:]
        else:
            hdr = udp_hdr.pack(sport, dport, l4_len, 0)
            csum = _fold(pseudo + _sum16(hdr) + psum) or 0xFFFF  # a computed 0 is sent as 0xFFFF (RFC 768)
            l4 = hdr[:6] + struct.pack("!H", csum)
        eth = eth_out if src[0] == 10 else eth_in
        yield ts, eth + ip + l4 + payload + pad
        ts += rng.randint(200, 4_000)  # ns between frames: a busy 10 Gb/s port, never bursting past line rate


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def ensure_file(packets: int, data_dir: Path) -> tuple[Path, str]:
    """The benchmark pcap for ``packets`` frames, generated unless present with the expected sha256."""
    from ndis_replay.importers.pcap import write_pcap  # type: ignore[import-not-found, unused-ignore]

    path = data_dir / f"imix_{packets}.pcap"
    sidecar = path.with_suffix(".pcap.sha256")
    expected = KNOWN_SHA256.get(packets) or (sidecar.read_text().strip() if sidecar.is_file() else "")
    if path.is_file() and expected:
        digest = file_sha256(path)  # also brings the file into the page cache for the first round
        if digest == expected:
            print(f"using {path} ({path.stat().st_size:,} bytes, sha256 {digest[:16]}…)")
            return path, digest
        print(f"{path} has sha256 {digest[:16]}…, expected {expected[:16]}…: making it again")
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"making {path} ({packets:,} packets)…", flush=True)
    started = time.perf_counter()
    tmp = path.with_suffix(".pcap.tmp")
    with tmp.open("wb", buffering=8 << 20) as f:
        # classic µs pcap (the most common kind in the wild); timestamps are truncated to µs
        write_pcap(f, imix_frames(packets), nanosecond=False)
    os.replace(tmp, path)
    digest = file_sha256(path)
    known = KNOWN_SHA256.get(packets)
    if known and digest != known:
        raise SystemExit(f"generated {path} has sha256 {digest}, expected {known}: the generator changed")
    sidecar.write_text(digest + "\n")
    took = time.perf_counter() - started
    print(f"made {path}: {path.stat().st_size:,} bytes in {took:.1f} s, sha256 {digest}")
    return path, digest


# --- one contender, in a child process ------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident set size, in bytes.

    On Linux it is ``VmHWM`` of ``/proc/self/status``: the high-water mark of this process's own address space.
    ``ru_maxrss`` is not used there because Linux carries it across ``execve``: a child started by a parent
    that had polars loaded (vfork + exec, as ``subprocess`` does) would report the parent's peak as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the value is in kB (KiB)
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB elsewhere


def run_child(contender: str, path: Path) -> dict[str, Any]:
    """Import what ``contender`` needs, then time one read of ``path``; returns the measurements."""
    t0 = time.perf_counter()
    if contender.startswith("open_trace"):
        from ndis_replay.importers import open_trace  # type: ignore[import-not-found, unused-ignore]
        from ndis_replay.trace import SCHEMA  # type: ignore[import-not-found, unused-ignore]
    elif contender == "dpkt":
        import dpkt
    elif contender == "scapy":
        from scapy.utils import RawPcapReader
    else:
        raise SystemExit(f"unknown contender {contender!r}")
    import_s = time.perf_counter() - t0
    baseline = peak_rss_bytes()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if contender.startswith("open_trace"):
        keep = contender == "open_trace"
        trace = open_trace(path, reader="fast", keep_data=keep)
        packets = len(trace)
        captured = int(trace.frame["cap_len"].sum())
        wanted = [c for c in SCHEMA if keep or c != "data"]
        if trace.frame.columns[: len(wanted)] != wanted:
            raise SystemExit(f"open_trace gave columns {trace.frame.columns}, expected {wanted}")
    elif contender == "dpkt":
        packets = captured = 0
        with path.open("rb") as f:
            for _ts, buf in dpkt.pcap.Reader(f):
                packets += 1
                captured += len(buf)
    else:
        packets = captured = 0
        for pkt, _meta in RawPcapReader(str(path)):
            packets += 1
            captured += len(pkt)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "contender": contender,
        "packets": packets,
        "captured_bytes": captured,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "import_seconds": import_s,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        # ru_maxrss as the OS reports it (KiB on Linux), for reference: may include the parent's peak
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def spawn(contender: str, path: Path) -> dict[str, Any]:
    """Run one contender in a fresh interpreter and return its measurements."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", contender, "--file", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{contender} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- the parent: rounds, summary, table -----------------------------------------------------------------------


def summarize(rounds: list[dict[str, dict[str, Any]]], contenders: Sequence[str]) -> list[dict[str, Any]]:
    """Per contender: median/min/max time, packets/s at the median, ratio to dpkt, peak RSS."""
    rows = []
    for name in contenders:
        times = [r[name]["seconds"] for r in rounds]
        med = statistics.median(times)
        packets = rounds[0][name]["packets"]
        row: dict[str, Any] = {
            "contender": name,
            "packets": packets,
            "median_s": med,
            "min_s": min(times),
            "max_s": max(times),
            "median_cpu_s": statistics.median(r[name]["cpu_seconds"] for r in rounds),
            "packets_per_s": packets / med,
            "peak_rss_bytes": max(r[name]["peak_rss_bytes"] for r in rounds),
            "baseline_rss_bytes": max(r[name]["baseline_rss_bytes"] for r in rounds),
            "import_s": statistics.median(r[name]["import_seconds"] for r in rounds),
        }
        if REFERENCE in rounds[0]:
            # paired within each round, so drift of a noisy machine cancels; > 1 means faster than dpkt
            ratios = [r[REFERENCE]["seconds"] / r[name]["seconds"] for r in rounds]
            row["ratio_vs_dpkt"] = statistics.median(ratios)
            row["ratio_range"] = (min(ratios), max(ratios))
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = ("contender", "median s", "min–max s", "CPU s", "packets/s", "× dpkt (range)", "peak RSS", "after import")
    for col in columns:
        table.add_column(col, justify="left" if col == "contender" else "right")
    for r in rows:
        ratio = "—"
        if "ratio_vs_dpkt" in r:
            lo, hi = r["ratio_range"]
            ratio = f"{r['ratio_vs_dpkt']:.2f} ({lo:.2f}–{hi:.2f})"
        table.add_row(
            r["contender"],
            f"{r['median_s']:.2f}",
            f"{r['min_s']:.2f}–{r['max_s']:.2f}",
            f"{r['median_cpu_s']:.2f}",
            f"{r['packets_per_s']:,.0f}",
            ratio,
            f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB",
            f"{r['baseline_rss_bytes'] / 2**20:,.0f} MiB",
        )
    Console(width=140).print(table)


def profile_open_trace(path: Path, keep_data: bool, top: int) -> None:
    """Print the functions ``open_trace`` spends its time in (cProfile, by own time and by cumulative time)."""
    import cProfile
    import pstats

    from ndis_replay.importers import open_trace  # type: ignore[import-not-found, unused-ignore]

    profiler = cProfile.Profile()
    profiler.enable()
    trace = open_trace(path, reader="fast", keep_data=keep_data)
    profiler.disable()
    print(f"{len(trace):,} packets")
    stats = pstats.Stats(profiler)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Packets/s and peak memory of open_trace against dpkt's and scapy's pcap loops "
        "(each contender in its own subprocess, interleaved round by round).",
    )
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="packets in the benchmark pcap")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of all contenders (default 5)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results (every round) here")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the pcap is kept (bench/data/)")
    parser.add_argument(
        "--contender",
        action="append",
        choices=CONTENDERS,
        help="run only these (repeatable; default all); ratios need dpkt among them",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile open_trace once with cProfile instead of benchmarking"
    )
    parser.add_argument("--no-data", action="store_true", help="with --profile: keep_data=False")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.file)))
        return 0
    if args.repeat < 1 or args.packets < 1:
        parser.error("--repeat and --packets must be at least 1")
    path, digest = ensure_file(args.packets, args.data_dir)
    if args.profile:
        profile_open_trace(path, keep_data=not args.no_data, top=30)
        return 0

    contenders: list[str] = args.contender or list(CONTENDERS)
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(args.repeat):
        results: dict[str, dict[str, Any]] = {}
        for name in contenders:
            results[name] = res = spawn(name, path)
            if res["packets"] != args.packets:
                raise SystemExit(f"{name} read {res['packets']:,} packets, the file has {args.packets:,}")
            print(
                f"round {i + 1}/{args.repeat} {name:18} {res['seconds']:7.2f} s "
                f"{res['packets'] / res['seconds']:>12,.0f} packets/s  peak {res['peak_rss_bytes'] / 2**20:,.0f} MiB",
                flush=True,
            )
        rounds.append(results)

    rows = summarize(rounds, contenders)
    size = path.stat().st_size
    print()
    print_table(rows, f"{path.name}: {args.packets:,} packets, {size / 1e6:,.0f} MB; median of {args.repeat} rounds")
    verdicts = []
    main_row = next((r for r in rows if r["contender"] == "open_trace"), None)
    if main_row is not None and "ratio_vs_dpkt" in main_row:
        ok_speed = main_row["ratio_vs_dpkt"] >= 1.0
        ok_mem = main_row["peak_rss_bytes"] < 1e9
        verdicts = [
            f"target ratio ≥ 1.0 × dpkt: {main_row['ratio_vs_dpkt']:.2f} — {'met' if ok_speed else 'NOT met'}",
            f"target peak memory < 1 GB: {main_row['peak_rss_bytes'] / 1e9:.2f} GB — {'met' if ok_mem else 'NOT met'}",
        ]
        for v in verdicts:
            print(v)
    if args.json:
        import polars

        payload = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "file": {"path": str(path), "packets": args.packets, "bytes": size, "sha256": digest},
            "host": {
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "polars": polars.__version__,
            },
            "summary": rows,
            "rounds": rounds,
            "verdicts": verdicts,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
