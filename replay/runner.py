"""Run orchestration (pyperf's _runner): worker processes, interleaved rounds, and the :class:`RunResult`.

One trace, every strategy, interleaved on one machine (DESIGN.md, Results):

1. The trace becomes a :class:`~ndis_replay.engine.replay.ReplayInput` once, here, and is saved into a temporary
   folder as ``.npy`` arrays plus ``frames.bin``. Workers map those files instead of re-reading the capture or a
   Parquet copy: nothing is parsed or validated twice, bad input is refused before any process starts, and the
   frame bytes live once in the page cache however many workers map them.
2. One worker process per strategy (forkserver context where the platform has it, else spawn — never plain fork,
   which would copy the parent's threads and locks), plus one running the no-op strategy that measures the
   harness's own cost per packet. Workers stay alive for the whole run.
3. Checked passes run concurrently (untimed; at most one per CPU at a time).
4. Timed rounds are interleaved — warm-up rounds, then measured rounds, each visiting every worker in turn
   (A B C, A B C, …) so that drift of the machine hits every strategy alike; only one worker runs at a time.
   A strategy whose checked pass stopped (bug check, exception) is not timed; one that fails in a timed round is
   not timed further.
5. Ctrl-C (or any error) terminates every worker and removes the temporary folder; the caller writes results
   only from a complete :class:`RunResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ndis_replay import __version__
from ndis_replay.atomic import TMP_SUFFIX, publish
from ndis_replay.engine.miniports.base import CompletionPolicy
from ndis_replay.engine.ndis.counters import COUNT_FIELDS, CostProfile
from ndis_replay.engine.replay import (
    ASAP,
    AUTO_TIMING,
    DELIVERY_PROBLEMS,
    HARNESS_RULES,
    CheckOutcome,
    Pacing,
    ReplayInput,
    RoundOutcome,
    TimerCalibration,
    Timing,
    delivery_problems,
    rate_over,
    timing_text,
)
from ndis_replay.engine.verifier import ERROR, RULES, Finding
from ndis_replay.errors import ConfigError, OutputUnwritable
from ndis_replay.host import host_record
from ndis_replay.results import (
    MODELLED_COLUMN,
    PACKET_SCHEMA,
    PEAK_KINDS,
    LatencyTally,
    RunResult,
    StrategyResult,
    latency_summary,
    lateness,
    pace_summary,
    per_packet,
)
from ndis_replay.trace import Trace
from ndis_replay.worker import MiniportSpec, StrategySpec, WorkerJob, timed_cpu
from ndis_replay.worker import main as worker_main

#: Seconds a worker gets to exit after "stop" before it is terminated.
STOP_TIMEOUT = 5.0

#: progress(description, done, total): called after each checked pass and each timed round.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOptions:
    """How to run: miniport and completion policy, rounds, pacing, cost profile, and what to keep.

    ``check_only`` runs the checked passes and nothing timed (``ndis-replay verify``); ``check=False`` skips them
    (benchmarks of huge traces only: the CLI always checks); ``baseline`` adds the no-op strategy whose latency is
    the measurement overhead; ``keep_packets=False`` keeps only summaries (benchmarks on large traces);
    ``command`` is recorded in run.json.
    """

    miniport: MiniportSpec
    completion: CompletionPolicy = field(default_factory=lambda: CompletionPolicy("sync"))
    rounds: int = 5
    warmup: int = 1
    pacing: Pacing = ASAP
    cost_profile: CostProfile | None = None
    check_only: bool = False
    check: bool = True
    baseline: bool = True
    keep_packets: bool = True
    command: tuple[str, ...] = ()
    #: run every timed round on one CPU (:func:`~ndis_replay.worker.timed_cpu`); False leaves it to the scheduler
    pin: bool = True
    #: what runs the timed rounds: "native" (the compiled core, for the strategies it implements; the others run
    #: in Python) or "python" (programs keep the Python engine unless they ask; the CLI's default is native when
    #: the core is built). The checked pass is always Python.
    engine: str = "python"
    #: how timed rounds read the clock (engine/replay.py Timing): ``auto`` times the native engine by runs of
    #: calls (sync completion, asap) and everything else per call
    timing: Timing = AUTO_TIMING


def timed_engine(spec: StrategySpec, miniport: MiniportSpec, engine: str) -> str:
    """What runs ``spec``'s timed rounds under the ``engine`` option (or the spec's own ``engine``): "native" when
    asked for (or "auto") and the core implements this strategy with these parameters on this miniport, else
    "python"."""
    engine = spec.engine or engine
    if engine == "python":
        return "python"
    from ndis_replay.engine.native import unsupported_reason

    reason = unsupported_reason(spec.cls, spec.params, miniport.cls, miniport.params)
    return "python" if reason is not None else "native"


def severity(rule: str) -> str:
    """A finding rule's severity: the verifier's table, or error for the harness's own rules."""
    known = RULES.get(rule)
    return known.severity if known is not None else ERROR


