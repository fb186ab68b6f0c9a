"""Soak benchmark: every strategy × miniport × engine replays a sample trace round after round; memory, descriptors
and file descriptors must stay flat (issue 8).

For each built-in strategy, on the ``loopback`` and the ``tap`` miniport (tap: root and ``/dev/net/tun``, else
skipped with the reason printed), on each engine (``native`` where the core implements the strategy, and
``python``), the sample trace (``sample_traces/bulk_tcp.pcapng`` by default, ``--trace``) is replayed through the
timed path (``open_timed`` once, then ``timed_round`` after ``timed_round``, sync completion, no checked pass: the
test suite and ``ndis-replay verify`` judge correctness) for the combination's share of ``--minutes`` (default 10,
split evenly; worker start-up, ~1 s each, comes on top).

**One worker process per combination, one at a time.** RSS and the descriptor table are per process: in one process
a combination would inherit the heap its predecessors grew (pymalloc arenas and glibc's free lists are kept, not
returned), so a leak would be blamed on whoever came later and a growth could hide in memory freed earlier; a
worker also keeps a crash of the native core from ending the bench. Running them one after another keeps the two
cores of a small machine from being shared between combinations.

Sampled every ``1/--samples`` of a combination's time (default 20: every 5%) at the end of the round that crosses
the mark, plus once after the first round (a round longer than the interval skips marks; a combination that ends its
time with fewer than 10 samples goes on, sampling after every round, until it has them): the process's RSS
(``/proc/self/statm``), its open file descriptors (``/proc/self/fd``), the model's outstanding descriptors per kind
(allocs − frees of NBL, NB, MDL, context, NDIS 5 packet and buffer, data buffer), the modelled memory held
(``mem_bytes``), system allocations held (``sys_allocs − sys_frees``), the strategy's own counts (``pool_size``,
``pool_growth``, cache counts …) — the Python engine's ``Ndis`` counters' snapshot or the native core's counters —
and for tap the far side's cumulative delivered and lost frames. Outstanding descriptors, ``mem_bytes`` and system
allocations held are also read after *every* round (cheap: a few dozen integers).

Verdict per combination, **flat** when all hold:

* **RSS**: over the samples after the first 20% (warm-up: pools and the allocator reach steady state), the
  least-squares line's rise across that window is under 1 MiB and under 2% of the median RSS (the process holds
  ~45–60 MiB: 1 MiB binds). A fitted rise, not last − first, so one noisy sample neither hides nor fakes a trend.
  What it can see: at the default 10 minutes a combination gets ≈21 s, ≈17 s of it judged, so the bound is a leak
  of ≈60 KiB/s — on the 484-packet sample trace, measured here at 30 (Python, tap) to 14,000 (native, loopback)
  rounds/s, that is ≈4 bytes per packet in the slowest combination, ≈4 bytes per round in the fastest. A leak of a
  descriptor of the model is caught exactly by the per-round check below; this bound is for what lives outside the
  model (Python objects, the C heap, socket buffers). The slope is printed per hour.
* **descriptors**: outstanding counts, ``mem_bytes`` and system allocations held are the same at the end of every
  round after the first (the first round may still fill pools).
* **fds**: the same count in every sample.
* **delivery** (tap): zero frames lost or damaged on the far side, over every round.
* no round ended with an error.

Run: ``make bench-soak`` (``SOAK_MINUTES=10``) or ``python bench/soak_bench.py [--minutes 10] [--samples 20]
[--trace FILE] [--strategy NAME …] [--miniport loopback|tap …] [--engine native|python …] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ndis_replay.engine.miniports.base import CompletionPolicy
from ndis_replay.engine.native import NATIVE_STRATEGIES, NativeReplayer
from ndis_replay.engine.native import available as native_available
from ndis_replay.engine.ndis.counters import KINDS
from ndis_replay.engine.replay import ReplayInput, StrategyReplayer

if TYPE_CHECKING:
    from ndis_replay.engine.strategies.base import Strategy

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TRACE = REPO / "sample_traces" / "bulk_tcp.pcapng"
DEFAULT_MINUTES = 10.0
#: samples per combination after the first round (20: one every 5% of its time)
DEFAULT_SAMPLES = 20
#: fewest samples a verdict is given on
MIN_SAMPLES = 10
#: the first share of the samples that is warm-up (not judged for RSS)
WARMUP_SHARE = 0.2
#: the fitted RSS rise over the judged samples must stay under this, bytes …
RSS_RISE_BYTES = 1 << 20
#: … and under this share of their median RSS
RSS_RISE_SHARE = 0.02
MINIPORTS = ("loopback", "tap")
ENGINES = ("native", "python")
#: a worker gets its share of the time plus this long (start-up, binding, the last round) before it is killed, s
WORKER_GRACE_S = 120.0
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- what is sampled ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    """One strategy on one miniport in one engine."""

    strategy: str
    miniport: str
    engine: str

    @property
    def label(self) -> str:
        """``strategy/miniport/engine``."""
        return f"{self.strategy}/{self.miniport}/{self.engine}"


@dataclass
class Sample:
    """The process and the model at the end of one round."""

    #: seconds since the combination's first round started
    t_s: float
    rounds: int
    packets: int
    rss_bytes: int
    fds: int
    #: allocs − frees per descriptor kind (:data:`~ndis_replay.engine.ndis.counters.KINDS`)
    outstanding: dict[str, int]
    #: modelled descriptor and data memory held (in use or cached in pools), bytes
    mem_bytes: int
    #: system allocations held (sys_allocs − sys_frees)
    sys_held: int
    #: the strategy's own counts (pool_size, pool_growth, cache_hits …)
    stats: dict[str, int] = field(default_factory=dict)
    #: tap: frames the far side received intact so far (None: loopback)
    delivered: int | None = None
    #: tap: frames written and not received intact so far (dropped, corrupted, …)
    lost: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        """Inverse of :func:`dataclasses.asdict`."""
        return cls(**data)


@dataclass
class SoakResult:
    """One combination's soak: its samples and what the per-round checks saw."""

    combination: Combination
    #: time spent replaying, s
    seconds: float
    rounds: int
    packets: int
    samples: list[Sample]
    #: rounds after the first whose end state (outstanding, mem_bytes, sys_held) differed from the first's
    state_changes: int = 0
    #: the first few differing end states: (round, state)
    state_examples: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    #: the first round error (a finding's text), or a worker failure
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what a worker sends back; the --json file holds it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SoakResult:
        """Inverse of :meth:`as_dict`."""
        return cls(
            combination=Combination(**data["combination"]),
            seconds=data["seconds"],
            rounds=data["rounds"],
            packets=data["packets"],
            samples=[Sample.from_dict(s) for s in data["samples"]],
            state_changes=data["state_changes"],
            state_examples=[(int(r), dict(s)) for r, s in data["state_examples"]],
            error=data["error"],
        )


