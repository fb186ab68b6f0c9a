"""NET_BUFFER_LIST / NET_BUFFER calls: semantics and exact operation counts (both runtime modes count the same)."""

from __future__ import annotations

import pytest

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NetBufferListPoolParameters,
    NetBufferPoolParameters,
    advance_net_buffer_data_start,
    advance_net_buffer_list_data_start,
    allocate_clone_net_buffer_list,
    allocate_fragment_net_buffer_list,
    allocate_net_buffer,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list,
    allocate_net_buffer_list_context,
    allocate_net_buffer_list_pool,
    allocate_net_buffer_mdl_and_data,
    allocate_net_buffer_pool,
    allocate_reassembled_net_buffer_list,
    copy_from_net_buffer_to_net_buffer,
    copy_send_net_buffer_list_info,
    free_clone_net_buffer_list,
    free_fragment_net_buffer_list,
    free_net_buffer,
    free_net_buffer_list,
    free_net_buffer_list_context,
    free_net_buffer_list_pool,
    free_net_buffer_pool,
    free_reassembled_net_buffer_list,
    gather_net_buffer,
    gather_net_buffer_list,
    get_pool_from_net_buffer_list,
    io_allocate_mdl,
    io_free_mdl,
    link_child_net_buffer_list,
    net_buffer_list_context_data_size,
    net_buffer_list_context_data_start,
    retreat_net_buffer_data_start,
    retreat_net_buffer_list_data_start,
    unlink_child_net_buffer_list,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.ndis.pools import NetBufferListPool
from tests.engine.test_gather import FRAME, mdl_chain

SEND = NetBufferListPoolParameters(context_size=16, f_allocate_net_buffer=True, name="send")


def send_pool(ndis: Ndis, params: NetBufferListPoolParameters = SEND) -> NetBufferListPool:
    pool = allocate_net_buffer_list_pool(ndis, params)
    assert pool is not None
    return pool


def counts(ndis: Ndis, *names: str) -> tuple[int, ...]:
    return tuple(getattr(ndis.counters, name) for name in names)


# --- pools and NBL allocation ----------------------------------------------------------------------------------


def test_allocate_nbl_and_nb_counts_exactly(any_ndis: Ndis) -> None:
    """The brief's example: fAllocateNetBuffer pool with ContextSize 16."""
    ndis = any_ndis
    pool = send_pool(ndis)
    mdl = mdl_chain(ndis, [100])[0]
    before = ndis.counters.copy()
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool, 16, 0, mdl, 0, 100)
    d = ndis.counters - before
    assert (d.ddk_calls, d.nbl_allocs, d.nb_allocs, d.ctx_allocs) == (1, 1, 1, 1)
    assert (d.pool_misses, d.pool_hits, d.sys_allocs, d.interlocked_ops) == (1, 0, 1, 1)
    assert d.bytes_zeroed == k.NBL_SIZE + k.NB_SIZE
    assert d.mem_bytes == 368 + 176 + 16 + 16 == pool.block_size
    nb = nbl.first_net_buffer
    assert nb is not None
    assert (nb.mdl_chain, nb.current_mdl, nb.data_offset, nb.data_length, nb.current_mdl_offset) == (
        mdl,
        mdl,
        0,
        100,
        0,
    )
    assert nbl.ndis_pool_handle is pool and get_pool_from_net_buffer_list(ndis, nbl) is pool
    assert net_buffer_list_context_data_size(nbl) == 16
    assert nbl.next is None and nbl.status == 0 and nbl.source_handle is None
    free_net_buffer_list(ndis, nbl)
    d = ndis.counters - before
    assert (d.nbl_frees, d.nb_frees, d.ctx_frees, d.interlocked_ops, d.sys_frees) == (1, 1, 1, 2, 0)
    assert d.mem_bytes == pool.block_size  # the block stays in the pool's lookaside
    again = allocate_net_buffer_and_net_buffer_list(ndis, pool, 16, 0, mdl, 0, 100)
    d = ndis.counters - before
    assert (d.pool_hits, d.pool_misses, d.sys_allocs) == (1, 1, 1)
    assert (ndis.counters.nbl_outstanding, ndis.counters.nbl_peak) == (1, 1)
    free_net_buffer_list(ndis, again)
    free_net_buffer_list_pool(ndis, pool)
    assert ndis.counters.mem_bytes == k.MDL_FIXED_BLOCK_SIZE  # only the MDL lookaside's block is left
    io_free_mdl(ndis, mdl)