def modelled_cost(profile: CostProfile, counts: Mapping[str, float]) -> float:
    """Modelled ns for (fractional) counts per packet: Σ count × ns over the profile's priced counters."""
    return sum(counts.get(name, 0.0) * ns for name, ns in profile.ns.items())


def mp_context(modules: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """forkserver where available (fast worker start, no inherited threads), else spawn.

    The fork server imports the main module (``__main__``: guarded scripts only, the usual multiprocessing rule),
    the worker and ``modules`` (the strategy classes') once when it starts, so each worker forks with them loaded.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "ndis_replay.worker", "ndis_replay.engine.replay", *modules])
        return ctx
    return multiprocessing.get_context("spawn")


class WorkerDied(Exception):
    """A worker's pipe closed before it answered (internal to the runner: becomes a WORKER-DIED finding)."""


class WorkerCrashed(RuntimeError):
    """A worker reported an error of the harness itself (not of strategy code); carries its traceback."""


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, name: str, job: WorkerJob) -> None:
        self.name = name
        self.job = job
        self.conn, child = ctx.Pipe()
        process = ctx.Process(  # type: ignore[attr-defined]
            target=worker_main, args=(child, job), name=f"ndis-replay worker {name}", daemon=True
        )
        try:
            process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            self.conn.close()
            child.close()
            raise ConfigError(
                "strategy",
                name,
                f"its class cannot be handed to a worker process ({exc}); define it at module level of an "
                "importable module",
            ) from exc
        finally:
            child.close()
        self.process: multiprocessing.process.BaseProcess = process
        self.timer: TimerCalibration | None = None
        self.dead: str | None = None

    def send(self, *message: object) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise WorkerDied(self.name) from exc

    def recv(self, expected: str) -> Any:
        try:
            kind, payload = self.conn.recv()
        except (EOFError, ConnectionResetError, OSError) as exc:
            raise WorkerDied(self.name) from exc
        if kind == "error":
            last = str(payload).strip().splitlines()[-1] if str(payload).strip() else "no detail"
            crash = WorkerCrashed(f"worker {self.name} failed: {last}")
            crash.add_note(f"worker traceback:\n{payload}")
            raise crash
        if kind != expected:
            raise WorkerCrashed(f"worker {self.name} answered {kind!r}, expected {expected!r}")
        return payload

    def died(self) -> str:
        """Why the process is gone: its exit code or signal."""
        self.process.join(1.0)
        code = self.process.exitcode
        if code is None:
            self.process.terminate()
            return "stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"

    def stop(self) -> None:
        """Ask the worker to exit; terminate it if it does not."""
        if self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("stop",))
            self.process.join(STOP_TIMEOUT)
        self.kill()

    def kill(self) -> None:
        """Terminate at once (Ctrl-C, errors)."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.conn.close()


@dataclass
class _Track:
    """What the parent collects about one strategy (or the no-op baseline, ``spec`` None) while the run goes."""

    name: str
    spec: StrategySpec | None
    worker: _Worker
    check: CheckOutcome | None = None
    failure: str | None = None
    extra_findings: list[Finding] = field(default_factory=list)
    rounds: list[RoundOutcome] = field(default_factory=list)
    #: the measured rounds' latencies, pooled (what the summary needs; rows are kept or spilled apart)
    latencies: LatencyTally = field(default_factory=LatencyTally)
    builds: LatencyTally = field(default_factory=LatencyTally)
    sends: LatencyTally = field(default_factory=LatencyTally)
    walls: list[int] = field(default_factory=list)
    #: each measured round's achieved rate and lateness (pace_summary's rows) and, when paced, its calls' lateness
    paces: list[dict[str, Any]] = field(default_factory=list)
    lags: list[np.ndarray[Any, Any]] = field(default_factory=list)
    last_gauges: dict[str, int] = field(default_factory=dict)
    finished: dict[str, Any] = field(default_factory=dict)
    #: the far side's counts summed over the checked pass and every round (device-backed miniports), else None
    delivery: dict[str, int] | None = None

    @property
    def runnable(self) -> bool:
        return self.failure is None and self.worker.dead is None


def _worker_died(track: _Track, phase: str) -> None:
    reason = track.worker.died()
    track.worker.dead = reason
    track.failure = track.failure or "worker-died"
    track.extra_findings.append(
        Finding("WORKER-DIED", -1, f"worker {track.name}", f"{phase}: the worker process {reason}", ERROR)
    )


def trace_identity(trace: Trace, inp: ReplayInput, path: str | Path | None) -> dict[str, Any]:
    """The trace part of run.json."""
    meta = trace.meta
    return {
        "path": str(path if path is not None else meta.source),
        "source": meta.source,
        "sha256": meta.sha256,
        "size": meta.size,
        "format": meta.format,
        "compression": meta.compression,
        "packets": len(trace),
        "replayed": inp.packets,
        "received": len(trace) - inp.packets,
        "calls": inp.calls,
        "linktypes": list(meta.linktypes),
        "batching": meta.batching,
        "interfaces": [
            {"id": i.id, "linktype": i.linktype, "name": i.name, "description": i.description} for i in meta.interfaces
        ],
        "comments": list(meta.details.get("comments", [])),
        "comment_count": int(meta.details.get("comment_count", 0)),
        "measured": measured_latency(trace),
        # a trace without bytes (a driver send/complete trace, --no-data) replays synthesized frames
        "synthetic_payload": not meta.has_data,
    }


#: Quantile levels (0-1) of the measured-latency distribution kept in run.json: enough for a CDF drawn beside the
#: replayed one, and its tail (p99.9) resolved.
MEASURED_LEVELS: tuple[float, ...] = (*(i / 200 for i in range(201)), 0.995, 0.999)


def measured_latency(trace: Trace) -> dict[str, Any] | None:
    """The driver's own per-packet latency, when the trace has it (an ETW send/complete trace: ``complete_ts_ns``
    beside ``ts_ns``): how many sends have a completion, the summary and the quantiles at :data:`MEASURED_LEVELS`
    (ns, nearest rank). None for a trace without completions."""
    frame = trace.frame
    if "complete_ts_ns" not in frame.columns:
        return None
    sends = frame.filter(pl.col("direction") != "recv")
    lat = sends.filter(pl.col("complete_ts_ns").is_not_null()).select(pl.col("complete_ts_ns") - pl.col("ts_ns"))
    values = np.sort(lat.to_series().to_numpy())
    if values.size == 0:
        return None
    ranks = np.clip(np.ceil(np.asarray(MEASURED_LEVELS) * values.size).astype(np.int64) - 1, 0, values.size - 1)
    quantiles = [int(v) for v in values[ranks]]
    return {
        "packets": int(values.size),
        "without_completion": int(sends.height - values.size),
        "p50_ns": float(values[ranks[100]]),
        "p99_ns": float(values[ranks[198]]),
        "min_ns": int(values[0]),
        "max_ns": int(values[-1]),
        "mean_ns": float(values.mean()),
        "levels": list(MEASURED_LEVELS),
        "quantiles": quantiles,
    }


#: Per-packet rows (packets × measured rounds × strategies) a run keeps as one DataFrame at most (~54 bytes a row):
#: a run of more writes each measured round's rows to a Parquet part file as the round arrives, and save() merges
#: them with polars' streaming sink (RunResult.packets_spilled). Adjustable with ``NDIS_REPLAY_PACKETS_IN_MEMORY``.
PACKETS_IN_MEMORY = int(os.environ.get("NDIS_REPLAY_PACKETS_IN_MEMORY", "") or 4_000_000)
#: Rows per part file when a round's rows are spilled.
SPILL_SLICE = 1_000_000


def run_trace(
    trace: Trace,
    strategies: Sequence[StrategySpec],
    options: RunOptions,
    *,
    path: str | Path | None = None,
    wire: Mapping[str, Path] | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Replay ``trace`` through every strategy (checked, then timed rounds interleaved) and collect the result.

    ``path`` names the trace as the user gave it; ``wire`` maps strategy names to pcap paths for the frames their
    checked pass transmitted (written to a temporary name, renamed when the run completes). Raises the trace's input
    errors (:class:`~ndis_replay.errors.NothingToReplay`, …) before any worker starts.
    """
    if not strategies:
        raise ConfigError("strategy", "", "at least one strategy is needed")
    options.timing.run_calls("python", options.completion, options.pacing)  # runs:N that cannot apply: refused now
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError("strategy", dup, "is given more than once")
    folder = Path(tempfile.mkdtemp(prefix="ndis-replay-input-"))
    spill: Path | None = None  # the part files of a huge run's per-packet rows (removed with the result)
    spilled = False
    wire_tmp: dict[str, Path] = {}
    workers: list[_Worker] = []
    miniport_cls = options.miniport.cls
    prepared: MiniportSpec | None = None
    previous_term = _terminate_raises()
    try:
        inp = ReplayInput.write(trace, folder, path)
        rows = inp.packets * options.rounds * len(strategies)
        if options.keep_packets and not options.check_only and rows > PACKETS_IN_MEMORY:
            spill = Path(tempfile.mkdtemp(prefix="ndis-replay-packets-"))
        call_of = inp.call_of_packet() if spill is not None else None
        sends = trace.frame["linktype"].filter(trace.frame["direction"] != "recv")
        linktype = int(sends[0]) if len(sends) else 1
        # run-scoped miniport setup (tap: the private network namespace), undone in the finally below
        run_params = miniport_cls.prepare_run(
            options.miniport.params,
            [int(t) for t in sends.unique().sort()],
            str(path if path is not None else trace.meta.source),
        )
        prepared = MiniportSpec(options.miniport.name, miniport_cls, run_params)
        ctx = mp_context(sorted({s.cls.__module__ for s in strategies} | {options.miniport.cls.__module__}))
        cpu = timed_cpu() if options.pin and not options.check_only else None
        tracks: list[_Track] = []
        for spec in strategies:
            wire_path = None
            if wire and spec.name in wire:
                target = Path(wire[spec.name])
                wire_path = target.with_name(f".{target.name}.{os.getpid()}{TMP_SUFFIX}")
                wire_tmp[spec.name] = wire_path
            engine = timed_engine(spec, prepared, options.engine)
            job = WorkerJob(
                input_dir=str(folder),
                strategy=spec,
                miniport=prepared,
                completion=options.completion,
                pacing=options.pacing,
                cost_profile=options.cost_profile,
                wire_path=str(wire_path) if wire_path else None,
                linktype=linktype,
                timed_cpu=cpu,
                engine=engine,
                run_calls=options.timing.run_calls(engine, options.completion, options.pacing),
            )
            worker = _Worker(ctx, spec.name, job)
            workers.append(worker)
            tracks.append(_Track(spec.name, spec, worker))
        baselines: list[_Worker] = []
        if options.baseline and not options.check_only:
            # one floor per way the strategies are measured (engine, calls per clock reading), first strategy's first
            methods = dict.fromkeys((t.worker.job.engine, t.worker.job.run_calls) for t in tracks)
            for floor_engine, run_calls in methods:
                job = WorkerJob(
                    str(folder),
                    None,
                    prepared,
                    options.completion,
                    options.pacing,
                    timed_cpu=cpu,
                    engine=floor_engine,
                    run_calls=run_calls,
                )
                baselines.append(_Worker(ctx, "(no-op)", job))
            workers.extend(baselines)

        for track in tracks:
            try:
                track.worker.timer = track.worker.recv("ready")
            except WorkerDied:
                _worker_died(track, "start")
        for baseline in baselines:
            baseline.timer = baseline.recv("ready")

        total_rounds = 0 if options.check_only else options.warmup + options.rounds
        pending = [t for t in tracks if t.runnable] if options.check or options.check_only else []
        total = len(pending) + total_rounds * (len(tracks) + len(baselines))
        done = 0

        def tick(what: str) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(what, done, total)

        # checked passes, concurrently, at most one per CPU
        running: dict[Any, _Track] = {}
        slots = max(1, os.cpu_count() or 1)
        while pending or running:
            while pending and len(running) < slots:
                track = pending.pop(0)
                try:
                    track.worker.send("check")
                    running[track.worker.conn] = track
                except WorkerDied:
                    _worker_died(track, "checked pass")
                    tick(f"checked {track.name}")
            if not running:
                continue
            for conn in multiprocessing.connection.wait(list(running)):
                track = running.pop(conn)
                try:
                    outcome: CheckOutcome = track.worker.recv("checked")
                    track.check = outcome
                    _add_delivery(track, outcome.delivery, None)
                    if outcome.failure is not None:
                        track.failure = outcome.failure
                except WorkerDied:
                    _worker_died(track, "checked pass")
                tick(f"checked {track.name}")

        # --wire: a pcap that could not be written whole (full disk) stops the run now, before the timed rounds
        for track in tracks:
            if track.check is not None and track.check.wire_error is not None and wire:
                code, reason = track.check.wire_error
                raise OutputUnwritable(Path(wire[track.name]), reason, errno=code)

        # timed rounds, interleaved
        floors = [_Track("(no-op)", None, baseline) for baseline in baselines]
        order = floors + tracks
        for r in range(total_rounds):
            warm = r < options.warmup
            number = r if warm else r - options.warmup
            for track in order:
                label = f"{'warm-up' if warm else 'round'} {number + 1} {track.name}"
                if not track.runnable:
                    tick(label)
                    continue
                try:
                    track.worker.send("round", number, warm)
                    outcome_r: RoundOutcome = track.worker.recv("round")
                except WorkerDied:
                    if track.spec is None:
                        raise WorkerCrashed("the no-op baseline worker died") from None
                    _worker_died(track, f"{'warm-up' if warm else 'measured'} round {number + 1}")
                    tick(label)
                    continue
                # the no-op floor has no rows in packets.parquet: its summary is all that is kept of it
                _take_round(track, outcome_r, options.keep_packets and track.spec is not None, inp)
                if spill is not None and call_of is not None and track.spec is not None and track.rounds:
                    part = spill / f"{tracks.index(track):04d}-{number:06d}"
                    _spill_round(track, inp, call_of, _packet_cost(track, options, inp), part)
                tick(label)

        for track in [*tracks, *floors]:
            if track.worker.dead is not None:
                continue
            try:
                track.worker.send("finish")
                track.finished = track.worker.recv("finished")
            except WorkerDied:
                _worker_died(track, "unbind")
        for worker in workers:
            worker.stop()
        for name, tmp in wire_tmp.items():
            if tmp.exists():
                publish(tmp, Path(wire[name]), replace=True)  # type: ignore[index]  # existence checked by the CLI
        result = _result(trace, inp, path, options, tracks, floors, cpu, spilled=spill is not None)
        if spill is not None:
            parts = sorted(spill.glob("*.parquet"))
            result.packets = None
            result.packets_spilled = pl.scan_parquet(parts) if parts else _packets_schema(options).lazy()
            weakref.finalize(result, shutil.rmtree, spill, True)  # the parts live as long as the result
            spilled = True
        return result
    finally:
        if spill is not None and not spilled:
            shutil.rmtree(spill, ignore_errors=True)
        for worker in workers:
            worker.kill()
        for tmp in wire_tmp.values():
            tmp.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            if prepared is not None:
                miniport_cls.finish_run(prepared.params)  # after the workers: nothing holds its devices now
        finally:
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)


