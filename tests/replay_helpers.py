"""Strategies with one seeded bug each, and small captures, for the replay-loop, runner and CLI tests.

The strategies live in an importable module (not in a test function) because worker processes receive a strategy
class by reference and import it. Each subclasses a built-in and changes one thing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndis_replay.engine.ndis import NetBufferList
from ndis_replay.engine.strategies.base import SendCall, StrategyParams
from ndis_replay.engine.strategies.common import declare_frames
from ndis_replay.engine.strategies.reuse import ReuseParams, ReuseStrategy
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng

T0 = 1_700_000_000_000_000_000


class StaleDataOffset(ReuseStrategy):
    """``reuse`` that leaves DataOffset at 4 (as after an old retreat) instead of resetting it to 0: the NB then
    describes bytes beyond its MDL chain (REUSE-CONSISTENCY) and the wire carries a cut frame (WIRE-BYTES)."""

    name = "test-stale-offset"
    summary = "reuse with DataOffset not reset (seeded bug)"

    def _prepare(self, nbl: NetBufferList, frame: memoryview, header_len: int) -> None:
        super()._prepare(nbl, frame, header_len)
        nb = nbl.first_net_buffer
        assert nb is not None
        nb.data_offset = 4


class RaisesInBuild(ReuseStrategy):
    """``reuse`` whose build raises on the third send call (an escaping exception: STRATEGY-EXCEPTION)."""

    name = "test-raises"
    summary = "raises in build (seeded bug)"

    def build(self, call: SendCall) -> NetBufferList:
        if call.call == 2:
            raise ValueError("seeded failure")
        return super().build(call)


class ReusesInFlight(ReuseStrategy):
    """``reuse`` that hands out the first NBL again without waiting for its completion: when completions are late
    (``batched:4``) the NBL is touched in flight (OWN-AFTER-SEND) and sent while in flight (a bug check)."""

    name = "test-reuse-in-flight"
    summary = "reuses an NBL before its completion (seeded bug)"

    def build(self, call: SendCall) -> NetBufferList:
        if self.ndis.checked:
            declare_frames(self.ndis, call.frames)
        nbl = self._all[0]
        self._prepare(nbl, call.frames[0], call.header_lens[0])
        return nbl

    def _send_complete(self, completed: NetBufferList) -> None:
        chain: NetBufferList | None = completed
        while chain is not None:
            nbl = chain
            chain = nbl.next
            nbl.next = None
            self._release(nbl)


class FailsWhenTimed(ReuseStrategy):
    """Correct under the verifier, raises in the fourth call of a timed (unchecked) round."""

    name = "test-fails-timed"
    summary = "raises only in timed rounds (seeded bug)"

    def build(self, call: SendCall) -> NetBufferList:
        if not self.ndis.checked and call.call == 3:
            raise RuntimeError("seeded timed failure")
        return super().build(call)


class KillsWorker(ReuseStrategy):
    """Correct under the verifier; in a timed round it ends its own process (as a crash in native code would)."""

    name = "test-kills-worker"
    summary = "ends its worker process in a timed round"

    def build(self, call: SendCall) -> NetBufferList:
        if not self.ndis.checked and call.call == 1:
            os._exit(9)
        return super().build(call)


SEEDED = (StaleDataOffset, RaisesInBuild, ReusesInFlight, FailsWhenTimed, KillsWorker)


def write_capture(
    path: Path,
    count: int = 24,
    *,
    receive_every: int = 4,
    gap_ns: int = 3_000,
    interface: WriterInterface | None = None,
    comment: str = "",
    packet_comments: dict[int, str] | None = None,
) -> Path:
    """A pcapng of ``count`` frames of 60–1514 bytes with distinct bytes; every ``receive_every``-th is a receive
    (0: none), the rest are sends. ``interface`` (default: one named eth0), ``comment`` (the section's) and
    ``packet_comments`` go into the file as given."""
    sizes = (60, 590, 1514, 128, 66)
    packets = []
    for i in range(count):
        size = sizes[i % len(sizes)]
        frame = bytes((i * 31 + j) % 251 for j in range(size))
        direction = "recv" if receive_every and i % receive_every == receive_every - 1 else "send"
        packets.append((0, T0 + i * gap_ns, frame, size, direction))
    interface = interface or WriterInterface(name="eth0")
    write_pcapng(path, packets, interfaces=[interface], comment=comment, packet_comments=packet_comments)
    return path


def write_receive_only(path: Path, count: int = 5) -> Path:
    """A pcapng whose every frame is a receive."""
    packets = [(0, T0 + i * 1_000, bytes(60), 60, "recv") for i in range(count)]
    write_pcapng(path, packets, interfaces=[WriterInterface(name="eth0")])
    return path


def write_empty(path: Path) -> Path:
    """A pcapng with an interface and no packets."""
    write_pcapng(path, [], interfaces=[WriterInterface(name="eth0")])
    return path


# --- reuse slowed by a busy loop (tests/test_validation.py, bench/stats_bench.py) --------------------------------


@dataclass(frozen=True)
class SpinParams(ReuseParams):
    """``reuse``'s parameters plus the busy loop."""

    spins: int = field(default=0, metadata={"help": "empty loop steps per packet in build"})


class SpinReuse(ReuseStrategy):
    """``reuse`` that runs ``spins`` empty loop steps per packet before building: a real, injected slowdown.

    A counted loop (~15 ns a step) rather than a clock deadline (steps of one clock read), and reuse's build
    repeated rather than called through ``super()``: the extra Python frame alone costs more than 10% of reuse's
    per-packet time here, so the slowdown could not be made as small as 10%."""

    name = "test-validation-slow"
    summary = "reuse plus a busy loop per packet (injected slowdown)"
    Params = SpinParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        assert isinstance(self.params, SpinParams)
        self._spin = range(self.params.spins)

    def build(self, call: SendCall) -> Any:
        spin = self._spin
        frames = call.frames
        for _ in frames:
            for _ in spin:
                pass
        # ReuseStrategy.build, verbatim
        free = self._free
        if self._checked:
            declare_frames(self.ndis, frames)
        head = free.pop() if free else self._grow()
        self._prepare(head, frames[0], call.header_lens[0])
        if len(frames) > 1:
            previous = head
            header_lens = call.header_lens
            for position in range(1, len(frames)):
                nbl = free.pop() if free else self._grow()
                self._prepare(nbl, frames[position], header_lens[position])
                previous.next = nbl
                previous = nbl
        return head


# --- where timed rounds run (tests/test_replay.py) ------------------------------------------------------------


@dataclass(frozen=True)
class AffinityParams(ReuseParams):
    """``reuse``'s parameters plus the file the probe writes to."""

    path: str = field(default="", metadata={"help": "file that receives the worker's CPU set in timed rounds"})


class AffinityProbe(ReuseStrategy):
    """``reuse`` that writes the CPUs its worker may run on, as seen in its first timed build, to ``path``."""

    name = "test-affinity-probe"
    summary = "reuse that reports the worker's CPU affinity in timed rounds"
    Params = AffinityParams

    def build(self, call: SendCall) -> Any:
        assert isinstance(self.params, AffinityParams)
        if not self._checked and not os.path.exists(self.params.path):
            with open(self.params.path, "w") as out:
                out.write(" ".join(str(c) for c in sorted(os.sched_getaffinity(0))))
        return super().build(call)


# --- a stall in the middle of a timed round (tests/test_pacing.py) ----------------------------------------------

#: The send call at which :class:`StallsOnce` stalls, and for how long (s).
STALL_CALL = 100
STALL_S = 0.020


class StallsOnce(ReuseStrategy):
    """``reuse`` that sleeps :data:`STALL_S` in the build of send call :data:`STALL_CALL` of every timed round (a
    preempted or blocked driver): under pacing, the calls scheduled during the stall start late."""

    name = "test-stalls-once"
    summary = "reuse that stalls 20 ms once per timed round"

    def build(self, call: SendCall) -> Any:
        if not self._checked and call.call == STALL_CALL:
            time.sleep(STALL_S)
        return super().build(call)