def test_reused_nbl_is_reinitialised(ndis: Ndis) -> None:
    pool = send_pool(ndis)
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool)
    nbl.status = k.NDIS_STATUS_FAILURE
    nbl.net_buffer_list_info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = "csum"
    nbl.source_handle = ndis.binding_handle
    nbl.child_ref_count = 0
    free_net_buffer_list(ndis, nbl)
    again = allocate_net_buffer_and_net_buffer_list(ndis, pool)
    assert again is nbl  # LIFO lookaside, unchecked mode reuses the block
    assert again.status == 0 and again.source_handle is None
    assert again.net_buffer_list_info == [None] * k.MAX_NET_BUFFER_LIST_INFO


def test_checked_mode_never_reuses_a_freed_block_but_counts_a_hit(checked: Ndis) -> None:
    pool = send_pool(checked)
    first = allocate_net_buffer_and_net_buffer_list(checked, pool)
    free_net_buffer_list(checked, first)
    second = allocate_net_buffer_and_net_buffer_list(checked, pool)
    assert second is not first
    assert (checked.counters.pool_hits, checked.counters.pool_misses) == (1, 1)
    assert first in checked.quarantine


def test_verify_flag_pool_never_caches(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(
        ndis, NetBufferListPoolParameters(f_allocate_net_buffer=True, flags=k.NET_BUFFER_LIST_POOL_FLAG_VERIFY)
    )
    for _ in range(3):
        free_net_buffer_list(ndis, allocate_net_buffer_list(ndis, pool))
    assert counts(ndis, "pool_misses", "pool_hits", "sys_allocs", "sys_frees", "mem_bytes") == (3, 0, 3, 3, 0)


@pytest.mark.parametrize(
    "params",
    [
        NetBufferListPoolParameters(context_size=8),
        NetBufferListPoolParameters(data_size=100),
        NetBufferListPoolParameters(context_size=-16),
    ],
    ids=["context-not-aligned", "data-without-nb", "negative"],
)
def test_invalid_pool_parameters_give_null(ndis: Ndis, params: NetBufferListPoolParameters) -> None:
    assert allocate_net_buffer_list_pool(ndis, params) is None


def test_data_size_pool_preallocates_nb_mdl_and_data(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis, NetBufferListPoolParameters(f_allocate_net_buffer=True, data_size=2048, name="copy"))
    assert pool.block_size == 368 + 176 + 48 + 8 + 2048
    nbl = allocate_net_buffer_list(ndis, pool)
    nb = nbl.first_net_buffer
    assert nb is not None and nb.mdl_chain is not None
    assert (nb.data_offset, nb.data_length, nb.mdl_chain.byte_count) == (0, 2048, 2048)
    assert counts(ndis, "nbl_allocs", "nb_allocs", "mdl_allocs", "data_allocs", "sys_allocs") == (1, 1, 1, 1, 1)
    nb.mdl_chain.data[:4] = b"abcd"  # nonpaged, writable
    nb.data_length = 4
    assert gather_net_buffer(nb) == b"abcd"
    free_net_buffer_list(ndis, nbl)
    assert counts(ndis, "nbl_frees", "nb_frees", "mdl_frees", "data_frees") == (1, 1, 1, 1)
    free_net_buffer_list_pool(ndis, pool)
    assert ndis.counters.mem_bytes == 0
    if ndis.verifier is not None:
        assert ndis.verifier.finish() == []


def test_standalone_net_buffers(any_ndis: Ndis) -> None:
    ndis = any_ndis
    nbl_pool = send_pool(ndis, NetBufferListPoolParameters(name="bare"))
    nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters(name="nbs"))
    assert nb_pool is not None
    mdls = mdl_chain(ndis, [30, 70])
    nbl = allocate_net_buffer_list(ndis, nbl_pool)
    assert nbl.first_net_buffer is None
    first = allocate_net_buffer(ndis, nb_pool, mdls[0], 10, 20)
    second = allocate_net_buffer(ndis, nb_pool, mdls[1], 5, 60)
    assert (first.current_mdl, first.current_mdl_offset) == (mdls[0], 10)
    nbl.first_net_buffer = first
    first.next = second
    assert gather_net_buffer_list(nbl) == [FRAME[10:30], FRAME[35:95]]
    nbl.first_net_buffer = None
    free_net_buffer(ndis, second)
    free_net_buffer(ndis, first)
    free_net_buffer_list(ndis, nbl)
    assert counts(ndis, "nb_allocs", "nb_frees", "nbl_allocs", "bytes_zeroed") == (2, 2, 1, 368 + 2 * 176)
    free_net_buffer_pool(ndis, nb_pool)
    free_net_buffer_list_pool(ndis, nbl_pool)
    for mdl in mdls:
        io_free_mdl(ndis, mdl)
    if ndis.verifier is not None:
        assert ndis.verifier.finish() == []


