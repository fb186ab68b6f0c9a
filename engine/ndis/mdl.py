"""MDLs and memory: IoAllocateMdl & co, NdisAllocateMdl, partial MDLs, NdisAllocateMemory, NdisMoveMemory.

Counting conventions:

* IoAllocateMdl serves MDLs spanning at most 23 pages from a system-wide fixed-size lookaside list (3P, NDIS_MODEL.md
  §5; blocks of MDL_FIXED_BLOCK_SIZE bytes, flag MDL_ALLOCATED_FIXED_SIZE): one ``interlocked_ops`` per pop attempt
  and per push, ``pool_hits``/``pool_misses`` as for NBL pools, the lookaside keeps its blocks (``mem_bytes``).
  Bigger MDLs are a ``sys_allocs``/``sys_frees`` of MmSizeOfMdl bytes each.
* A PFN array filled (MmBuildMdlForNonPagedPool, MmProbeAndLockPages, IoBuildPartialMdl, the build inside
  NdisAllocateMdl) is one ``mdl_builds``; MmProbeAndLockPages / MmUnlockPages count ``pages_locked`` /
  ``pages_unlocked`` (pages spanned, ADDRESS_AND_SIZE_TO_SPAN_PAGES).
* NdisAllocateMemoryWithTagPriority is a ``data_allocs`` + ``sys_allocs`` of its length; NdisMoveMemory counts
  ``bytes_copied``, NdisZeroMemory ``bytes_zeroed``.

The model has no virtual addresses: a buffer is a ``memoryview`` and ``page_offset`` says where its first byte sits
in its page (default 0, page-aligned), which decides how many pages (PFNs) it spans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ndis_replay.engine.ndis.constants import (
    IO_READ_ACCESS,
    KERNEL_MODE,
    MDL_ALLOCATED_FIXED_SIZE,
    MDL_FIXED_BLOCK_SIZE,
    MDL_LOOKASIDE_MAX_PAGES,
    MDL_MAPPED_TO_SYSTEM_VA,
    MDL_PAGES_LOCKED,
    MDL_PARTIAL,
    MDL_PARTIAL_HAS_BEEN_MAPPED,
    MDL_SIZE,
    MDL_SOURCE_IS_NONPAGED_POOL,
    PAGE_SIZE,
    PFN_SIZE,
)
from ndis_replay.engine.ndis.structs import (
    MDL_KIND_BUFFER,
    MDL_KIND_EMBEDDED,
    MDL_KIND_IO,
    MDL_KIND_NDIS,
    Mdl,
    NonPagedBuffer,
)

if TYPE_CHECKING:
    from ndis_replay.engine.ndis.runtime import Ndis


def new_mdl(ndis: Ndis, kind: int, data: memoryview, byte_offset: int, block: int) -> Mdl:
    """A new MDL object of the runtime's class (no counting: the callers count)."""
    ndis.serial_mdl += 1
    return ndis.mdl_class(ndis.serial_mdl, kind, data, byte_offset % PAGE_SIZE, block)


def take_mdl(ndis: Ndis, kind: int, data: memoryview, page_offset: int) -> Mdl:
    """IoAllocateMdl's allocation and MmInitializeMdl: an MDL describing ``data``; counts one ``mdl_allocs`` (one
    ``buffer_allocs`` for an NDIS 5 NDIS_BUFFER)."""
    c = ndis.counters
    length = len(data)
    byte_offset = page_offset % PAGE_SIZE
    pages = (byte_offset + length + PAGE_SIZE - 1) // PAGE_SIZE if length else 0  # ADDRESS_AND_SIZE_TO_SPAN_PAGES
    if pages <= MDL_LOOKASIDE_MAX_PAGES:
        c.interlocked_ops += 1  # pop from the fixed-size MDL lookaside list
        free = ndis.mdl_lookaside
        if free and not ndis.checked:
            c.pool_hits += 1
            mdl = free.pop()
            mdl.next = None
            mdl.data = data
            mdl.byte_count = length
            mdl.byte_offset = byte_offset
            mdl._pages = pages
            mdl.size = MDL_SIZE + PFN_SIZE * pages
            mdl._kind = kind
            mdl._retreat = False
            mdl._pool = None
        else:
            if free:
                c.pool_hits += 1
                free.pop()  # checked mode: the freed MDL stays quarantined
            else:
                c.pool_misses += 1
                c.sys_alloc(MDL_FIXED_BLOCK_SIZE)
            mdl = new_mdl(ndis, kind, data, byte_offset, MDL_FIXED_BLOCK_SIZE)
        mdl.mdl_flags = MDL_ALLOCATED_FIXED_SIZE
    else:
        size = MDL_SIZE + PFN_SIZE * pages
        c.sys_alloc(size)
        mdl = new_mdl(ndis, kind, data, byte_offset, size)
    if kind == MDL_KIND_BUFFER:
        c.buffer_allocs += 1
        out = c.buffer_allocs - c.buffer_frees
        if out > c.buffer_peak:
            c.buffer_peak = out
    else:
        c.mdl_allocs += 1
        out = c.mdl_allocs - c.mdl_frees
        if out > c.mdl_peak:
            c.mdl_peak = out
    return mdl