def _raise_terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _terminate_raises() -> Any:
    """Make SIGTERM raise SystemExit(143) in the main thread, so that a run's ``finally`` (workers, temporary files,
    the tap miniport's namespace) runs as on Ctrl-C; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None  # the embedding program handles SIGTERM itself
    signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


def _add_delivery(track: _Track, counts: dict[str, int] | None, label: str | None) -> None:
    """Add one pass's far-side counts to the strategy's; a timed round's problems become one WIRE-DELIVERY finding
    (the checked pass has its own, per frame)."""
    if counts is None:
        return
    total = track.delivery if track.delivery is not None else {}
    for name, value in counts.items():
        total[name] = total.get(name, 0) + int(value)
    total["passes"] = total.get("passes", 0) + 1
    track.delivery = total
    problems = delivery_problems(counts)
    if label is not None and problems:
        detail = ", ".join(f"{counts[n]} {n}" for n in DELIVERY_PROBLEMS if counts.get(n))
        track.extra_findings.append(
            Finding("WIRE-DELIVERY", -1, label, f"of {counts.get('frames', 0)} frames written: {detail}", ERROR)
        )


def _take_round(track: _Track, outcome: RoundOutcome, keep: bool, inp: ReplayInput) -> None:
    """File one round's outcome (measured rounds are kept; every round can end the strategy's timing)."""
    track.last_gauges = outcome.gauges or track.last_gauges
    _add_delivery(track, outcome.delivery, f"{'warm-up' if outcome.warmup else 'round'} {outcome.number + 1}")
    if outcome.error is not None:
        track.failure = "not-completed" if outcome.error.rule == "NOT-COMPLETED" else "timed-exception"
        track.extra_findings.append(outcome.error)
        return
    if outcome.warmup:
        return
    track.latencies.append(outcome.latency_ns)
    track.walls.append(outcome.end_ns - outcome.start_ns)
    pps, mbps = rate_over(inp, outcome.span_ns)
    lag = outcome.lag_ns if outcome.lag_ns is not None else np.empty(0, dtype=np.int64)
    track.paces.append({"round": outcome.number, "packets_per_s": pps, "mbit_per_s": mbps, **lateness(lag)})
    if outcome.lag_ns is not None:
        track.lags.append(outcome.lag_ns)
    track.builds.append(outcome.build_ns)
    track.sends.append(outcome.send_ns)
    if keep:
        track.rounds.append(outcome)
    else:
        track.rounds.append(
            RoundOutcome(
                outcome.number,
                False,
                outcome.start_ns,
                outcome.end_ns,
                np.empty(0, dtype=np.int64),
                np.empty(0, dtype=np.int64),
                np.empty(0, dtype=np.int64),
                outcome.counts,
                outcome.gauges,
            )
        )


def _delivery_record(counts: dict[str, int] | None) -> dict[str, int] | None:
    """run.json's ``delivery`` of a strategy: the far side's counts over every pass, ``problems`` their sum."""
    if counts is None:
        return None
    return {**counts, "problems": delivery_problems(counts)}


def _timer_dict(timer: TimerCalibration | None) -> dict[str, int]:
    if timer is None:
        return {}
    return {"median_ns": timer.median_ns, "min_ns": timer.min_ns, "samples": timer.samples}


def _strategy_result(track: _Track, inp: ReplayInput, options: RunOptions) -> StrategyResult:
    spec = track.spec
    assert spec is not None
    check = track.check
    findings: list[Finding] = list(check.findings) if check is not None else []
    counts: dict[str, int] = dict(check.finding_counts) if check is not None else {}
    for finding in track.extra_findings:
        findings.append(finding)
        counts[finding.rule] = counts.get(finding.rule, 0) + 1
    errors = sum(n for rule, n in counts.items() if severity(rule) == ERROR)
    warnings = sum(n for rule, n in counts.items() if severity(rule) != ERROR)
    measured = [r for r in track.rounds if not r.warmup]
    timed = bool(measured)
    packets = inp.packets
    if timed:
        totals = {name: sum(r.counts[name] for r in measured) for name in COUNT_FIELDS}
        counts_per_packet = per_packet(totals, packets * len(measured))
    else:
        totals = dict(check.counts) if check is not None else dict.fromkeys(COUNT_FIELDS, 0)
        counts_per_packet = per_packet(totals, packets)
    gauges = track.last_gauges if timed and track.last_gauges else (check.gauges if check is not None else {})
    profile = options.cost_profile
    status = "failed" if track.failure else ("findings" if errors else "ok")
    summary = latency_summary(track.latencies, track.builds, track.sends, track.walls, packets) if timed else None
    return StrategyResult(
        name=spec.name,
        base=spec.base,
        cls=f"{spec.cls.__module__}:{spec.cls.__qualname__}",
        ndis_version=int(getattr(spec.cls, "ndis_version", 0)),
        params=spec.params.as_dict(),
        status=status,
        failure=track.failure,
        timed=timed,
        summary=summary,
        counters={
            "per_packet": counts_per_packet,
            "rounds": [r.counts for r in measured],
            "checked_pass": dict(check.counts) if check is not None else {},
        },
        modelled_ns_per_packet=modelled_cost(profile, counts_per_packet) if profile is not None else None,
        peak_outstanding={kind: int(gauges.get(f"{kind}_peak", 0)) for kind in PEAK_KINDS},
        memory={
            "modelled_peak_bytes": int(gauges.get("mem_peak", 0)),
            "worker_peak_rss_bytes": track.finished.get("peak_rss_bytes"),
        },
        findings=[f.to_dict() for f in findings],
        finding_counts=counts,
        errors=errors,
        warnings=warnings,
        wire=dict(check.wire) if check is not None else {"packets": packets, "ok": None},
        timer=_timer_dict(track.worker.timer),
        stats=dict(track.finished.get("stats") or (check.stats if check is not None else {})),
        check_seconds=check.seconds if check is not None else 0.0,
        round_times=[{"round": r.number, "start_ns": r.start_ns, "end_ns": r.end_ns} for r in measured],
        pace=pace_summary(track.paces, track.lags) if timed else None,
        delivery=_delivery_record(track.delivery),
        engine=track.worker.job.engine if timed else None,
        timing=timing_text(track.worker.job.run_calls) if timed else None,
    )


def _packets_schema(options: RunOptions) -> pl.DataFrame:
    schema = dict(PACKET_SCHEMA)
    if options.cost_profile is not None:
        schema[MODELLED_COLUMN] = pl.Float64()
    return pl.DataFrame(schema=schema)


def _packet_cost(track: _Track, options: RunOptions, inp: ReplayInput) -> np.ndarray[Any, Any] | None:
    """The modelled_ns column of a strategy's rows (NaN without a checked pass), None without a cost profile."""
    if options.cost_profile is None:
        return None
    cost = track.check.packet_cost_ns if track.check is not None else None
    return np.full(inp.packets, np.nan) if cost is None else cost


