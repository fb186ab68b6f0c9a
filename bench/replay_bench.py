"""Replay benchmark: every built-in strategy over a 1,000,000-packet trace on the loopback miniport.

The issue's targets for this pure-Python engine: at least 200,000 packets/s for ``reuse`` with batching ``none``;
the harness's own measurement overhead under 10% of the median per-packet latency; peak memory under 2 GB.

The trace is bench/import_bench.py's deterministic simple-IMIX pcap (``bench/data/imix_<N>.pcap``, made once and
reused while its sha256 matches). Its packets have no direction (pcap), so every one is replayed as a send.

For each batching rule (``none`` and ``8`` by default) the run is what ``ndis-replay run`` does — one worker process
per strategy plus one for the no-op strategy, warm-up then measured rounds interleaved across them, sync completion
— through :func:`ndis_replay.runner.run_trace`, keeping summaries only. The checked pass is skipped unless
``--check`` (it runs the verifier at 50–250 µs per packet: over an hour for 7 strategies × 1M packets × 2 rules on
two cores; the test suite and ``ndis-replay verify`` check every strategy on the sample traces).

Printed per strategy: packets/s at the median round, the ratio to the reference (``alloc``: median of the per-round
ratios, paired within each round so that machine drift cancels), p50/p99 latency, median build and send time per
call, the measurement overhead as a share of the median latency, and the worker's peak RSS. Timing (``--timing``,
as ``run --timing``): by default both engines read the clock once per run of 32 calls and give each packet its run's
mean (``runs:32``), so that the two engines' ratios compare like with like; ``--timing call`` reads it around every
call (the native figures are then mostly the clock's own ~20 ns). Measurement overhead is reported two ways.
``timer/p50``: the timer readings a packet's latency carries — per call one ``perf_counter_ns`` reading (between
build and submit: the loop stores readings only after submit returned), by runs 1/N of one — against the timer
calibration (median of back-to-back pairs). ``floor/p50``: the no-op strategy's median latency, timed the same way —
what the harness reports for a strategy that does nothing: the readings plus the calls and stores of the loop, which
any strategy pays; an upper bound.

Native core (issue 7): with the core built, each strategy it implements (all seven built-ins now) runs twice in the
same run, interleaved — ``NAME/python`` and ``NAME/native`` — and a native table follows: packets/s and median
latency per strategy for both engines, each strategy's latency ratio to ``reuse`` in each engine, and the native
measurement overhead (the native clock's back-to-back cost and the native no-op loop's median latency, run in this
process) as a share of each native median. Targets: ≥ 5,000,000 packets/s for native ``reuse`` (batching none),
overhead < 20% of the median latency. ``--engine python`` runs the Python engine only, as before.

``--profile STRATEGY`` instead runs that strategy's timed round in this process under cProfile and splits the time
between strategy code, the NDIS model, the miniport and the loop; the per-call build/send split is printed too.

Run ``python bench/replay_bench.py [--packets 1000000] [--rounds 3] [--json results.json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from import_bench import DATA_DIR, DEFAULT_PACKETS, ensure_file  # noqa: E402

BATCHINGS = ("none", "8")
REFERENCE = "alloc"
TARGET_PPS = 200_000
TARGET_OVERHEAD = 0.10
TARGET_MEMORY = 2e9
TARGET_NATIVE_PPS = 5_000_000
TARGET_NATIVE_OVERHEAD = 0.20


def load_trace(path: Path, packets: int) -> Any:
    from ndis_replay.importers import open_trace  # type: ignore[import-not-found, unused-ignore]

    trace = open_trace(path, reader="fast")
    if len(trace) > packets:
        trace = trace.replace(trace.frame.head(packets))
    return trace


def specs(names: Sequence[str], both: bool = False) -> list[Any]:
    """One spec per strategy; with ``both``, those the native core implements twice: ``NAME/python`` and
    ``NAME/native`` (each forced to its engine), the others once (Python)."""
    from ndis_replay.engine.native import NATIVE_STRATEGIES  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.engine.strategies import get_strategy  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.worker import StrategySpec  # type: ignore[import-not-found, unused-ignore]

    out = []
    for name in names:
        cls = get_strategy(name)
        if both and name in NATIVE_STRATEGIES:
            out.append(StrategySpec(f"{name}/python", cls, cls.Params(), name, engine="python"))
            out.append(StrategySpec(f"{name}/native", cls, cls.Params(), name, engine="native"))
        else:
            out.append(StrategySpec(name, cls, cls.Params(), name, engine="python"))
    return out


def native_floor(trace: Any, rounds: int, run_calls: int) -> dict[str, Any]:
    """The native no-op loop's median latency (median over rounds, timed as the strategies: ``run_calls`` per
    clock reading) and the native clock's cost, in this process."""
    import numpy as np

    from ndis_replay.engine.native import (  # type: ignore[import-not-found, unused-ignore]
        NativeBaseline,
        calibrate_clock,
        core,
    )
    from ndis_replay.engine.replay import ReplayInput  # type: ignore[import-not-found, unused-ignore]

    floor = NativeBaseline(ReplayInput.from_trace(trace), run_calls)
    floor.timed_round(0, True)
    p50 = float(np.median([np.median(floor.timed_round(r, False).latency_ns) for r in range(rounds)]))
    clock = calibrate_clock()
    return {
        "floor_p50_ns": p50,
        "clock_median_ns": clock.median_ns,
        "clock_min_ns": clock.min_ns,
        "clock": core().CLOCK,
        "run_calls": run_calls,
    }


