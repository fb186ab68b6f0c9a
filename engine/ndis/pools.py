"""NET_BUFFER_LIST and NET_BUFFER pools, backed by lookaside free lists (NDIS_MODEL.md §2.1).

Counting conventions (shown in the reports):

* A pool is a lookaside list of *blocks*; a block is one NBL with what the pool preallocates behind it (the NB when
  ``f_allocate_net_buffer``, the NET_BUFFER_LIST_CONTEXT when ``context_size`` > 0, an MDL and ``data_size`` bytes
  of data when ``data_size`` > 0). Taking a block costs one ``interlocked_ops`` (InterlockedPopEntrySList, hit or
  miss); a served pop is a ``pool_hits``, an empty list a ``pool_misses`` plus a ``sys_allocs`` of the block's
  bytes (``mem_bytes``). Giving a block back is one ``interlocked_ops`` (InterlockedPushEntrySList) and the memory
  stays with the pool until the pool is freed. A pool with NET_BUFFER_LIST_POOL_FLAG_VERIFY never reuses: every
  free is a ``sys_frees`` (DOC §2.1: freed NBLs are not reused immediately).
* Every allocation initialises the descriptor headers: ``bytes_zeroed`` += NBL_SIZE for the NBL and NB_SIZE for
  each NB handed out (DERIVED: "allocate and initialize", DOC; the context and data areas are not zeroed).
* Per-kind ``*_allocs`` count descriptors handed out, preallocated ones included (an NBL from an
  ``f_allocate_net_buffer`` pool counts 1 NBL and 1 NB).

Lookaside lists are unbounded (every freed block is kept): NDIS's real list depth is not public.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ndis_replay.engine.ndis.constants import (
    MAX_NET_BUFFER_LIST_INFO,
    MEMORY_ALLOCATION_ALIGNMENT,
    NB_SIZE,
    NBL_CONTEXT_HEADER_SIZE,
    NBL_SIZE,
    NET_BUFFER_LIST_POOL_FLAG_VERIFY,
    mm_size_of_mdl,
)
from ndis_replay.engine.ndis.mdl import new_mdl
from ndis_replay.engine.ndis.structs import (
    MDL_KIND_PREALLOCATED,
    NBL_KIND_POOL,
    NetBuffer,
    NetBufferList,
    NonPagedBuffer,
)

if TYPE_CHECKING:
    from ndis_replay.engine.ndis.runtime import Handle, Ndis

_NO_INFO = (None,) * MAX_NET_BUFFER_LIST_INFO


@dataclass(frozen=True, slots=True)
class NetBufferListPoolParameters:
    """NET_BUFFER_LIST_POOL_PARAMETERS (DOC §2.1): ``protocol_id`` = ProtocolId, ``f_allocate_net_buffer`` =
    fAllocateNetBuffer, ``context_size`` = ContextSize, ``pool_tag`` = PoolTag, ``data_size`` = DataSize,
    ``flags`` = Flags. ``name`` labels the pool in findings ("NBL#12 (pool send)"); the Header is not modelled."""

    context_size: int = 0
    f_allocate_net_buffer: bool = False
    data_size: int = 0
    flags: int = 0
    protocol_id: int = 0
    pool_tag: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class NetBufferPoolParameters:
    """NET_BUFFER_POOL_PARAMETERS (DOC): ``pool_tag`` = PoolTag, ``data_size`` = DataSize (≠ 0: NB + MDL + data per
    block, for NdisAllocateNetBufferMdlAndData). ``name`` labels the pool in findings."""

    data_size: int = 0
    pool_tag: int = 0
    name: str = ""


class NetBufferListPool:
    """An NBL pool (the NDIS_HANDLE NdisAllocateNetBufferListPool returns). ``allocated`` counts its blocks in use;
    ``free_list`` is its lookaside list; ``block_size`` the modelled bytes of one block."""

    __slots__ = ("allocated", "block_size", "free_list", "freed", "name", "owner", "params", "verify")

    def __init__(self, params: NetBufferListPoolParameters, owner: Handle) -> None:
        self.params = params
        self.owner = owner
        self.name = params.name or (f"tag {params.pool_tag:#x}" if params.pool_tag else "nbl")
        self.free_list: list[NetBufferList] = []
        self.allocated = 0
        self.freed = False
        self.verify = bool(params.flags & NET_BUFFER_LIST_POOL_FLAG_VERIFY)
        size = NBL_SIZE
        if params.f_allocate_net_buffer:
            size += NB_SIZE
        if params.context_size:
            size += NBL_CONTEXT_HEADER_SIZE + params.context_size
        if params.data_size:
            size += mm_size_of_mdl(0, params.data_size) + params.data_size
        self.block_size = size

    def __repr__(self) -> str:
        return f"<NetBufferListPool {self.name} {self.allocated} out>"


class NetBufferPool:
    """An NB pool (NdisAllocateNetBufferPool's handle); blocks are NBs, with MDL + data when ``data_size`` ≠ 0."""

    __slots__ = ("allocated", "block_size", "free_list", "freed", "name", "owner", "params")

    def __init__(self, params: NetBufferPoolParameters, owner: Handle) -> None:
        self.params = params
        self.owner = owner
        self.name = params.name or (f"tag {params.pool_tag:#x}" if params.pool_tag else "nb")
        self.free_list: list[NetBuffer] = []
        self.allocated = 0
        self.freed = False
        size = NB_SIZE
        if params.data_size:
            size += mm_size_of_mdl(0, params.data_size) + params.data_size
        self.block_size = size

    def __repr__(self) -> str:
        return f"<NetBufferPool {self.name} {self.allocated} out>"


# --- pool DDK calls ---------------------------------------------------------------------------------------------


def allocate_net_buffer_list_pool(
    ndis: Ndis, params: NetBufferListPoolParameters, *, ndis_handle: Handle | None = None
) -> NetBufferListPool | None:
    """NdisAllocateNetBufferListPool(NdisHandle, Parameters). ``ndis_handle`` defaults to the protocol binding.

    Returns None (NULL) when the parameters are invalid, as NDIS does: ContextSize not a multiple of
    MEMORY_ALLOCATION_ALIGNMENT, a negative size, or DataSize ≠ 0 without fAllocateNetBuffer (DOC §2.1). Blocks
    are allocated on demand, so creating a pool counts only the call.
    """
    ndis.counters.ddk_calls += 1
    if (
        params.context_size < 0
        or params.data_size < 0
        or params.context_size % MEMORY_ALLOCATION_ALIGNMENT
        or (params.data_size and not params.f_allocate_net_buffer)
    ):
        return None
    return NetBufferListPool(params, ndis_handle or ndis.binding_handle)


def free_net_buffer_list_pool(ndis: Ndis, pool: NetBufferListPool) -> None:
    """NdisFreeNetBufferListPool(PoolHandle): releases the cached blocks (``sys_frees``, ``mem_bytes``).

    Freeing a pool with NBLs outstanding is POOL-FREE-OUTSTANDING (bug check 0x7C in real NDIS, §4); the model
    reports it and frees what is cached.
    """
    c = ndis.counters
    c.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_pool(pool, "NdisFreeNetBufferListPool"):
        return
    cached = len(pool.free_list)
    c.sys_frees += cached
    c.mem_bytes -= cached * pool.block_size
    pool.free_list.clear()
    pool.freed = True


def allocate_net_buffer_pool(
    ndis: Ndis, params: NetBufferPoolParameters, *, ndis_handle: Handle | None = None
) -> NetBufferPool | None:
    """NdisAllocateNetBufferPool(NdisHandle, Parameters); None (NULL) for a negative DataSize."""
    ndis.counters.ddk_calls += 1
    if params.data_size < 0:
        return None
    return NetBufferPool(params, ndis_handle or ndis.binding_handle)


def free_net_buffer_pool(ndis: Ndis, pool: NetBufferPool) -> None:
    """NdisFreeNetBufferPool(PoolHandle): releases the cached blocks; outstanding NBs are POOL-FREE-OUTSTANDING."""
    c = ndis.counters
    c.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_pool(pool, "NdisFreeNetBufferPool"):
        return
    cached = len(pool.free_list)
    c.sys_frees += cached
    c.mem_bytes -= cached * pool.block_size
    pool.free_list.clear()
    pool.freed = True


# --- block primitives (used by the NBL/NB calls) ------------------------------------------------------------------


def _new_nbl_block(ndis: Ndis, pool: NetBufferListPool) -> NetBufferList:
    """A new block of ``pool``: the NBL and what the pool preallocates with it."""
    ndis.serial_nbl += 1
    nbl = ndis.nbl_class(ndis.serial_nbl, pool, NBL_KIND_POOL)
    params = pool.params
    if params.f_allocate_net_buffer:
        ndis.serial_nb += 1
        nb = ndis.nb_class(ndis.serial_nb, pool, nbl)
        nbl._nb = nb
        if params.data_size:
            nb._mdl = new_mdl(ndis, MDL_KIND_PREALLOCATED, memoryview(NonPagedBuffer(params.data_size)), 0, 0)
    if params.context_size:
        nbl._ctx = ndis.ctx_class(params.context_size, 0, True)
    return nbl


def take_nbl(ndis: Ndis, pool: NetBufferListPool, context_size: int = 0, context_backfill: int = 0) -> NetBufferList:
    """Take a block from ``pool``'s lookaside list (or allocate one) and initialise it; counts the allocation.

    The NBL comes back as NdisAllocateNetBufferList leaves it: header fields reset, NetBufferListInfo zeroed,
    NdisPoolHandle set, FirstNetBuffer = the preallocated NB (DataOffset 0, DataLength = DataSize over its
    preallocated MDL for a DataSize pool — a DERIVED convention, the DDI does not say), Context = the preallocated
    context with ``context_size`` bytes reserved (see :func:`reserve_context`). Protocol/MiniportReserved keep
    what the previous owner left: NDIS does not document clearing them.
    """
    c = ndis.counters
    c.interlocked_ops += 1  # InterlockedPopEntrySList on the pool's lookaside list, served or not
    free = pool.free_list
    if free and not ndis.checked:
        c.pool_hits += 1
        nbl = free.pop()
        nbl.next = None
        nbl.parent_net_buffer_list = None
        nbl.ndis_pool_handle = pool
        nbl.scratch = None
        nbl.source_handle = None
        nbl.nbl_flags = 0
        nbl.child_ref_count = 0
        nbl.flags = 0
        nbl.status = 0
        nbl.net_buffer_list_info[:] = _NO_INFO
        nb = nbl._nb
        nbl.first_net_buffer = nb
        if nb is not None:
            nb.next = None
            nb.ndis_pool_handle = pool
            mdl = nb._mdl
            nb.mdl_chain = nb.current_mdl = mdl
            nb.current_mdl_offset = nb.data_offset = 0
            nb.data_length = 0 if mdl is None else mdl.byte_count
    else:
        if free:
            # pool-verify emulation in checked mode: the freed block stays quarantined, a fresh one stands in
            c.pool_hits += 1
            free.pop()
        else:
            c.pool_misses += 1
            c.sys_alloc(pool.block_size)
        nbl = _new_nbl_block(ndis, pool)
        nb = nbl._nb
        nbl.first_net_buffer = nb
        if nb is not None and nb._mdl is not None:
            nb.mdl_chain = nb.current_mdl = nb._mdl
            nb.data_length = nb._mdl.byte_count
    ctx = nbl._ctx
    nbl.context = ctx
    if ctx is not None:
        ctx.next = None
        ctx.offset = ctx.size
    if context_size or context_backfill:
        if ctx is not None and ctx.size >= context_size:
            ctx.offset = ctx.size - context_size
            c.ctx_allocs += 1
            out = c.ctx_allocs - c.ctx_frees
            if out > c.ctx_peak:
                c.ctx_peak = out
        else:
            reserve_context(ndis, nbl, context_size, context_backfill)
        base = nbl.context
        nbl._ctx_base = base
        nbl._ctx_base_offset = base.offset if base is not None else 0
    else:
        nbl._ctx_base = ctx
        nbl._ctx_base_offset = ctx.size if ctx is not None else 0
    pool.allocated += 1
    c.nbl_allocs += 1
    out = c.nbl_allocs - c.nbl_frees
    if out > c.nbl_peak:
        c.nbl_peak = out
    if nb is None:
        c.bytes_zeroed += NBL_SIZE
    else:
        c.nb_allocs += 1
        out = c.nb_allocs - c.nb_frees
        if out > c.nb_peak:
            c.nb_peak = out
        c.bytes_zeroed += NBL_SIZE + NB_SIZE
        if nb._mdl is not None:
            nb._mdl.next = None
            c.mdl_allocs += 1
            c.data_allocs += 1
            out = c.mdl_allocs - c.mdl_frees
            if out > c.mdl_peak:
                c.mdl_peak = out
            out = c.data_allocs - c.data_frees
            if out > c.data_peak:
                c.data_peak = out
    return nbl


def give_nbl(ndis: Ndis, nbl: NetBufferList) -> None:
    """Return ``nbl``'s block to its pool (the part of the free shared by every NBL kind); counts the free.

    The context the allocate call reserved goes with the NBL (a context NDIS linked for it is a ``sys_frees``);
    contexts from NdisAllocateNetBufferListContext the driver did not free leak (CTX-LIFO).
    """
    c = ndis.counters
    pool: NetBufferListPool = nbl._pool
    pool.allocated -= 1
    c.nbl_frees += 1
    base = nbl._ctx_base
    if base is not None:
        if not base._preallocated:
            c.ctx_frees += 1
            c.sys_frees += 1
            c.mem_bytes -= base._block
        elif nbl._ctx_base_offset < base.size:
            c.ctx_frees += 1
    nb = nbl._nb
    if nb is not None:
        c.nb_frees += 1
        if nb._mdl is not None:
            c.mdl_frees += 1
            c.data_frees += 1
    if pool.verify or pool.freed:
        c.sys_frees += 1
        c.mem_bytes -= pool.block_size
    else:
        c.interlocked_ops += 1  # InterlockedPushEntrySList
        pool.free_list.append(nbl)


def reserve_context(ndis: Ndis, nbl: NetBufferList, size: int, backfill: int) -> None:
    """Reserve ``size`` used context bytes (DOC §2.1): move Offset in the head context when its unused space holds
    them, else link a new NET_BUFFER_LIST_CONTEXT of ``size`` + ``backfill`` bytes (``sys_allocs``, header +
    size + backfill bytes of memory). One ``ctx_allocs`` either way."""
    c = ndis.counters
    head = nbl.context
    if head is not None and head.offset >= size:
        head.offset -= size
    else:
        total = size + backfill
        block = NBL_CONTEXT_HEADER_SIZE + total
        ctx = ndis.ctx_class(total, block, False)
        ctx.offset = backfill
        ctx.next = head
        nbl.context = ctx
        if ndis.verifier is not None:
            ndis.verifier.on_nbl_allocated_context(nbl, ctx)
        c.sys_alloc(block)
    c.ctx_allocs += 1
    out = c.ctx_allocs - c.ctx_frees
    if out > c.ctx_peak:
        c.ctx_peak = out


def take_nb(ndis: Ndis, pool: NetBufferPool) -> NetBuffer:
    """Take an NB block from ``pool`` (lookaside hit or system allocation) and initialise it; counts it."""
    c = ndis.counters
    c.interlocked_ops += 1  # InterlockedPopEntrySList
    free = pool.free_list
    if free and not ndis.checked:
        c.pool_hits += 1
        nb = free.pop()
    else:
        if free:
            c.pool_hits += 1
            free.pop()
        else:
            c.pool_misses += 1
            c.sys_alloc(pool.block_size)
        ndis.serial_nb += 1
        nb = ndis.nb_class(ndis.serial_nb, pool, None)
        if pool.params.data_size:
            nb._mdl = new_mdl(ndis, MDL_KIND_PREALLOCATED, memoryview(NonPagedBuffer(pool.params.data_size)), 0, 0)
    nb.next = None
    nb.ndis_pool_handle = pool
    pool.allocated += 1
    c.nb_allocs += 1
    out = c.nb_allocs - c.nb_frees
    if out > c.nb_peak:
        c.nb_peak = out
    c.bytes_zeroed += NB_SIZE
    return nb


def give_nb(ndis: Ndis, nb: NetBuffer) -> None:
    """Return a standalone NB's block to its pool; counts the free."""
    c = ndis.counters
    pool: NetBufferPool = nb._pool
    pool.allocated -= 1
    c.nb_frees += 1
    if nb._mdl is not None:
        c.mdl_frees += 1
        c.data_frees += 1
    if pool.freed:
        c.sys_frees += 1
        c.mem_bytes -= pool.block_size
    else:
        c.interlocked_ops += 1  # InterlockedPushEntrySList
        pool.free_list.append(nb)