def rss_bytes() -> int:
    """This process's resident set size now, bytes (``/proc/self/statm``'s second field, in pages)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def open_fds() -> int:
    """Open file descriptors of this process (the listing's own descriptor included: a constant +1)."""
    return len(os.listdir("/proc/self/fd"))


def _model_state(counters: dict[str, int]) -> dict[str, int]:
    """Outstanding per kind, mem_bytes and sys_held from a counters-by-name dict (either engine)."""
    state = {kind: counters[f"{kind}_allocs"] - counters[f"{kind}_frees"] for kind in KINDS}
    state["mem_bytes"] = counters["mem_bytes"]
    state["sys_held"] = counters["sys_allocs"] - counters["sys_frees"]
    return state


def _counters(replayer: StrategyReplayer | NativeReplayer) -> dict[str, int]:
    if isinstance(replayer, NativeReplayer):
        return replayer.counters()
    assert replayer._timed is not None  # the runtime StrategyReplayer keeps for its timed rounds (no public handle)
    return replayer._timed[0].counters.snapshot()


def _strategy_stats(replayer: StrategyReplayer | NativeReplayer) -> dict[str, int]:
    # neither replayer exposes the bound strategy's stats before close_timed(): read them where each keeps them
    try:
        if isinstance(replayer, NativeReplayer):
            return {str(k): int(v) for k, v in replayer._engine.stats().items()}
        assert replayer._timed is not None
        return {str(k): int(v) for k, v in replayer._timed[1].stats().items()}
    except Exception:
        return {}


# --- one combination ------------------------------------------------------------------------------------------------


def make_replayer(
    inp: ReplayInput, combination: Combination, tap_params: Any = None, strategy_cls: type[Strategy] | None = None
) -> StrategyReplayer | NativeReplayer:
    """The timed replayer of ``combination`` (default parameters, sync completion); ``tap_params`` are the run's
    prepared :class:`~ndis_replay.engine.miniports.tap.TapParams` (tap only); ``strategy_cls`` replaces the registry's
    class (Python engine, in-process use: the tests' seeded leak)."""
    from ndis_replay.engine.miniports.loopback import LoopbackMiniport, LoopbackParams
    from ndis_replay.engine.miniports.tap import TapMiniport
    from ndis_replay.engine.strategies import get_strategy
    from ndis_replay.worker import MiniportSpec, StrategySpec

    cls = strategy_cls or get_strategy(combination.strategy)
    spec = StrategySpec(combination.strategy, cls, cls.Params(), combination.strategy)
    if combination.miniport == "tap":
        if tap_params is None:
            raise ValueError("the tap miniport needs the run's prepared TapParams")
        miniport = MiniportSpec("tap", TapMiniport, tap_params)
    else:
        miniport = MiniportSpec("loopback", LoopbackMiniport, LoopbackParams())
    sync = CompletionPolicy("sync")
    if combination.engine == "native":
        if strategy_cls is not None:
            raise ValueError("strategy_cls runs on the Python engine only")
        return NativeReplayer(inp, combination.strategy, spec.params, sync, miniport_params=miniport.params)
    return StrategyReplayer(inp, spec.make, miniport.make, sync)


def soak(
    inp: ReplayInput,
    combination: Combination,
    seconds: float,
    samples: int = DEFAULT_SAMPLES,
    tap_params: Any = None,
    strategy_cls: type[Strategy] | None = None,
) -> SoakResult:
    """Replay ``inp`` round after round for ``seconds`` in this process, sampling ``samples`` times (and once after
    the first round); the model's end state is read after every round. Runs at least two rounds.
    ``tap_params`` and ``strategy_cls``: as :func:`make_replayer`."""
    replayer = make_replayer(inp, combination, tap_params, strategy_cls)
    replayer.open_timed()
    result = SoakResult(combination, 0.0, 0, 0, [])
    delivered = lost = 0
    tap = combination.miniport == "tap"
    first_state: dict[str, int] | None = None
    interval = seconds / max(samples, 1)
    started = time.perf_counter()
    next_mark = 0.0  # the first sample: right after the first round
    try:
        while True:
            outcome = replayer.timed_round(result.rounds, False)
            result.rounds += 1
            result.packets += inp.packets
            if outcome.delivery is not None:
                d = outcome.delivery
                delivered += d.get("delivered", 0)
                lost += d.get("frames", 0) - d.get("delivered", 0)
            if outcome.error is not None:
                result.error = f"round {outcome.number}: {outcome.error.rule}: {outcome.error.message}"
            counters = _counters(replayer)
            state = _model_state(counters)
            if first_state is None:
                first_state = state
            elif state != first_state:
                result.state_changes += 1
                if len(result.state_examples) < 3:
                    result.state_examples.append((outcome.number, state))
            now = time.perf_counter() - started
            # past its time, a run that skipped marks (slow rounds, a long GC pause) goes on, sampling every
            # round, until it has enough samples for a verdict
            enough = len(result.samples) + 1 >= min(samples, MIN_SAMPLES)
            late = now >= seconds
            done = late and result.rounds >= 2 and enough
            if now >= next_mark or done or late:
                result.samples.append(
                    Sample(
                        t_s=now,
                        rounds=result.rounds,
                        packets=result.packets,
                        rss_bytes=rss_bytes(),
                        fds=open_fds(),
                        outstanding={kind: state[kind] for kind in KINDS},
                        mem_bytes=state["mem_bytes"],
                        sys_held=state["sys_held"],
                        stats=_strategy_stats(replayer),
                        delivered=delivered if tap else None,
                        lost=lost if tap else None,
                    )
                )
                # the next mark after now (a round longer than the interval skips marks rather than bunching up)
                next_mark = (math.floor(now / interval) + 1) * interval if interval > 0 else now
            if done or result.error is not None:
                break
    finally:
        result.seconds = time.perf_counter() - started
        replayer.close_timed()
    return result


# --- the verdict --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` concluded; ``flat`` when every part holds."""

    flat: bool
    #: the least-squares RSS line's rise over the judged samples, bytes (nan: too few samples)
    rss_rise_bytes: float
    #: its slope, bytes per hour
    rss_slope_per_hour: float
    rss_ok: bool
    descriptors_ok: bool
    fds_ok: bool
    delivery_ok: bool
    #: one short phrase per failed part
    reasons: tuple[str, ...]


def fitted_rise(times: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``values`` over ``times`` (per unit of time) and the line's rise across the span."""
    if len(times) < 2 or times[-1] == times[0]:
        return 0.0, 0.0
    slope = statistics.linear_regression(times, values).slope
    return slope, slope * (times[-1] - times[0])


def judge(samples: Sequence[Sample], state_changes: int = 0, error: str | None = None) -> Verdict:
    """The flat/not-flat verdict on one combination's samples (see the module docstring for the bounds).

    ``state_changes``: rounds whose end state differed from the first round's (read after every round, beyond the
    samples); ``error``: a round or worker error (never flat)."""
    reasons: list[str] = []
    if error is not None:
        reasons.append("error")
    rise = slope_h = math.nan
    rss_ok = False
    if len(samples) < MIN_SAMPLES:
        reasons.append(f"only {len(samples)} samples (< {MIN_SAMPLES})")
    else:
        judged = samples[math.floor(WARMUP_SHARE * len(samples)) :]
        times = [s.t_s for s in judged]
        rss = [float(s.rss_bytes) for s in judged]
        slope, rise = fitted_rise(times, rss)
        slope_h = slope * 3600.0
        bound = min(RSS_RISE_BYTES, RSS_RISE_SHARE * statistics.median(rss))
        rss_ok = rise < bound
        if not rss_ok:
            reasons.append(f"RSS rises {rise / 2**20:.2f} MiB (bound {bound / 2**20:.2f})")
    descriptors_ok = state_changes == 0 and all(
        (s.outstanding, s.mem_bytes, s.sys_held) == (samples[0].outstanding, samples[0].mem_bytes, samples[0].sys_held)
        for s in samples
    )
    if not descriptors_ok:
        reasons.append("descriptors change between rounds")
    fds_ok = len({s.fds for s in samples}) <= 1
    if not fds_ok:
        reasons.append(f"fds {samples[0].fds}→{samples[-1].fds}")
    last_lost = samples[-1].lost if samples else None
    delivery_ok = not last_lost
    if not delivery_ok:
        reasons.append(f"{last_lost} frames lost")
    flat = rss_ok and descriptors_ok and fds_ok and delivery_ok and error is None
    return Verdict(flat, rise, slope_h, rss_ok, descriptors_ok, fds_ok, delivery_ok, tuple(reasons))


# --- workers ------------------------------------------------------------------------------------------------------


def _worker(conn: Connection, input_dir: str, combination: Combination, seconds: float, samples: int, tap: Any) -> None:
    """A worker process: one combination's soak, its result sent back as plain data."""
    try:
        inp = ReplayInput.load(input_dir)
        conn.send(("ok", soak(inp, combination, seconds, samples, tap).as_dict()))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_in_worker(
    input_dir: str, combination: Combination, seconds: float, samples: int, tap_params: Any = None
) -> SoakResult:
    """:func:`soak` in a fresh worker process; a worker that fails or dies gives a result with ``error`` set."""
    from ndis_replay.runner import mp_context

    ctx = mp_context()
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_worker, args=(child, input_dir, combination, seconds, samples, tap_params), daemon=True
    )
    process.start()
    child.close()
    try:
        if not parent.poll(seconds + WORKER_GRACE_S):
            process.kill()
            return SoakResult(combination, 0.0, 0, 0, [], error="the worker did not finish in time (killed)")
        kind, payload = parent.recv()
    except EOFError:
        payload, kind = f"the worker died (exit code {process.exitcode})", "error"
    finally:
        process.join(10)
        parent.close()
    if kind == "ok":
        return SoakResult.from_dict(payload)
    return SoakResult(combination, 0.0, 0, 0, [], error=str(payload).strip().splitlines()[-1])


def combinations(strategies: Sequence[str], miniports: Sequence[str], engines: Sequence[str]) -> list[Combination]:
    """Every strategy × miniport × engine, native only where the core implements the strategy and is built."""
    out = []
    for strategy in strategies:
        for miniport in miniports:
            for engine in engines:
                if engine == "native" and (strategy not in NATIVE_STRATEGIES or not native_available()):
                    continue
                out.append(Combination(strategy, miniport, engine))
    return out


def tap_refusal() -> str | None:
    """Why the tap miniport cannot run here (None: it can, as far as can be told without trying)."""
    if os.geteuid() != 0:
        return "not root (the tap miniport creates network namespaces and TAP devices)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    return None


# --- output -------------------------------------------------------------------------------------------------------


def _mib(value: float) -> str:
    return "—" if math.isnan(value) else f"{value / 2**20:,.1f}"


def _kib(value: float) -> str:
    return "—" if math.isnan(value) else f"{value / 2**10:,.0f}"


def row_for(result: SoakResult) -> dict[str, Any]:
    """The figures of one combination's table row (and its JSON summary)."""
    verdict = judge(result.samples, result.state_changes, result.error)
    samples = result.samples
    rss = [s.rss_bytes for s in samples]
    first = samples[0] if samples else None
    return {
        "combination": result.combination.label,
        "seconds": result.seconds,
        "rounds": result.rounds,
        "packets": result.packets,
        "samples": len(samples),
        "rss_first_bytes": rss[0] if rss else None,
        "rss_last_bytes": rss[-1] if rss else None,
        "rss_max_bytes": max(rss) if rss else None,
        "rss_rise_bytes": verdict.rss_rise_bytes,
        "rss_slope_bytes_per_hour": verdict.rss_slope_per_hour,
        "outstanding": first.outstanding if first else None,
        "mem_bytes": first.mem_bytes if first else None,
        "state_changes": result.state_changes,
        "fds": sorted({s.fds for s in samples}),
        "delivered": samples[-1].delivered if samples else None,
        "lost": samples[-1].lost if samples else None,
        "flat": verdict.flat,
        "reasons": list(verdict.reasons),
        "error": result.error,
    }


def _descriptors(row: dict[str, Any]) -> str:
    outstanding = row["outstanding"]
    if outstanding is None:
        return "—"
    held = " ".join(f"{k} {v}" for k, v in outstanding.items() if v) or "none"
    same = "same every round" if row["state_changes"] == 0 else f"changed in {row['state_changes']} rounds"
    return f"{held}; {same}"


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    """The rich table of every combination."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("combination", "rounds", "packets", "RSS MiB first", "last", "max", "fit rise KiB", "KiB/h",
                "outstanding at round end", "fds", "lost", "verdict"):  # fmt: skip
        left = col in ("combination", "outstanding at round end", "verdict")
        table.add_column(col, justify="left" if left else "right")
    for r in rows:
        slope = r["rss_slope_bytes_per_hour"]
        fds = r["fds"]
        table.add_row(
            r["combination"],
            f"{r['rounds']:,}",
            f"{r['packets']:,}",
            _mib(r["rss_first_bytes"] if r["rss_first_bytes"] is not None else math.nan),
            _mib(r["rss_last_bytes"] if r["rss_last_bytes"] is not None else math.nan),
            _mib(r["rss_max_bytes"] if r["rss_max_bytes"] is not None else math.nan),
            _kib(r["rss_rise_bytes"]),
            _kib(slope),
            _descriptors(r),
            "—" if not fds else (str(fds[0]) if len(fds) == 1 else f"{fds[0]}–{fds[-1]}"),
            "—" if r["lost"] is None else f"{r['lost']:,}",
            "flat" if r["flat"] else "NOT flat: " + "; ".join(r["reasons"]),
        )
    Console(width=200).print(table)


# --- main ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Soak every combination and print the table; exit 1 when any combination is not flat."""
    from ndis_replay.engine.strategies import available
    from ndis_replay.importers import open_trace

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="total replay time (default 10)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples per combination (default 20)")
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="the trace (default bulk_tcp.pcapng)")
    parser.add_argument("--strategy", action="append", help="only these strategies (repeatable; default: all)")
    parser.add_argument("--miniport", action="append", choices=MINIPORTS, help="only these miniports (repeatable)")
    parser.add_argument("--engine", action="append", choices=ENGINES, help="only these engines (repeatable)")
    parser.add_argument("--json", type=Path, help="write every sample and verdict here")
    args = parser.parse_args(argv)
    if args.samples < MIN_SAMPLES:
        parser.error(f"--samples must be at least {MIN_SAMPLES}")

    miniports = list(args.miniport or MINIPORTS)
    skipped: list[str] = []
    if not native_available() and "native" in (args.engine or ENGINES):
        skipped.append("native engine: the core is not built")
    trace = open_trace(args.trace)
    tap_params = None
    if "tap" in miniports:
        refusal = tap_refusal()
        if refusal is None:
            from ndis_replay.engine.miniports.tap import TapMiniport, TapParams
            from ndis_replay.errors import MiniportUnavailable

            try:
                tap_params = TapMiniport.prepare_run(TapParams(), trace.meta.linktypes, str(args.trace))
            except MiniportUnavailable as exc:
                refusal = f"{exc.what}: {exc.reason}"
        if refusal is not None:
            skipped.append(f"tap miniport: {refusal}")
            miniports.remove("tap")
    todo = combinations(args.strategy or available(), miniports, args.engine or ENGINES)
    for line in skipped:
        print(f"skipped — {line}")
    if not todo:
        print("nothing to soak")
        return 2
    share = args.minutes * 60.0 / len(todo)
    print(
        f"{len(todo)} combinations × {share:.1f} s of replay ({args.minutes:g} min in all, plus worker start-up), "
        f"{args.samples} samples each; trace {args.trace.name}"
    )
    results: list[SoakResult] = []
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="ndis-replay-soak-") as folder:
            inp = ReplayInput.write(trace, folder, args.trace)
            del trace
            print(f"{inp.packets:,} packets in {inp.calls:,} send calls per round")
            for k, combination in enumerate(todo, 1):
                result = run_in_worker(folder, combination, share, args.samples, tap_params)
                results.append(result)
                verdict = judge(result.samples, result.state_changes, result.error)
                said = "flat" if verdict.flat else "NOT flat: " + "; ".join(verdict.reasons)
                print(
                    f"  [{k:>2}/{len(todo)}] {time.perf_counter() - started:7.1f} s  {combination.label}: "
                    f"{result.rounds:,} rounds, {said}",
                    flush=True,
                )
    finally:
        if tap_params is not None:
            from ndis_replay.engine.miniports.tap import TapMiniport

            TapMiniport.finish_run(tap_params)
    rows = [row_for(r) for r in results]
    print()
    print_table(rows, f"Soak: {args.trace.name}, {args.minutes:g} min, sync completion, default parameters")
    flat = sum(r["flat"] for r in rows)
    print(
        f"{flat} of {len(rows)} combinations flat (RSS fitted rise < {RSS_RISE_BYTES / 2**20:g} MiB and "
        f"< {RSS_RISE_SHARE:.0%} after the first {WARMUP_SHARE:.0%} of samples; outstanding descriptors, mem_bytes "
        "and system allocations the same at every round end; fds constant; nothing lost on tap) — "
        f"{'met' if flat == len(rows) else 'NOT met'}; wall time {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        report = {
            "trace": str(args.trace),
            "minutes": args.minutes,
            "samples_per_combination": args.samples,
            "skipped": skipped,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "rows": rows,
            "results": [r.as_dict() for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"samples written to {args.json}")
    return 0 if flat == len(rows) else 1


if __name__ == "__main__":  # worker processes import this module: run only as a script
    sys.exit(main())
