"""Seeded bugs: buggy variants of the built-in strategies, one classic mistake each, caught by the verifier.

Each variant subclasses a built-in strategy and overrides ONE step (the comment ``# BUG:`` marks the mistake).
It replays real packets from the sample traces through the checked runtime and the loopback miniport
(tests.engine.driver, the contract's checked pass). The test asserts the exact rule and packet index of the first
error, that the mistake either corrupts the transmitted bytes (and is flagged no later than the first wrong
packet) or leaves them right (flagged before it could matter), and — the control — that the unmodified built-in
in the same configuration gives no error at all and transmits the trace exactly. An NdisBugCheck (the modelled
system stopping) ends the replay as a finding; the harness itself never raises.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ndis_replay.engine.miniports.loopback import LoopbackParams
from ndis_replay.engine.ndis import (
    Mdl,
    NdisPacket,
    NetBuffer,
    NetBufferList,
    f_send_net_buffer_lists_complete,
    free_net_buffer_list,
    free_net_buffer_list_context,
    free_net_buffer_list_pool,
    io_free_mdl,
    mm_get_system_address_for_mdl_safe,
    move_memory,
    ndis_free_mdl,
)
from ndis_replay.engine.strategies import Strategy
from ndis_replay.engine.strategies.alloc import AllocParams, AllocStrategy
from ndis_replay.engine.strategies.cache import CacheStrategy
from ndis_replay.engine.strategies.clone import CloneStrategy
from ndis_replay.engine.strategies.copy import CopyStrategy
from ndis_replay.engine.strategies.ndis5 import Ndis5ReuseParams, Ndis5ReuseStrategy
from ndis_replay.engine.strategies.reuse import ReuseParams, ReuseStrategy
from ndis_replay.engine.verifier import ERROR
from tests.conftest import SAMPLES
from tests.engine.driver import Calls, load_calls, replay


def _chain(head: NetBufferList | None) -> list[NetBufferList]:
    """The NBLs of a chain the caller still owns (read before it is sent)."""
    out = []
    while head is not None:
        out.append(head)
        head = head.next
    return out


# --- the buggy variants ----------------------------------------------------------------------------------------


class ReuseBeforeCompletion(ReuseStrategy):
    """Puts the NBLs back on its free list as soon as NdisSendNetBufferLists returns."""

    def submit(self, built: object) -> None:
        sent = _chain(built)  # type: ignore[arg-type]
        super().submit(built)
        self._free.extend(reversed(sent))  # BUG: still owned by the miniport until the completion


class CopyDataOffsetNotReset(CopyStrategy):
    """Re-points CurrentMdlOffset at the backfill but leaves DataOffset as the allocation left it (0)."""

    def _prepare(self, nbl: NetBufferList, frame: memoryview) -> None:
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        mdl: Mdl = nb.mdl_chain  # type: ignore[assignment]
        at = self.backfill
        move_memory(self.ndis, mm_get_system_address_for_mdl_safe(self.ndis, mdl)[at : at + len(frame)], frame)
        nb.current_mdl = mdl
        nb.current_mdl_offset = at  # BUG: DataOffset not reset to the backfill
        nb.data_length = len(frame)
        nbl.status = 0


class ReuseNextLeftSet(ReuseStrategy):
    """Takes the NBLs off the completion chain without clearing Next (reset checklist step 1)."""

    def _send_complete(self, completed: NetBufferList) -> None:
        chain: NetBufferList | None = completed
        while chain is not None:
            nbl = chain
            chain = nbl.next  # BUG: Next is never set to NULL
            self._release(nbl)
            self._free.append(nbl)


class Ndis5ReinitLeak(Ndis5ReuseStrategy):
    """Calls NdisReinitializePacket with the buffers still chained."""

    def _unchain(self, packet: NdisPacket) -> None:
        pass  # BUG: the buffer descriptors are never unchained (nor freed)


class CloneParentCompletedEarly(CloneStrategy):
    """Completes the parents upward as soon as their clones are sent."""

    def _filter_send(self, chain: NetBufferList) -> None:
        super()._filter_send(chain)
        f_send_net_buffer_lists_complete(self.ndis, self.filter, chain)  # BUG: children still outstanding


class ReuseCopiesNblStruct(ReuseStrategy):
    """Grows its pool by copying an NBL it has (the OSR 57509 "NdisMoveMemory" approach) instead of allocating."""

    def _grow(self) -> NetBufferList:
        self.pool_growth += 1
        nbl = copy.copy(self._all[0])  # BUG: a struct copy, not NdisAllocateNetBufferAndNetBufferList
        self._all.append(nbl)
        return nbl


class AllocNoSourceHandle(AllocStrategy):
    """Forgets SourceHandle on its fresh NBLs."""

    def _allocate(self, call: object, position: int) -> NetBufferList:
        nbl = super()._allocate(call, position)  # type: ignore[arg-type]
        nbl.source_handle = None  # BUG: SourceHandle not set to the binding handle
        return nbl


class ReuseCurrentMdlStale(ReuseStrategy):
    """Re-points MdlChain but not CurrentMdl."""

    def _prepare(self, nbl: NetBufferList, frame: memoryview, header_len: int) -> None:
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        nb.mdl_chain = self._describe(frame)  # BUG: CurrentMdl left as it was
        nb.current_mdl_offset = nb.data_offset = 0
        nb.data_length = len(frame)
        nbl.status = 0


class AllocStatusReadEarly(AllocStrategy):
    """Reads Status right after NdisSendNetBufferLists, the NDIS 5 habit of checking NdisSend's result."""

    def submit(self, built: object) -> None:
        sent = _chain(built)  # type: ignore[arg-type]
        super().submit(built)
        self.failed_sends += sum(nbl.status != 0 for nbl in sent)  # BUG: Status is unknowable until completion