def give_mdl(ndis: Ndis, mdl: Mdl) -> None:
    """IoFreeMdl's release of the MDL block (lookaside push or system free); counts one ``mdl_frees`` (one
    ``buffer_frees`` for an NDIS 5 NDIS_BUFFER)."""
    c = ndis.counters
    if mdl._kind == MDL_KIND_BUFFER:
        c.buffer_frees += 1
    else:
        c.mdl_frees += 1
    if mdl._block == MDL_FIXED_BLOCK_SIZE:
        c.interlocked_ops += 1  # push on the fixed-size MDL lookaside list
        ndis.mdl_lookaside.append(mdl)
    else:
        c.sys_frees += 1
        c.mem_bytes -= mdl._block
    if ndis.verifier is not None:
        ndis.verifier.on_freed(mdl)


def io_allocate_mdl(ndis: Ndis, virtual_address: memoryview, length: int | None = None, *, page_offset: int = 0) -> Mdl:
    """IoAllocateMdl(VirtualAddress, Length, SecondaryBuffer, ChargeQuota, Irp): an MDL header for the buffer.

    ``virtual_address`` is the buffer's first byte onward, ``length`` defaults to all of it. The PFN array is not
    filled: follow with :func:`mm_build_mdl_for_non_paged_pool` (nonpaged memory) or
    :func:`mm_probe_and_lock_pages` (pageable memory), as the DOC lifecycle requires (§1.3). Free with
    :func:`io_free_mdl`. The IRP association is not modelled.
    """
    ndis.counters.ddk_calls += 1
    data = virtual_address if length is None else virtual_address[:length]
    return take_mdl(ndis, MDL_KIND_IO, data, page_offset)


def io_free_mdl(ndis: Ndis, mdl: Mdl) -> None:
    """IoFreeMdl(Mdl). A still-locked MDL is MDL-LOCK-BALANCE; an MDL NDIS allocated (NdisAllocateMdl,
    retreat, preallocated, derived, embedded) is FREE-KIND / NB-BEFORE-NBL; both are reported, not freed."""
    ndis.counters.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_mdl(mdl, "IoFreeMdl"):
        return
    give_mdl(ndis, mdl)


def mm_build_mdl_for_non_paged_pool(ndis: Ndis, memory_descriptor_list: Mdl) -> None:
    """MmBuildMdlForNonPagedPool(MemoryDescriptorList): fills the PFN array of an MDL over nonpaged memory.

    Counts one ``mdl_builds``. On pageable memory it is MDL-LOCK-BALANCE in checked mode (the memory must be
    nonpaged, DOC §1.3).
    """
    ndis.counters.ddk_calls += 1
    ndis.counters.mdl_builds += 1
    if ndis.verifier is not None:
        ndis.verifier.check_nonpaged(memory_descriptor_list, "MmBuildMdlForNonPagedPool")
    memory_descriptor_list.mdl_flags |= MDL_SOURCE_IS_NONPAGED_POOL


