"""The worker side of a run (pyperf's _worker): one process per strategy, kept alive across rounds.

The parent (:mod:`ndis_replay.runner`) starts :func:`main` with one end of a pipe and a :class:`WorkerJob`. The
worker maps the replay input once, builds its send calls once, calibrates the timer and says ``ready``; then it
answers one message at a time, so that only one worker runs a timed round at any moment:

``("check",)``
    the checked pass → ``("checked", CheckOutcome)``
``("round", number, warmup)``
    one timed round → ``("round", RoundOutcome)``
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
    from ndis_replay.engine.replay import LoopBaseline, ReplayInput, StrategyReplayer, calibrate_timer
    from ndis_replay.host import peak_rss_bytes

    inp = ReplayInput.load(job.input_dir)
    replayer: StrategyReplayer | LoopBaseline
    if job.strategy is None:
        replayer = LoopBaseline(inp, job.pacing)
    else:
        replayer = StrategyReplayer(
            inp,
            job.strategy.make,
            job.miniport.make,
            job.completion,
            pacing=job.pacing,
            cost_profile=job.cost_profile,
        )
    timer = calibrate_timer()
    # what exists now (the input, the send calls, the modules) lives as long as the worker: out of the collector's
    # reach, so the collection before each round only walks what earlier rounds left
    gc.collect()
    gc.freeze()
    conn.send(("ready", timer))
    while True:
        message: tuple[Any, ...] = conn.recv()
        kind = message[0]
        if kind == "check":
            assert isinstance(replayer, StrategyReplayer)
            wire = PcapWire(job.wire_path, job.linktype) if job.wire_path else None
            try:
                outcome = replayer.check(wire)
            finally:
                if wire is not None:
                    wire.close()
            conn.send(("checked", outcome))
        elif kind == "round":
            conn.send(("round", replayer.timed_round(int(message[1]), bool(message[2]))))
        elif kind == "finish":
            stats = replayer.close_timed() if isinstance(replayer, StrategyReplayer) else {}
            conn.send(("finished", {"stats": stats, "peak_rss_bytes": peak_rss_bytes()}))
        elif kind == "stop":
            return
        else:
            raise RuntimeError(f"worker: unknown message {kind!r}")


__all__ = ["MiniportSpec", "StrategySpec", "WorkerJob", "main"]
