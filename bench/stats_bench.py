"""Statistics validation on real replays: how often ``compare`` calls an A/A ``unchanged`` and a real slowdown
``regressed`` (the issue's acceptance: at least 95% each, at the default 5% threshold).

The slowed strategy ``slow`` is ``reuse`` plus a counted busy loop per packet in build. Calibration first: one run
of reuse, reuse-again and slow with :data:`CALIBRATION_SPINS` steps gives reuse's per-packet p50 and what those
steps cost in a worker (medians over rounds, paired per packet); the loop is then sized to ``--slowdown`` (10%)
of the p50. The realised ratio (median paired difference / median) is measured in every repetition and printed.

Then ``--reps`` repetitions of ONE run each (interleaved rounds: reuse, reuse-again, slow; A B C, A B C) holding
``reuse``, ``reuse-again`` (the same strategy in a separate worker process) and ``slow``. Each run is split into
single-strategy runs, renamed so that they share the name ``reuse``, and compared through
:func:`~ndis_replay.reports.compare_runs` (the unpaired run-vs-baseline code path: bootstrap over rounds + exact
Mann-Whitney on the per-round values): reuse vs reuse-again is an A/A, reuse vs slow the injected slowdown.
The slowdown is also compared inside the run with :func:`~ndis_replay.reports.compare_strategies` (paired per
packet). Last, ``--reps-sep`` separate runs of ``reuse`` alone (separate invocations, new workers each time, at
different moments) are compared pairwise with ``compare_runs``: the honest cross-invocation A/A rate on this
machine (the pairs share runs, so they are not independent: a rate, not a binomial sample).

Runs go through :func:`ndis_replay.runner.run_trace` in this process (what ``ndis-replay run`` does, with the
no-op floor worker, without the checked pass unless ``--check``). The slowed strategy is ``SpinReuse`` of
tests/replay_helpers.py (shared with tests/test_validation.py; its docstring says why it repeats reuse's build);
workers unpickle it by reference. The runner times every worker on one CPU, as ``ndis-replay run`` does;
``--no-pin`` leaves the workers to the scheduler (``run --no-pin``: on a 2-vCPU VM whose vCPUs run at different
speeds at times, it changes the figures a lot), ``--pin CPU`` runs every process, checked passes and the
parent included, on one CPU. ``--packets N``
replays the trace's first N packets. ``--keep DIR`` saves every run; ``--load DIR`` re-analyses saved runs
without replaying (to compare two versions of the statistics on the same data). No assertions: figures only.

Run ``python bench/stats_bench.py [TRACE] [--reps 20] [--reps-sep 10] [--rounds 5] [--pin CPU | --no-pin] [--packets N]
[--keep DIR | --load DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ndis_replay.engine.strategies.reuse import ReuseParams, ReuseStrategy
from ndis_replay.reports.stats import pair_latencies

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the slowed strategy is shared with tests/test_validation.py

from tests.replay_helpers import SpinParams, SpinReuse  # noqa: E402

DEFAULT_TRACE = HERE.parent / "sample_traces" / "small_packets.pcapng"
METRICS = ("p50", "p99")
SLOW = "slow"
AGAIN = "reuse-again"
#: Busy-loop steps of the calibration run (about what 10% takes: ~15 ns a step, reuse ~2.3 µs per packet).
CALIBRATION_SPINS = 15


# --- runs -----------------------------------------------------------------------------------------------------


def replay(trace: Any, path: Path, specs: Sequence[Any], rounds: int, warmup: int, check: bool, pin: bool) -> Any:
    """One run of ``specs`` (interleaved rounds, as ``ndis-replay run``; the no-op floor included)."""
    from ndis_replay.engine.miniports import CompletionPolicy, get_miniport
    from ndis_replay.runner import RunOptions, run_trace
    from ndis_replay.worker import MiniportSpec

    loopback = get_miniport("loopback")
    options = RunOptions(
        miniport=MiniportSpec("loopback", loopback, loopback.Params()),
        completion=CompletionPolicy("sync"),
        rounds=rounds,
        warmup=warmup,
        check=check,
        pin=pin,
        command=tuple(sys.argv),
    )
    return run_trace(trace, specs, options, path=path)


def reuse_spec(name: str = "reuse") -> Any:
    from ndis_replay.worker import StrategySpec

    return StrategySpec(name, ReuseStrategy, ReuseParams(), "reuse")


def slow_spec(spins: int) -> Any:
    from ndis_replay.worker import StrategySpec

    return StrategySpec(SLOW, SpinReuse, SpinParams(spins=spins), "reuse")


def only(run: Any, name: str, as_name: str = "reuse") -> Any:
    """The run reduced to strategy ``name``, renamed ``as_name`` (so two such runs share a strategy name)."""
    s = dataclasses.replace(run.strategy(name), name=as_name)
    packets = run.packets.filter(pl.col("strategy") == name).with_columns(pl.lit(as_name).alias("strategy"))
    return dataclasses.replace(run, strategies=[s], packets=packets)


def per_round(run: Any, base: str, new: str) -> tuple[list[float], list[float]]:
    """Per measured round: base's median latency, and the median paired difference new − base (same packet)."""
    import numpy as np

    medians, diffs = [], []
    for r in range(run.rounds):
        pairs = pair_latencies(run.packets.filter(pl.col("round") == r), base, new)
        medians.append(float(np.median(pairs.base)))
        diffs.append(float(np.median(pairs.new - pairs.base)))
    return medians, diffs