def test_net_buffer_mdl_and_data(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters(data_size=1600))
    assert pool is not None
    nb = allocate_net_buffer_mdl_and_data(ndis, pool)
    assert nb.data_length == 1600 and nb.mdl_chain is not None and nb.current_mdl is nb.mdl_chain
    assert counts(ndis, "nb_allocs", "mdl_allocs", "data_allocs", "mem_bytes") == (1, 1, 1, 176 + 48 + 8 + 1600)
    free_net_buffer(ndis, nb)
    assert counts(ndis, "nb_frees", "mdl_frees", "data_frees") == (1, 1, 1)
    assert ndis.counters.nb_outstanding == 0


# --- contexts ---------------------------------------------------------------------------------------------------


def test_context_fits_in_the_preallocated_area(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis, NetBufferListPoolParameters(context_size=64, f_allocate_net_buffer=True))
    nbl = allocate_net_buffer_list(ndis, pool, 16)
    ctx = nbl.context
    assert ctx is not None and (ctx.size, ctx.offset) == (64, 48)
    assert allocate_net_buffer_list_context(ndis, nbl, 32) == k.NDIS_STATUS_SUCCESS
    assert nbl.context is ctx and ctx.offset == 16
    net_buffer_list_context_data_start(nbl)[:4] = b"IRP!"
    assert bytes(ctx.context_data[16:20]) == b"IRP!"
    assert counts(ndis, "ctx_allocs", "sys_allocs") == (2, 1)  # one block, no extra context memory
    free_net_buffer_list_context(ndis, nbl, 32)
    assert ctx.offset == 48 and ndis.counters.ctx_frees == 1
    free_net_buffer_list(ndis, nbl)
    assert counts(ndis, "ctx_allocs", "ctx_frees") == (2, 2)
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_context_beyond_the_preallocated_area_links_a_new_one(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis)
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool, 16)
    base = nbl.context
    before = ndis.counters.copy()
    allocate_net_buffer_list_context(ndis, nbl, 24, 8)
    head = nbl.context
    assert head is not base and head is not None and head.next is base
    assert (head.size, head.offset) == (32, 8)
    assert net_buffer_list_context_data_size(nbl) == 24
    d = ndis.counters - before
    assert (d.ctx_allocs, d.sys_allocs, d.mem_bytes) == (1, 1, 16 + 32)
    free_net_buffer_list_context(ndis, nbl, 24)
    assert nbl.context is base
    d = ndis.counters - before
    assert (d.ctx_frees, d.sys_frees, d.mem_bytes) == (1, 1, 0)
    free_net_buffer_list(ndis, nbl)
    assert ndis.counters.ctx_outstanding == 0


def test_allocate_call_context_larger_than_the_pool_area(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis)
    nbl = allocate_net_buffer_list(ndis, pool, 48, 16)
    ctx = nbl.context
    assert ctx is not None and (ctx.size, ctx.offset) == (64, 16)
    assert counts(ndis, "ctx_allocs", "sys_allocs") == (1, 2)
    free_net_buffer_list(ndis, nbl)
    assert counts(ndis, "ctx_frees", "sys_frees") == (1, 1)
    assert ndis.counters.mem_bytes == pool.block_size


# --- retreat and advance -----------------------------------------------------------------------------------------


def _nb_over(ndis: Ndis, sizes: list[int], offset: int, length: int) -> tuple[object, list[Mdl]]:
    pool = send_pool(ndis)
    mdls = mdl_chain(ndis, sizes)
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, mdls[0], offset, length)
    return nbl, mdls