class Ndis5OobStale(Ndis5ReuseStrategy):
    """Reuses packets without resetting the OOB data the miniport wrote."""

    def _reset_oob(self, packet: NdisPacket) -> None:
        pass  # BUG: NdisReinitializePacket does not reset OOB data


class ReuseRetreatLeak(ReuseStrategy):
    """Prepends the header by retreating, never advances back."""

    def _undo_retreat(self, nbl: NetBufferList, nb: NetBuffer) -> None:
        pass  # BUG: no NdisAdvanceNetBufferDataStart(FreeMdl=TRUE): NDIS's header MDL stays chained


class AllocLockedNoUnlock(AllocStrategy):
    """Frees the locked write MDLs without unlocking them."""

    def _free_write_mdls(self, mdl: Mdl | None) -> None:
        while mdl is not None:
            following = mdl.next
            io_free_mdl(self.ndis, mdl)  # BUG: no MmUnlockPages first
            mdl = following


class CloneWrongFree(CloneStrategy):
    """Frees its clones with NdisFreeNetBufferList."""

    def _free_child(self, child: NetBufferList) -> None:
        free_net_buffer_list(self.ndis, child)  # BUG: a clone needs NdisFreeCloneNetBufferList


class ReusePoolFreedOutstanding(ReuseStrategy):
    """Frees the pool at unbind without freeing its NBLs."""

    def unbind(self) -> None:
        free_net_buffer_list_pool(self.ndis, self.pool)  # BUG: every NBL still allocated


class AllocMdlFreedInFlight(AllocStrategy):
    """Frees the MDLs as soon as the send call returns."""

    def submit(self, built: object) -> None:
        mdls = [nbl.first_net_buffer.mdl_chain for nbl in _chain(built)]  # type: ignore[arg-type, union-attr]
        super().submit(built)
        for mdl in mdls:
            if mdl is not None:
                ndis_free_mdl(self.ndis, mdl)  # BUG: the NBLs describing them are still in flight


class Ndis5ReuseBeforeCompletion(Ndis5ReuseStrategy):
    """Puts the packets back on its free list as soon as NdisSendPackets returns."""

    def submit(self, built: object) -> None:
        super().submit(built)
        self._free.extend(reversed(built))  # type: ignore[call-overload]  # BUG: before ProtocolSendComplete


class AllocUseAfterFree(AllocStrategy):
    """Reads Status after freeing the NBL."""

    def _release(self, nbl: NetBufferList) -> None:
        nb = nbl.first_net_buffer
        mdl = nb.mdl_chain if nb is not None else None
        free_net_buffer_list(self.ndis, nbl)
        if nbl.status:  # BUG: the NBL is back with NDIS (quarantined)
            self.failed_sends += 1
        self._free_write_mdls(mdl)


