"""Pieces shared by the built-in strategies: header/payload cuts, parameter checks, MDL chains over frames.

Memory model (every built-in): the trace bytes stand for kernel memory the upper layer hands the driver — nonpaged
unless a strategy says otherwise (``alloc`` with ``mdl_source = "locked"`` models the I/O manager's locked IRP MDL
over a user buffer instead, NDIS_MODEL.md §3.1). In checked mode the strategies declare the frames' buffer nonpaged
(:meth:`~ndis_replay.engine.ndis.Ndis.declare_nonpaged`) so NdisAllocateMdl/NdisAllocateBuffer accept them; the
unchecked runtime never asks.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from ndis_replay.engine.ndis import ndis_allocate_mdl, ndis_free_mdl
from ndis_replay.engine.strategies.base import Strategy, StrategyParams
from ndis_replay.errors import ConfigError

if TYPE_CHECKING:
    from ndis_replay.engine.ndis import Mdl, Ndis

#: what ``header``-style parameters accept
HEADER_MODES = ("whole", "split")


def cut(length: int, header_len: int, split: bool) -> int:
    """Where a frame is cut into a header MDL and a payload MDL: ``header_len`` when splitting and both parts are
    non-empty, else 0 (one MDL over the whole frame)."""
    if split and 0 < header_len < length:
        return header_len
    return 0


def declare_frames(ndis: Ndis, frames: Sequence[memoryview]) -> None:
    """Checked mode: the frames' memory is nonpaged kernel memory (see the module docstring)."""
    for frame in frames:
        ndis.declare_nonpaged(frame)


def frame_mdls(ndis: Ndis, frame: memoryview, at: int) -> Mdl:
    """NdisAllocateMdl over the frame, as one MDL (``at`` = 0) or a header MDL chained to a payload MDL."""
    if not at:
        return ndis_allocate_mdl(ndis, frame)
    head = ndis_allocate_mdl(ndis, frame[:at])
    head.next = ndis_allocate_mdl(ndis, frame[at:])
    return head


def free_mdls(ndis: Ndis, mdl: Mdl | None) -> None:
    """NdisFreeMdl every MDL of a chain this driver allocated with NdisAllocateMdl (Next read before each free)."""
    while mdl is not None:
        following = mdl.next
        ndis_free_mdl(ndis, mdl)
        mdl = following


def check_int(name: str, value: object, minimum: int, maximum: int | None = None, multiple: int = 1) -> None:
    """ConfigError unless ``value`` is an int in [minimum, maximum] and a multiple of ``multiple``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "not an integer")
    if value < minimum:
        raise ConfigError(name, value, f"must be ≥ {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, value, f"must be ≤ {maximum}")
    if value % multiple:
        raise ConfigError(name, value, f"must be a multiple of {multiple}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """ConfigError (with the choices) unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(name, value, "not one of the choices", tuple(choices))


class PoolExhausted(RuntimeError):
    """An NDIS 5 packet pool returned NDIS_STATUS_RESOURCES with every static and overflow descriptor out
    (more than 0xFFFF packets in flight): the strategy cannot send without waiting, which the model does not do."""


__all__ = [
    "HEADER_MODES",
    "PoolExhausted",
    "check_choice",
    "check_int",
    "cut",
    "declare_frames",
    "frame_mdls",
    "free_mdls",
]


D = TypeVar("D")


class FreeListStrategy(Strategy, Generic[D]):
    """A strategy that keeps its own free list of descriptors allocated at bind (``reuse``, ``copy``,
    ``ndis5-reuse``): :meth:`_fill` puts ``depth`` of them on the list, the send path pops one, the completion
    pushes it back. A dry list grows by one allocation, counted as ``pool_growth``, never a wait; the list never
    holds more than the most descriptors in flight plus one send call.
    """

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        #: descriptors allocated after bind because the free list ran dry
        self.pool_growth = 0
        #: sends the model refused (counted, the packet is dropped as a driver would)
        self.failed_sends = 0
        #: descriptors allocated since construction (bind depth + growth)
        self.pool_size = 0
        self._free: list[D] = []

    @abstractmethod
    def _allocate(self) -> D:
        """One descriptor for the free list, ready to be re-pointed by the send path."""

    def _new(self) -> D:
        self.pool_size += 1
        return self._allocate()

    def _fill(self, depth: int) -> None:
        """``depth`` descriptors on the free list; ``pop()`` hands out the first allocated first (deterministic)."""
        for _ in range(depth):
            self._free.append(self._new())
        self._free.reverse()

    def _grow(self) -> D:
        """The free list ran dry (more in flight than the pool depth): one more descriptor, counted; it joins the
        free list on completion."""
        self.pool_growth += 1
        return self._new()

    def stats(self) -> dict[str, int]:
        """``pool_growth``, ``failed_sends`` and ``pool_size``."""
        return {"pool_growth": self.pool_growth, "failed_sends": self.failed_sends, "pool_size": self.pool_size}
