"""The native core: timed rounds of the built-in strategies as compiled C (``_core``, built by ``pip install``).

The Python model (:mod:`ndis_replay.engine.ndis`, the strategies, the loopback miniport) stays the readable
reference and the verifier; the checked pass always runs it. The core replaces only the timed loop, for the
combinations :func:`unsupported_reason` accepts, and counts exactly what the model counts
(``tests/test_native.py`` proves it call by call and byte by byte).

What is native so far: the NDIS 6 structures at their x64 DDK sizes, NBL pools with lookaside free lists over
the C heap, the fixed-size MDL lookaside, NdisAllocateMdl/IoAllocateMdl & co, NdisSendNetBufferLists and the
completion path, the loopback miniport (sync, deferred, batched:N, delay:D; a wire capture for tests), and the
strategies ``reuse`` (``header`` whole or split, with or without ``mdl_reuse``) and ``alloc`` (every parameter).
NDIS 5 (``ndis5.c``): NDIS_PACKET pools (static and overflow descriptors), NDIS_BUFFERs, the packet macros,
NdisSendPackets / NdisMSendComplete, the loopback's MiniportSendPackets, and ``ndis5-alloc`` / ``ndis5-reuse``
(every parameter).
NDIS 6 ``copy``, ``cache`` and ``clone`` (``strategies6.c``, every parameter): DataSize NBL and NB pools,
MmGetSystemAddressForMdlSafe / NdisMoveMemory, clones and fragments (retreat/advance) and the filter send path.
The tap miniport (``loopback.c``'s tap variant): every NB written to the device's fd with one ``writev`` (an iovec
per MDL); the far side is :class:`~ndis_replay.engine.miniports.tap.FarSide`, handed the core's log of writes
(``FarSide.native_log``) where the Python miniport reads: after a call once half the window is in flight, before a
write that would exceed the window, and after the round.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from itertools import pairwise
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ndis_replay.engine.ndis.counters import COUNT_FIELDS, GAUGE_FIELDS

if TYPE_CHECKING:
    from ndis_replay.engine.miniports.base import CompletionPolicy, MiniportParams
    from ndis_replay.engine.miniports.tap import TapMiniport
    from ndis_replay.engine.replay import Pacing, ReplayInput, RoundOutcome, TimerCalibration
    from ndis_replay.engine.strategies.base import StrategyParams

#: what ``--engine`` accepts
ENGINES = ("native", "python")
#: the built-in strategies the core implements (registry names)
NATIVE_STRATEGIES = ("reuse", "alloc", *("copy", "cache", "clone"), *("ndis5-alloc", "ndis5-reuse"))

_core: ModuleType | None
_import_error: str
try:
    _core = importlib.import_module("ndis_replay.engine.native._core")
    _import_error = ""
except ImportError as exc:  # not built (an install without a C compiler, a source checkout used in place)
    _core = None
    _import_error = str(exc)


def available() -> bool:
    """True when the compiled core is importable."""
    return _core is not None


def import_error() -> str:
    """Why the core could not be imported ("" when it could)."""
    return _import_error


def core() -> ModuleType:
    """The compiled module; :class:`RuntimeError` when it is missing (callers check :func:`available` first)."""
    if _core is None:
        raise RuntimeError(f"the native core is not built: {_import_error}")
    return _core


def native_name(strategy_cls: type) -> str:
    """The core's name for a built-in strategy class (``reuse``, ``alloc``); ValueError for any other class."""
    from ndis_replay.engine.strategies.alloc import AllocStrategy
    from ndis_replay.engine.strategies.reuse import ReuseStrategy

    if strategy_cls is ReuseStrategy:
        return "reuse"
    if strategy_cls is AllocStrategy:
        return "alloc"
    ndis5 = _ndis5_name(strategy_cls)
    if ndis5:
        return ndis5
    ndis6 = _ndis6_name(strategy_cls)
    if ndis6:
        return ndis6
    raise ValueError(f"{strategy_cls.__name__} has no native implementation")


