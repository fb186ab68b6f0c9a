"""Exact operation counts of each built-in strategy on a small trace, derived by hand from the recipes.

The trace: 10 frames of 100, 200, …, 1000 bytes, each with a 54-byte header (Ethernet + IPv4 + TCP), so every
header/payload split gives two non-empty MDLs and every buffer fits one page (1 PFN, the MDL lookaside serves
it). Counts are taken between bind and unbind (``during``) unless the test says otherwise; completion is ``sync``
(inside the send call) unless a test says otherwise, so one descriptor of each kind comes back before the next
send and every lookaside or pool holds one block after the first packet: the first packet misses, the rest hit.

Per-call counts: NdisSendNetBufferLists / NdisSendPackets and the miniport's NdisMSendNetBufferListsComplete are
one DDK call per send call; NDIS 5 completes per packet (NdisMSendComplete), and the loopback sets each packet's
status (NDIS_SET_PACKET_STATUS) in MiniportSendPackets.
"""

from __future__ import annotations

from typing import Any

import pytest

from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.ndis.counters import OpCounters
from ndis_replay.engine.strategies import get_strategy
from tests.engine.driver import Calls, Run, calls_from_frames, replay

SIZES = [100 * (i + 1) for i in range(10)]
HEADER = 54
PACKET_SIZE = k.ndis_packet_size(16)  # 96 up to ProtocolReserved + 16 + OOB 40 + extension 96 → 256
NBL_NB = k.NBL_SIZE + k.NB_SIZE  # 368 + 176 bytes zeroed per NBL handed out with its NB


def sends(batch: int = 1) -> Calls:
    frames = [bytes((i + j) % 251 for j in range(size)) for i, size in enumerate(SIZES)]
    return calls_from_frames(frames, [HEADER] * len(frames), batch)


def during(run: Run) -> OpCounters:
    assert run.counters is not None and run.bound is not None
    assert run.findings == [] and run.bug_check is None
    return run.counters - run.bound


def pick(counters: OpCounters, expected: dict[str, int]) -> dict[str, int]:
    return {name: getattr(counters, name) for name in expected}


def run(name: str, batch: int = 1, completion: str = "sync", **params: Any) -> Run:
    cls = get_strategy(name)
    return replay(cls(cls.Params(**params)), sends(batch), completion)


def test_alloc_single_packet_sends() -> None:
    expected = {
        # per packet: 2 NdisAllocateMdl + NdisAllocateNetBufferAndNetBufferList + NdisSendNetBufferLists
        # + NdisMSendNetBufferListsComplete + NdisFreeNetBufferList + 2 NdisFreeMdl = 8
        "ddk_calls": 80,
        "nbl_allocs": 10,  # one NBL per send…
        "nb_allocs": 10,  # …with its preallocated NB (fAllocateNetBuffer)
        "ctx_allocs": 10,  # ContextSize 16 (the IRP + RefCount of ndisprot)
        "mdl_allocs": 20,  # header MDL + payload MDL
        "mdl_builds": 20,  # NdisAllocateMdl builds each
        "nbl_frees": 10,
        "ctx_frees": 10,
        "mdl_frees": 20,
        "bytes_zeroed": 10 * NBL_NB,
        "bytes_copied": 0,
        # pops and pushes: 2 MDL pops + 1 NBL pop + 1 NBL push + 2 MDL pushes per packet
        "interlocked_ops": 60,
        # the first packet finds the NBL pool and the MDL lookaside empty (1 + 2 misses); then all hits
        "pool_misses": 3,
        "pool_hits": 27,
        "sys_allocs": 3,
        "nbls_sent": 10,
        "nbls_completed": 10,
        "nbl_peak": 1,
        "mdl_peak": 2,
    }
    assert pick(during(run("alloc")), expected) == expected