@pytest.mark.parametrize(
    ("sizes", "offset", "delta"),
    [([100], 40, 14), ([100], 14, 14), ([20, 80], 34, 20), ([20, 80], 34, 34)],
    ids=["one-mdl", "exact", "back-into-first", "to-the-start"],
)
def test_retreat_within_backfill_allocates_nothing(any_ndis: Ndis, sizes: list[int], offset: int, delta: int) -> None:
    ndis = any_ndis
    nbl, mdls = _nb_over(ndis, sizes, offset, sum(sizes) - offset)
    nb = nbl.first_net_buffer  # type: ignore[attr-defined]
    before = ndis.counters.copy()
    assert retreat_net_buffer_data_start(ndis, nb, delta) == k.NDIS_STATUS_SUCCESS
    assert (nb.data_offset, nb.data_length) == (offset - delta, sum(sizes) - offset + delta)
    assert gather_net_buffer(nb) == FRAME[offset - delta : sum(sizes)]
    assert gather_net_buffer(nb, from_current_mdl=True) == FRAME[offset - delta : sum(sizes)]
    d = ndis.counters - before
    assert (d.ddk_calls, d.mdl_allocs, d.data_allocs, d.sys_allocs) == (1, 0, 0, 0)
    advance_net_buffer_data_start(ndis, nb, delta, True)
    assert (nb.data_offset, nb.current_mdl, nb.current_mdl_offset) == (offset, *_walk(mdls, offset))
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def _walk(mdls: list[Mdl], offset: int) -> tuple[Mdl, int]:
    for mdl in mdls:
        if offset < mdl.byte_count or mdl is mdls[-1]:
            return mdl, offset
        offset -= mdl.byte_count
    raise AssertionError


@pytest.mark.parametrize(
    ("offset", "delta", "backfill"),
    [(0, 14, 0), (0, 14, 32), (6, 14, 16)],
    ids=["no-backfill", "with-databackfill", "partial-backfill"],
)
def test_retreat_beyond_backfill_chains_a_new_mdl_and_advance_frees_it(
    any_ndis: Ndis, offset: int, delta: int, backfill: int
) -> None:
    ndis = any_ndis
    nbl, mdls = _nb_over(ndis, [100], offset, 100 - offset)
    nb = nbl.first_net_buffer  # type: ignore[attr-defined]
    before = ndis.counters.copy()
    assert retreat_net_buffer_data_start(ndis, nb, delta, backfill) == k.NDIS_STATUS_SUCCESS
    size = delta - offset + backfill  # = delta + DataBackFill when there was no backfill at all
    head = nb.mdl_chain
    assert head is not mdls[0] and head.next is mdls[0] and head.byte_count == size
    assert (nb.data_offset, nb.data_length, nb.current_mdl, nb.current_mdl_offset) == (
        backfill,
        100 - offset + delta,
        head,
        backfill,
    )
    head.data[backfill : backfill + delta - offset] = b"H" * (delta - offset)
    assert gather_net_buffer(nb) == b"H" * (delta - offset) + FRAME[:100]
    d = ndis.counters - before
    assert (d.mdl_allocs, d.data_allocs, d.mdl_builds, d.sys_allocs) == (1, 1, 1, 2)  # MDL (lookaside miss) + buffer
    assert d.mem_bytes == k.MDL_FIXED_BLOCK_SIZE + size
    if ndis.verifier is not None:
        warnings = [f for f in ndis.verifier.findings if f.rule == "RETREAT-ALLOC"]
        assert len(warnings) == 1 and warnings[0].severity == "warning" and ndis.verifier.ok
    advance_net_buffer_data_start(ndis, nb, delta, True)
    assert (nb.mdl_chain, nb.data_offset, nb.data_length) == (mdls[0], offset, 100 - offset)
    assert nb.current_mdl is mdls[0] and nb.current_mdl_offset == offset
    d = ndis.counters - before
    assert (d.mdl_frees, d.data_frees, d.mem_bytes) == (1, 1, k.MDL_FIXED_BLOCK_SIZE)


