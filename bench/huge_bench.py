"""Huge-trace benchmark: a 10,000,000-packet pcap imported with ``--no-data`` and replayed in bounded memory.

The issue's target: the import and a ``run`` of the imported trace (lengths and times only) each stay under 2 GB of
peak resident memory per process — the CLI's own process and every worker process — by streaming instead of
materialising: the importer turns each 8 MiB chunk into polars columns, replay synthesizes every frame as a view
into one small pattern (``engine/replay.py``), the Python engine builds its send calls a window at a time
(``CALL_WINDOW``) and the per-packet results of a big run are written round by round (``PACKETS_IN_MEMORY``).

Steps, each a fresh ``ndis-replay`` process (its peak RSS from ``wait4``; the workers' from run.json):

1. make (or reuse, checked by sha256) ``bench/data/imix_<N>.pcap`` — ``import_bench.py``'s deterministic IMIX
   file, full frames (3.7 GB at 10 M packets);
2. ``ndis-replay import FILE --no-data -o imix_<N>.nodata.parquet``;
3. ``ndis-replay run imix_<N>.nodata.parquet -s reuse --rounds 1 --warmup 0 --engine E`` for E in native, python:
   the checked pass (always the Python model, untimed), one measured round, the no-op baseline round
   (``--strategy``/``-s``, ``--rounds`` and ``--warmup`` change the run: ``-s reuse -s alloc --rounds 5
   --warmup 1`` is ``run``'s default round count with two strategies, whose rows are spilled round by round).

Run by hand (``make bench-huge``): ``python bench/huge_bench.py [--packets 10000000] [--engine native]
[-s NAME …] [--rounds N] [--warmup N] [--json results.json]``. At 10 M packets it takes ~10 minutes per engine and
strategy, most of it the checked pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from import_bench import DATA_DIR, ensure_file

DEFAULT_PACKETS = 10_000_000
#: peak resident memory of every process, bytes
TARGET_BYTES = 2 * 10**9
ENGINES = ("native", "python")
BIN = Path(sys.executable).parent / "ndis-replay"


def timed(cmd: Sequence[str]) -> tuple[float, int, int]:
    """Run ``cmd``; (seconds, peak RSS of that process in bytes, exit code). ``ru_maxrss`` of ``wait4`` is the
    child's own (this parent is small and never loads polars, so the value Linux carries across ``execve`` is not
    larger than the child's)."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{err.decode(errors='replace')[-4000:]}")
    return seconds, usage.ru_maxrss * 1024, proc.returncode


def gb(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import and replay a huge pcap with --no-data; peak RSS per process.")
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="packets in the pcap (default 10 M)")
    parser.add_argument("--engine", action="append", choices=ENGINES, help="replay with these (default both)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the pcap is kept (bench/data/)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--strategy", "-s", action="append", metavar="NAME", help="replay these (default reuse; repeat for several)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds (default 1)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up rounds (default 0)")
    args = parser.parse_args(argv)
    strategies: list[str] = args.strategy or ["reuse"]
    path, digest = ensure_file(args.packets, args.data_dir)
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="huge-bench-", dir=args.data_dir))
    try:
        imported = work / f"{path.stem}.nodata.parquet"
        seconds, peak, _ = timed([str(BIN), "import", str(path), "--no-data", "-o", str(imported)])
        rows.append({"step": "import --no-data", "seconds": seconds, "peak_rss_bytes": peak, "workers": {}})
        print(f"import: {seconds:.1f} s, peak {gb(peak)}", flush=True)
        for engine in args.engine or ENGINES:
            out = work / f"run-{engine}"
            cmd = [str(BIN), "run", str(imported), *(a for name in strategies for a in ("-s", name))]
            cmd += ["--rounds", str(args.rounds), "--warmup", str(args.warmup)]
            seconds, peak, code = timed([*cmd, "--engine", engine, "--out", str(out)])
            doc = json.loads((out / "run.json").read_text())
            strategy = doc["strategies"][0]
            workers = {s["name"]: s["memory"]["worker_peak_rss_bytes"] for s in doc["strategies"]}
            overhead = doc.get("measurement_overhead") or {}
            workers["(no-op)"] = overhead.get("worker_peak_rss_bytes")
            rows.append(
                {
                    "step": f"run --engine {engine}",
                    "seconds": seconds,
                    "peak_rss_bytes": peak,
                    "workers": workers,
                    "exit": code,
                    "wire": strategy["wire"],
                    "check_seconds": strategy["check_seconds"],
                    "packets_parquet_bytes": (out / "packets.parquet").stat().st_size,
                    "summary": {k: (strategy["summary"] or {}).get(k) for k in ("p50_ns", "p99_ns", "packets_per_s")},
                }
            )
            print(f"run {engine}: {seconds:.1f} s, peak {gb(peak)}, workers {workers}", flush=True)
            shutil.rmtree(out, ignore_errors=True)  # its rows take gigabytes at 10 M packets × rounds
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{path.name}: {args.packets:,} packets, {path.stat().st_size / 1e9:.2f} GB; target < {gb(TARGET_BYTES)}")
    print(f"{'step':22} {'seconds':>8} {'CLI peak':>10} {'worker peaks':>28}  verdict")
    ok_all = True
    for row in rows:
        peaks = [row["peak_rss_bytes"], *(v for v in row["workers"].values() if v is not None)]
        ok = max(peaks) < TARGET_BYTES
        ok_all = ok_all and ok
        workers = ", ".join(f"{k} {gb(v)}" for k, v in row["workers"].items()) or "—"
        verdict = "met" if ok else "NOT met"
        print(f"{row['step']:22} {row['seconds']:8.1f} {gb(row['peak_rss_bytes']):>10} {workers:>28}  {verdict}")
    if args.json:
        payload = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "file": {"path": str(path), "packets": args.packets, "sha256": digest},
            "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "target_bytes": TARGET_BYTES,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