def test_alloc_without_split_or_context() -> None:
    counters = during(run("alloc", split_header=False, context_size=0))
    # one MDL per packet, no context: 1 + 1 + 1 + 1 + 1 + 1 DDK calls
    assert pick(counters, {"ddk_calls": 0, "mdl_allocs": 0, "ctx_allocs": 0, "interlocked_ops": 0}) == {
        "ddk_calls": 60,
        "mdl_allocs": 10,
        "ctx_allocs": 0,
        "interlocked_ops": 40,
    }


def test_alloc_locked_mdls() -> None:
    counters = during(run("alloc", mdl_source="locked"))
    # IoAllocateMdl + MmProbeAndLockPages per MDL, MmUnlockPages + IoFreeMdl after the NBL: 4 more DDK calls than
    # NdisAllocateMdl/NdisFreeMdl per packet (2 MDLs × 2); one page per MDL locked and unlocked
    assert pick(counters, {"ddk_calls": 0, "pages_locked": 0, "pages_unlocked": 0, "mdl_builds": 0}) == {
        "ddk_calls": 120,
        "pages_locked": 20,
        "pages_unlocked": 20,
        "mdl_builds": 20,
    }


def test_alloc_in_batches_of_5() -> None:
    counters = during(run("alloc", batch=5))
    # 2 send calls: 2 NdisSendNetBufferLists + 2 completions instead of 10 + 10 → 80 - 16 = 64
    assert pick(counters, {"ddk_calls": 0, "nbl_allocs": 0, "nbls_sent": 0, "nbl_peak": 0, "mdl_peak": 0}) == {
        "ddk_calls": 64,
        "nbl_allocs": 10,
        "nbls_sent": 10,
        "nbl_peak": 5,  # a whole call is outstanding at once
        "mdl_peak": 10,
    }
    # 30 pops (10 NBL blocks, 20 MDL blocks): the first call needs 5 + 10 at once from empty lists (15 misses), the
    # second finds them all cached (15 hits)
    assert (counters.pool_misses, counters.pool_hits) == (15, 15)


def test_reuse_allocates_nothing_after_bind() -> None:
    result = run("reuse")
    counters = during(result)
    expected = {
        # per packet: NdisAllocateMdl + NdisSendNetBufferLists + NdisMSendNetBufferListsComplete + NdisFreeMdl
        "ddk_calls": 40,
        "nbl_allocs": 0,
        "nb_allocs": 0,
        "nbl_frees": 0,
        "ctx_allocs": 0,
        "mdl_allocs": 10,
        "mdl_frees": 10,
        "bytes_zeroed": 0,
        "interlocked_ops": 20,  # the MDL lookaside pop and push
        "pool_misses": 1,  # the first MDL
        "pool_hits": 9,
        "nbls_sent": 10,
        "nbls_completed": 10,
    }
    assert pick(counters, expected) == expected
    # bind: NdisAllocateNetBufferListPool + one NBL (sync: max_in_flight = 1)
    assert result.bound is not None
    assert (result.bound.ddk_calls, result.bound.nbl_allocs, result.bound.pool_misses) == (2, 1, 1)


@pytest.mark.parametrize(("batch", "completion", "depth"), [(1, "batched:8", 8), (5, "sync", 5), (5, "batched:8", 12)])
def test_reuse_pool_is_sized_from_the_bind_context(batch: int, completion: str, depth: int) -> None:
    result = run("reuse", batch=batch, completion=completion)
    counters = during(result)
    # max_in_flight = max_call (sync) or N − 1 + max_call (batched:N): all allocated at bind, none after
    assert result.bound is not None and result.bound.nbl_allocs == depth
    assert (counters.nbl_allocs, counters.mdl_allocs) == (0, 10)
    assert result.strategy.stats()["pool_growth"] == 0


def test_reuse_grows_by_counted_allocations_when_the_pool_is_too_small() -> None:
    result = run("reuse", batch=5, pool_depth=2)
    # the first call needs 5 NBLs: 2 from bind, 3 allocated (kept afterwards); the second call finds 5
    assert during(result).nbl_allocs == 3
    assert result.strategy.stats()["pool_growth"] == 3