def test_retreat_with_a_net_allocate_mdl_handler(any_ndis: Ndis) -> None:
    ndis = any_ndis
    nbl, mdls = _nb_over(ndis, [50], 0, 50)
    nb = nbl.first_net_buffer  # type: ignore[attr-defined]
    mine: list[Mdl] = []

    def allocate(size: int) -> Mdl:
        mdl = io_allocate_mdl(ndis, memoryview(bytearray(size)))
        mine.append(mdl)
        return mdl

    assert retreat_net_buffer_data_start(ndis, nb, 8, 0, allocate) == k.NDIS_STATUS_SUCCESS
    assert nb.mdl_chain is mine[0] and ndis.counters.data_allocs == 0
    advance_net_buffer_data_start(ndis, nb, 8, True, lambda mdl: io_free_mdl(ndis, mdl))
    assert nb.mdl_chain is mdls[0] and ndis.counters.mdl_outstanding == 1
    assert retreat_net_buffer_data_start(ndis, nb, 8, 0, lambda size: None) == k.NDIS_STATUS_RESOURCES
    assert nb.data_length == 50


def test_advance_without_free_mdl_keeps_the_retreat_mdl(any_ndis: Ndis) -> None:
    ndis = any_ndis
    nbl, mdls = _nb_over(ndis, [40, 60], 0, 100)
    nb = nbl.first_net_buffer  # type: ignore[attr-defined]
    retreat_net_buffer_data_start(ndis, nb, 10)
    advance_net_buffer_data_start(ndis, nb, 55, False)
    assert nb.mdl_chain is not mdls[0] and (nb.data_offset, nb.data_length) == (55, 55)
    assert (nb.current_mdl, nb.current_mdl_offset) == (mdls[1], 5)
    assert gather_net_buffer(nb) == FRAME[45:100]
    assert ndis.counters.mdl_outstanding == 3


def test_nbl_retreat_and_advance_apply_to_every_nb(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis, NetBufferListPoolParameters())
    nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters())
    assert nb_pool is not None
    mdls = mdl_chain(ndis, [50, 50])
    nbl = allocate_net_buffer_list(ndis, pool)
    nbl.first_net_buffer = first = allocate_net_buffer(ndis, nb_pool, mdls[0], 10, 40)
    first.next = second = allocate_net_buffer(ndis, nb_pool, mdls[1], 5, 45)
    before = ndis.counters.copy()
    assert retreat_net_buffer_list_data_start(ndis, nbl, 8) == k.NDIS_STATUS_SUCCESS
    assert (first.data_offset, second.data_offset) == (2, 0)
    assert second.mdl_chain is not mdls[1]  # the second NB had only 5 bytes of backfill
    advance_net_buffer_list_data_start(ndis, nbl, 8, True)
    assert (first.data_offset, second.data_offset, second.mdl_chain) == (10, 5, mdls[1])
    d = ndis.counters - before
    assert (d.ddk_calls, d.mdl_allocs, d.mdl_frees) == (2, 1, 1)


