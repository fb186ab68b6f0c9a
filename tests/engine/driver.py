"""A small real replay driver for the strategy tests: a Trace → send calls → checked (or unchecked) replay.

It does what the product's replay loop does for the checked pass (contract: /tmp/spec/contract.md), without timing:
``Ndis`` → ``miniport.open`` → ``strategy.bind`` → per call: ``verifier.packet_index`` = the call's first index,
``build``, ``submit``, ``miniport.poll()`` → ``drain`` → ``unbind`` → ``verifier.finish()``. An
:class:`~ndis_replay.engine.verifier.NdisBugCheck` ends the replay and is kept with the findings (the harness never
crashes on a buggy strategy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ndis_replay.engine.miniports import CompletionPolicy, ListWire
from ndis_replay.engine.miniports.loopback import LoopbackMiniport, LoopbackParams
from ndis_replay.engine.ndis import Ndis, OpCounters
from ndis_replay.engine.strategies import BindContext, SendCall, Strategy
from ndis_replay.engine.verifier import Finding, NdisBugCheck
from ndis_replay.importers import open_trace


@dataclass
class Calls:
    """The send calls of a trace (sends only: ``recv`` packets are left out, ``unknown`` counts as send)."""

    calls: list[SendCall]
    frames: list[bytes]
    header_lens: list[int]
    indices: list[int]

    @property
    def max_frame(self) -> int:
        return max((len(f) for f in self.frames), default=0)

    @property
    def max_call(self) -> int:
        return max((len(c.frames) for c in self.calls), default=0)


def calls_from_frames(
    frames: list[bytes], header_lens: list[int], batch: int = 1, indices: list[int] | None = None
) -> Calls:
    """Send calls of ``batch`` packets over one contiguous read-only buffer (as the trace data would be)."""
    indices = list(range(len(frames))) if indices is None else indices
    memory = memoryview(b"".join(frames))
    views: list[memoryview] = []
    start = 0
    for frame in frames:
        views.append(memory[start : start + len(frame)])
        start += len(frame)
    calls = [
        SendCall(
            number,
            tuple(indices[first : first + batch]),
            tuple(views[first : first + batch]),
            tuple(header_lens[first : first + batch]),
        )
        for number, first in enumerate(range(0, len(frames), batch))
    ]
    return Calls(calls, frames, header_lens, indices)


def load_calls(path: str | Path, batch: int = 1, limit: int | None = None) -> Calls:
    """The sends of a capture (first ``limit`` of them), ``batch`` packets per call."""
    frame = open_trace(path).frame
    frame = frame.filter(frame["direction"] != "recv")
    if limit is not None:
        frame = frame.head(limit)
    return calls_from_frames(
        [bytes(d) for d in frame["data"].to_list()],
        frame["header_len"].to_list(),
        batch,
        frame["index"].to_list(),
    )


@dataclass
class Run:
    """What one replay left behind."""

    strategy: Strategy
    ndis: Ndis
    wire: ListWire
    findings: list[Finding] = field(default_factory=list)
    bug_check: Finding | None = None
    counters: OpCounters | None = None
    bound: OpCounters | None = None

    def rules(self) -> set[tuple[str, int]]:
        return {(f.rule, f.packet_index) for f in self.findings}

    def first_wire_mismatch(self, calls: Calls) -> int | None:
        """Position (in replay order) of the first packet whose transmitted bytes differ from the trace (a packet
        never transmitted counts as differing); None when all match."""
        wire = self.wire.reassembled(calls.header_lens[: len(self.wire.packets)])
        for position, expected in enumerate(calls.frames):
            if position >= len(wire) or wire[position] != expected:
                return position
        return None if len(wire) == len(calls.frames) else len(calls.frames)


def replay(
    strategy: Strategy,
    calls: Calls,
    completion: str = "sync",
    *,
    checked: bool = True,
    miniport: LoopbackParams | None = None,
    max_in_flight: int | None = None,
) -> Run:
    """Replay ``calls`` through ``strategy`` on the loopback miniport; the checked pass of the contract."""
    ndis = Ndis(checked=checked)
    policy = CompletionPolicy.parse(completion)
    port = LoopbackMiniport(miniport)
    info = port.open(ndis, policy)
    wire = ListWire()
    port.begin(None, wire)
    run = Run(strategy, ndis, wire)
    in_flight = max_in_flight or policy.max_in_flight(calls.max_call) or max(calls.max_call, 64)
    try:
        strategy.bind(BindContext(ndis, info, calls.max_frame, calls.max_call, in_flight))
        run.bound = ndis.counters.copy()
        for call in calls.calls:
            if ndis.verifier is not None:
                ndis.verifier.packet_index = call.indices[0]
            strategy.submit(strategy.build(call))
            port.poll()
        port.drain()
        run.counters = ndis.counters.copy()
        strategy.unbind()
        port.close()
    except NdisBugCheck as stop:
        run.bug_check = stop.finding
    if ndis.verifier is not None:
        run.findings = list(ndis.verifier.finish() if run.bug_check is None else ndis.verifier.findings)
    return run