def test_reuse_with_mdl_reuse_allocates_nothing() -> None:
    counters = during(run("reuse", mdl_reuse=True, header="split"))
    # per packet: 2 × (MmInitializeMdl + MmBuildMdlForNonPagedPool) + send + completion = 6; no MDL freed
    assert pick(counters, {"ddk_calls": 0, "mdl_allocs": 0, "mdl_frees": 0, "mdl_builds": 0, "pool_hits": 0}) == {
        "ddk_calls": 60,
        "mdl_allocs": 0,
        "mdl_frees": 0,
        "mdl_builds": 20,
        "pool_hits": 0,
    }


def test_copy_copies_every_byte_once() -> None:
    counters = during(run("copy"))
    expected = {
        # per packet: MmGetSystemAddressForMdlSafe + NdisMoveMemory + send + completion
        "ddk_calls": 40,
        "bytes_copied": sum(SIZES),
        "nbl_allocs": 0,
        "mdl_allocs": 0,
        "data_allocs": 0,
        "interlocked_ops": 0,
        "pool_hits": 0,
        "pool_misses": 0,
    }
    assert pick(counters, expected) == expected


def test_copy_bind_allocates_buffers_for_the_largest_frame() -> None:
    result = run("copy", batch=5)
    assert result.bound is not None
    # 5 NBLs with NB + MDL + data each (DataSize = 1000, the largest frame; backfill 0)
    assert pick(result.bound, {"nbl_allocs": 0, "mdl_allocs": 0, "data_allocs": 0}) == {
        "nbl_allocs": 5,
        "mdl_allocs": 5,
        "data_allocs": 5,
    }
    pool_block = k.NBL_SIZE + k.NB_SIZE + k.mm_size_of_mdl(0, 1000) + 1000
    assert result.bound.mem_bytes == 5 * pool_block


def test_cache_saves_all_but_the_first_allocation() -> None:
    result = run("cache")
    counters = during(result)
    # packet 0: 2 MDLs + NdisAllocateNetBufferAndNetBufferList + send + completion + 2 NdisFreeMdl = 7;
    # packets 1..9: the same without the allocation (a cache hit) = 6 each → 61
    assert pick(counters, {"ddk_calls": 0, "nbl_allocs": 0, "nbl_frees": 0, "mdl_allocs": 0}) == {
        "ddk_calls": 61,
        "nbl_allocs": 1,
        "nbl_frees": 0,
        "mdl_allocs": 20,
    }
    expected = {"cache_hits": 9, "cache_misses": 1, "frees_avoided": 10, "overflow_frees": 0}
    assert {key: result.strategy.stats()[key] for key in expected} == expected


def test_cache_overflow_falls_back_to_the_pool() -> None:
    result = run("cache", batch=5, cache_depth=2)
    # call 0: 5 misses; its completion caches 2, frees 3; call 1: 2 hits, 3 misses; caches 2, frees 3
    expected = {"cache_hits": 2, "cache_misses": 8, "frees_avoided": 4, "overflow_frees": 6}
    assert {key: result.strategy.stats()[key] for key in expected} == expected
    assert (during(result).nbl_allocs, during(result).nbl_frees) == (8, 6)


def test_ndis5_alloc_single_packet_sends() -> None:
    expected = {
        # NdisAllocatePacket + 2 NdisAllocateBuffer + 2 NdisChainBufferAtBack + NdisSendPackets
        # + NDIS_SET_PACKET_STATUS + NdisMSendComplete + 3 NdisUnchainBufferAtFront (the third finds none)
        # + 2 NdisFreeBuffer + NdisFreePacket = 14 per packet
        "ddk_calls": 140,
        "packet_allocs": 10,
        "packet_frees": 10,
        "buffer_allocs": 20,
        "buffer_frees": 20,
        "mdl_allocs": 0,  # NDIS_BUFFERs are counted as buffers
        "mdl_builds": 20,
        "spinlock_acquires": 20,  # the packet pool's lock: allocate + free
        "interlocked_ops": 40,  # MDL lookaside pop + push per buffer
        "bytes_zeroed": 10 * PACKET_SIZE,
        "pool_hits": 28,  # 10 static descriptors + 18 lookaside hits
        "pool_misses": 2,  # the first packet's two buffers
        "packets_sent": 10,
        "packets_completed": 10,
    }
    assert pick(during(run("ndis5-alloc")), expected) == expected