def _spill_round(
    track: _Track, inp: ReplayInput, call_of: np.ndarray[Any, Any], cost: np.ndarray[Any, Any] | None, part: Path
) -> None:
    """Write the rows of the round just taken (the last of ``track.rounds``, if measured and kept) to ``part`` and
    keep the round without its per-packet arrays (the summary has them pooled in latencies, builds and sends)."""
    outcome = track.rounds[-1]
    if outcome.warmup or len(outcome.latency_ns) != inp.packets:
        return
    schema = dict(PACKET_SCHEMA) if cost is None else {**PACKET_SCHEMA, MODELLED_COLUMN: pl.Float64()}
    sizes = inp.sizes
    for k, first in enumerate(range(0, inp.packets, SPILL_SLICE)):  # a slice at a time: ~54 MB of rows at most
        rows = _round_rows(track.name, outcome, inp, call_of, sizes, cost, slice(first, first + SPILL_SLICE))
        rows.cast(schema).write_parquet(part.with_name(f"{part.stem}-{k:05d}.parquet"), statistics=True)  # type: ignore[arg-type]
    empty = np.empty(0, dtype=np.int64)
    track.rounds[-1] = dataclasses.replace(outcome, latency_ns=empty, build_ns=empty, send_ns=empty)


def _round_rows(
    name: str,
    outcome: RoundOutcome,
    inp: ReplayInput,
    call_of: np.ndarray[Any, Any],
    sizes: np.ndarray[Any, Any],
    cost: np.ndarray[Any, Any] | None,
    rows: slice,
) -> pl.DataFrame:
    """packets.parquet's rows ``rows`` (packets in replay order) of one strategy's round."""
    n = len(range(*rows.indices(inp.packets)))
    columns: dict[str, Any] = {
        "strategy": pl.Series("strategy", [name]).new_from_index(0, n),
        "round": np.full(n, outcome.number, dtype=np.uint16),
        "index": inp.index[rows].astype(np.uint32),
        "batch": inp.batch[rows].astype(np.uint32),
        "size": sizes[rows].astype(np.uint32),
        "latency_ns": outcome.latency_ns[rows],
        "build_ns": outcome.build_ns[call_of[rows]],
        "send_ns": outcome.send_ns[call_of[rows]],
    }
    if cost is not None:
        columns[MODELLED_COLUMN] = cost[rows]
    return pl.DataFrame(columns)