class AllocFreesPoolContext(AllocStrategy):
    """Frees the context area the allocate call reserved with NdisFreeNetBufferListContext."""

    def _release(self, nbl: NetBufferList) -> None:
        free_net_buffer_list_context(self.ndis, nbl, self.p.context_size)  # BUG: it goes with the NBL
        super()._release(nbl)


class CacheFreedWhileCached(CacheStrategy):
    """Caches a completed NBL and also frees it."""

    def _release(self, nbl: NetBufferList) -> None:
        super()._release(nbl)
        if nbl in self.caches[0]:
            free_net_buffer_list(self.ndis, nbl)  # BUG: freed, yet the cache hands it out again


# --- the catalogue ----------------------------------------------------------------------------------------------

RR = SAMPLES / "request_response.pcapng"  # sends only: trace indices are not positions; headers 42..90 bytes
SMALL = SAMPLES / "small_packets.pcapng"


@dataclass(frozen=True)
class Bug:
    """One seeded bug: the variant, its control (the built-in), how it is replayed, what must be found."""

    id: str
    variant: Callable[[], Strategy]
    control: Callable[[], Strategy]
    rule: str
    #: position (replay order) of the packet whose send call the first error belongs to; -1 = the last packet
    position: int
    #: True: the transmitted bytes are exactly the trace's (flagged before they could go wrong)
    wire_ok: bool
    completion: str = "sync"
    batch: int = 1
    trace: object = RR
    packets: int = 24
    miniport: LoopbackParams | None = None


def _p(cls: type[Strategy], **params: object) -> Callable[[], Strategy]:
    return lambda: cls(cls.Params(**params))


CATALOGUE = [
    Bug("reuse-before-completion", ReuseBeforeCompletion, ReuseStrategy, "OWN-AFTER-SEND", 1, False, "batched:8"),
    Bug(
        "dataoffset-not-reset",
        CopyDataOffsetNotReset,
        CopyStrategy,
        "REUSE-CONSISTENCY",
        0,
        False,
        miniport=LoopbackParams(backfill=16),
    ),
    # batched:8, 8 NBLs handed out in order 0..7; the chain of 8 comes back, NBL 7 (Next = NULL) goes out for
    # packet 8, NBL 6 (Next → NBL 7, in flight) for packet 9: LIST-LINKAGE, then the bug check for the NBL in two lists
    Bug("next-left-set", ReuseNextLeftSet, ReuseStrategy, "LIST-LINKAGE", 9, False, "batched:8"),
    Bug(
        "ndis5-reinitialize-leak",
        _p(Ndis5ReinitLeak, keep_buffers=False),
        _p(Ndis5ReuseStrategy, keep_buffers=False),
        "NDIS5-REINIT-LEAK",
        0,
        True,
    ),
    Bug(
        "parent-completed-with-children",
        CloneParentCompletedEarly,
        CloneStrategy,
        "PARENT-FREED-WITH-CHILDREN",
        0,
        True,
        "deferred",
    ),
    Bug(
        "nbl-struct-copy",
        _p(ReuseCopiesNblStruct, pool_depth=1),
        _p(ReuseStrategy, pool_depth=1),
        "POOL-ORIGIN",
        0,
        False,
        batch=2,
    ),
    Bug("sourcehandle-not-set", AllocNoSourceHandle, AllocStrategy, "SOURCEHANDLE-SET", 0, True),
    Bug(
        "currentmdl-inconsistent",
        ReuseCurrentMdlStale,
        ReuseStrategy,
        "REUSE-CONSISTENCY",
        0,
        False,
        miniport=LoopbackParams(from_current_mdl=True),
    ),
    Bug(
        "status-read-before-completion",
        AllocStatusReadEarly,
        AllocStrategy,
        "STATUS-BEFORE-COMPLETE",
        0,
        True,
        "deferred",
    ),
    Bug("ndis5-stale-oob-status", Ndis5OobStale, Ndis5ReuseStrategy, "NDIS5-OOB-STALE", 1, True),
    # the first five sends are bare TCP segments (header only: nothing to retreat for); the first retreat is for the
    # sixth (trace index 15), and the leak shows when its completion clears MdlChain
    Bug(
        "retreat-without-advance",
        _p(ReuseRetreatLeak, header="retreat"),
        _p(ReuseStrategy, header="retreat"),
        "RETREAT-LEAK",
        5,
        True,
    ),
    Bug(
        "mdl-freed-while-locked",
        _p(AllocLockedNoUnlock, mdl_source="locked"),
        _p(AllocStrategy, mdl_source="locked"),
        "MDL-LOCK-BALANCE",
        0,
        True,
    ),
    Bug("clone-wrong-free-routine", CloneWrongFree, CloneStrategy, "FREE-KIND", 0, True),
    Bug("pool-freed-with-nbls-out", ReusePoolFreedOutstanding, ReuseStrategy, "POOL-FREE-OUTSTANDING", -1, True),
    Bug("mdl-freed-in-flight", AllocMdlFreedInFlight, AllocStrategy, "OWN-AFTER-SEND", 0, True, "deferred"),
    Bug(
        "ndis5-reuse-before-completion",
        Ndis5ReuseBeforeCompletion,
        Ndis5ReuseStrategy,
        "NDIS5-PENDING",
        1,
        False,
        "batched:8",
        trace=SMALL,
    ),
    Bug("nbl-use-after-free", AllocUseAfterFree, AllocStrategy, "UAF-QUARANTINE", 0, True),
    Bug("pool-context-freed", AllocFreesPoolContext, AllocStrategy, "CTX-LIFO", 0, True),
    Bug("cache-frees-cached-nbl", CacheFreedWhileCached, CacheStrategy, "UAF-QUARANTINE", 1, False),
]