def mm_probe_and_lock_pages(
    ndis: Ndis, memory_descriptor_list: Mdl, access_mode: int = KERNEL_MODE, operation: int = IO_READ_ACCESS
) -> None:
    """MmProbeAndLockPages(MemoryDescriptorList, AccessMode, Operation): locks the pages and fills the PFN array.

    Counts one ``mdl_builds`` and ``pages_locked`` += pages spanned. Locking a locked MDL is MDL-LOCK-BALANCE
    ("a locked MDL may not be locked again before unlock", DOC §1.3) and is not counted again.
    """
    ndis.counters.ddk_calls += 1
    if memory_descriptor_list.mdl_flags & MDL_PAGES_LOCKED:
        if ndis.verifier is not None:
            ndis.verifier.report_mdl_lock(memory_descriptor_list, "MmProbeAndLockPages on an MDL that is locked")
        return
    ndis.counters.mdl_builds += 1
    ndis.counters.pages_locked += memory_descriptor_list._pages
    memory_descriptor_list.mdl_flags |= MDL_PAGES_LOCKED
    if ndis.verifier is not None:
        ndis.verifier.on_locked(memory_descriptor_list, True)


def mm_unlock_pages(ndis: Ndis, memory_descriptor_list: Mdl) -> None:
    """MmUnlockPages(MemoryDescriptorList): ``pages_unlocked`` += pages spanned; unlocking an unlocked MDL is
    MDL-LOCK-BALANCE and not counted."""
    ndis.counters.ddk_calls += 1
    if not memory_descriptor_list.mdl_flags & MDL_PAGES_LOCKED:
        if ndis.verifier is not None:
            ndis.verifier.report_mdl_lock(memory_descriptor_list, "MmUnlockPages on an MDL that is not locked")
        return
    ndis.counters.pages_unlocked += memory_descriptor_list._pages
    memory_descriptor_list.mdl_flags &= ~MDL_PAGES_LOCKED
    if ndis.verifier is not None:
        ndis.verifier.on_locked(memory_descriptor_list, False)


def ndis_allocate_mdl(
    ndis: Ndis, virtual_address: memoryview, length: int | None = None, *, page_offset: int = 0
) -> Mdl:
    """NdisAllocateMdl(NdisHandle, VirtualAddress, Length): allocate and build in one call, nonpaged memory only.

    Counts as IoAllocateMdl + MmBuildMdlForNonPagedPool (one ``mdl_allocs``, one ``mdl_builds``). Pageable memory
    is MDL-LOCK-BALANCE in checked mode. Free with :func:`ndis_free_mdl`.
    """
    c = ndis.counters
    c.ddk_calls += 1
    data = virtual_address if length is None else virtual_address[:length]
    mdl = take_mdl(ndis, MDL_KIND_NDIS, data, page_offset)
    c.mdl_builds += 1
    mdl.mdl_flags |= MDL_SOURCE_IS_NONPAGED_POOL
    if ndis.verifier is not None:
        ndis.verifier.check_nonpaged(mdl, "NdisAllocateMdl")
    return mdl


def ndis_free_mdl(ndis: Ndis, mdl: Mdl) -> None:
    """NdisFreeMdl(Mdl): frees an MDL from :func:`ndis_allocate_mdl` (any other kind is FREE-KIND)."""
    ndis.counters.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_mdl(mdl, "NdisFreeMdl"):
        return
    give_mdl(ndis, mdl)


def io_build_partial_mdl(ndis: Ndis, source_mdl: Mdl, target_mdl: Mdl, offset: int, length: int) -> None:
    """IoBuildPartialMdl(SourceMdl, TargetMdl, VirtualAddress, Length): ``target_mdl`` describes ``length`` bytes
    of ``source_mdl`` starting ``offset`` bytes in (the model's stand-in for a VirtualAddress inside the source).

    Counts one ``mdl_builds``. A range beyond the source is REUSE-CONSISTENCY in checked mode (it would describe
    foreign memory); the model clips it.
    """
    ndis.counters.ddk_calls += 1
    ndis.counters.mdl_builds += 1
    if ndis.verifier is not None:
        ndis.verifier.check_partial(source_mdl, target_mdl, offset, length)
    data = target_mdl.data = source_mdl.data[offset : offset + length]
    count = target_mdl.byte_count = len(data)
    byte_offset = target_mdl.byte_offset = (source_mdl.byte_offset + offset) % PAGE_SIZE
    pages = (byte_offset + count + PAGE_SIZE - 1) // PAGE_SIZE if count else 0  # ADDRESS_AND_SIZE_TO_SPAN_PAGES
    target_mdl._pages = pages
    target_mdl.size = MDL_SIZE + PFN_SIZE * pages
    fixed = target_mdl.mdl_flags & MDL_ALLOCATED_FIXED_SIZE
    target_mdl.mdl_flags = fixed | MDL_PARTIAL | (source_mdl.mdl_flags & MDL_SOURCE_IS_NONPAGED_POOL)