def _packets_frame(
    track: _Track,
    inp: ReplayInput,
    cost: np.ndarray[Any, Any] | None,
    rounds: Sequence[RoundOutcome] | None = None,
    call_of: np.ndarray[Any, Any] | None = None,
) -> pl.DataFrame:
    call_of = inp.call_of_packet() if call_of is None else call_of
    sizes = inp.sizes
    frames = []
    whole = slice(0, inp.packets)
    for outcome in track.rounds if rounds is None else rounds:
        frames.append(_round_rows(track.name, outcome, inp, call_of, sizes, cost, whole))
    return pl.concat(frames) if frames else pl.DataFrame(schema=PACKET_SCHEMA)


def _result(
    trace: Trace,
    inp: ReplayInput,
    path: str | Path | None,
    options: RunOptions,
    tracks: list[_Track],
    floors: list[_Track],
    timed_on: int | None,
    *,
    spilled: bool = False,
) -> RunResult:
    strategies = [_strategy_result(t, inp, options) for t in tracks]
    timers = [t.worker.timer.median_ns for t in tracks if t.worker.timer is not None]
    overhead = None
    overheads = []
    for floor in floors:
        if not floor.latencies:
            continue
        summary = latency_summary(floor.latencies, floor.builds, floor.sends, floor.walls, inp.packets)
        summary["timer"] = _timer_dict(floor.worker.timer)
        summary["engine"] = floor.worker.job.engine
        summary["timing"] = timing_text(floor.worker.job.run_calls)
        summary["worker_peak_rss_bytes"] = floor.finished.get("peak_rss_bytes")
        overheads.append(summary)
    overhead = overheads[0] if overheads else None
    miniport_info: dict[str, Any] = next((dict(t.check.miniport_info) for t in tracks if t.check), {})
    packets = None
    if options.keep_packets and not options.check_only and not spilled:  # spilled: the part files hold them
        profile = options.cost_profile
        parts = []
        for track in tracks:
            cost = track.check.packet_cost_ns if (profile is not None and track.check is not None) else None
            if profile is not None and cost is None:
                cost = np.full(inp.packets, np.nan)
            if track.rounds:
                parts.append(_packets_frame(track, inp, cost))
        schema = dict(PACKET_SCHEMA)
        if profile is not None:
            schema[MODELLED_COLUMN] = pl.Float64()
        packets = pl.concat(parts).cast(schema) if parts else pl.DataFrame(schema=schema)  # type: ignore[arg-type]
    profile = options.cost_profile
    return RunResult(
        tool={"name": "ndis-replay", "version": __version__},
        command=list(options.command),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        host={**host_record(), "timed_cpu": timed_on},
        trace=trace_identity(trace, inp, path),
        miniport={
            "name": options.miniport.name,
            "params": options.miniport.params.as_dict(),
            "completion": str(options.completion),
            **{k: v for k, v in miniport_info.items() if k not in ("name", "completion")},
        },
        batching=trace.meta.batching,
        rounds=0 if options.check_only else options.rounds,
        warmup=0 if options.check_only else options.warmup,
        pacing=str(options.pacing),
        check_only=options.check_only,
        cost_profile=(
            {"name": profile.name, "source": profile.source, "ns": dict(profile.ns)} if profile is not None else None
        ),
        timer_overhead_ns=int(np.median(timers)) if timers else None,
        measurement_overhead=overhead,
        strategies=strategies,
        requested_rate=_requested_rate(options, inp),
        measurement_overheads=overheads if len(overheads) > 1 else None,
        packets=packets,
    )


def _requested_rate(options: RunOptions, inp: ReplayInput) -> dict[str, float | None] | None:
    """run.json's ``requested_rate``: the pacing's rate over its scheduled span; None for asap or no span."""
    if options.check_only or options.pacing.kind == "asap":
        return None
    pps, mbps = options.pacing.requested(inp)
    if pps is None:
        return None
    offsets = options.pacing.offsets(inp)
    span = int(offsets[-1]) if offsets is not None and len(offsets) else 0
    return {"packets_per_s": pps, "mbit_per_s": mbps, "span_s": span / 1e9}


__all__ = [
    "HARNESS_RULES",
    "MiniportSpec",
    "Progress",
    "RunOptions",
    "StrategySpec",
    "WorkerCrashed",
    "mp_context",
    "run_trace",
    "severity",
    "trace_identity",
]
