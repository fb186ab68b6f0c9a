"""MDL and memory calls: lookaside counting, locking, partial MDLs, NdisAllocateMdl, NdisAllocateMemory."""

from __future__ import annotations

import pytest

from ndis_replay.engine.ndis import (
    Ndis,
    allocate_memory_with_tag_priority,
    free_memory,
    io_allocate_mdl,
    io_build_partial_mdl,
    io_free_mdl,
    mm_build_mdl_for_non_paged_pool,
    mm_get_system_address_for_mdl_safe,
    mm_initialize_mdl,
    mm_probe_and_lock_pages,
    mm_unlock_pages,
    move_memory,
    ndis_allocate_mdl,
    ndis_free_mdl,
    zero_memory,
)
from ndis_replay.engine.ndis import constants as k


def test_io_allocate_mdl_uses_the_fixed_size_lookaside(any_ndis: Ndis) -> None:
    ndis = any_ndis
    c = ndis.counters
    data = memoryview(bytes(1500))
    mdl = io_allocate_mdl(ndis, data, page_offset=3000)
    assert (mdl.byte_count, mdl.byte_offset, mdl.size) == (1500, 3000, 48 + 8 * 2)
    assert mdl.mdl_flags == k.MDL_ALLOCATED_FIXED_SIZE
    assert (c.mdl_allocs, c.pool_misses, c.pool_hits, c.sys_allocs, c.interlocked_ops) == (1, 1, 0, 1, 1)
    assert c.mem_bytes == k.MDL_FIXED_BLOCK_SIZE
    io_free_mdl(ndis, mdl)
    assert (c.mdl_frees, c.interlocked_ops, c.sys_frees, c.mem_bytes) == (1, 2, 0, k.MDL_FIXED_BLOCK_SIZE)
    again = io_allocate_mdl(ndis, data[:100])
    assert (c.pool_hits, c.pool_misses, c.interlocked_ops) == (1, 1, 3)
    assert again.byte_count == 100 and again.next is None
    assert c.mdl_outstanding == 1 and c.mdl_peak == 1
    assert c.ddk_calls == 3


def test_big_mdl_is_a_system_allocation(any_ndis: Ndis) -> None:
    ndis = any_ndis
    c = ndis.counters
    big = io_allocate_mdl(ndis, memoryview(bytes(24 * k.PAGE_SIZE)))
    assert big.size == 48 + 8 * 24 and big.mdl_flags == 0
    assert (c.sys_allocs, c.pool_hits, c.pool_misses, c.interlocked_ops, c.mem_bytes) == (1, 0, 0, 0, big.size)
    io_free_mdl(ndis, big)
    assert (c.sys_frees, c.mem_bytes) == (1, 0)


def test_probe_and_lock_counts_pages(any_ndis: Ndis) -> None:
    ndis = any_ndis
    c = ndis.counters
    mdl = io_allocate_mdl(ndis, memoryview(bytes(9000)), page_offset=100)
    mm_probe_and_lock_pages(ndis, mdl, k.KERNEL_MODE, k.IO_READ_ACCESS)
    assert mdl.mdl_flags & k.MDL_PAGES_LOCKED
    assert (c.pages_locked, c.mdl_builds) == (3, 1)
    mm_unlock_pages(ndis, mdl)
    assert not mdl.mdl_flags & k.MDL_PAGES_LOCKED
    assert c.pages_unlocked == 3
    io_free_mdl(ndis, mdl)
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_build_for_nonpaged_and_ndis_allocate_mdl(any_ndis: Ndis) -> None:
    ndis = any_ndis
    c = ndis.counters
    memory = allocate_memory_with_tag_priority(ndis, 2000)
    assert (c.data_allocs, c.sys_allocs, c.mem_bytes) == (1, 1, 2000)
    mdl = io_allocate_mdl(ndis, memory)
    mm_build_mdl_for_non_paged_pool(ndis, mdl)
    assert mdl.mdl_flags & k.MDL_SOURCE_IS_NONPAGED_POOL and c.mdl_builds == 1
    other = ndis_allocate_mdl(ndis, memory[100:200])
    assert other.byte_count == 100 and c.mdl_builds == 2 and c.mdl_allocs == 2
    ndis_free_mdl(ndis, other)
    io_free_mdl(ndis, mdl)
    free_memory(ndis, memory)
    assert (c.data_frees, c.mdl_frees) == (1, 2)
    assert c.mem_bytes == 2 * k.MDL_FIXED_BLOCK_SIZE  # two were out at once; the lookaside keeps both blocks
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_partial_mdl_describes_part_of_the_source(any_ndis: Ndis) -> None:
    ndis = any_ndis
    source = io_allocate_mdl(ndis, memoryview(bytes(range(200))), page_offset=4000)
    target = io_allocate_mdl(ndis, memoryview(bytes(200)))
    io_build_partial_mdl(ndis, source, target, 90, 20)
    assert bytes(target.data) == bytes(range(90, 110))
    assert (target.byte_count, target.byte_offset) == (20, (4000 + 90) % k.PAGE_SIZE)
    assert target.mdl_flags & k.MDL_PARTIAL
    assert bytes(mm_get_system_address_for_mdl_safe(ndis, target)) == bytes(range(90, 110))
    assert target.mdl_flags & k.MDL_PARTIAL_HAS_BEEN_MAPPED
    assert ndis.counters.mdl_builds == 1


def test_mm_initialize_mdl_allocates_nothing(any_ndis: Ndis) -> None:
    ndis = any_ndis
    mdl = mm_initialize_mdl(ndis, memoryview(bytes(64)))
    assert mdl.byte_count == 64
    assert ndis.counters.mdl_allocs == 0 and ndis.counters.mem_bytes == 0 and ndis.counters.ddk_calls == 1


def test_move_and_zero_memory_count_bytes(any_ndis: Ndis) -> None:
    ndis = any_ndis
    memory = allocate_memory_with_tag_priority(ndis, 10)
    assert move_memory(ndis, memory, b"abcdef") == 6
    assert bytes(memory[:6]) == b"abcdef"
    zero_memory(ndis, memory[2:8])
    assert bytes(memory) == b"ab" + bytes(8)
    assert (ndis.counters.bytes_copied, ndis.counters.bytes_zeroed) == (6, 6)


@pytest.mark.parametrize("checked_mode", [False, True], ids=["unchecked", "checked"])
def test_double_lock_is_not_counted_twice(checked_mode: bool) -> None:
    ndis = Ndis(checked=checked_mode)
    mdl = io_allocate_mdl(ndis, memoryview(bytes(100)))
    mm_probe_and_lock_pages(ndis, mdl)
    mm_probe_and_lock_pages(ndis, mdl)
    assert ndis.counters.pages_locked == 1