# --- derived NBLs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [0, k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS], ids=["new-mdls", "original-mdls"])
def test_clone(any_ndis: Ndis, flags: int) -> None:
    ndis = any_ndis
    pool = send_pool(ndis)
    clones = send_pool(ndis, NetBufferListPoolParameters(name="clones"))
    mdls = mdl_chain(ndis, [14, 20, 66])
    original = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, mdls[0], 4, 90)
    before = ndis.counters.copy()
    clone = allocate_clone_net_buffer_list(ndis, original, clones, None, flags)
    assert clone is not None
    assert gather_net_buffer_list(clone) == [FRAME[4:94]]
    assert clone.parent_net_buffer_list is None and original.child_ref_count == 0  # the caller links them
    assert clone.context is None
    nb = clone.first_net_buffer
    assert nb is not None
    d = ndis.counters - before
    if flags:
        assert nb.mdl_chain is mdls[0] and nb.data_offset == 4
        assert (d.nbl_allocs, d.nb_allocs, d.mdl_allocs, d.bytes_copied) == (1, 1, 0, 0)
    else:
        assert nb.data_offset == 0 and nb.mdl_chain is not mdls[0]
        assert (d.nbl_allocs, d.nb_allocs, d.mdl_allocs, d.mdl_builds, d.bytes_copied) == (1, 1, 3, 3, 0)
    link_child_net_buffer_list(ndis, clone, original)
    assert clone.parent_net_buffer_list is original and original.child_ref_count == 1
    assert unlink_child_net_buffer_list(ndis, clone) is original and original.child_ref_count == 0
    free_clone_net_buffer_list(ndis, clone, flags)
    d = ndis.counters - before
    # pop + push for the NBL, for the NB (NDIS's NB pool), for each derived MDL; increment + decrement
    interlocked = 2 + 2 + (0 if flags else 2 * 3) + 2
    assert (d.nbl_outstanding, d.nb_outstanding, d.mdl_outstanding, d.interlocked_ops) == (0, 0, 0, interlocked)
    assert gather_net_buffer_list(original) == [FRAME[4:94]]
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_fragment(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis)
    mdls = mdl_chain(ndis, [100, 150])
    original = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, mdls[0], 0, 250)
    before = ndis.counters.copy()
    fragment = allocate_fragment_net_buffer_list(ndis, original, None, None, 14, 100, 20, 0)
    assert fragment is not None
    frames = gather_net_buffer_list(fragment)
    assert [len(f) for f in frames] == [120, 120, 56]
    assert [f[20:] for f in frames] == [FRAME[14:114], FRAME[114:214], FRAME[214:250]]
    d = ndis.counters - before
    # 3 NBs; source segments 14..100 | 100..114, 114..214, 214..250 → 4 derived MDLs; 3 header MDLs + buffers
    assert (d.nbl_allocs, d.nb_allocs, d.mdl_allocs, d.data_allocs) == (1, 3, 4 + 3, 3)
    assert allocate_fragment_net_buffer_list(ndis, original, None, None, 0, 0, 0) is None
    free_fragment_net_buffer_list(ndis, fragment, 20)
    d = ndis.counters - before
    assert (d.nbl_outstanding, d.nb_outstanding, d.mdl_outstanding, d.data_outstanding) == (0, 0, 0, 0)
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_reassembled(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis, NetBufferListPoolParameters())
    nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters())
    assert nb_pool is not None
    mdls = mdl_chain(ndis, [60, 60, 60])
    fragments = allocate_net_buffer_list(ndis, pool)
    nbs = [allocate_net_buffer(ndis, nb_pool, mdl, 0, 60) for mdl in mdls]
    fragments.first_net_buffer = nbs[0]
    nbs[0].next, nbs[1].next = nbs[1], nbs[2]
    reassembled = allocate_reassembled_net_buffer_list(ndis, fragments, None, 20, 0)
    assert reassembled is not None
    assert gather_net_buffer_list(reassembled) == [FRAME[20:60] + FRAME[80:120] + FRAME[140:180]]
    free_reassembled_net_buffer_list(ndis, reassembled, 0)
    assert ndis.counters.mdl_outstanding == 3 and ndis.counters.nbl_outstanding == 1


def test_copy_from_net_buffer_to_net_buffer(any_ndis: Ndis) -> None:
    ndis = any_ndis
    copy_pool = send_pool(ndis, NetBufferListPoolParameters(f_allocate_net_buffer=True, data_size=200))
    pool = send_pool(ndis)
    mdls = mdl_chain(ndis, [30, 70])
    source = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, mdls[0], 10, 90)
    destination = allocate_net_buffer_list(ndis, copy_pool)
    dst, src = destination.first_net_buffer, source.first_net_buffer
    assert dst is not None and src is not None
    assert copy_from_net_buffer_to_net_buffer(ndis, dst, 0, 90, src, 0) == 90
    dst.data_length = 90
    assert gather_net_buffer(dst) == FRAME[10:100]
    assert ndis.counters.bytes_copied == 90


def test_unlink_returns_parent_only_at_zero(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis)
    parent = allocate_net_buffer_and_net_buffer_list(ndis, pool)
    children = [allocate_clone_net_buffer_list(ndis, parent) for _ in range(3)]
    for child in children:
        assert child is not None
        link_child_net_buffer_list(ndis, child, parent)
    results = [unlink_child_net_buffer_list(ndis, child) for child in children if child is not None]
    assert results == [None, None, parent]


def test_copy_send_net_buffer_list_info(any_ndis: Ndis) -> None:
    ndis = any_ndis
    pool = send_pool(ndis)
    source = allocate_net_buffer_and_net_buffer_list(ndis, pool)
    clone = allocate_clone_net_buffer_list(ndis, source)
    assert clone is not None
    source.net_buffer_list_info[k.IEEE8021Q_NET_BUFFER_LIST_INFO] = 42
    copy_send_net_buffer_list_info(ndis, clone, source)
    assert clone.net_buffer_list_info[k.IEEE8021Q_NET_BUFFER_LIST_INFO] == 42
    assert clone.net_buffer_list_info is not source.net_buffer_list_info