def _params(
    strategy: str, params: StrategyParams, miniport_params: MiniportParams | None = None
) -> tuple[int, int, int, int, int] | str:
    """The core's five integer parameters, or why these parameters need the Python engine. ``miniport_params``
    (the loopback's; None: its defaults) resolve copy's backfill -1 and clone's mtu 0."""
    values = params.as_dict()
    if strategy in _NDIS6:
        return _ndis6_params(strategy, values, miniport_params)
    if strategy == "reuse":
        if values["header"] not in ("whole", "split"):
            return f"reuse header={values['header']!r} is not native yet"
        return (
            int(values["pool_depth"]),
            int(values["header"] == "split"),
            int(values["mdl_reuse"]),
            int(values["clear_oob"]),
            int(values["reset_status"]),
        )
    if strategy == "alloc":
        return (
            int(values["context_size"]),
            int(values["context_backfill"]),
            int(values["split_header"]),
            int(values["mdl_source"] == "locked"),
            0,
        )
    if strategy in _NDIS5:
        return _ndis5_params(strategy, values)
    return f"strategy {strategy!r} has no native implementation yet"


#: the NDIS 5 strategies' ids in the core (STRATEGY_NDIS5_*), by registry name
_NDIS5 = {"ndis5-alloc": "STRATEGY_NDIS5_ALLOC", "ndis5-reuse": "STRATEGY_NDIS5_REUSE"}


def _ndis5_name(strategy_cls: type) -> str:
    """``ndis5-alloc`` / ``ndis5-reuse`` for exactly those built-in classes, else ""."""
    from ndis_replay.engine.strategies.ndis5 import Ndis5AllocStrategy, Ndis5ReuseStrategy

    names: dict[type, str] = {Ndis5AllocStrategy: "ndis5-alloc", Ndis5ReuseStrategy: "ndis5-reuse"}
    return names.get(strategy_cls, "")


