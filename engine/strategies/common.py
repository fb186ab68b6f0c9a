"""Pieces shared by the built-in strategies: header/payload cuts, parameter checks, MDL chains over frames.

Memory model (every built-in): the trace bytes stand for kernel memory the upper layer hands the driver — nonpaged
unless a strategy says otherwise (``alloc`` with ``mdl_source = "locked"`` models the I/O manager's locked IRP MDL
over a user buffer instead, NDIS_MODEL.md §3.1). In checked mode the strategies declare the frames' buffer nonpaged
(:meth:`~ndis_replay.engine.ndis.Ndis.declare_nonpaged`) so NdisAllocateMdl/NdisAllocateBuffer accept them; the
unchecked runtime never asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ndis_replay.engine.ndis import ndis_allocate_mdl, ndis_free_mdl
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