def test_ndis5_reuse_allocates_nothing_after_bind() -> None:
    expected = {
        # 2 × (MmInitializeMdl + MmBuildMdlForNonPagedPool) + 2 NdisChainBufferAtBack + NdisSendPackets
        # + NDIS_SET_PACKET_STATUS + NdisMSendComplete + 3 NdisUnchainBufferAtFront + NdisReinitializePacket
        # + the OOB reset = 14 per packet
        "ddk_calls": 140,
        "packet_allocs": 0,
        "buffer_allocs": 0,
        "mdl_allocs": 0,
        "mdl_builds": 20,
        "spinlock_acquires": 0,
        "interlocked_ops": 0,
        "bytes_zeroed": 10 * k.NDIS_PACKET_OOB_DATA_SIZE,
        "packets_sent": 10,
    }
    assert pick(during(run("ndis5-reuse")), expected) == expected


def test_ndis5_reuse_freeing_buffers() -> None:
    counters = during(run("ndis5-reuse", keep_buffers=False))
    # NdisAllocateBuffer replaces MmInitializeMdl + MmBuildMdlForNonPagedPool (−2 per packet), plus 2 NdisFreeBuffer
    assert pick(counters, {"ddk_calls": 0, "buffer_allocs": 0, "buffer_frees": 0, "interlocked_ops": 0}) == {
        "ddk_calls": 140,
        "buffer_allocs": 20,
        "buffer_frees": 20,
        "interlocked_ops": 40,
    }


def test_clone_counts_filter_and_upper_protocol() -> None:
    expected = {
        # upper reuse: NdisAllocateMdl, NdisSendNetBufferLists, NdisFreeMdl; filter: NdisAllocateCloneNetBufferList,
        # link (ParentNetBufferList + ChildRefCount), NdisFSendNetBufferLists, unlink, NdisFreeCloneNetBufferList,
        # NdisFSendNetBufferListsComplete; miniport: NdisMSendNetBufferListsComplete → 10 per packet
        "ddk_calls": 100,
        "nbl_allocs": 10,  # the clones (the upper's NBLs were allocated at bind)
        "nb_allocs": 10,  # each clone's NB, preallocated with it (fAllocateNetBuffer filter pool)
        "mdl_allocs": 10,  # the upper's MDL; clones use the original MDLs
        "nbls_sent": 20,  # NdisSendNetBufferLists and NdisFSendNetBufferLists each count the NBL
        "nbls_completed": 10,
        # MDL pop, clone pop, ChildRefCount ++ and −−, clone push, MDL push
        "interlocked_ops": 60,
    }
    assert pick(during(run("clone")), expected) == expected


def test_clone_without_original_mdls_builds_partial_mdls() -> None:
    counters = during(run("clone", use_original_mdls=False))
    # NDIS describes each clone's data with a new MDL (IoAllocateMdl + IoBuildPartialMdl): 1 more MDL per packet
    assert (counters.mdl_allocs, counters.mdl_frees, counters.mdl_builds) == (20, 20, 20)


@pytest.mark.parametrize("name", ["ndis5-alloc", "ndis5-reuse", "alloc", "reuse", "copy", "cache", "clone"])
@pytest.mark.parametrize("completion", ["sync", "batched:8"])
def test_counts_do_not_depend_on_the_verifier(name: str, completion: str) -> None:
    cls = get_strategy(name)
    snapshots = []
    for checked in (False, True):
        result = replay(cls(), sends(batch=3), completion, checked=checked)
        snapshots.append(result.ndis.counters.snapshot())
    assert snapshots[0] == snapshots[1]