def native_rows(rows: list[dict[str, Any]], floor: dict[str, Any]) -> list[dict[str, Any]]:
    """Native beside Python per strategy: packets/s, p50, overhead shares (native), and alloc/reuse p50 ratios."""
    by_name = {r["strategy"]: r for r in rows}
    out = []
    bases = dict.fromkeys(name.rsplit("/", 1)[0] for name in by_name if name.endswith("/native"))
    for base in bases:
        py, nat = by_name.get(f"{base}/python"), by_name.get(f"{base}/native")
        if py is None or nat is None:
            continue
        row = {
            "strategy": base,
            "python_pps": py["packets_per_s"],
            "native_pps": nat["packets_per_s"],
            "python_p50_ns": py["p50_ns"],
            "native_p50_ns": nat["p50_ns"],
        }
        if nat["p50_ns"]:
            # one reading per run of run_calls calls (one per call when timed per call: the pair inside each window)
            row["native_clock_share"] = floor["clock_median_ns"] / floor["run_calls"] / nat["p50_ns"]
            row["native_floor_share"] = floor["floor_p50_ns"] / nat["p50_ns"]
        out.append(row)
    pairs = {r["strategy"]: r for r in out}
    if "reuse" in pairs:  # every strategy's p50 against reuse's, in each engine (alloc/reuse is the headline)
        for name, row in pairs.items():
            for engine in ("python", "native"):
                reuse, other = pairs["reuse"][f"{engine}_p50_ns"], row[f"{engine}_p50_ns"]
                if reuse and other and name != "reuse":
                    row[f"{engine}_ratio_vs_reuse"] = other / reuse
    return out


def _cell(row: dict[str, Any], key: str, spec: str = ",.0f") -> str:
    value = row.get(key)
    return "—" if value is None else format(value, spec)