def _ndis5_params(strategy: str, values: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """ndis5-alloc: (descriptors, overflow + 1, protocol_reserved, split_header); ndis5-reuse: (pool_depth,
    keep_buffers, split_header, protocol_reserved) — the core takes no negative number, so overflow -1 is 0."""
    if strategy == "ndis5-alloc":
        return (
            int(values["descriptors"]),
            int(values["overflow"]) + 1,
            int(values["protocol_reserved"]),
            int(values["split_header"]),
            0,
        )
    return (
        int(values["pool_depth"]),
        int(values["keep_buffers"]),
        int(values["split_header"]),
        int(values["protocol_reserved"]),
        0,
    )


#: the NDIS 6 strategies of strategies6.c: their ids in the core (STRATEGY_*), by registry name
_NDIS6 = {"copy": "STRATEGY_COPY", "cache": "STRATEGY_CACHE", "clone": "STRATEGY_CLONE"}
#: the core's parameters are 0 to this
_PARAM_MAX = 1_000_000


def _ndis6_name(strategy_cls: type) -> str:
    """``copy`` / ``cache`` / ``clone`` for exactly those built-in classes, else ""."""
    from ndis_replay.engine.strategies.cache import CacheStrategy
    from ndis_replay.engine.strategies.clone import CloneStrategy
    from ndis_replay.engine.strategies.copy import CopyStrategy

    names: dict[type, str] = {CopyStrategy: "copy", CacheStrategy: "cache", CloneStrategy: "clone"}
    return names.get(strategy_cls, "")


def _ndis6_params(
    strategy: str, values: dict[str, Any], miniport_params: MiniportParams | None
) -> tuple[int, int, int, int, int] | str:
    """copy: (pool_depth, backfill, buffers is mdl-and-data); cache: (context_size, context_backfill, split | locked
    << 1, cache_depth, cpus); clone: (upper is alloc, use_original_mdls, mtu) — the miniport's backfill and MTU
    resolved here, the upper protocol's parameters the defaults strategies6.c binds it with."""
    from ndis_replay.engine.miniports.loopback import LoopbackParams
    from ndis_replay.engine.strategies.alloc import AllocParams
    from ndis_replay.engine.strategies.reuse import ReuseParams

    loopback = miniport_params if isinstance(miniport_params, LoopbackParams) else LoopbackParams()
    if strategy == "copy":
        backfill = loopback.backfill if values["backfill"] < 0 else values["backfill"]
        if backfill > _PARAM_MAX:
            return f"copy backfill={backfill} is not native"
        return (int(values["pool_depth"]), int(backfill), int(values["buffers"] == "mdl-and-data"), 0, 0)
    if strategy == "cache":
        flags = int(values["split_header"]) | int(values["mdl_source"] == "locked") << 1
        return (
            int(values["context_size"]),
            int(values["context_backfill"]),
            flags,
            int(values["cache_depth"]),
            int(values["cpus"]),
        )
    # strategies6.c binds the upper protocol with these defaults (reuse: depth 0, whole, no mdl_reuse, clear_oob,
    # reset_status; alloc: context 16, no backfill, split, nonpaged): any other default needs the Python engine
    if ReuseParams().as_dict() != {
        "pool_depth": 0,
        "header": "whole",
        "mdl_reuse": False,
        "clear_oob": True,
        "reset_status": True,
    } or AllocParams().as_dict() != {
        "context_size": 16,
        "context_backfill": 0,
        "split_header": True,
        "mdl_source": "nonpaged",
    }:
        return "clone: the upper protocol's defaults changed; strategies6.c binds the old ones"
    mtu = values["mtu"] or loopback.mtu
    if mtu > _PARAM_MAX:
        return f"clone mtu={mtu} is not native"
    return (int(values["upper"] == "alloc"), int(values["use_original_mdls"]), int(mtu), 0, 0)


def unsupported_reason(
    strategy_cls: type, params: StrategyParams, miniport_cls: type, miniport_params: MiniportParams
) -> str | None:
    """None when the core can run this strategy on this miniport, else why not (one line)."""
    from ndis_replay.engine.miniports.loopback import LoopbackMiniport
    from ndis_replay.engine.miniports.tap import TapMiniport
    from ndis_replay.engine.strategies.alloc import AllocStrategy
    from ndis_replay.engine.strategies.reuse import ReuseStrategy

    if _core is None:
        return "the native core is not built"
    # exactly these classes (a subclass may change what a send does)
    if miniport_cls is not LoopbackMiniport and miniport_cls is not TapMiniport:
        return f"miniport {getattr(miniport_cls, 'name', miniport_cls.__name__)!r} is not native yet"
    # exactly the built-in classes: a subclass changes behaviour the C code does not have
    if (
        strategy_cls not in (ReuseStrategy, AllocStrategy)
        and not _ndis5_name(strategy_cls)
        and not _ndis6_name(strategy_cls)
    ):
        return f"strategy {getattr(strategy_cls, 'name', strategy_cls.__name__)!r} has no native implementation yet"
    converted = _params(native_name(strategy_cls), params, miniport_params)
    return converted if isinstance(converted, str) else None


def _completion(policy: CompletionPolicy) -> tuple[int, int, int]:
    c = core()
    kinds = {
        "sync": c.COMPLETION_SYNC,
        "deferred": c.COMPLETION_DEFERRED,
        "batched": c.COMPLETION_BATCHED,
        "delay": c.COMPLETION_DELAY,
    }
    return kinds[policy.kind], policy.count, policy.delay_ns


def calibrate_clock(samples: int = 20_000) -> TimerCalibration:
    """Median and minimum of ``samples`` back-to-back native clock readings (clock_gettime(CLOCK_MONOTONIC))."""
    from ndis_replay.engine.replay import TimerCalibration

    median, minimum = core().clock_calibration(samples)
    return TimerCalibration(int(median), int(minimum), samples)


def _i64(array: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.ascontiguousarray(array, dtype=np.int64)


@dataclass
class NativeWire:
    """What the native loopback gathered in one captured round: one tuple of frames (one per NB) per packet."""

    packets: list[tuple[bytes, ...]]


class NativeReplayer:
    """Timed rounds of one built-in strategy in the native core: the counterpart of
    :class:`~ndis_replay.engine.replay.StrategyReplayer`'s ``open_timed`` / ``timed_round`` / ``close_timed``,
    with the same outputs (:class:`~ndis_replay.engine.replay.RoundOutcome`) computed the same way.

    ``strategy`` is a registry name in :data:`NATIVE_STRATEGIES`; ``params`` its validated parameters.
    """

    engine = "native"

    def __init__(
        self,
        inp: ReplayInput,
        strategy: str,
        params: StrategyParams,
        completion: CompletionPolicy,
        *,
        pacing: Pacing | None = None,
        from_current_mdl: bool = False,
        miniport_params: MiniportParams | None = None,
        run_calls: int = 1,
    ) -> None:
        from ndis_replay.engine.replay import ASAP, DELAY_IN_FLIGHT

        converted = _params(strategy, params, miniport_params)
        if isinstance(converted, str):
            raise ValueError(converted)
        self.inp = inp
        #: calls per clock reading (engine/replay.py Timing; 1: per call)
        self.run_calls = run_calls
        self.strategy = strategy
        self.completion = completion
        self.pacing = pacing or ASAP
        self._converted = converted
        self._from_current_mdl = from_current_mdl
        in_flight = completion.max_in_flight(inp.max_call)
        self._max_in_flight = max(inp.max_call, DELAY_IN_FLIGHT) if in_flight is None else in_flight
        self.call_of = inp.call_of_packet()
        offsets = self.pacing.offsets(inp)
        self._offsets = None if offsets is None else _i64(offsets)
        self._due = None if offsets is None else np.zeros(inp.calls, dtype=np.int64)
        self._complete = np.full(inp.packets, -1, dtype=np.int64)
        self._t0 = np.zeros(inp.calls, dtype=np.int64)
        self._t1 = np.zeros(inp.calls, dtype=np.int64)
        self._t2 = np.zeros(inp.calls, dtype=np.int64)
        self._engine: Any = None
        #: the tap variant: the device and its far side (None: the loopback)
        self._tap: TapMiniport | None = None
        from ndis_replay.engine.miniports.tap import TapParams

        if isinstance(miniport_params, TapParams):
            from ndis_replay.engine.miniports.tap import TapMiniport

            self._tap = TapMiniport(miniport_params)
            self._tap.expect(inp)
        self.failed = False
        #: counters right after bind (COUNT_FIELDS + GAUGE_FIELDS order)
        self.bound_counters: tuple[int, ...] = ()
        #: the last captured round's wire (``timed_round(capture=True)``)
        self.wire: NativeWire | None = None
        #: counters right after :meth:`close_timed` (drain and unbind counted)
        self.closed_counters: tuple[int, ...] = ()

    def open_timed(self) -> None:
        """Bind the strategy in a fresh native runtime (pools, free lists); it serves every round."""
        c = core()
        kind, count, delay = _completion(self.completion)
        which = c.STRATEGY_REUSE if self.strategy == "reuse" else c.STRATEGY_ALLOC
        if self.strategy in _NDIS5:
            which = getattr(c, _NDIS5[self.strategy])
        if self.strategy in _NDIS6:
            which = getattr(c, _NDIS6[self.strategy])
        inp = self.inp
        self._engine = c.Engine(
            which,
            self._converted,
            kind,
            count,
            delay,
            self._from_current_mdl,
            inp.data,
            _i64(inp.frame_offset),
            _i64(inp.header_len),
            _i64(inp.index),
            _i64(inp.call_start),
            self._max_in_flight,
            _i64(inp.frame_start),
        )
        self.bound_counters = tuple(self._engine.counters())
        if self._tap is not None:
            from ndis_replay.engine.miniports.tap import SKB_OVERHEAD

            self._tap.open_device()
            device, far = self._tap.device, self._tap.far
            assert device is not None and far is not None
            self._engine.attach_tap(device.fd, far.native_log, far.window, far.half, far.budget, SKB_OVERHEAD)

    def counters(self) -> dict[str, int]:
        """Every count and gauge of the native runtime now, by name."""
        if self._engine is None:
            self.open_timed()
        return dict(zip(COUNT_FIELDS + GAUGE_FIELDS, self._engine.counters(), strict=True))

    def timed_round(self, number: int, warmup: bool, *, capture: bool = False) -> RoundOutcome:
        """One round in the core (GIL released); ``capture`` also gathers every NB's bytes into :attr:`wire`
        (differential tests: never in a measured round)."""
        from ndis_replay.engine.replay import exception_finding, finish_round, read_far_side
        from ndis_replay.engine.verifier import Finding

        if self._engine is None:
            self.open_timed()
        engine = self._engine
        n_counts = len(COUNT_FIELDS)
        before = engine.counters()
        error: Finding | None = None
        start = end = 0
        tap = self._tap
        if tap is not None and tap.far is not None:
            tap.far.reset()
        try:
            start, end, wire = engine.round(
                self._t0, self._t1, self._t2, self._complete, self._offsets, self._due, capture, self.run_calls
            )
        except Exception as exc:  # a core failure, the far side's socket or checker (tap): a finding, as in Python
            self.failed = True
            unfinished = np.flatnonzero(self._t2 == 0)
            at = int(self.inp.index[self.inp.call_start[unfinished[0]]]) if len(unfinished) else -1
            error = exception_finding(exc, at, "timed round (native core)")
            wire = None
        if wire is not None:
            data, lengths, nbs = wire
            cuts = np.concatenate(([0], np.cumsum(np.frombuffer(lengths, dtype=np.int64)))).tolist()
            frames = [data[a:b] for a, b in pairwise(cuts)]
            per_packet = np.frombuffer(nbs, dtype=np.int64).tolist()
            packets: list[tuple[bytes, ...]] = []
            position = 0
            for count in per_packet:
                packets.append(tuple(frames[position : position + count]))
                position += count
            self.wire = NativeWire(packets)
        after = engine.counters()
        delivery: dict[str, int] | None = None
        if tap is not None and error is None:
            delivery, error = read_far_side(tap)
        outcome = finish_round(
            self.inp,
            self.call_of,
            number,
            warmup,
            (int(start), int(end)),
            (self._t0, self._t1, self._t2),
            self._complete,
            self._due,
            self.run_calls,
            error,
            dict(
                zip(
                    COUNT_FIELDS, (a - b for a, b in zip(after[:n_counts], before[:n_counts], strict=True)), strict=True
                )
            ),
            dict(zip(GAUGE_FIELDS, after[n_counts:], strict=True)),
            delivery,
        )
        self.failed = self.failed or outcome.error is not None
        return outcome

    def close_timed(self) -> dict[str, int]:
        """Drain and unbind (counted), then the strategy's own counts (pool_growth, failed_sends, …)."""
        if self._engine is None:
            return {}
        engine = self._engine
        stats = {str(k): int(v) for k, v in engine.stats().items()}
        engine.close()
        self.closed_counters = tuple(engine.counters())
        self._engine = None
        if self._tap is not None:
            self._tap.close_device()
        return stats


class NativeBaseline:
    """The native timed loop around a no-op strategy: the native harness floor (three clock readings and the
    stores per call), the measurement overhead reported beside native strategies."""

    engine = "native"

    def __init__(self, inp: ReplayInput, run_calls: int = 1) -> None:
        self.inp = inp
        self.run_calls = run_calls
        self._call_start = _i64(inp.call_start)
        self._call_of = inp.call_of_packet()
        self._complete = np.full(inp.packets, -1, dtype=np.int64)
        self._t = [np.zeros(inp.calls, dtype=np.int64) for _ in range(3)]

    def timed_round(self, number: int, warmup: bool) -> RoundOutcome:
        """One round of the no-op loop."""
        from ndis_replay.engine.replay import floor_round

        a0, a1, a2 = self._t
        start, end = core().baseline_round(self._call_start, a0, a1, a2, self._complete, self.run_calls)
        span = (int(start), int(end))
        return floor_round(self.inp, self._call_of, number, warmup, span, self._t, self._complete, self.run_calls)


__all__ = [
    "ENGINES",
    "NATIVE_STRATEGIES",
    "NativeBaseline",
    "NativeReplayer",
    "NativeWire",
    "available",
    "calibrate_clock",
    "core",
    "import_error",
    "native_name",
    "unsupported_reason",
]
