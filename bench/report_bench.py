"""Report benchmark: the HTML report of 1,000,000 packets × 6 strategies. Targets: under 5 s, under 3 MB.

The results are grown from a real run (tests/report_helpers.py): six built-in strategies replay the
small-packets sample once, then each strategy's packets are redrawn from its own measured latencies, sizes and
send calls up to ``--packets`` per round (replaying 6 × 1M packets to benchmark a renderer would take many
minutes and measure the replay, not the report). The results directory is saved as ``ndis-replay run`` saves it.

Measured, ``--repeat`` times, medians:

- ``ndis-replay report RUN -o report.html`` as a subprocess: what a user waits for (imports included);
- in process, the phases: load (run.json + packets.parquet), build (statistics, buckets, intervals, paired
  ratios), charts (matplotlib SVG), render (jinja2) — and, as the reference measured in the same run, reading
  ``packets.parquet`` alone (the floor any report of these results pays), with the ratio of the total to it;
- the HTML's size, and with ``--sizes`` how it grows with the packet count (it should not).

Run ``python bench/report_bench.py [--packets 1000000] [--rounds 1] [--repeat 3] [--sizes]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

STRATEGIES = ("ndis5-reuse", "ndis5-alloc", "alloc", "reuse", "copy", "clone")
TARGET_SECONDS = 5.0
TARGET_BYTES = 3_000_000


def template_run(work: Path) -> Path:
    """A real run of the six strategies on the small-packets sample (one measured round)."""
    out = work / "template"
    args = [a for s in STRATEGIES for a in ("-s", s)]
    exe = Path(sys.executable).with_name("ndis-replay")
    trace = ROOT / "sample_traces" / "small_packets.pcapng"
    cmd = [str(exe), "run", str(trace), *args, "--rounds", "1", "--warmup", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets per strategy and round")
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds in the grown results")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians are printed)")
    parser.add_argument("--sizes", action="store_true", help="also print the HTML size at 10k and 100k packets")
    args = parser.parse_args()

    import polars as pl

    from ndis_replay.reports.charts import draw
    from ndis_replay.reports.data import build_report
    from ndis_replay.reports.html import environment
    from ndis_replay.results import PACKETS_PARQUET, load, save
    from tests.report_helpers import grow_run

    work = Path(tempfile.mkdtemp(prefix="report-bench."))
    try:
        print(f"template: replaying {len(STRATEGIES)} strategies on small_packets.pcapng …", flush=True)
        template = load(template_run(work))
        grown = grow_run(template, args.packets, rounds=args.rounds, strategies=len(STRATEGIES))
        run_dir = save(grown, work / "grown")
        rows = grown.packets.height if grown.packets is not None else 0
        shape = f"{args.packets:,} packets × {len(STRATEGIES)} strategies × {args.rounds} round(s)"
        print(f"results: {shape} = {rows:,} rows")

        exe = Path(sys.executable).with_name("ndis-replay")
        phases: dict[str, list[float]] = {k: [] for k in ("cli", "reference", "load", "build", "charts", "render")}
        size = 0
        for i in range(args.repeat):
            html = work / f"report{i}.html"
            t0 = time.perf_counter()
            subprocess.run([str(exe), "report", str(run_dir), "-o", str(html)], check=True, capture_output=True)
            phases["cli"].append(time.perf_counter() - t0)
            size = html.stat().st_size

            t0 = time.perf_counter()
            pl.read_parquet(run_dir / PACKETS_PARQUET)
            phases["reference"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run = load(run_dir)
            t1 = time.perf_counter()
            report = build_report([(str(run_dir), run)])
            t2 = time.perf_counter()
            charts = [draw(rv, k) for k, rv in enumerate(report.runs)]
            t3 = time.perf_counter()
            environment().get_template("report.html.j2").render(report=report, rv_charts=charts, findings_shown=50)
            t4 = time.perf_counter()
            phases["load"].append(t1 - t0)
            phases["build"].append(t2 - t1)
            phases["charts"].append(t3 - t2)
            phases["render"].append(t4 - t3)

        med = {k: statistics.median(v) for k, v in phases.items()}
        inproc = med["load"] + med["build"] + med["charts"] + med["render"]
        print(f"\nmedians of {args.repeat} (seconds)")
        print(f"  ndis-replay report (subprocess)   {med['cli']:7.2f}   target < {TARGET_SECONDS:.0f} s "
              f"{'met' if med['cli'] < TARGET_SECONDS else 'MISSED'}")  # fmt: skip
        for key in ("load", "build", "charts", "render"):
            print(f"    {key:<32}{med[key]:7.2f}")
        print(f"  in process, total                 {inproc:7.2f}")
        print(f"  reference: read packets.parquet   {med['reference']:7.2f}   report / reference = "
              f"{inproc / med['reference']:.1f}×")  # fmt: skip
        print(f"  HTML size                         {size / 1e6:7.2f} MB  target < {TARGET_BYTES / 1e6:.0f} MB "
              f"{'met' if size < TARGET_BYTES else 'MISSED'}")  # fmt: skip
        if args.sizes:
            from ndis_replay.reports.html import render_html

            for n in (10_000, 100_000, args.packets):
                g = grow_run(template, n, rounds=args.rounds, strategies=len(STRATEGIES))
                text = render_html(build_report([("grown", g)]))
                print(f"  HTML size at {n:>9,} packets      {len(text.encode()) / 1e6:7.3f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
