"""The worker side of a run (pyperf's _worker): one process per strategy, kept alive across rounds.

The parent (:mod:`ndis_replay.runner`) starts :func:`main` with one end of a pipe and a :class:`WorkerJob`. The
worker maps the replay input once, builds its send calls once, calibrates the timer and says ``ready``; then it
answers one message at a time, so that only one worker runs a timed round at any moment:

``("check",)``
    the checked pass → ``("checked", CheckOutcome)``
``("round", number, warmup)``
    one timed round → ``("round", RoundOutcome)``; before its first one the worker moves to
    :attr:`WorkerJob.timed_cpu` (checked passes run side by side, timed rounds one at a time on one CPU)
``("finish",)``
    unbind the timed strategy → ``("finished", {"stats": …, "peak_rss_bytes": …})``
``("stop",)``
    exit.

Strategy and miniport failures are findings inside the outcomes; anything else that goes wrong in the worker is
sent back as ``("error", traceback text)`` — a bug in the harness. Ctrl-C is the parent's to handle: the worker
ignores SIGINT and is terminated by the parent.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ndis_replay.engine.miniports.base import CompletionPolicy, Miniport, MiniportParams
    from ndis_replay.engine.ndis.counters import CostProfile
    from ndis_replay.engine.replay import Pacing
    from ndis_replay.engine.strategies.base import Strategy, StrategyParams


@dataclass(frozen=True)
class StrategySpec:
    """A strategy to run: ``name`` as results show it (a registry name or a configured variant), the class it is
    (importable by reference: that is how it reaches the worker), its resolved parameters and its ``base`` (the
    registry name the variant derives from; equal to ``name`` otherwise)."""

    name: str
    cls: type[Strategy]
    params: StrategyParams
    base: str
    #: the engine this strategy's timed rounds must run on ("native" / "python"), overriding RunOptions.engine
    #: (benchmarks put both engines side by side in one run); None follows the run's option
    engine: str | None = None

    def make(self) -> Strategy:
        """A fresh instance."""
        return self.cls(self.params)


@dataclass(frozen=True)
class MiniportSpec:
    """The miniport to run on: registry name, class and resolved parameters."""

    name: str
    cls: type[Miniport]
    params: MiniportParams

    def make(self) -> Miniport:
        """A fresh instance."""
        return self.cls(self.params)


@dataclass(frozen=True)
class WorkerJob:
    """Everything one worker needs. ``strategy`` None runs the loop baseline (the no-op strategy)."""

    input_dir: str
    strategy: StrategySpec | None
    miniport: MiniportSpec
    completion: CompletionPolicy
    pacing: Pacing
    cost_profile: CostProfile | None = None
    #: where the checked pass writes the transmitted frames as pcap (``--wire``), and their link type
    wire_path: str | None = None
    linktype: int = 1
    #: the CPU every worker runs its timed rounds on (None: wherever the scheduler puts it). On a 2-vCPU VM the
    #: vCPUs run at different speeds at times; workers timed on different CPUs spread by ±40-50%, on one CPU ±4-10%
    #: (bench/stats_bench.py, README "Compare").
    timed_cpu: int | None = None
    #: what runs the timed rounds: "native" (the compiled core; the parent asks for it only when the core
    #: implements the strategy, :func:`~ndis_replay.runner.timed_engine`) or "python". The checked pass is Python.
    engine: str = "python"
    #: calls per clock reading in timed rounds (:meth:`~ndis_replay.engine.replay.Timing.run_calls`; 1: per call)
    run_calls: int = 1


def main(conn: Connection, job: WorkerJob) -> None:
    """The worker process: serve the parent's messages until ``stop`` or until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(conn, job)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone (interrupted): nothing to report to
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _serve(conn: Connection, job: WorkerJob) -> None:
    from ndis_replay.engine.miniports.base import PcapWire
    from ndis_replay.engine.native import NativeBaseline, NativeReplayer, calibrate_clock, native_name
    from ndis_replay.engine.replay import LoopBaseline, ReplayInput, StrategyReplayer, calibrate_timer
    from ndis_replay.host import peak_rss_bytes

    inp = ReplayInput.load(job.input_dir)
    replayer: StrategyReplayer | LoopBaseline
    timed: StrategyReplayer | LoopBaseline | NativeReplayer | NativeBaseline
    native = job.engine == "native"
    if job.strategy is None:
        replayer = LoopBaseline(inp, job.pacing, job.run_calls)
        timed = NativeBaseline(inp, job.run_calls) if native else replayer
    else:
        replayer = StrategyReplayer(
            inp,
            job.strategy.make,
            job.miniport.make,
            job.completion,
            pacing=job.pacing,
            cost_profile=job.cost_profile,
            run_calls=job.run_calls,
        )
        timed = replayer
        if native:
            from ndis_replay.engine.miniports.loopback import LoopbackParams

            mparams = job.miniport.params
            timed = NativeReplayer(
                inp,
                native_name(job.strategy.cls),
                job.strategy.params,
                job.completion,
                pacing=job.pacing,
                from_current_mdl=isinstance(mparams, LoopbackParams) and mparams.from_current_mdl,
                miniport_params=mparams,
                run_calls=job.run_calls,
            )
    timer = calibrate_clock() if native else calibrate_timer()
    # what exists now (the input, the send calls, the modules) lives as long as the worker: out of the collector's
    # reach, so the collection before each round only walks what earlier rounds left
    gc.collect()
    gc.freeze()
    conn.send(("ready", timer))
    pinned = False
    while True:
        message: tuple[Any, ...] = conn.recv()
        kind = message[0]
        if kind == "round" and not pinned:
            pinned = True
            if job.timed_cpu is not None:
                pin_to_cpu(job.timed_cpu)
        if kind == "check":
            assert isinstance(replayer, StrategyReplayer)
            wire = PcapWire(job.wire_path, job.linktype) if job.wire_path else None
            try:
                outcome = replayer.check(wire)
            finally:
                if wire is not None:
                    wire.close()
            if wire is not None and wire.error is not None:
                outcome.wire_error = wire.error  # the runner stops the run with the output's error
            conn.send(("checked", outcome))
        elif kind == "round":
            conn.send(("round", timed.timed_round(int(message[1]), bool(message[2]))))
        elif kind == "finish":
            stats = timed.close_timed() if isinstance(timed, StrategyReplayer | NativeReplayer) else {}
            conn.send(("finished", {"stats": stats, "peak_rss_bytes": peak_rss_bytes()}))
        elif kind == "stop":
            return
        else:
            raise RuntimeError(f"worker: unknown message {kind!r}")


def timed_cpu() -> int | None:
    """The CPU for timed rounds: the highest-numbered one this process may use (CPU 0 takes most device
    interrupts), or None when only one is available (nothing to choose) or affinity is not supported."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = os.sched_getaffinity(0)
    return max(cpus) if len(cpus) > 1 else None


def pin_to_cpu(cpu: int) -> None:
    """Run this process on ``cpu`` only; a CPU that went away (hotplug, a cgroup change) leaves it unpinned."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {cpu})


__all__ = ["MiniportSpec", "StrategySpec", "WorkerJob", "main", "pin_to_cpu", "timed_cpu"]