def calibrate(trace: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One run of reuse, reuse-again and slow with :data:`CALIBRATION_SPINS` steps: reuse's p50 (the median of the
    per-round p50s of reuse and reuse-again) and what those steps cost (the median over rounds of the per-round
    median paired difference) — neither a disturbed round nor a worker in a slow state moves a median over rounds
    — give the steps that make ``--slowdown`` of the p50. Measured in the workers, as they will run."""
    specs = [reuse_spec(), reuse_spec(AGAIN), slow_spec(CALIBRATION_SPINS)]
    run = replay(trace, args.trace, specs, args.rounds, args.warmup, args.check, not args.no_pin)
    medians, diffs = per_round(run, "reuse", SLOW)
    again, _ = per_round(run, AGAIN, SLOW)
    p50, extra = statistics.median(medians + again), statistics.median(diffs)
    spins = max(1, round(CALIBRATION_SPINS * args.slowdown * p50 / extra)) if extra > 0 else CALIBRATION_SPINS
    return {"p50_ns": p50, "step_ns": extra / CALIBRATION_SPINS, "spins": spins, "slowdown": args.slowdown}


# --- analysis -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Verdicts and relative changes of one row of the table."""

    verdicts: list[str] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)

    def add(self, verdict: str, change: float) -> None:
        self.verdicts.append(verdict)
        self.changes.append(change)

    def rate(self, verdict: str) -> str:
        n = len(self.verdicts)
        k = self.verdicts.count(verdict)
        return f"{k}/{n} = {100 * k / n:.0f}%" if n else "—"

    def spread(self) -> str:
        if not self.changes:
            return "—"
        c = sorted(self.changes)
        return f"{100 * statistics.median(c):+.1f}% ({100 * c[0]:+.1f} … {100 * c[-1]:+.1f})"


def analyse(runs: Sequence[Any], separate: Sequence[Any]) -> tuple[dict[tuple[str, str], Tally], list[float]]:
    """Tallies per (row, metric), and the realised slowdown of every repetition: the median over rounds of the
    per-round median paired difference slow − reuse, over the median of reuse's per-round medians."""
    from ndis_replay.reports import compare_runs, compare_strategies

    tallies: dict[tuple[str, str], Tally] = {}

    def tally(row: str, metric: str) -> Tally:
        return tallies.setdefault((row, metric), Tally())

    realised = []
    for run in runs:
        medians, diffs = per_round(run, "reuse", SLOW)
        realised.append(statistics.median(diffs) / statistics.median(medians))
        base = only(run, "reuse")
        for c in compare_runs(base, only(run, AGAIN), metric=METRICS).comparisons:
            tally("aa-in-run", c.metric).add(c.verdict, c.change)
        for c in compare_runs(base, only(run, SLOW), metric=METRICS).comparisons:
            tally("slow-unpaired", c.metric).add(c.verdict, c.change)
        for c in compare_strategies(run, "reuse", SLOW, metric=METRICS):
            tally("slow-paired", c.metric).add(c.verdict, c.change)
    for a, b in itertools.combinations(separate, 2):
        for c in compare_runs(a, b, metric=METRICS).comparisons:
            tally("aa-separate", c.metric).add(c.verdict, c.change)
    return tallies, realised


ROWS = {
    "aa-in-run": ("A/A in one run, separate processes (compare_runs)", "unchanged"),
    "aa-separate": ("A/A separate invocations, every pair (compare_runs)", "unchanged"),
    "slow-unpaired": ("slowdown, split run (compare_runs, unpaired)", "regressed"),
    "slow-paired": ("slowdown, in-run (compare_strategies, paired)", "regressed"),
}