def print_native(rows: list[dict[str, Any]], floor: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("strategy", "python pkt/s", "native pkt/s", "python p50", "native p50", "p50 / reuse's py",
                "p50 / reuse's native", "clock/p50", "floor/p50"):  # fmt: skip
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        fmt = functools.partial(_cell, r)
        table.add_row(
            r["strategy"],
            fmt("python_pps"),
            fmt("native_pps"),
            fmt("python_p50_ns"),
            fmt("native_p50_ns"),
            fmt("python_ratio_vs_reuse", ".2f"),
            fmt("native_ratio_vs_reuse", ".2f"),
            "—" if "native_clock_share" not in r else f"{100 * r['native_clock_share']:.0f}%",
            "—" if "native_floor_share" not in r else f"{100 * r['native_floor_share']:.0f}%",
        )
    Console(width=150).print(table)
    print(
        f"native clock: {floor['clock']}; back-to-back {floor['clock_median_ns']} ns (min {floor['clock_min_ns']}); "
        f"native no-op loop p50 {floor['floor_p50_ns']:.0f} ns; "
        + ("timed per call" if floor["run_calls"] == 1 else f"timed by runs of {floor['run_calls']} calls")
    )


def run_one(
    trace: Any, names: Sequence[str], rounds: int, warmup: int, check: bool, both: bool = False, timing: Any = None
) -> Any:
    from ndis_replay.engine.miniports import CompletionPolicy, get_miniport  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.runner import RunOptions, run_trace  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.worker import MiniportSpec  # type: ignore[import-not-found, unused-ignore]

    loopback = get_miniport("loopback")
    options = RunOptions(
        miniport=MiniportSpec("loopback", loopback, loopback.Params()),
        completion=CompletionPolicy("sync"),
        rounds=rounds,
        warmup=warmup,
        check=check,
        baseline=True,
        keep_packets=False,
        command=tuple(sys.argv),
        **({"timing": timing} if timing is not None else {}),
    )
    started = time.perf_counter()

    def progress(what: str, done: int, total: int) -> None:
        print(f"  [{done:>3}/{total}] {time.perf_counter() - started:7.1f} s  {what}", flush=True)

    return run_trace(trace, specs(names, both), options, progress=progress)


def round_pps(strategy: Any, packets: int) -> list[float]:
    return [packets / ((t["end_ns"] - t["start_ns"]) / 1e9) for t in strategy.round_times]


def rows_for(result: Any) -> list[dict[str, Any]]:
    """One row per strategy (and the no-op floor) with the figures the table and the JSON show."""
    packets = result.trace["replayed"]
    # the floor measured the way each strategy was (engine, timing): one per way when the run mixes them
    floors = result.measurement_overheads or [result.measurement_overhead or {}]
    floor_of = {(f.get("engine"), f.get("timing")): f.get("p50_ns") for f in floors}
    reference = next((s for s in result.strategies if s.name in (REFERENCE, f"{REFERENCE}/python")), None)
    rows = []
    for s in result.strategies:
        summary = s.summary or {}
        row: dict[str, Any] = {
            "strategy": s.name,
            "status": s.status,
            "packets_per_s": summary.get("packets_per_s"),
            "p50_ns": summary.get("p50_ns"),
            "p99_ns": summary.get("p99_ns"),
            "build_p50_ns": summary.get("build_p50_ns"),
            "send_p50_ns": summary.get("send_p50_ns"),
            "peak_rss_bytes": s.memory.get("worker_peak_rss_bytes"),
            "per_round_pps": round_pps(s, packets),
        }
        if row["p50_ns"]:
            if result.timer_overhead_ns:  # one reading per call, or per run of N calls
                per = int((s.timing or "call").partition(":")[2] or 1)
                row["timer_share"] = result.timer_overhead_ns / per / row["p50_ns"]
            floor_p50 = floor_of.get((s.engine, s.timing), floors[0].get("p50_ns") if len(floors) == 1 else None)
            if floor_p50:
                row["floor_share"] = floor_p50 / row["p50_ns"]
        if reference is not None and reference.round_times and s.round_times:
            ratios = [a / b for a, b in zip(round_pps(s, packets), round_pps(reference, packets), strict=False)]
            row["ratio_vs_reference"] = statistics.median(ratios)
            row["ratio_range"] = (min(ratios), max(ratios))
        row["engine"] = s.engine
        rows.append(row)
    for floor in floors:
        how = f"{floor.get('engine')}, {floor.get('timing')}" if len(floors) > 1 else ""
        rows.append(
            {
                "strategy": f"(no-op floor{': ' + how if how else ''})",
                "status": "ok",
                "packets_per_s": floor.get("packets_per_s"),
                "p50_ns": floor.get("p50_ns"),
                "p99_ns": floor.get("p99_ns"),
                "build_p50_ns": floor.get("build_p50_ns"),
                "send_p50_ns": floor.get("send_p50_ns"),
                "peak_rss_bytes": floor.get("worker_peak_rss_bytes"),
                "engine": floor.get("engine"),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def ns(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    table = Table(title=title, title_justify="left")
    columns = ("strategy", "packets/s", f"× {REFERENCE} (range)", "p50 ns", "p99 ns", "build p50", "send p50",
               "timer/p50", "floor/p50", "peak RSS")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        ratio = "—"
        if "ratio_vs_reference" in r:
            lo, hi = r["ratio_range"]
            ratio = f"{r['ratio_vs_reference']:.2f} ({lo:.2f}–{hi:.2f})"
        timer = f"{100 * r['timer_share']:.1f}%" if "timer_share" in r else "—"
        share = f"{100 * r['floor_share']:.1f}%" if "floor_share" in r else "—"
        rss = "—" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB"
        table.add_row(
            r["strategy"],
            ns(r["packets_per_s"]),
            ratio,
            ns(r["p50_ns"]),
            ns(r["p99_ns"]),
            ns(r["build_p50_ns"]),
            ns(r["send_p50_ns"]),
            timer,
            share,
            rss,
        )
    Console(width=150).print(table)


# --- profile ------------------------------------------------------------------------------------------------------

_PARTS = (
    ("strategy code", "/strategies/"),
    ("NDIS model (engine/ndis)", "/ndis/"),
    ("verifier", "verifier.py"),
    ("miniport", "/miniports/"),
    ("replay loop", "replay.py"),
)


def profile_strategy(trace: Any, name: str, batching: str) -> None:
    """One warm-up and one profiled timed round in this process; own time grouped by where the code lives."""
    import cProfile
    import gc
    import pstats

    import numpy as np

    from ndis_replay.engine.miniports import CompletionPolicy, get_miniport  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.engine.replay import (  # type: ignore[import-not-found, unused-ignore]
        LoopBaseline,
        ReplayInput,
        StrategyReplayer,
    )
    from ndis_replay.engine.strategies import get_strategy  # type: ignore[import-not-found, unused-ignore]

    trace = trace.with_batching(batching)
    inp = ReplayInput.from_trace(trace)
    replayer = StrategyReplayer(inp, get_strategy(name), get_miniport("loopback"), CompletionPolicy("sync"))
    gc.collect()
    gc.freeze()  # as a worker does: the trace and the send calls stay out of the collections between rounds
    replayer.timed_round(0, True)
    plain = replayer.timed_round(1, False)
    floor = LoopBaseline(inp)
    floor.timed_round(0, True)
    noop = floor.timed_round(1, False)
    seconds = (plain.end_ns - plain.start_ns) / 1e9
    print(f"{name}, batching {batching}: {inp.packets:,} packets, {inp.packets / seconds:,.0f} packets/s unprofiled")
    print(
        f"  per call (median): build {np.median(plain.build_ns):,.0f} ns, send {np.median(plain.send_ns):,.0f} ns; "
        f"per packet: latency p50 {np.median(plain.latency_ns):,.0f} ns; "
        f"no-op loop {np.median(noop.latency_ns):,.0f} ns latency, "
        f"{(noop.end_ns - noop.start_ns) / inp.packets:,.0f} ns per packet of loop time"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    replayer.timed_round(2, False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        part = next((label for label, key in _PARTS if key in filename), None)
        if part is None:
            part = "timer reads" if "perf_counter_ns" in function else f"builtins/other ({function[:40]})"
            if part.startswith("builtins"):
                part = "builtins and other"
        totals[part] = totals.get(part, 0.0) + own
    whole = sum(totals.values())
    print("  own time under cProfile (its per-call cost inflates small functions):")
    for part, own in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"    {part:28} {100 * own / whole:5.1f}%  {own / inp.packets * 1e9:7.0f} ns/packet")
    stats.sort_stats("tottime").print_stats(20)


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    from ndis_replay.engine.miniports import CompletionPolicy  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.engine.replay import (  # type: ignore[import-not-found, unused-ignore]
        ASAP,
        DEFAULT_RUN_CALLS,
        parse_timing,
    )
    from ndis_replay.engine.strategies import available  # type: ignore[import-not-found, unused-ignore]
    from ndis_replay.host import host_record, peak_rss_bytes  # type: ignore[import-not-found, unused-ignore]

    sync = CompletionPolicy("sync")

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="packets in the trace (default 1M)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    parser.add_argument("--batching", action="append", help=f"batching rules (repeatable; default {BATCHINGS})")
    parser.add_argument("--strategy", action="append", help="strategies (repeatable; default every built-in)")
    parser.add_argument("--check", action="store_true", help="run the checked pass first (slow: see the docstring)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the pcap is kept (bench/data/)")
    parser.add_argument("--profile", metavar="STRATEGY", help="profile one strategy's timed round instead")
    parser.add_argument(
        "--engine",
        choices=("both", "python"),
        default="both",
        help="both (default when the native core is built): native beside Python for every native strategy",
    )
    parser.add_argument(
        "--timing",
        default=f"runs:{DEFAULT_RUN_CALLS}",
        help="how timed rounds read the clock (run --timing): runs:N (default, both engines alike: the ratios compare "
        "like with like), call (per call: the native figures are then mostly the clock's), auto",
    )
    args = parser.parse_args(argv)
    timing = parse_timing(args.timing)
    if args.packets < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--packets and --rounds must be at least 1, --warmup at least 0")
    path, digest = ensure_file(max(args.packets, DEFAULT_PACKETS) if args.packets <= DEFAULT_PACKETS else args.packets,
                               args.data_dir)  # fmt: skip
    trace = load_trace(path, args.packets)
    print(f"{len(trace):,} packets from {path.name}; parent peak RSS {peak_rss_bytes() / 2**20:,.0f} MiB", flush=True)
    batchings: list[str] = args.batching or list(BATCHINGS)
    if args.profile:
        for batching in batchings:
            profile_strategy(trace, args.profile, batching)
        return 0
    names: list[str] = args.strategy or available()
    if REFERENCE not in names:
        print(f"note: {REFERENCE} is not among the strategies: no ratios")
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "trace": {"path": str(path), "sha256": digest, "packets": len(trace)},
        "host": host_record(),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "checked": args.check,
        "runs": {},
    }
    from ndis_replay.engine import native  # type: ignore[import-not-found, unused-ignore]

    both = args.engine == "both" and native.available()
    if args.engine == "both" and not both:
        print(f"note: the native core is not built ({native.import_error()}): Python engine only")
    verdicts: list[str] = []
    worst_memory = 0
    for batching in batchings:
        print(f"batching {batching}:", flush=True)
        result = run_one(trace.with_batching(batching), names, args.rounds, args.warmup, args.check, both, timing)
        rows = rows_for(result)
        title = (
            f"{len(trace):,} packets, batching {batching} ({result.trace['calls']:,} calls), sync completion; "
            f"median of {args.rounds} rounds; timer {result.timer_overhead_ns} ns per reading pair"
        )
        print()
        print_table(rows, title)
        report["runs"][batching] = {
            "rows": rows,
            "timer_overhead_ns": result.timer_overhead_ns,
            "timing": str(timing),
        }
        if both:
            floor = native_floor(trace.with_batching(batching), args.rounds, timing.run_calls("native", sync, ASAP))
            nrows = native_rows(rows, floor)
            print_native(nrows, floor, f"native core beside Python, batching {batching}, sync completion")
            report["runs"][batching]["native"] = {"rows": nrows, **floor}
            for r in nrows:
                if r["strategy"] == "reuse" and batching == "none" and r["native_pps"]:
                    met = r["native_pps"] >= TARGET_NATIVE_PPS
                    verdicts.append(
                        f"native reuse, batching none: {r['native_pps']:,.0f} packets/s (target ≥ "
                        f"{TARGET_NATIVE_PPS:,}) — {'met' if met else 'NOT met'}"
                    )
                if "native_floor_share" in r:
                    share = r["native_floor_share"]
                    verdicts.append(
                        f"batching {batching}: native measurement overhead (no-op loop p50 {floor['floor_p50_ns']:.0f}"
                        f" ns; clock {floor['clock_median_ns']} ns per reading, timing {timing}) = {100 * share:.0f}% "
                        "of native "
                        f"{r['strategy']}'s p50 — {'met' if share < TARGET_NATIVE_OVERHEAD else 'NOT met'} "
                        "(target < 20%)"
                    )
        worst_memory = max([worst_memory, *(r["peak_rss_bytes"] or 0 for r in rows)])
        reuse = next((r for r in rows if r["strategy"] in ("reuse", "reuse/python")), None)
        if reuse is not None and batching == "none" and reuse["packets_per_s"]:
            met = reuse["packets_per_s"] >= TARGET_PPS
            verdicts.append(
                f"reuse, batching none: {reuse['packets_per_s']:,.0f} packets/s (target ≥ {TARGET_PPS:,}) — "
                f"{'met' if met else 'NOT met'}"
            )
        # the Python engine's verdicts (the native rows have their own, below the native table)
        shares = [(r["timer_share"], r["strategy"]) for r in rows if "timer_share" in r and r.get("engine") != "native"]
        if shares:
            worst, who = max(shares)
            verdicts.append(
                f"batching {batching}: measurement overhead (the timer reading inside a packet's latency, "
                f"{result.timer_overhead_ns} ns per reading, timing {timing}) at most {100 * worst:.1f}% of a median "
                f"latency ({who}) — "
                f"{'met' if worst < TARGET_OVERHEAD else 'NOT met'} (target < 10%)"
            )
        floors = [(r["floor_share"], r["strategy"]) for r in rows if "floor_share" in r and r.get("engine") != "native"]
        if floors:
            worst, who = max(floors)
            verdicts.append(
                f"batching {batching}: whole-loop floor (no-op strategy's median latency, which includes the build "
                f"and submit calls every strategy pays) at most {100 * worst:.1f}% of a median latency ({who})"
            )
    parent = peak_rss_bytes()
    worst_memory = max(worst_memory, parent)
    verdicts.append(
        f"peak memory of any process: {worst_memory / 1e9:.2f} GB (parent {parent / 1e9:.2f} GB) — "
        f"{'met' if worst_memory < TARGET_MEMORY else 'NOT met'} (target < 2 GB)"
    )
    print()
    for line in verdicts:
        print(line)
    if args.json:
        report["verdicts"] = verdicts
        report["parent_peak_rss_bytes"] = parent
        report["python"] = platform.python_version()
        report["cpus"] = os.cpu_count()
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":  # worker processes import this module: run only as a script
    raise SystemExit(main())