_CALLS: dict[tuple[object, int, int], Calls] = {}


def _calls(bug: Bug) -> Calls:
    key = (bug.trace, bug.batch, bug.packets)
    if key not in _CALLS:
        _CALLS[key] = load_calls(bug.trace, bug.batch, limit=bug.packets)  # type: ignore[arg-type]
    return _CALLS[key]


def test_catalogue_covers_the_classic_mistakes() -> None:
    assert len(CATALOGUE) >= 12
    assert len({bug.id for bug in CATALOGUE}) == len(CATALOGUE)
    assert len({bug.rule for bug in CATALOGUE}) >= 12


@pytest.mark.parametrize("bug", CATALOGUE, ids=[bug.id for bug in CATALOGUE])
def test_seeded_bug_is_caught(bug: Bug) -> None:
    calls = _calls(bug)
    run = replay(bug.variant(), calls, bug.completion, miniport=bug.miniport)
    errors = [f for f in run.findings if f.severity == ERROR]
    position = bug.position if bug.position >= 0 else len(calls.frames) + bug.position
    index = calls.indices[position]
    assert (bug.rule, index) in run.rules(), [str(f) for f in errors]
    assert min(f.packet_index for f in errors if f.packet_index >= 0) == index, [str(f) for f in errors]
    mismatch = run.first_wire_mismatch(calls)
    if bug.wire_ok:
        assert mismatch is None
    else:
        assert mismatch is not None
        assert index <= calls.indices[min(mismatch, len(calls.indices) - 1)]


@pytest.mark.parametrize("bug", CATALOGUE, ids=[bug.id for bug in CATALOGUE])
def test_control_is_clean(bug: Bug) -> None:
    """The built-in the bug was seeded into, replayed the same way: no error, the trace's bytes exactly."""
    calls = _calls(bug)
    run = replay(bug.control(), calls, bug.completion, miniport=bug.miniport)
    assert [str(f) for f in run.findings if f.severity == ERROR] == []
    assert run.bug_check is None
    assert run.first_wire_mismatch(calls) is None


def test_bug_check_is_a_finding_not_a_crash() -> None:
    """A variant that makes the modelled system stop (an NBL sent while in flight) ends as findings."""
    run = replay(ReuseBeforeCompletion(), _calls(CATALOGUE[0]), "batched:8")
    assert run.bug_check is not None
    assert run.bug_check.rule == "LIST-LINKAGE"
    assert run.bug_check in run.findings


# Parameters the variants use must exist on the built-ins they were seeded into.
def test_variant_parameters_are_real() -> None:
    assert {"keep_buffers"} <= set(Ndis5ReuseParams.field_docs())
    assert {"header", "pool_depth"} <= set(ReuseParams.field_docs())
    assert {"mdl_source", "context_size"} <= set(AllocParams.field_docs())