def print_table(tallies: dict[tuple[str, str], Tally]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="verdicts at the default 5% threshold", title_justify="left")
    for col in ("comparison", "metric", "wanted", "rate", "median change (min … max)"):
        table.add_column(col, justify="left" if col in ("comparison", "metric", "wanted") else "right")
    for key, (label, wanted) in ROWS.items():
        for metric in METRICS:
            t = tallies.get((key, metric))
            if t is None:
                continue
            table.add_row(label, metric, wanted, t.rate(wanted), t.spread())
    Console(width=150).print(table)


# --- main -----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("trace", nargs="?", type=Path, default=DEFAULT_TRACE, help="capture (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=20, help="runs with reuse, reuse-again and slow (default 20)")
    parser.add_argument("--reps-sep", type=int, default=10, help="separate runs of reuse alone (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per run (default 5, as the CLI)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds per run (default 1)")
    parser.add_argument("--slowdown", type=float, default=0.10, help="extra work / reuse's p50 (default 0.10)")
    parser.add_argument("--packets", type=int, help="replay only the trace's first N packets")
    pinning = parser.add_mutually_exclusive_group()
    pinning.add_argument("--pin", type=int, metavar="CPU", help="run every process on this CPU only")
    pinning.add_argument("--no-pin", action="store_true", help="do not time the workers on one CPU (run --no-pin)")
    parser.add_argument("--check", action="store_true", help="run the checked pass too (as the CLI does)")
    parser.add_argument("--keep", type=Path, help="save every run under this folder")
    parser.add_argument("--load", type=Path, help="analyse the runs saved by --keep instead of replaying")
    args = parser.parse_args(argv)

    from ndis_replay.importers import open_trace
    from ndis_replay.results import load, save

    started = time.perf_counter()
    if args.load is not None:
        meta = json.loads((args.load / "bench.json").read_text())
        runs = [load(p) for p in sorted(args.load.glob("rep-*"))]
        separate = [load(p) for p in sorted(args.load.glob("sep-*"))]
        print(f"loaded {len(runs)} runs and {len(separate)} separate runs from {args.load}")
    else:
        if args.pin is not None:
            os.sched_setaffinity(0, {args.pin})  # inherited by the fork server and every worker
        trace = open_trace(args.trace, reader="fast")
        if args.packets:
            trace = trace.replace(trace.frame.head(args.packets))
        meta = calibrate(trace, args)
        runs, separate = [], []
        for i in range(args.reps):
            specs = [reuse_spec(), reuse_spec(AGAIN), slow_spec(meta["spins"])]
            runs.append(replay(trace, args.trace, specs, args.rounds, args.warmup, args.check, not args.no_pin))
            print(f"  run {i + 1}/{args.reps}  {time.perf_counter() - started:6.1f} s", flush=True)
        for i in range(args.reps_sep):
            separate.append(
                replay(trace, args.trace, [reuse_spec()], args.rounds, args.warmup, args.check, not args.no_pin)
            )
            print(f"  separate run {i + 1}/{args.reps_sep}  {time.perf_counter() - started:6.1f} s", flush=True)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "bench.json").write_text(json.dumps(meta))
            for i, run in enumerate(runs):
                save(run, args.keep / f"rep-{i:03d}", force=True)
            for i, run in enumerate(separate):
                save(run, args.keep / f"sep-{i:03d}", force=True)
    print(
        f"calibration: reuse p50 {meta['p50_ns']:,.0f} ns; extra work {100 * meta['slowdown']:.0f}% of it: "
        f"{meta['spins']} loop steps per packet at {meta['step_ns']:.1f} ns a step"
    )
    tallies, realised = analyse(runs, separate)
    print_table(tallies)
    if realised:
        print(
            f"realised extra / p50 (in-run, paired per packet, median over rounds): median over {len(realised)} "
            f"runs {100 * statistics.median(realised):+.1f}% (range {100 * min(realised):+.1f} … "
            f"{100 * max(realised):+.1f})"
        )
    elapsed = time.perf_counter() - started
    print(f"{len(runs)} runs × {args.rounds} rounds, {len(separate)} separate runs; {elapsed:.0f} s")
    return 0


if __name__ == "__main__":  # the runner's fork server imports this module: run only as a script
    raise SystemExit(main())
