"""ETL import benchmark: a synthetic 200 MB NDIS-PacketCapture (netsh) trace through ``open_trace``.

The issue's target: at least 300,000 packet events per second, peak memory under 500 MB, on this 2-core machine.

The file (``bench/data/ndiscap_<MB>mb.etl``, made once and reused while its sha256 matches) is what ``netsh trace
start capture=yes`` writes: uncompressed 64 KiB per-CPU buffers, QPC clock at 10 MHz, one NDIS-PacketCapture 1001
event per frame at the layer directly above the miniport, SendPath/ReceivePath keywords. The frames are the simple
IMIX of ``bench/import_bench.py`` (60, 590 and 1514 bytes, 7:4:1, real headers), spread over 4 CPUs by flow so
file order is not time order. The same frames are also written as a pcapng: reading it with the same
``open_trace`` is the reference measured in the same run (the ratio says what the ETL container costs over the
plainest capture format). ``--compressed-mb`` adds a smaller LZXPRESS-compressed copy (pktmon writes compressed
buffers): its rate is bound by the pure-Python decompressor of dissect.util and is printed for information.

Contenders run in fresh subprocesses (their peak RSS, ``VmHWM``, is their own), interleaved for ``--repeat``
rounds; medians are printed. Run ``python bench/etl_bench.py [--mb 200] [--repeat 3] [--compressed-mb 20]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

TARGET_EVENTS_PER_S = 300_000
TARGET_PEAK_BYTES = 500 * 1024 * 1024
CPUS = 4
MINIPORT = 7
CHILD_TIMEOUT = 1800


def frames(count: int) -> Iterator[tuple[int, bool, bytes]]:
    """``(ts_ns, outbound, frame)``: import_bench's IMIX, outbound when the host (10.x) is the source."""
    from import_bench import imix_frames

    for ts, frame in imix_frames(count):
        yield ts - ts % 100, frame[26] == 10, frame  # IPv4 source address starts at byte 26; QPC ticks are 100 ns


def write_files(mb: int, compressed: bool, data_dir: Path) -> tuple[Path, Path, int]:
    """The ETL of about ``mb`` MB and the pcapng of the same frames; returns their paths and the packet count."""
    from ndis_replay.importers.etw.ndiscap import (
        EVENT_FRAGMENT,
        KW_DEFAULT,
        KW_RECV,
        KW_SEND,
        NDIS_PROVIDER,
        encode_1001,
    )
    from ndis_replay.importers.etw.writer import EtlWriter
    from ndis_replay.importers.pcapng import WriterInterface, write_pcapng

    kind = "compressed" if compressed else "plain"
    etl = data_dir / f"ndiscap_{mb}mb_{kind}.etl"
    pcapng = data_dir / f"ndiscap_{mb}mb_{kind}.pcapng"
    stamp = data_dir / f"ndiscap_{mb}mb_{kind}.json"
    if stamp.exists() and etl.exists() and pcapng.exists():
        saved = json.loads(stamp.read_text())
        if saved.get("sha256") == sha256(etl):
            return etl, pcapng, int(saved["packets"])
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"writing {etl.name} (~{mb} MB) and its pcapng …", flush=True)
    target = mb * 1_000_000
    packets: list[tuple[int, bool, bytes]] = []
    with EtlWriter(etl, start_ns=1_700_000_000_000_000_000, cpus=CPUS, compress=compressed) as writer:
        written = 0
        for ts, outbound, frame in frames(10_000_000):
            if written >= target:
                break
            writer.add_event(
                cpu=frame[29] % CPUS,  # by flow (the source address's last byte): one flow stays on one CPU
                ts_ns=ts,
                provider=NDIS_PROVIDER,
                event_id=EVENT_FRAGMENT,
                keyword=KW_DEFAULT | (KW_SEND if outbound else KW_RECV),
                user_data=encode_1001(MINIPORT, MINIPORT, frame),
            )
            packets.append((ts, outbound, frame))
            written += 0x50 + 12 + len(frame) + 8  # header, 1001 fields, frame, alignment (an estimate)
    write_pcapng(
        pcapng,
        ((0, ts, f, len(f), "send" if out else "recv") for ts, out, f in packets),
        interfaces=[WriterInterface(name="eth:7")],
    )
    stamp.write_text(json.dumps({"sha256": sha256(etl), "packets": len(packets)}))
    return etl, pcapng, len(packets)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --- children -------------------------------------------------------------------------------------------------


def run_child(path: Path) -> dict[str, Any]:
    """Import ``path`` once with ``open_trace``; time, packets and peak RSS."""
    from ndis_replay.host import peak_rss_bytes
    from ndis_replay.importers import open_trace

    t0 = time.perf_counter()
    trace = open_trace(path, reader="fast")
    seconds = time.perf_counter() - t0
    return {
        "packets": len(trace),
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "warnings": len(trace.warnings),
    }


def spawn(path: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"import of {path.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- parent ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=200, help="size of the ETL, MB (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--compressed-mb", type=int, default=0, help="also a compressed ETL of this size, MB")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="where the files are kept")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(args.child)))
        return 0

    etl, pcapng, packets = write_files(args.mb, False, args.data)
    contenders = {"etl": etl, "pcapng (reference)": pcapng}
    if args.compressed_mb:
        contenders["etl, compressed buffers"] = write_files(args.compressed_mb, True, args.data)[0]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for r in range(args.repeat):
        for name, path in contenders.items():
            results[name].append(spawn(path))
        print(f"  round {r + 1}/{args.repeat}", flush=True)
    reference = statistics.median(x["seconds"] for x in results["pcapng (reference)"])
    print(f"\n{packets:,} packet events, {etl.stat().st_size / 1e6:,.0f} MB ETL; medians of {args.repeat} rounds")
    print(f"{'file':26} {'seconds':>8} {'events/s':>12} {'× pcapng time':>14} {'peak RSS':>10} {'warnings':>9}")
    for name, rows in results.items():
        seconds = statistics.median(x["seconds"] for x in rows)
        n = rows[0]["packets"]
        peak = max(x["peak_rss_bytes"] for x in rows)
        print(
            f"{name:26} {seconds:8.2f} {n / seconds:12,.0f} {seconds / reference:14.2f} "
            f"{peak / 2**20:8,.0f} MB {rows[0]['warnings']:9}"
        )
    etl_rows = results["etl"]
    rate = etl_rows[0]["packets"] / statistics.median(x["seconds"] for x in etl_rows)
    peak = max(x["peak_rss_bytes"] for x in etl_rows)
    verdict = "met" if rate >= TARGET_EVENTS_PER_S and peak < TARGET_PEAK_BYTES else "NOT met"
    print(
        f"target ≥ {TARGET_EVENTS_PER_S:,} events/s and < {TARGET_PEAK_BYTES / 2**20:.0f} MB peak: {verdict} "
        f"({rate:,.0f} events/s, {peak / 2**20:,.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