def mm_initialize_mdl(ndis: Ndis, base_va: memoryview, length: int | None = None, *, page_offset: int = 0) -> Mdl:
    """MmInitializeMdl(MemoryDescriptorList, BaseVa, Length): an MDL header in caller storage.

    XDP initialises an MDL embedded in the NBL context this way (NDIS_MODEL.md §3.5): nothing is allocated or
    counted but the call; the caller's storage must hold MmSizeOfMdl bytes. It is never freed with IoFreeMdl
    (FREE-KIND).
    """
    ndis.counters.ddk_calls += 1
    data = base_va if length is None else base_va[:length]
    return new_mdl(ndis, MDL_KIND_EMBEDDED, data, page_offset, 0)


def mm_prepare_mdl_for_reuse(ndis: Ndis, mdl: Mdl) -> None:
    """MmPrepareMdlForReuse(Mdl): clears the mapping state of a partial MDL before it is rebuilt."""
    ndis.counters.ddk_calls += 1
    mdl.mdl_flags &= ~(MDL_PARTIAL_HAS_BEEN_MAPPED | MDL_MAPPED_TO_SYSTEM_VA)


def mm_get_system_address_for_mdl_safe(ndis: Ndis, mdl: Mdl) -> memoryview:
    """MmGetSystemAddressForMdlSafe(Mdl, Priority): the bytes the MDL describes (marks it mapped)."""
    ndis.counters.ddk_calls += 1
    mdl.mdl_flags |= MDL_PARTIAL_HAS_BEEN_MAPPED if mdl.mdl_flags & MDL_PARTIAL else MDL_MAPPED_TO_SYSTEM_VA
    return mdl.data[: mdl.byte_count]


# --- memory ---------------------------------------------------------------------------------------------------


def allocate_memory_with_tag_priority(ndis: Ndis, length: int, tag: int = 0) -> memoryview:
    """NdisAllocateMemoryWithTagPriority(NdisHandle, Length, Tag, Priority): ``length`` bytes of nonpaged memory.

    Counts one ``data_allocs`` and ``sys_allocs``, ``mem_bytes`` += length. Free with :func:`free_memory`.
    """
    c = ndis.counters
    c.ddk_calls += 1
    c.data_allocs += 1
    c.sys_alloc(length)
    out = c.data_allocs - c.data_frees
    if out > c.data_peak:
        c.data_peak = out
    return memoryview(NonPagedBuffer(length))


def free_memory(ndis: Ndis, virtual_address: memoryview) -> None:
    """NdisFreeMemory(VirtualAddress, Length, MemoryFlags) of memory from :func:`allocate_memory_with_tag_priority`."""
    c = ndis.counters
    c.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_memory(virtual_address):
        return
    c.data_frees += 1
    c.sys_frees += 1
    c.mem_bytes -= len(virtual_address.obj)  # type: ignore[arg-type]


def move_memory(ndis: Ndis, destination: memoryview, source: memoryview | bytes) -> int:
    """NdisMoveMemory(Destination, Source, Length) with Length = len(source); returns it; counts ``bytes_copied``."""
    c = ndis.counters
    c.ddk_calls += 1
    n = len(source)
    destination[:n] = source
    c.bytes_copied += n
    return n


def zero_memory(ndis: Ndis, destination: memoryview) -> None:
    """NdisZeroMemory(Destination, Length) over the whole view; counts ``bytes_zeroed``."""
    ndis.counters.ddk_calls += 1
    destination[:] = bytes(len(destination))
    ndis.counters.bytes_zeroed += len(destination)
