"""The replay loop: one strategy over one trace's send calls — checked once, then timed round by round.

Array in, array out (DESIGN.md, Native core), so that a compiled core can replace the timed loop without touching
importers or reports:

* **in** — :class:`ReplayInput`: the replayed packets (direction ``send`` or ``unknown``) in replay order as numpy
  arrays (trace index, batch, header length, capture time), the send calls as offsets into them (``call_start``),
  and the frames as views into one read-only buffer (a start and a length each: the trace's bytes back to back, or
  for a trace without bytes one small pattern buffer every synthesized frame is a view into). It is built once from
  a :class:`Trace` and saved as plain ``.npy`` files plus ``frames.bin``, which the worker processes map
  (:meth:`ReplayInput.load`): every worker shares the same page-cache pages instead of holding its own copy.
* **out** — per round, preallocated ``int64`` arrays of ``perf_counter_ns`` readings: per send call the start of
  build, the end of build and the end of submit; per packet the completion time (written by the miniport into its
  ``complete_ns`` slot, contract: /tmp/spec/contract.md) and the latency derived from them.

:class:`StrategyReplayer` runs one strategy:

1. :meth:`~StrategyReplayer.check` — the checked pass (untimed): ``Ndis(checked=True)``, every call with
   ``verifier.packet_index`` set, drain, unbind, ``verifier.finish()``; then the transmitted bytes are compared with
   the trace packet by packet (rule ``WIRE-BYTES``). A bug check or any exception escaping strategy or miniport code
   becomes a finding: the harness never crashes on a buggy strategy.
2. :meth:`~StrategyReplayer.open_timed` binds a fresh strategy to an unchecked runtime, kept for every round (the
   warm-up rounds bring its pools to steady state, as traffic would on a bound driver);
   :meth:`~StrategyReplayer.timed_round` replays every call once with the garbage collector off, writing
   ``perf_counter_ns`` into the preallocated arrays (nothing is allocated per packet by the harness), then drains.

:class:`LoopBaseline` runs the same loop with a strategy that builds nothing and a miniport that completes at once:
its latency is the harness's own floor (timer reads, array stores, calls), reported as measurement overhead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import mmap
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from ndis_replay.engine.miniports.base import CompletionPolicy, WireSink
from ndis_replay.engine.ndis import Ndis
from ndis_replay.engine.ndis.counters import COUNT_FIELDS, GAUGE_FIELDS, CostProfile
from ndis_replay.engine.strategies.base import BindContext, SendCall
from ndis_replay.engine.verifier import ERROR, Finding, NdisBugCheck
from ndis_replay.errors import ConfigError, NothingToReplay

if TYPE_CHECKING:
    import polars as pl

    from ndis_replay.engine.miniports.base import Miniport
    from ndis_replay.engine.strategies.base import Strategy
    from ndis_replay.trace import Trace

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

_pc = time.perf_counter_ns

#: Findings the harness itself reports (the verifier's rules are in :data:`ndis_replay.engine.verifier.RULES`).
HARNESS_RULES: dict[str, str] = {
    "WIRE-BYTES": "the bytes transmitted for a packet differ from the trace's, or the packet was never transmitted",
    "STRATEGY-EXCEPTION": "strategy or miniport code raised an exception; the harness caught it and stopped the "
    "strategy",
    "NOT-COMPLETED": "a packet sent in a timed round was never completed by the miniport",
    "WORKER-DIED": "the worker process running the strategy ended unexpectedly (killed, out of memory, crashed)",
    "WIRE-DELIVERY": "a frame the miniport wrote to its device was lost, changed, reordered or joined by another "
    "on the device's far side (tap miniport: an AF_PACKET reader checks every frame against the trace)",
}
#: At most this many WIRE-BYTES findings are kept per strategy (all are counted).
MAX_WIRE_FINDINGS = 100
#: BindContext.max_in_flight under delay:DURATION, where the policy bounds nothing (packets).
DELAY_IN_FLIGHT = 64
#: Pacing sleeps (instead of spinning) while the next call is due more than this far ahead, in ns.
SPIN_NS = 1_000_000


# --- input -------------------------------------------------------------------------------------------------------


_ARRAYS = ("index", "batch", "call_start", "header_len", "frame_offset", "frame_start", "ts_ns")
#: Packets per slice when frames are written to the replay input (bounds the extra memory of the copy).
WRITE_SLICE = 65_536
#: Send calls the Python engine holds as :class:`SendCall` objects at once (~0.5 KB each): a trace of more calls
#: has them built a window at a time as the loop reaches them (:class:`SendCalls`). Adjustable with the environment
#: variable ``NDIS_REPLAY_CALL_WINDOW`` (calls; read when this module is imported, so it reaches the workers).
CALL_WINDOW = max(1, int(os.environ.get("NDIS_REPLAY_CALL_WINDOW", "") or 262_144))


#: Packets are synthesized from this pattern when the trace has no bytes: byte ``j`` of the packet with trace index
#: ``i`` is ``(i · SYNTHETIC_STRIDE + j) mod 256`` — deterministic, and different from packet to packet, so a strategy
#: that transmits a previous packet's bytes is still caught on the wire (WIRE-BYTES).
SYNTHETIC_STRIDE = 131


def synthetic_pattern(max_frame: int) -> bytes:
    """The buffer every synthesized frame is a view into: byte ``k`` is ``k mod 256``, ``256 + max_frame`` bytes, so
    the frame of trace index ``i`` is the ``max_frame``-or-shorter view at ``(i · SYNTHETIC_STRIDE) mod 256``."""
    return (np.arange(256 + max_frame, dtype=np.int64) & 0xFF).astype(np.uint8).tobytes()


def synthetic_starts(index: Int64Array) -> Int64Array:
    """[n] where each synthesized frame starts in :func:`synthetic_pattern` (its trace index's seed)."""
    return (index * SYNTHETIC_STRIDE) & 0xFF


class _Frames:
    """The frames of the replayed packets in replay order: the trace's ``data`` column, or — for a trace without
    bytes (a driver send/complete trace, an import with ``--no-data``) — frames synthesized from
    :data:`SYNTHETIC_STRIDE` at each packet's captured length (its wire length where nothing was captured): views
    into :func:`synthetic_pattern`, which is all that is ever materialised (``256 + max_frame`` bytes)."""

    def __init__(self, data: pl.Series | None, index: Int64Array, lengths: Int64Array) -> None:
        self.data = data
        self.index = index
        self.lengths = lengths

    @property
    def synthetic(self) -> bool:
        return self.data is None

    def __len__(self) -> int:
        return len(self.lengths)

    def chunk(self, start: int, length: int) -> memoryview:
        """The bytes of frames ``start:start + length`` back to back (one copy of that slice; real frames only)."""
        assert self.data is not None, "synthesized frames are views into the pattern, never written back to back"
        return _binary_chunk(self.data, start, length)

    def buffer(self) -> memoryview:
        """All the frames' bytes: the trace's back to back (one copy), or the synthetic pattern."""
        if self.data is None:
            return memoryview(synthetic_pattern(int(self.lengths.max()) if len(self.lengths) else 0))
        return self.chunk(0, len(self)) if len(self) else memoryview(b"")

    def starts(self, frame_offset: Int64Array) -> Int64Array:
        """[n] where each frame starts in :meth:`buffer`'s bytes."""
        return frame_offset[:-1].copy() if self.data is not None else synthetic_starts(self.index)


def _replayed(trace: Trace, path: str | Path | None) -> tuple[dict[str, Int64Array], _Frames]:
    """The arrays of the replayed packets (calls in batch order, packets of a call in trace order) and their
    frames in that order."""
    import polars as pl

    name = path if path is not None else trace.meta.source
    frame = trace.frame
    if frame.height == 0:
        raise NothingToReplay(name, 0, 0)
    received = int((frame["direction"] == "recv").sum())
    if received == frame.height:
        raise NothingToReplay(name, frame.height, received)
    sent = frame.filter(pl.col("direction") != "recv") if received else frame
    if not sent["batch"].is_sorted():
        sent = sent.sort("batch", maintain_order=True)  # importers' output is sorted already
    batch = sent["batch"].cast(pl.Int64).to_numpy()
    cuts = np.flatnonzero(np.diff(batch) != 0) + 1
    index = sent["index"].cast(pl.Int64).to_numpy()
    if "data" in sent.columns:
        data = sent["data"].fill_null(b"")
        lengths = data.bin.size().cast(pl.Int64).to_numpy()
        frames = _Frames(data, index, lengths)
    else:
        captured = sent["cap_len"].cast(pl.Int64).to_numpy()
        lengths = np.where(captured > 0, captured, sent["wire_len"].cast(pl.Int64).to_numpy())
        frames = _Frames(None, index, lengths)
    arrays = {
        "index": index,
        "batch": batch.astype(np.int64),
        "call_start": np.concatenate(([0], cuts, [len(batch)])).astype(np.int64),
        "header_len": np.minimum(sent["header_len"].cast(pl.Int64).to_numpy(), lengths),
        "frame_offset": np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
        "ts_ns": sent["ts_ns"].fill_null(strategy="forward").fill_null(0).to_numpy().astype(np.int64),
    }
    arrays["frame_start"] = frames.starts(arrays["frame_offset"])
    return arrays, frames


def _binary_chunk(frames: pl.Series, start: int, length: int) -> memoryview:
    """The bytes of ``frames[start:start + length]`` back to back (one copy of that slice)."""
    import pyarrow as pa

    binary = frames.slice(start, length).rechunk().to_arrow()
    if isinstance(binary, pa.ChunkedArray):
        binary = binary.combine_chunks()
    binary = binary.cast(pa.large_binary())
    _, offsets_buf, data_buf = binary.buffers()
    if offsets_buf is None or data_buf is None:
        return memoryview(b"")
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[binary.offset : binary.offset + len(binary) + 1]
    return memoryview(data_buf).cast("B")[int(offsets[0]) : int(offsets[-1])]


@dataclass(frozen=True, eq=False)
class ReplayInput:
    """The send calls of one trace as arrays: what the replay loop (and a future compiled core) consumes.

    ``n`` replayed packets in replay order, ``C`` send calls. Packets of call ``k`` are
    ``call_start[k]:call_start[k + 1]``; packet ``i`` has ``frame_offset[i + 1] - frame_offset[i]`` bytes, at
    ``data[frame_start[i]:]`` (frames need not be contiguous or distinct: synthesized ones overlap in one pattern).
    """

    #: [n] the trace ``index`` of each packet (findings and results name packets by it)
    index: Int64Array
    #: [n] the trace's ``batch`` value of each packet (its send call under the trace's batching rule)
    batch: Int64Array
    #: [C + 1] offsets of the calls into the packet arrays
    call_start: Int64Array
    #: [n] bytes of L2-L4 headers of each packet
    header_len: Int64Array
    #: [n + 1] cumulative frame lengths, bytes (frame ``i``'s offset had the frames been written back to back)
    frame_offset: Int64Array
    #: [n] where each frame starts in ``data``, bytes
    frame_start: Int64Array
    #: [n] capture time, ns (a missing timestamp repeats the previous one; pacing uses it)
    ts_ns: Int64Array
    #: the frames' bytes (read-only): the trace's back to back, or the synthetic pattern
    data: memoryview

    @property
    def packets(self) -> int:
        """Number of replayed packets."""
        return len(self.index)

    @property
    def calls(self) -> int:
        """Number of send calls."""
        return len(self.call_start) - 1

    @property
    def sizes(self) -> Int64Array:
        """[n] captured length of each frame, bytes."""
        return np.diff(self.frame_offset)

    @property
    def max_frame(self) -> int:
        """Largest frame, bytes."""
        return int(self.sizes.max()) if self.packets else 0

    @property
    def max_call(self) -> int:
        """Most packets in one send call."""
        return int(np.diff(self.call_start).max()) if self.calls else 0

    def call_of_packet(self) -> Int64Array:
        """[n] the call number of each packet."""
        return np.repeat(np.arange(self.calls, dtype=np.int64), np.diff(self.call_start))

    def frame(self, i: int) -> memoryview:
        """The bytes of packet ``i`` (replay order)."""
        start = int(self.frame_start[i])
        return self.data[start : start + int(self.frame_offset[i + 1] - self.frame_offset[i])]

    def build_calls(self, first: int, last: int) -> list[SendCall]:
        """:class:`SendCall` objects of calls ``first:last``."""
        cuts = self.call_start[first : last + 1].tolist()
        if not cuts:
            return []
        a, b = cuts[0], cuts[-1]
        data = self.data
        starts = self.frame_start[a:b].tolist()
        ends = (self.frame_start[a:b] + np.diff(self.frame_offset[a : b + 1])).tolist()
        frames = [data[s:e] for s, e in zip(starts, ends, strict=True)]
        index = self.index[a:b].tolist()
        header = self.header_len[a:b].tolist()
        return [
            SendCall(first + k, tuple(index[p - a : q - a]), tuple(frames[p - a : q - a]), tuple(header[p - a : q - a]))
            for k, (p, q) in enumerate(pairwise(cuts))
        ]

    def send_calls(self, window: int | None = None) -> SendCalls:
        """One :class:`SendCall` per call: all built now when there are at most ``window`` calls (default
        :data:`CALL_WINDOW`) — the timed loop then only iterates over them — else a window at a time."""
        return SendCalls(self, CALL_WINDOW if window is None else window)

    @classmethod
    def from_trace(cls, trace: Trace, path: str | Path | None = None) -> ReplayInput:
        """The replayed packets of ``trace`` (direction send or unknown) grouped into calls by its ``batch`` column,
        in memory (the frames copied into one buffer).

        ``path`` names the trace in errors (default: its source). Raises :class:`NothingToReplay` when no packet is
        sent. A trace without bytes gets synthesized frames (see :class:`_Frames`).
        """
        arrays, frames = _replayed(trace, path)
        return cls(data=frames.buffer().toreadonly(), **arrays)

    @classmethod
    def write(cls, trace: Trace, folder: str | Path, path: str | Path | None = None) -> ReplayInput:
        """What :meth:`from_trace` gives, written straight into ``folder`` (as :meth:`save` would) a slice of frames
        at a time — never a second copy of the whole trace in memory — and returned mapped (:meth:`load`)."""
        arrays, frames = _replayed(trace, path)
        folder = Path(folder)
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", array, allow_pickle=False)
        with open(folder / "frames.bin", "wb") as fh:
            if frames.synthetic:
                fh.write(frames.buffer())
            else:
                for start in range(0, len(frames), WRITE_SLICE):
                    fh.write(frames.chunk(start, WRITE_SLICE))
        return cls.load(folder)

    def save(self, folder: str | Path) -> None:
        """Write the arrays (``<name>.npy``) and the frames (``frames.bin``) into ``folder`` (which must exist)."""
        folder = Path(folder)
        for name in _ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)
        with open(folder / "frames.bin", "wb") as fh:
            fh.write(self.data)

    @classmethod
    def load(cls, folder: str | Path) -> ReplayInput:
        """Map what :meth:`save` wrote: the frames are a read-only memory map shared with every other reader."""
        folder = Path(folder)
        names = [name for name in _ARRAYS if name != "frame_start"]
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in names}
        starts = folder / "frame_start.npy"  # absent from a folder saved before frames became views: back to back
        arrays["frame_start"] = (
            np.load(starts, allow_pickle=False) if starts.exists() else arrays["frame_offset"][:-1].copy()
        )
        with open(folder / "frames.bin", "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)) if size else memoryview(b"")
        return cls(data=data, **arrays)


class SendCalls(Sequence[SendCall]):
    """The :class:`SendCall` objects of a :class:`ReplayInput`, ``window`` calls at a time: all of them, built at
    once, when there are no more than ``window`` (what the loops iterate over is then a plain list); else the
    window holding the call asked for is built when first reached and replaces the previous one, so a trace of
    10 million calls never has more than ``window`` of them as Python objects. Building a window happens between
    two calls (outside every call's timed span; a run of ``runs:N`` straddling windows includes it)."""

    def __init__(self, inp: ReplayInput, window: int) -> None:
        self.inp = inp
        self.window = max(1, window)
        self._count = inp.calls
        self._first = 0
        self._calls = inp.build_calls(0, min(self._count, self.window))

    def __len__(self) -> int:
        return self._count

    def _at(self, k: int) -> SendCall:
        if not self._first <= k < self._first + len(self._calls):
            self._first = k - k % self.window
            self._calls = []  # the old window is freed before the next is built
            self._calls = self.inp.build_calls(self._first, min(self._count, self._first + self.window))
        return self._calls[k - self._first]

    @overload
    def __getitem__(self, k: int) -> SendCall: ...
    @overload
    def __getitem__(self, k: slice) -> list[SendCall]: ...
    def __getitem__(self, k: int | slice) -> SendCall | list[SendCall]:
        if isinstance(k, slice):
            return [self._at(i) for i in range(*k.indices(self._count))]
        if k < 0:
            k += self._count
        if not 0 <= k < self._count:
            raise IndexError(k)
        return self._at(k)

    def __iter__(self) -> Iterator[SendCall]:
        if self._count <= self.window:
            return iter(self._calls)
        return self._windows()

    def items(self) -> Sequence[SendCall]:
        """What the timed loops take: the list itself when every call is built (plain list indexing and iteration
        inside a ``runs:N`` timed span), else this sequence (built a window at a time)."""
        return self._calls if self._count <= self.window else self

    def _windows(self) -> Iterator[SendCall]:
        for first in range(0, self._count, self.window):
            self._at(first)
            yield from self._calls


# --- pacing ------------------------------------------------------------------------------------------------------

PACING_CHOICES = (
    "asap",
    "original",
    "xN (e.g. x2: twice the captured rate)",
    "pps=N (e.g. pps=100000)",
    "mbps=N (e.g. mbps=100: link-layer bytes)",
)


@dataclass(frozen=True)
class Pacing:
    """When each send call starts: ``asap`` (back to back), ``original`` (the trace's own gaps), ``xN`` (the
    trace's gaps divided by N), ``pps=N`` (N packets per second) or ``mbps=N`` (N Mbit/s of link-layer bytes: the
    frames as replayed, without preamble, inter-frame gap or FCS). Under every paced rule a call's latency is
    measured from its scheduled time, so a stall of the loop is not hidden (coordinated omission).

    Under ``pps`` and ``mbps`` call ``k`` is due when the packets (bytes) of calls ``0 … k−1`` have been sent at
    the rate; a call of several packets (a batch) starts them all at once."""

    kind: str  # "asap" | "original" | "speed" | "pps" | "mbps"
    factor: float = 1.0
    rate: float = 0.0

    def __str__(self) -> str:
        # .15g: every digit a float has, and no exponent below 1e15 (pps=1000000, not pps=1e+06)
        if self.kind == "speed":
            return f"x{self.factor:.15g}"
        if self.kind in ("pps", "mbps"):
            return f"{self.kind}={self.rate:.15g}"
        return self.kind

    def offsets(self, inp: ReplayInput) -> Int64Array | None:
        """[C] when each call is due, ns after the round starts; None for ``asap``."""
        if self.kind == "asap":
            return None
        first = inp.call_start[:-1]
        if self.kind == "pps":
            return (first.astype(np.float64) * (1e9 / self.rate)).astype(np.int64)
        if self.kind == "mbps":
            bits = inp.frame_offset[first].astype(np.float64) * 8
            return (bits * (1e3 / self.rate)).astype(np.int64)  # bits / (rate · 1e6 bit/s) in ns
        ts = inp.ts_ns[first]
        relative = np.maximum.accumulate(ts - ts[0]) if len(ts) else ts  # out-of-order stamps never go back
        return (np.maximum(relative, 0) / self.factor).astype(np.int64)

    def requested(self, inp: ReplayInput) -> tuple[float | None, float | None]:
        """The rate the schedule asks for, as (packets/s, Mbit/s) by :func:`rate_over` over the scheduled span
        (first call due → last call due): ``pps=N`` gives N packets/s, ``mbps=N`` N Mbit/s, ``original`` and
        ``xN`` the trace's own rate (× N). (None, None) for ``asap`` and for a schedule of no length (one call, or
        a trace whose calls share one timestamp)."""
        offsets = self.offsets(inp)
        if offsets is None or not len(offsets):
            return None, None
        return rate_over(inp, int(offsets[-1]))


def rate_over(inp: ReplayInput, span_ns: int) -> tuple[float | None, float | None]:
    """(packets/s, Mbit/s) of sending every call but the last in ``span_ns`` — the span from the first call's start
    to the last call's start, over which exactly those packets were sent (the last call's packets start at its
    end). Mbit/s counts link-layer bytes (the replayed frames). (None, None) when the span is not positive."""
    if span_ns <= 0 or inp.calls < 2:
        return None, None
    before_last = int(inp.call_start[-2])
    seconds = span_ns / 1e9
    return before_last / seconds, int(inp.frame_offset[before_last]) * 8 / seconds / 1e6


def parse_pacing(text: str) -> Pacing:
    """``asap``, ``original``, ``xN`` (N > 0, e.g. ``x2`` or ``x0.5``), ``pps=N``, ``mbps=N`` (N > 0)."""
    t = text.strip().lower()
    if t in ("asap", "original"):
        return Pacing(t)
    try:
        if t.startswith("x"):
            factor = float(t[1:])
            if factor > 0 and np.isfinite(factor):
                return Pacing("speed", factor=factor)
        elif t.startswith(("pps=", "mbps=")):
            kind, _, value = t.partition("=")
            rate = float(value)
            if rate > 0 and np.isfinite(rate):
                return Pacing(kind, rate=rate)
    except ValueError:
        pass
    raise ConfigError("pacing", text, "unknown pacing", PACING_CHOICES)


ASAP = Pacing("asap")


# --- timing -------------------------------------------------------------------------------------------------------

#: calls per clock reading under ``runs`` when no count is given (``auto`` on the native engine): one ~20 ns
#: reading shared by 32 calls is under 1 ns per packet, while a run stays short enough (~0.5 µs native) that
#: a slow call (pool growth, a page fault) still shows in the upper percentiles
DEFAULT_RUN_CALLS = 32
TIMING_CHOICES = ("auto", "call", "runs", "runs:N (e.g. runs:64)")


@dataclass(frozen=True)
class Timing:
    """How a timed round reads the clock.

    * ``call``: before build, after build, after submit and at each completion — per-packet latency and the
      build/send split. The readings sit inside every latency window: on the native engine they are as long as
      the work measured (one reading ~20 ns, reuse ~10-20 ns), which squeezes the strategies' ratios towards 1.
    * ``runs:N``: once per run of N consecutive calls (chained: a run's end is the next one's start); each
      packet's latency is its share, by packets, of its run's time — the run's mean per packet, the way pyperf
      times loops of a statement — and the build/send split is not measured (build 0). Needs sync completion
      and no pacing (a packet's latency is then the time spent in its call).
    * ``auto``: ``runs`` of :data:`DEFAULT_RUN_CALLS` on the native engine with sync completion and no pacing,
      ``call`` otherwise (in Python a reading is ~5% of a call's interpreter time).
    """

    rule: str  # "auto" | "call" | "runs"
    calls: int = DEFAULT_RUN_CALLS

    def __str__(self) -> str:
        return f"runs:{self.calls}" if self.rule == "runs" else self.rule

    def run_calls(self, engine: str, completion: CompletionPolicy, pacing: Pacing) -> int:
        """Calls per clock reading for one strategy's timed rounds (1: per call). Raises :class:`ConfigError`
        for ``runs`` with a completion policy other than sync or with pacing."""
        if self.rule == "call":
            return 1
        fits = completion.kind == "sync" and pacing.kind == "asap"
        if self.rule == "auto":
            return DEFAULT_RUN_CALLS if engine == "native" and fits else 1
        if not fits:
            raise ConfigError(
                "timing", str(self), "needs --completion sync and --pace asap (a packet's latency must be its call)"
            )
        return self.calls


def parse_timing(text: str) -> Timing:
    """``auto``, ``call``, ``runs`` or ``runs:N`` (1 ≤ N ≤ 1,000,000)."""
    t = text.strip().lower()
    if t in ("auto", "call"):
        return Timing(t)
    if t == "runs":
        return Timing("runs")
    kind, _, value = t.partition(":")
    if kind == "runs" and value.isdigit() and 1 <= int(value) <= 1_000_000:
        return Timing("runs", int(value))
    raise ConfigError("timing", text, "unknown timing", TIMING_CHOICES)


AUTO_TIMING = Timing("auto")


def timing_text(run_calls: int) -> str:
    """How a strategy's rounds were timed, as run.json records it: ``call`` or ``runs:N``."""
    return "call" if run_calls == 1 else f"runs:{run_calls}"


def spread_runs(
    t0: Int64Array, t1: Int64Array, t2: Int64Array, complete: Int64Array, call_start: Int64Array, run_calls: int
) -> None:
    """Timing by runs, in place: from the run readings (``t0`` of each run's first call, ``t2`` of its last) give
    every call its share of the run's time by packets — ``t0``/``t2`` the start/end of its share, ``t1 = t0`` —
    and every completed packet (``complete >= 0``) its call's end. A run whose readings are missing (the round
    stopped inside it) is left alone: that round's latencies are not used."""
    calls = len(t0)
    if run_calls <= 1 or calls == 0:
        return
    firsts = np.arange(0, calls, run_calls)
    lasts = np.minimum(firsts + run_calls, calls) - 1
    a, c = t0[firsts].copy(), t2[lasts].copy()
    whole = (a > 1) & (c > 1)
    packet_first = call_start[firsts]
    share = (c - a) / (call_start[lasts + 1] - packet_first)  # ns per packet of each run
    run = np.arange(calls) // run_calls
    keep = whole[run]
    begin = a[run] + np.rint(share[run] * (call_start[:-1] - packet_first[run])).astype(np.int64)
    finish = a[run] + np.rint(share[run] * (call_start[1:] - packet_first[run])).astype(np.int64)
    t0[keep] = begin[keep]
    t1[keep] = begin[keep]
    t2[keep] = finish[keep]
    counts = np.diff(call_start)
    ends = np.repeat(np.where(keep, finish, -1), counts)
    done = (complete >= 0) & (ends >= 0)
    complete[done] = ends[done]


# --- timer ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimerCalibration:
    """Back-to-back ``perf_counter_ns`` pairs: the cost of one timer reading as the loop sees it, ns."""

    median_ns: int
    min_ns: int
    samples: int


def calibrate_timer(samples: int = 20_000) -> TimerCalibration:
    """Median and minimum of ``samples`` back-to-back ``perf_counter_ns`` differences (into a preallocated array)."""
    out = np.empty(samples, dtype=np.int64)
    view = out.data
    pc = _pc
    for i in range(samples):
        a = pc()
        b = pc()
        view[i] = b - a
    return TimerCalibration(int(np.median(out)), int(out.min()), samples)


# --- the loops -----------------------------------------------------------------------------------------------------
# Three copies of one loop, so that neither the sync policy (nothing to poll) nor asap pacing pays a branch per call.
# Readings go to locals and are stored only after the call's submit (and poll) returned: inside a packet's latency
# window the harness adds one timer reading (after build), not three stores. The stores go through memoryviews of
# the int64 arrays (a third of numpy's item-assignment cost).

_Build = Callable[[SendCall], object]
_Submit = Callable[[object], None]


def _loop(
    calls: Sequence[SendCall], build: _Build, submit: _Submit, t0: memoryview, t1: memoryview, t2: memoryview
) -> None:
    pc = _pc
    for k, call in enumerate(calls):
        a = pc()
        built = build(call)
        b = pc()
        submit(built)
        c = pc()
        t0[k] = a
        t1[k] = b
        t2[k] = c


def _loop_poll(
    calls: Sequence[SendCall],
    build: _Build,
    submit: _Submit,
    poll: Callable[[], None],
    t0: memoryview,
    t1: memoryview,
    t2: memoryview,
) -> None:
    pc = _pc
    for k, call in enumerate(calls):
        a = pc()
        built = build(call)
        b = pc()
        submit(built)
        c = pc()
        poll()
        t0[k] = a
        t1[k] = b
        t2[k] = c


def _loop_runs(
    calls: Sequence[SendCall], build: _Build, submit: _Submit, t0: memoryview, t2: memoryview, run_calls: int
) -> None:
    # Timing.runs: one reading per run, chained; t2 = 1 marks a call that returned (where an exception happened
    # shows as the first 0); spread_runs shares each run out afterwards
    pc = _pc
    n = len(calls)
    a = pc()
    for first in range(0, n, run_calls):
        last = min(first + run_calls, n)
        for k in range(first, last):
            submit(build(calls[k]))
            t2[k] = 1
        c = pc()
        t0[first] = a
        t2[last - 1] = c
        a = c


def _wait(target: int) -> None:
    now = _pc()
    if target - now > SPIN_NS:
        time.sleep((target - now - SPIN_NS) / 1e9)
    while _pc() < target:
        pass


def _loop_paced(
    calls: Sequence[SendCall],
    build: _Build,
    submit: _Submit,
    poll: Callable[[], None] | None,
    t0: memoryview,
    t1: memoryview,
    t2: memoryview,
    due: list[int],
) -> None:
    pc = _pc
    wait = _wait
    for k, call in enumerate(calls):
        if pc() < due[k]:
            wait(due[k])
        a = pc()
        built = build(call)
        b = pc()
        submit(built)
        c = pc()
        if poll is not None:
            poll()
        t0[k] = a
        t1[k] = b
        t2[k] = c


# --- outcomes ------------------------------------------------------------------------------------------------------


#: delivery counts that are problems (each a WIRE-DELIVERY finding); the others are frames, delivered
DELIVERY_PROBLEMS = ("dropped", "corrupted", "reordered", "unexpected", "refused", "socket_drops")


def delivery_problems(counts: dict[str, int]) -> int:
    """Frames lost, changed, reordered, unexpected or refused in a far side's counts."""
    return sum(int(counts.get(name, 0)) for name in DELIVERY_PROBLEMS)


def exception_finding(exc: BaseException, packet_index: int, phase: str) -> Finding:
    """A STRATEGY-EXCEPTION finding naming the exception and the innermost frame it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" in {Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}()" if frames else ""
    return Finding("STRATEGY-EXCEPTION", packet_index, type(exc).__name__, f"{phase}: {exc}{where}".strip(), ERROR)


@dataclass
class CheckOutcome:
    """What the checked pass found. ``failure`` is None, ``"bugcheck"`` or ``"exception"`` (the pass stopped)."""

    findings: list[Finding]
    #: findings per rule, including those not kept
    finding_counts: dict[str, int]
    failure: str | None
    #: packets, transmitted, matched, mismatched, missing, extra, ok (None when the pass stopped early)
    wire: dict[str, Any]
    #: operation counts of the send calls (after bind, up to and including the final drain)
    counts: dict[str, int]
    #: gauges (peaks, modelled memory) at the end of the pass
    gauges: dict[str, int]
    #: [n] modelled ns per packet from the call's counts (None without a cost profile)
    packet_cost_ns: Float64Array | None
    #: the strategy's own counts (Strategy.stats)
    stats: dict[str, int]
    seconds: float
    #: what the miniport declared at open() (MiniportInfo as a dict; empty if it never opened)
    miniport_info: dict[str, Any] = field(default_factory=dict)
    #: what the far side of a device-backed miniport received (frames, delivered, dropped, corrupted, …); None for
    #: an in-process miniport or a pass that stopped
    delivery: dict[str, int] | None = None
    #: ``--wire``: the (errno, strerror) that stopped writing the pcap (full disk, …); None when it was written whole
    wire_error: tuple[int, str] | None = None

    @property
    def errors(self) -> int:
        """Number of error findings counted (kept or not)."""
        severity = {f.rule: f.severity for f in self.findings}
        return sum(n for rule, n in self.finding_counts.items() if severity.get(rule, ERROR) == ERROR)


@dataclass
class RoundOutcome:
    """One timed round: stage times per call, latency per packet (-1: never completed), counts of the round."""

    number: int
    warmup: bool
    start_ns: int
    end_ns: int
    #: [n] completion − start of the packet's call (asap) or − its scheduled time (paced), ns
    latency_ns: Int64Array
    #: [C] build time of each call, ns
    build_ns: Int64Array
    #: [C] submit time of each call (includes a synchronous completion), ns
    send_ns: Int64Array
    counts: dict[str, int]
    gauges: dict[str, int]
    #: set when the round stopped on an exception (the strategy is not timed further)
    error: Finding | None = None
    #: [C] how late each call started against its schedule, ns (paced rounds only)
    lag_ns: Int64Array | None = None
    #: the first call's scheduled start (asap: its actual start) → the last call's actual start, ns: the span over
    #: which :func:`rate_over` gives the achieved rate (0 when the round stopped early or has one call)
    span_ns: int = 0
    #: the far side's counts for this round (device-backed miniports only)
    delivery: dict[str, int] | None = None


def read_far_side(miniport: Any) -> tuple[dict[str, int] | None, Finding | None]:
    """After a timed round's window, for both engines: what a device-backed miniport's far side still had to read
    (its delivery counts; None for an in-process miniport), or the finding for an exception reading it."""
    try:
        far = miniport.delivery()
    except Exception as exc:
        return None, exception_finding(exc, -1, "timed round, far side")
    return (far[0] if far is not None else None), None


def finish_round(
    inp: ReplayInput,
    call_of: Int64Array,
    number: int,
    warmup: bool,
    span: tuple[int, int],
    stamps: tuple[Int64Array, Int64Array, Int64Array],
    complete: Int64Array,
    due: Int64Array | None,
    run_calls: int,
    error: Finding | None,
    counts: dict[str, int],
    gauges: dict[str, int],
    delivery: dict[str, int] | None,
) -> RoundOutcome:
    """A timed round's outcome from its readings, for both engines: runs shared out (:func:`spread_runs`),
    latency from each call's start (paced: its scheduled time), a packet never completed → ``NOT-COMPLETED``."""
    t0, t1, t2 = stamps
    if error is None:
        spread_runs(t0, t1, t2, complete, inp.call_start, run_calls)
    start_ref = t0 if due is None else due
    reach = int(t0[-1] - start_ref[0]) if error is None and inp.calls > 1 else 0
    latency = complete - start_ref[call_of]
    latency[complete < 0] = -1
    if error is None and (complete < 0).any():
        missing = int((complete < 0).sum())
        first = int(inp.index[int(np.flatnonzero(complete < 0)[0])])
        error = Finding("NOT-COMPLETED", first, "timed round", f"{missing} packets were never completed", ERROR)
    return RoundOutcome(
        number=number,
        warmup=warmup,
        start_ns=int(span[0]),
        end_ns=int(span[1]),
        latency_ns=latency,
        build_ns=t1 - t0,
        send_ns=t2 - t1,
        counts=counts,
        gauges=gauges,
        error=error,
        lag_ns=None if due is None else t0 - due,
        span_ns=reach,
        delivery=delivery,
    )


def floor_round(
    inp: ReplayInput,
    call_of: Int64Array,
    number: int,
    warmup: bool,
    span: tuple[int, int],
    stamps: Sequence[Int64Array],
    complete: Int64Array,
    run_calls: int,
) -> RoundOutcome:
    """:func:`finish_round` for a no-op floor round (both engines): nothing counted, no error, no far side."""
    t0, t1, t2 = stamps
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    stamped = (t0, t1, t2)
    return finish_round(inp, call_of, number, warmup, span, stamped, complete, None, run_calls, None, counts, {}, None)


class TeeWire(WireSink):
    """Hands every transmitted packet to several sinks (the checked pass's comparison and ``--wire``)."""

    def __init__(self, *sinks: WireSink) -> None:
        self.sinks = sinks

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Forward one packet's frames to every sink."""
        for sink in self.sinks:
            sink.transmit(frames)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


class CompareWire(WireSink):
    """Compares each transmitted packet with the trace as it arrives (replay order), keeping only what differs:
    the checked pass holds no copy of the wire, whatever the trace's size.

    A packet the ``clone`` filter fragmented arrives as several frames, each later one carrying a copy of the
    packet's ``header_len`` header bytes; it is rejoined as the first fragment plus the rest of each later one
    (as :meth:`~ndis_replay.engine.miniports.base.ListWire.reassembled` does).
    """

    def __init__(self, inp: ReplayInput) -> None:
        self.inp = inp
        self.position = 0
        self.mismatched = 0
        self.count = 0
        self.findings: list[Finding] = []
        self._header = inp.header_len.tolist()

    def _add(self, index: int, descriptor: str, message: str) -> None:
        self.count += 1
        if len(self.findings) < MAX_WIRE_FINDINGS:
            self.findings.append(Finding("WIRE-BYTES", index, descriptor, message, ERROR))

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Compare one packet's frames with the trace's packet at this position."""
        p = self.position
        self.position = p + 1
        if p >= self.inp.packets:
            return
        if len(frames) == 1:
            got = frames[0]
        else:
            cut = self._header[p]
            got = frames[0] + b"".join(frame[cut:] for frame in frames[1:]) if frames else b""
        expected = self.inp.frame(p)
        if got == expected:
            return
        self.mismatched += 1
        a = np.frombuffer(got, dtype=np.uint8)
        b = np.frombuffer(expected, dtype=np.uint8)
        common = min(len(a), len(b))
        diff = np.flatnonzero(a[:common] != b[:common])
        first = int(diff[0]) if len(diff) else common
        index = int(self.inp.index[p])
        self._add(
            index,
            f"packet {index}",
            f"transmitted {len(a)} bytes, the trace has {len(b)}; first difference at byte {first}",
        )

    def finish(self) -> tuple[dict[str, Any], list[Finding], int]:
        """The summary, the kept WIRE-BYTES findings and how many there were (missing and extra packets added)."""
        n = self.inp.packets
        transmitted = self.position
        for p in range(transmitted, n):
            index = int(self.inp.index[p])
            self._add(index, f"packet {index}", "never transmitted")
        extra = max(0, transmitted - n)
        if extra:
            self._add(-1, "wire", f"{extra} packets transmitted beyond the trace's {n}")
        summary = {
            "packets": n,
            "transmitted": transmitted,
            "matched": min(n, transmitted) - self.mismatched,
            "mismatched": self.mismatched,
            "missing": max(0, n - transmitted),
            "extra": extra,
            "ok": self.count == 0,
        }
        return summary, self.findings, self.count


def compare_wire(inp: ReplayInput, transmitted: Sequence[bytes]) -> tuple[dict[str, Any], list[Finding], int]:
    """Compare a list of transmitted frames (one per packet, replay order) with the trace: the summary, the kept
    WIRE-BYTES findings (at most :data:`MAX_WIRE_FINDINGS`) and how many there were."""
    sink = CompareWire(inp)
    for frame in transmitted:
        sink.transmit((frame,))
    return sink.finish()


# --- one strategy ------------------------------------------------------------------------------------------------


def _counts(ndis: Ndis) -> tuple[int, ...]:
    return ndis.counters.counts()


def _gauges(ndis: Ndis) -> dict[str, int]:
    snap = ndis.counters.snapshot()
    return {name: snap[name] for name in GAUGE_FIELDS}


class StrategyReplayer:
    """Replays one strategy over one :class:`ReplayInput`: the checked pass, then timed rounds.

    ``make_strategy`` and ``make_miniport`` build fresh instances (one pair for the checked pass, one for all timed
    rounds). ``cost_profile`` adds the modelled cost per packet (from the checked pass's per-call counts, which do not
    depend on the mode).
    """

    def __init__(
        self,
        inp: ReplayInput,
        make_strategy: Callable[[], Strategy],
        make_miniport: Callable[[], Miniport],
        completion: CompletionPolicy,
        *,
        pacing: Pacing = ASAP,
        cost_profile: CostProfile | None = None,
        max_findings_per_rule: int = 100,
        run_calls: int = 1,
    ) -> None:
        self.inp = inp
        #: calls per clock reading in timed rounds (:meth:`Timing.run_calls`; 1: per call)
        self.run_calls = run_calls
        self.make_strategy = make_strategy
        self.make_miniport = make_miniport
        self.completion = completion
        self.pacing = pacing
        self.cost_profile = cost_profile
        self.max_findings_per_rule = max_findings_per_rule
        self.calls = inp.send_calls()
        self._offsets = pacing.offsets(inp)
        self.failed = False
        #: what the miniport declared at open() (MiniportInfo as a dict), once opened
        self.miniport_info: dict[str, Any] = {}
        self._timed: tuple[Ndis, Strategy, Miniport] | None = None
        # the output arrays, allocated by the first timed round and reused by every round (a worker timing in the
        # native core never needs them: 32 bytes per packet of a huge trace saved)
        self._complete = self._t0 = self._t1 = self._t2 = np.empty(0, dtype=np.int64)

    @functools.cached_property
    def call_of(self) -> Int64Array:
        """[n] the call number of each packet (made when first needed)."""
        return self.inp.call_of_packet()

    def _bind_context(self, ndis: Ndis, miniport: Miniport) -> BindContext:
        miniport.expect(self.inp)
        info = miniport.open(ndis, self.completion)
        self.miniport_info = dataclasses.asdict(info)
        in_flight = self.completion.max_in_flight(self.inp.max_call)
        return BindContext(
            ndis=ndis,
            miniport=info,
            max_frame=self.inp.max_frame,
            max_call=self.inp.max_call,
            # delay:DURATION bounds nothing a priori: a modest start, reuse-type strategies grow by a counted
            # fallback allocation when they run dry (contract CHANGES 2)
            max_in_flight=max(self.inp.max_call, DELAY_IN_FLIGHT) if in_flight is None else in_flight,
        )

    # --- checked pass ---------------------------------------------------------------------------------------------

    def check(self, wire: WireSink | None = None) -> CheckOutcome:
        """The untimed checked pass; ``wire`` also receives what was transmitted (``--wire``)."""
        started = time.perf_counter()
        ndis = Ndis(checked=True, max_findings_per_rule=self.max_findings_per_rule)
        verifier = ndis.verifier
        assert verifier is not None
        compare = CompareWire(self.inp)
        sink: WireSink = compare if wire is None else TeeWire(compare, wire)
        failure: str | None = None
        extra: list[Finding] = []
        far: tuple[dict[str, int], list[Finding]] | None = None
        profile = self.cost_profile
        priced = list(profile.ns) if profile is not None else []
        rows = np.zeros((self.inp.calls + 1, len(priced)), dtype=np.int64) if priced else None
        counters = ndis.counters
        bound = _counts(ndis)
        after = bound
        strategy: Strategy | None = None
        try:
            strategy = self.make_strategy()
            miniport = self.make_miniport()
            ctx = self._bind_context(ndis, miniport)
            strategy.bind(ctx)
            bound = _counts(ndis)
            miniport.begin(None, sink)
            build, submit, poll = strategy.build, strategy.submit, miniport.poll
            for k, call in enumerate(self.calls):
                verifier.packet_index = call.indices[0]
                if rows is not None:
                    rows[k] = [getattr(counters, name) for name in priced]
                submit(build(call))
                poll()
            miniport.drain()
            after = _counts(ndis)
            if rows is not None:
                rows[-1] = [getattr(counters, name) for name in priced]
            far = miniport.delivery()
            strategy.unbind()
            miniport.close()
            verifier.finish()
        except NdisBugCheck as exc:
            failure = "bugcheck"
            if exc.finding not in verifier.findings:
                extra.append(exc.finding)
        except Exception as exc:
            failure = "exception"
            extra.append(exception_finding(exc, verifier.packet_index, "checked pass"))
        findings = list(verifier.findings)
        counts = dict(verifier.counts)
        if failure is None:
            wire_summary, wire_findings, wire_count = compare.finish()
            findings.extend(wire_findings)
            if wire_count:
                counts["WIRE-BYTES"] = wire_count
        else:
            after = _counts(ndis)
            wire_summary = {"packets": self.inp.packets, "transmitted": compare.position, "ok": None}
        for finding in extra:
            findings.append(finding)
            counts[finding.rule] = counts.get(finding.rule, 0) + 1
        if far is not None:
            findings.extend(far[1])
            problems = delivery_problems(far[0])
            if problems:
                counts["WIRE-DELIVERY"] = problems
        cost = None
        if rows is not None and profile is not None and failure is None:
            weights = np.array([profile.ns[name] for name in priced], dtype=np.float64)
            per_call = np.diff(rows, axis=0).astype(np.float64) @ weights
            sizes = np.diff(self.inp.call_start)
            cost = (per_call / sizes)[self.call_of]
        if failure is not None:
            self.failed = True
        return CheckOutcome(
            findings=findings,
            finding_counts=counts,
            failure=failure,
            wire=wire_summary,
            counts=dict(zip(COUNT_FIELDS, (a - b for a, b in zip(after, bound, strict=True)), strict=True)),
            gauges=_gauges(ndis),
            packet_cost_ns=cost,
            stats=_stats(strategy),
            seconds=time.perf_counter() - started,
            miniport_info=dict(self.miniport_info),
            delivery=far[0] if far is not None else None,
        )

    # --- timed rounds --------------------------------------------------------------------------------------------

    def open_timed(self) -> None:
        """Bind a fresh strategy to an unchecked runtime; it serves every timed round."""
        ndis = Ndis(checked=False)
        strategy = self.make_strategy()
        miniport = self.make_miniport()
        strategy.bind(self._bind_context(ndis, miniport))
        self._timed = (ndis, strategy, miniport)

    def timed_round(self, number: int, warmup: bool) -> RoundOutcome:
        """Replay every call once, timed, with the garbage collector off; then drain the miniport.

        An exception (a bug check in unchecked mode, anything escaping strategy code) ends the round with ``error``
        set and marks the strategy failed.
        """
        if self._timed is None:
            self.open_timed()
        assert self._timed is not None
        ndis, strategy, miniport = self._timed
        if len(self._complete) != self.inp.packets:
            self._complete = np.full(self.inp.packets, -1, dtype=np.int64)
            self._t0, self._t1, self._t2 = (np.zeros(self.inp.calls, dtype=np.int64) for _ in range(3))
        complete = self._complete
        complete.fill(-1)
        self._t2.fill(0)  # a call whose submit never returned keeps 0: that is where an exception happened
        t0, t1, t2 = self._t0.data, self._t1.data, self._t2.data
        offsets = self._offsets
        error: Finding | None = None
        before = _counts(ndis)
        miniport.begin(complete, None)
        poll = None if self.completion.kind == "sync" else miniport.poll
        build, submit = strategy.build, strategy.submit
        due: list[int] | None = None
        gc.collect()  # garbage of earlier rounds is collected here, not in the middle of this one
        enabled = gc.isenabled()
        gc.disable()
        start = end = 0
        try:
            start = _pc()
            if offsets is not None:
                due = (offsets + start).tolist()
                _loop_paced(self.calls.items(), build, submit, poll, t0, t1, t2, due)
            elif self.run_calls > 1:
                _loop_runs(self.calls.items(), build, submit, t0, t2, self.run_calls)
            elif poll is None:
                _loop(self.calls.items(), build, submit, t0, t1, t2)
            else:
                _loop_poll(self.calls.items(), build, submit, poll, t0, t1, t2)
            miniport.drain()
            end = _pc()
        except Exception as exc:
            end = _pc()
            self.failed = True
            unfinished = np.flatnonzero(self._t2 == 0)
            at = int(self.inp.index[self.inp.call_start[unfinished[0]]]) if len(unfinished) else -1
            error = exc.finding if isinstance(exc, NdisBugCheck) else exception_finding(exc, at, "timed round")
        finally:
            if enabled:
                gc.enable()
        after = _counts(ndis)
        delivery = None
        if error is None:
            delivery, error = read_far_side(miniport)
        outcome = finish_round(
            self.inp,
            self.call_of,
            number,
            warmup,
            (start, end),
            (self._t0, self._t1, self._t2),
            complete,
            None if due is None else np.asarray(due, dtype=np.int64),
            self.run_calls,
            error,
            dict(zip(COUNT_FIELDS, (a - b for a, b in zip(after, before, strict=True)), strict=True)),
            _gauges(ndis),
            delivery,
        )
        self.failed = self.failed or outcome.error is not None
        return outcome

    def close_timed(self) -> dict[str, int]:
        """Unbind the timed strategy (after draining) and return its own counts; errors here are ignored (the
        checked pass judges unbind)."""
        if self._timed is None:
            return {}
        _, strategy, miniport = self._timed
        self._timed = None
        stats = _stats(strategy)
        with contextlib.suppress(Exception):  # a failing unbind was reported by the checked pass already
            miniport.drain()
            strategy.unbind()
            miniport.close()
        return stats


def _stats(strategy: Strategy | None) -> dict[str, int]:
    if strategy is None:
        return {}
    try:
        return {str(k): int(v) for k, v in strategy.stats().items()}
    except Exception:
        return {}


# --- the harness floor -------------------------------------------------------------------------------------------


class _Noop:
    """A strategy that builds nothing and a miniport that completes as soon as it is handed a call."""

    __slots__ = ("k", "stamps")

    def __init__(self, complete: Int64Array) -> None:
        self.stamps = complete.data
        self.k = 0

    def build(self, call: SendCall) -> object:
        return call

    def submit(self, built: object) -> None:
        now = _pc()  # first: what follows is outside the packet's latency, as a miniport's work after its stamp
        k = self.k
        n = len(built.indices)  # type: ignore[attr-defined]
        if n == 1:
            self.stamps[k] = now
        else:
            for i in range(k, k + n):
                self.stamps[i] = now
        self.k = k + n


@dataclass
class LoopBaseline:
    """The timed loop around a no-op strategy: its latency is what the harness itself adds to every packet
    (timer reads, array stores, two calls), the "measurement overhead" reported beside the strategies."""

    inp: ReplayInput
    pacing: Pacing = ASAP
    #: calls per clock reading, as the strategies' rounds (1: per call)
    run_calls: int = 1
    calls: SendCalls = field(init=False)

    def __post_init__(self) -> None:
        self._complete = np.empty(0, dtype=np.int64)  # made by the first round (a native floor's worker never runs one)

    def timed_round(self, number: int, warmup: bool) -> RoundOutcome:
        """One round of the no-op loop (asap: the floor does not depend on pacing)."""
        if len(self._complete) != self.inp.packets:
            self.calls = self.inp.send_calls()
            self._call_of = self.inp.call_of_packet()
            self._complete = np.full(self.inp.packets, -1, dtype=np.int64)
            self._t = [np.zeros(self.inp.calls, dtype=np.int64) for _ in range(3)]
        noop = _Noop(self._complete)
        t0, t1, t2 = (a.data for a in self._t)
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = _pc()
            if self.run_calls > 1:
                _loop_runs(self.calls.items(), noop.build, noop.submit, t0, t2, self.run_calls)
            else:
                _loop(self.calls.items(), noop.build, noop.submit, t0, t1, t2)
            end = _pc()
        finally:
            if enabled:
                gc.enable()
        span = (start, end)
        return floor_round(self.inp, self._call_of, number, warmup, span, self._t, self._complete, self.run_calls)


__all__ = [
    "ASAP",
    "AUTO_TIMING",
    "DEFAULT_RUN_CALLS",
    "HARNESS_RULES",
    "PACING_CHOICES",
    "TIMING_CHOICES",
    "CheckOutcome",
    "CompareWire",
    "LoopBaseline",
    "Pacing",
    "ReplayInput",
    "RoundOutcome",
    "SendCalls",
    "StrategyReplayer",
    "TeeWire",
    "TimerCalibration",
    "Timing",
    "calibrate_timer",
    "compare_wire",
    "delivery_problems",
    "exception_finding",
    "finish_round",
    "floor_round",
    "parse_pacing",
    "parse_timing",
    "rate_over",
    "read_far_side",
    "spread_runs",
    "synthetic_pattern",
    "synthetic_starts",
    "timing_text",
]
