"""NET_BUFFER_LIST and NET_BUFFER calls: allocate/free, contexts, retreat/advance, clone/fragment/reassemble.

Counting conventions (beyond those of :mod:`ndis_replay.engine.ndis.pools`):

* A context area reserved by an allocate call's ContextSize or by NdisAllocateNetBufferListContext is one
  ``ctx_allocs``; when the unused space of the head NET_BUFFER_LIST_CONTEXT holds it, NDIS only moves Offset
  (nothing else counted), otherwise NDIS allocates a new NET_BUFFER_LIST_CONTEXT (``sys_allocs``,
  NBL_CONTEXT_HEADER_SIZE + size + backfill bytes) (DOC §2.1).
* A retreat within the backfill only moves DataOffset. A retreat beyond it allocates (DOC §2.4): a nonpaged buffer
  (``data_allocs`` + ``sys_allocs``) and an MDL for it through the IoAllocateMdl path plus its build (``mdl_allocs``,
  lookaside hit/miss, ``mdl_builds``) — NDIS's default method is not documented, this is the model's (DERIVED).
  The buffer holds what the backfill lacks (delta − DataOffset) plus DataBackFill, so the used data stays
  contiguous; it is delta + DataBackFill, as the DDI says, whenever DataOffset is 0.
* Clones and fragments describe the source data with new MDLs (one per source MDL segment: IoAllocateMdl +
  IoBuildPartialMdl, i.e. ``mdl_allocs`` + ``mdl_builds``), never copy bytes. NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS
  clones point at the original MDLs instead.
* Derived NBLs come from the given pools, or NDIS's internal pools when a handle is None; NDIS does not set
  ParentNetBufferList or ChildRefCount (DOC §2.5): :func:`link_child_net_buffer_list` is the caller's side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ndis_replay.engine.ndis.constants import (
    MDL_SOURCE_IS_NONPAGED_POOL,
    MEMORY_ALLOCATION_ALIGNMENT,
    NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS,
    NDIS_STATUS_FAILURE,
    NDIS_STATUS_RESOURCES,
    NDIS_STATUS_SUCCESS,
    PAGE_SIZE,
    POINTER_SIZE,
)
from ndis_replay.engine.ndis.mdl import give_mdl, take_mdl
from ndis_replay.engine.ndis.pools import (
    NetBufferListPool,
    NetBufferPool,
    give_nb,
    give_nbl,
    reserve_context,
    take_nb,
    take_nbl,
)
from ndis_replay.engine.ndis.structs import (
    MDL_KIND_DERIVED,
    MDL_KIND_RETREAT,
    NBL_KIND_CLONE,
    NBL_KIND_FRAGMENT,
    NBL_KIND_POOL,
    NBL_KIND_REASSEMBLED,
    Mdl,
    NblContext,
    NetBuffer,
    NetBufferList,
    NonPagedBuffer,
    locate_offset,
)

if TYPE_CHECKING:
    from ndis_replay.engine.ndis.runtime import Ndis

#: NetAllocateMdl(BufferSize) → MDL describing a buffer of that size, or None
AllocateMdlHandler = Callable[[int], Mdl | None]
#: NetFreeMdl(Mdl)
FreeMdlHandler = Callable[[Mdl], None]


# --- contexts ---------------------------------------------------------------------------------------------------


def allocate_net_buffer_list_context(
    ndis: Ndis, net_buffer_list: NetBufferList, context_size: int, context_backfill: int = 0, pool_tag: int = 0
) -> int:
    """NdisAllocateNetBufferListContext(NetBufferList, ContextSize, ContextBackFill, PoolTag) → NDIS_STATUS.

    Uses the head context's unused space when it can (Offset -= ContextSize), else links a new context of
    ContextSize + ContextBackFill (DOC §2.1). Sizes must be multiples of sizeof(PVOID) (CTX-LIFO otherwise).
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        if not v.check_net_buffer_call(net_buffer_list, "NdisAllocateNetBufferListContext"):
            return NDIS_STATUS_FAILURE
        v.check_context_sizes(net_buffer_list, context_size, context_backfill, POINTER_SIZE)
    reserve_context(ndis, net_buffer_list, context_size, context_backfill)
    return NDIS_STATUS_SUCCESS


def free_net_buffer_list_context(ndis: Ndis, net_buffer_list: NetBufferList, context_size: int) -> None:
    """NdisFreeNetBufferListContext(NetBufferList, ContextSize): releases the newest ``context_size`` bytes (LIFO);
    a context NDIS linked for them goes away when empty. Freeing the allocate call's context is CTX-LIFO."""
    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_context_free(net_buffer_list, context_size):
        return
    head = net_buffer_list.context
    if head is None:
        return
    head.offset += context_size
    c.ctx_frees += 1
    if head.offset >= head.size and not head._preallocated and head is not net_buffer_list._ctx_base:
        net_buffer_list.context = head.next
        c.sys_frees += 1
        c.mem_bytes -= head._block


def net_buffer_list_context_data_start(net_buffer_list: NetBufferList) -> memoryview:
    """NET_BUFFER_LIST_CONTEXT_DATA_START(nbl): the used bytes of the head context (from ContextData + Offset)."""
    ctx = net_buffer_list.context
    if ctx is None:
        return memoryview(b"")
    return memoryview(ctx.context_data)[ctx.offset :]


def net_buffer_list_context_data_size(net_buffer_list: NetBufferList) -> int:
    """NET_BUFFER_LIST_CONTEXT_DATA_SIZE(nbl): used bytes of the head context."""
    ctx = net_buffer_list.context
    return 0 if ctx is None else ctx.size - ctx.offset


# --- NBL and NB allocation ------------------------------------------------------------------------------------------


def allocate_net_buffer_list(
    ndis: Ndis, pool: NetBufferListPool, context_size: int = 0, context_backfill: int = 0
) -> NetBufferList:
    """NdisAllocateNetBufferList(PoolHandle, ContextSize, ContextBackFill).

    From a pool with fAllocateNetBuffer the NBL comes with its NB; with DataSize also an MDL and data buffer
    (the copy strategy's descriptors, DOC §2.1). Counts as described in :mod:`~ndis_replay.engine.ndis.pools`.
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        v.check_pool_usable(pool, "NdisAllocateNetBufferList")
        v.check_context_sizes(pool, context_size, context_backfill, MEMORY_ALLOCATION_ALIGNMENT)
    nbl = take_nbl(ndis, pool, context_size, context_backfill)
    if v is not None:
        v.on_nbl_allocated(nbl)
    return nbl


def allocate_net_buffer_and_net_buffer_list(
    ndis: Ndis,
    pool: NetBufferListPool,
    context_size: int = 0,
    context_backfill: int = 0,
    mdl_chain: Mdl | None = None,
    data_offset: int = 0,
    data_length: int = 0,
) -> NetBufferList:
    """NdisAllocateNetBufferAndNetBufferList(PoolHandle, ContextSize, ContextBackFill, MdlChain, DataOffset,
    DataLength): an NBL with its preallocated NB pointed at ``mdl_chain``.

    The pool must have fAllocateNetBuffer TRUE and DataSize 0 (POOL-ORIGIN otherwise); NDIS sets CurrentMdl and
    CurrentMdlOffset by walking DataOffset. From a fresh ContextSize-16 pool the first call counts 1 ``nbl_allocs``,
    1 ``nb_allocs``, 1 ``ctx_allocs`` (with ContextSize 16), 1 ``pool_misses``, 1 ``sys_allocs``,
    ``bytes_zeroed`` 368 + 176 and ``mem_bytes`` 368 + 176 + 16 + 16; after a free the next call is a ``pool_hits``.
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        v.check_allocate_and(pool, context_size, context_backfill, mdl_chain, data_offset, data_length)
    nbl = take_nbl(ndis, pool, context_size, context_backfill)
    nb = nbl.first_net_buffer
    if nb is not None:
        nb.mdl_chain = mdl_chain
        nb.data_offset = data_offset
        nb.data_length = data_length
        if mdl_chain is not None and data_offset < mdl_chain.byte_count:
            nb.current_mdl = mdl_chain
            nb.current_mdl_offset = data_offset
        else:
            nb.current_mdl, nb.current_mdl_offset = locate_offset(mdl_chain, data_offset)
    if v is not None:
        v.on_nbl_allocated(nbl)
    return nbl


def free_net_buffer_list(ndis: Ndis, net_buffer_list: NetBufferList) -> None:
    """NdisFreeNetBufferList(NetBufferList): the NBL and what was preallocated with it go back to the pool.

    Caller-supplied MDLs are not freed (the NBL does not own them); NBs from NdisAllocateNetBuffer still chained
    (NB-BEFORE-NBL), contexts from NdisAllocateNetBufferListContext still allocated (CTX-LIFO) and retreat MDLs
    still chained (RETREAT-LEAK) leak, visibly in the outstanding counts. Clones, fragments and reassembled NBLs
    need their own free (FREE-KIND).
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_nbl(net_buffer_list, "NdisFreeNetBufferList", NBL_KIND_POOL, None):
        return
    give_nbl(ndis, net_buffer_list)
    if v is not None:
        v.on_freed(net_buffer_list)
        if net_buffer_list._nb is not None:
            v.on_freed(net_buffer_list._nb)


def allocate_net_buffer(
    ndis: Ndis, pool: NetBufferPool, mdl_chain: Mdl | None = None, data_offset: int = 0, data_length: int = 0
) -> NetBuffer:
    """NdisAllocateNetBuffer(PoolHandle, MdlChain, DataOffset, DataLength): a standalone NB (free it with
    :func:`free_net_buffer` before the NBL it is chained to, NB-BEFORE-NBL)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        v.check_pool_usable(pool, "NdisAllocateNetBuffer")
    nb = take_nb(ndis, pool)
    nb.mdl_chain = mdl_chain
    nb.data_offset = data_offset
    nb.data_length = data_length
    nb.current_mdl, nb.current_mdl_offset = locate_offset(mdl_chain, data_offset)
    if v is not None:
        v.on_nb_allocated(nb)
    return nb


def allocate_net_buffer_mdl_and_data(ndis: Ndis, pool: NetBufferPool) -> NetBuffer:
    """NdisAllocateNetBufferMdlAndData(PoolHandle): NB + MDL + DataSize bytes in one block from a DataSize pool.

    The NB describes its whole buffer (DataOffset 0, DataLength = DataSize: a DERIVED convention). Counts 1
    ``nb_allocs``, 1 ``mdl_allocs``, 1 ``data_allocs`` and the block's hit or miss. Free with
    :func:`free_net_buffer`.
    """
    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        v.check_pool_usable(pool, "NdisAllocateNetBufferMdlAndData")
    nb = take_nb(ndis, pool)
    mdl = nb._mdl
    nb.mdl_chain = nb.current_mdl = mdl
    nb.data_offset = nb.current_mdl_offset = 0
    nb.data_length = 0 if mdl is None else mdl.byte_count
    if mdl is not None:
        mdl.next = None
        c.mdl_allocs += 1
        c.data_allocs += 1
        out = c.mdl_allocs - c.mdl_frees
        if out > c.mdl_peak:
            c.mdl_peak = out
        out = c.data_allocs - c.data_frees
        if out > c.data_peak:
            c.data_peak = out
    if v is not None:
        v.on_nb_allocated(nb)
    return nb


def free_net_buffer(ndis: Ndis, net_buffer: NetBuffer) -> None:
    """NdisFreeNetBuffer(NetBuffer): a standalone NB (with its preallocated MDL and data, if any) back to its pool.

    The NB preallocated with an NBL must not be freed separately (NB-BEFORE-NBL).
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_nb(net_buffer, "NdisFreeNetBuffer"):
        return
    give_nb(ndis, net_buffer)
    if v is not None:
        v.on_freed(net_buffer)


def get_pool_from_net_buffer_list(ndis: Ndis, net_buffer_list: NetBufferList) -> NetBufferListPool:
    """NdisGetPoolFromNetBufferList(NetBufferList): the pool NdisPoolHandle names."""
    ndis.counters.ddk_calls += 1
    pool: NetBufferListPool = net_buffer_list.ndis_pool_handle
    return pool


# --- data space: retreat and advance (DOC §2.4) ------------------------------------------------------------------


def _free_retreat_mdl(ndis: Ndis, mdl: Mdl) -> None:
    """Free an MDL and buffer NDIS allocated for a retreat."""
    c = ndis.counters
    c.data_frees += 1
    c.sys_frees += 1
    c.mem_bytes -= len(mdl.data.obj)  # type: ignore[arg-type]
    give_mdl(ndis, mdl)


def _retreat(
    ndis: Ndis, nb: NetBuffer, delta: int, back_fill: int, handler: AllocateMdlHandler | None, warn: bool
) -> int:
    nb.data_length += delta
    offset = nb.data_offset
    if offset >= delta:
        offset -= delta
        nb.data_offset = offset
        if nb.current_mdl is not None and nb.current_mdl_offset >= delta:
            nb.current_mdl_offset -= delta
        else:
            nb.current_mdl, nb.current_mdl_offset = locate_offset(nb.mdl_chain, offset)
        return NDIS_STATUS_SUCCESS
    size = delta - offset + back_fill
    if handler is not None:
        mdl = handler(size)
        if mdl is None:
            nb.data_length -= delta
            return NDIS_STATUS_RESOURCES
    else:
        c = ndis.counters
        c.data_allocs += 1
        c.sys_alloc(size)
        out = c.data_allocs - c.data_frees
        if out > c.data_peak:
            c.data_peak = out
        mdl = take_mdl(ndis, MDL_KIND_RETREAT, memoryview(NonPagedBuffer(size)), 0)
        c.mdl_builds += 1
        mdl.mdl_flags |= MDL_SOURCE_IS_NONPAGED_POOL
    mdl._retreat = True
    mdl.next = nb.mdl_chain
    nb.mdl_chain = nb.current_mdl = mdl
    nb.data_offset = nb.current_mdl_offset = back_fill
    if warn and ndis.verifier is not None:
        ndis.verifier.on_retreat_alloc(nb, delta, size)
    return NDIS_STATUS_SUCCESS


def _advance(ndis: Ndis, nb: NetBuffer, delta: int, free_mdl: bool, handler: FreeMdlHandler | None) -> None:
    nb.data_length -= delta
    offset = nb.data_offset + delta
    nb.data_offset = offset
    mdl = nb.mdl_chain
    if free_mdl and mdl is not None and mdl._retreat and offset >= mdl.byte_count:
        while mdl is not None and mdl._retreat and offset >= mdl.byte_count:
            following = mdl.next
            offset -= mdl.byte_count
            if handler is not None:
                handler(mdl)
            else:
                _free_retreat_mdl(ndis, mdl)
            mdl = following
        nb.mdl_chain = mdl
        nb.data_offset = offset
        nb.current_mdl, nb.current_mdl_offset = locate_offset(mdl, offset)
        return
    current = nb.current_mdl
    if current is None:
        nb.current_mdl, nb.current_mdl_offset = locate_offset(mdl, offset)
        return
    position = nb.current_mdl_offset + delta
    while position >= current.byte_count and current.next is not None:
        position -= current.byte_count
        current = current.next
    nb.current_mdl = current
    nb.current_mdl_offset = position


def retreat_net_buffer_data_start(
    ndis: Ndis,
    net_buffer: NetBuffer,
    data_offset_delta: int,
    data_back_fill: int = 0,
    allocate_mdl_handler: AllocateMdlHandler | None = None,
) -> int:
    """NdisRetreatNetBufferDataStart(NetBuffer, DataOffsetDelta, DataBackFill, AllocateMdlHandler) → NDIS_STATUS.

    DataLength += delta; within the backfill only DataOffset (and CurrentMdl/Offset) move. Beyond it NDIS chains
    a new MDL + buffer at the front (see the module's counting note; ``allocate_mdl_handler`` is NetAllocateMdl and
    replaces NDIS's allocation), reported as the performance warning RETREAT-ALLOC. Undo with
    :func:`advance_net_buffer_data_start` and ``free_mdl`` True, or the MDL leaks (RETREAT-LEAK).
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_net_buffer_call(net_buffer, "NdisRetreatNetBufferDataStart"):
        return NDIS_STATUS_FAILURE
    return _retreat(ndis, net_buffer, data_offset_delta, data_back_fill, allocate_mdl_handler, True)


def advance_net_buffer_data_start(
    ndis: Ndis,
    net_buffer: NetBuffer,
    data_offset_delta: int,
    free_mdl: bool,
    free_mdl_handler: FreeMdlHandler | None = None,
) -> None:
    """NdisAdvanceNetBufferDataStart(NetBuffer, DataOffsetDelta, FreeMdl, FreeMdlHandler).

    DataLength -= delta, DataOffset += delta; with ``free_mdl`` the MDLs a retreat allocated that are now wholly
    unused are freed (through NetFreeMdl when given). More than DataLength is ADVANCE-UNDERFLOW.
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        if not v.check_net_buffer_call(net_buffer, "NdisAdvanceNetBufferDataStart"):
            return
        v.check_advance(net_buffer, data_offset_delta)
    _advance(ndis, net_buffer, data_offset_delta, free_mdl, free_mdl_handler)


def retreat_net_buffer_list_data_start(
    ndis: Ndis,
    net_buffer_list: NetBufferList,
    data_offset_delta: int,
    data_back_fill: int = 0,
    allocate_mdl_handler: AllocateMdlHandler | None = None,
) -> int:
    """NdisRetreatNetBufferListDataStart: :func:`retreat_net_buffer_data_start` on every NB (one DDK call).

    On a failure the NBs already retreated are advanced back (DOC: the call fails as a whole).
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_net_buffer_call(net_buffer_list, "NdisRetreatNetBufferListDataStart"):
        return NDIS_STATUS_FAILURE
    done: list[NetBuffer] = []
    nb = net_buffer_list.first_net_buffer
    while nb is not None:
        status = _retreat(ndis, nb, data_offset_delta, data_back_fill, allocate_mdl_handler, True)
        if status != NDIS_STATUS_SUCCESS:
            for undo in done:
                _advance(ndis, undo, data_offset_delta, True, None)
            return status
        done.append(nb)
        nb = nb.next
    return NDIS_STATUS_SUCCESS


def advance_net_buffer_list_data_start(
    ndis: Ndis,
    net_buffer_list: NetBufferList,
    data_offset_delta: int,
    free_mdl: bool,
    free_mdl_handler: FreeMdlHandler | None = None,
) -> None:
    """NdisAdvanceNetBufferListDataStart: :func:`advance_net_buffer_data_start` on every NB (one DDK call)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_net_buffer_call(net_buffer_list, "NdisAdvanceNetBufferListDataStart"):
        return
    nb = net_buffer_list.first_net_buffer
    while nb is not None:
        if v is not None:
            v.check_advance(nb, data_offset_delta)
        _advance(ndis, nb, data_offset_delta, free_mdl, free_mdl_handler)
        nb = nb.next


# --- derived NBLs (DOC §2.5) -------------------------------------------------------------------------------------


def _describe_range(ndis: Ndis, nb: NetBuffer, start: int, length: int) -> tuple[Mdl | None, int]:
    """New MDLs describing ``length`` bytes of ``nb``'s chain from byte ``start`` (IoAllocateMdl +
    IoBuildPartialMdl per source segment); returns the chain head and the bytes described."""
    c = ndis.counters
    mdl = nb.mdl_chain
    while mdl is not None and start >= mdl.byte_count:
        start -= mdl.byte_count
        mdl = mdl.next
    head: Mdl | None = None
    tail: Mdl | None = None
    described = 0
    while mdl is not None and length > 0:
        take = min(mdl.byte_count - start, length)
        if take > 0:
            part = take_mdl(
                ndis, MDL_KIND_DERIVED, mdl.data[start : start + take], (mdl.byte_offset + start) % PAGE_SIZE
            )
            c.mdl_builds += 1
            part.mdl_flags |= mdl.mdl_flags & MDL_SOURCE_IS_NONPAGED_POOL
            if tail is None:
                head = part
            else:
                tail.next = part
            tail = part
            length -= take
            described += take
        start = 0
        mdl = mdl.next
    return head, described


def _new_derived_nb(ndis: Ndis, nbl: NetBufferList, pool: NetBufferPool | None, used_prealloc: bool) -> NetBuffer:
    """The next NB of a derived NBL: its block's preallocated NB first, then NBs from ``pool`` (or NDIS's)."""
    if not used_prealloc and nbl._nb is not None:
        return nbl._nb
    return take_nb(ndis, pool or ndis.internal_nb_pool)


def _set_range(nb: NetBuffer, chain: Mdl | None, length: int) -> None:
    nb.mdl_chain = nb.current_mdl = chain
    nb.data_offset = nb.current_mdl_offset = 0
    nb.data_length = length


def _free_derived(ndis: Ndis, nbl: NetBufferList, free_mdls: bool, delta: int) -> None:
    """Free a derived NBL's NBs (advanced by ``delta`` first), the MDLs NDIS built for them, and the NBL."""
    v = ndis.verifier
    nb = nbl.first_net_buffer
    while nb is not None:
        following = nb.next
        if delta:
            _advance(ndis, nb, delta, True, None)
        if free_mdls:
            mdl = nb.mdl_chain
            while mdl is not None:
                after = mdl.next
                if v is None or not v.is_freed(mdl):
                    if mdl._retreat and mdl._kind == MDL_KIND_RETREAT:
                        _free_retreat_mdl(ndis, mdl)
                    else:
                        give_mdl(ndis, mdl)
                mdl = after
            nb.mdl_chain = nb.current_mdl = None
        if nb is not nbl._nb:
            give_nb(ndis, nb)
            if v is not None:
                v.on_freed(nb)
        nb = following
    give_nbl(ndis, nbl)
    if v is not None:
        v.on_freed(nbl)
        if nbl._nb is not None:
            v.on_freed(nbl._nb)


def allocate_clone_net_buffer_list(
    ndis: Ndis,
    original_net_buffer_list: NetBufferList,
    net_buffer_list_pool: NetBufferListPool | None = None,
    net_buffer_pool: NetBufferPool | None = None,
    allocate_clone_flags: int = 0,
) -> NetBufferList | None:
    """NdisAllocateCloneNetBufferList(OriginalNetBufferList, NetBufferListPoolHandle, NetBufferPoolHandle,
    AllocateCloneFlags): a new NBL and one NB per original NB describing the same used data.

    New MDLs describe each NB's used data from its start unless NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS (then the NBs
    share the original MDL chain, DataOffset and CurrentMdl). No context, no NetBufferListInfo, no parent link
    (the caller sets it, :func:`link_child_net_buffer_list`). Free with :func:`free_clone_net_buffer_list` and the
    same flags.
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_derive_source(original_net_buffer_list, "NdisAllocateCloneNetBufferList"):
        return None
    clone = take_nbl(ndis, net_buffer_list_pool or ndis.internal_nbl_pool)
    clone._kind = NBL_KIND_CLONE
    clone._derive = allocate_clone_flags
    tail: NetBuffer | None = None
    used_prealloc = False
    source = original_net_buffer_list.first_net_buffer
    while source is not None:
        nb = _new_derived_nb(ndis, clone, net_buffer_pool, used_prealloc)
        used_prealloc = True
        if allocate_clone_flags & NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS:
            nb.mdl_chain = source.mdl_chain
            nb.data_offset = source.data_offset
            nb.data_length = source.data_length
            nb.current_mdl = source.current_mdl
            nb.current_mdl_offset = source.current_mdl_offset
        else:
            chain, described = _describe_range(ndis, source, source.data_offset, source.data_length)
            _set_range(nb, chain, described)
        if tail is None:
            clone.first_net_buffer = nb
        else:
            tail.next = nb
        tail = nb
        source = source.next
    if tail is None:
        clone.first_net_buffer = None
    if v is not None:
        v.on_nbl_allocated(clone)
    return clone


def free_clone_net_buffer_list(ndis: Ndis, clone_net_buffer_list: NetBufferList, free_clone_flags: int = 0) -> None:
    """NdisFreeCloneNetBufferList(CloneNetBufferList, FreeCloneFlags): frees the clone, its NBs and — unless the
    flags say USE_ORIGINAL_MDLS — the MDLs of its NBs. Flags other than the allocation's are FREE-KIND: without
    the flag the original's MDLs are freed from under it, with it the clone's own MDLs leak (as in NDIS)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_nbl(
        clone_net_buffer_list, "NdisFreeCloneNetBufferList", NBL_KIND_CLONE, free_clone_flags
    ):
        return
    _free_derived(ndis, clone_net_buffer_list, not free_clone_flags & NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS, 0)


def allocate_fragment_net_buffer_list(
    ndis: Ndis,
    original_net_buffer_list: NetBufferList,
    net_buffer_list_pool: NetBufferListPool | None,
    net_buffer_pool: NetBufferPool | None,
    start_offset: int,
    maximum_length: int,
    data_offset_delta: int,
    data_back_fill: int = 0,
    allocate_fragment_flags: int = 0,
) -> NetBufferList | None:
    """NdisAllocateFragmentNetBufferList(OriginalNetBufferList, NetBufferListPool, NetBufferPool, StartOffset,
    MaximumLength, DataOffsetDelta, DataBackFill, AllocateFragmentFlags): each source NB's used data after
    StartOffset cut into NBs of at most MaximumLength bytes, each retreated by DataOffsetDelta (so NDIS allocates
    DataOffsetDelta + DataBackFill bytes of header space per fragment when the delta is not 0).

    None (NULL) when MaximumLength is not positive. Free with :func:`free_fragment_net_buffer_list` and the same
    DataOffsetDelta.
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if maximum_length <= 0:
        return None
    if v is not None and not v.check_derive_source(original_net_buffer_list, "NdisAllocateFragmentNetBufferList"):
        return None
    fragment = take_nbl(ndis, net_buffer_list_pool or ndis.internal_nbl_pool)
    fragment._kind = NBL_KIND_FRAGMENT
    fragment._derive = data_offset_delta
    tail: NetBuffer | None = None
    used_prealloc = False
    source = original_net_buffer_list.first_net_buffer
    while source is not None:
        position = source.data_offset + start_offset
        remaining = source.data_length - start_offset
        while remaining > 0:
            piece = min(remaining, maximum_length)
            nb = _new_derived_nb(ndis, fragment, net_buffer_pool, used_prealloc)
            used_prealloc = True
            chain, described = _describe_range(ndis, source, position, piece)
            _set_range(nb, chain, described)
            if data_offset_delta:
                _retreat(ndis, nb, data_offset_delta, data_back_fill, None, False)
            if tail is None:
                fragment.first_net_buffer = nb
            else:
                tail.next = nb
            tail = nb
            position += piece
            remaining -= piece
        source = source.next
    if tail is None:
        fragment.first_net_buffer = None
    if v is not None:
        v.on_nbl_allocated(fragment)
    return fragment


def free_fragment_net_buffer_list(
    ndis: Ndis, fragment_net_buffer_list: NetBufferList, data_offset_delta: int, free_fragment_flags: int = 0
) -> None:
    """NdisFreeFragmentNetBufferList(FragmentNetBufferList, DataOffsetDelta, FreeFragmentFlags): advances each NB by
    DataOffsetDelta (freeing the header space), frees the MDLs NDIS built, the NBs and the NBL. A DataOffsetDelta
    other than the allocation's is FREE-KIND."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_nbl(
        fragment_net_buffer_list, "NdisFreeFragmentNetBufferList", NBL_KIND_FRAGMENT, data_offset_delta
    ):
        return
    _free_derived(ndis, fragment_net_buffer_list, True, data_offset_delta)


def allocate_reassembled_net_buffer_list(
    ndis: Ndis,
    fragment_net_buffer_list: NetBufferList,
    net_buffer_and_net_buffer_list_pool: NetBufferListPool | None,
    start_offset: int,
    data_offset_delta: int,
    data_back_fill: int = 0,
    allocate_reassemble_flags: int = 0,
) -> NetBufferList | None:
    """NdisAllocateReassembledNetBufferList(FragmentNetBufferList, NetBufferAndNetBufferListPoolHandle,
    StartOffset, DataOffsetDelta, DataBackFill, AllocateReassembleFlags): one NB whose new MDLs describe every
    source NB's used data after StartOffset, in order, retreated by DataOffsetDelta. The pool may be None (NDIS's
    own). Free with :func:`free_reassembled_net_buffer_list` and the same DataOffsetDelta."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_derive_source(fragment_net_buffer_list, "NdisAllocateReassembledNetBufferList"):
        return None
    nbl = take_nbl(ndis, net_buffer_and_net_buffer_list_pool or ndis.internal_nbl_pool)
    nbl._kind = NBL_KIND_REASSEMBLED
    nbl._derive = data_offset_delta
    nb = _new_derived_nb(ndis, nbl, None, False)
    head: Mdl | None = None
    tail: Mdl | None = None
    total = 0
    source = fragment_net_buffer_list.first_net_buffer
    while source is not None:
        chain, described = _describe_range(
            ndis, source, source.data_offset + start_offset, source.data_length - start_offset
        )
        if chain is not None:
            if tail is None:
                head = chain
            else:
                tail.next = chain
            tail = chain
            while tail.next is not None:
                tail = tail.next
        total += described
        source = source.next
    _set_range(nb, head, total)
    if data_offset_delta:
        _retreat(ndis, nb, data_offset_delta, data_back_fill, None, False)
    nbl.first_net_buffer = nb
    if v is not None:
        v.on_nbl_allocated(nbl)
    return nbl


def free_reassembled_net_buffer_list(
    ndis: Ndis, reassembled_net_buffer_list: NetBufferList, data_offset_delta: int, free_reassemble_flags: int = 0
) -> None:
    """NdisFreeReassembledNetBufferList(ReassembledNetBufferList, DataOffsetDelta, FreeReassembleFlags)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_nbl(
        reassembled_net_buffer_list, "NdisFreeReassembledNetBufferList", NBL_KIND_REASSEMBLED, data_offset_delta
    ):
        return
    _free_derived(ndis, reassembled_net_buffer_list, True, data_offset_delta)


def link_child_net_buffer_list(ndis: Ndis, child: NetBufferList, parent: NetBufferList) -> None:
    """The caller's side of a derived NBL (DOC §2.5, as XDP does): ``child.ParentNetBufferList = parent`` and
    InterlockedIncrement(&parent->ChildRefCount) (one ``interlocked_ops``)."""
    c = ndis.counters
    c.ddk_calls += 1
    c.interlocked_ops += 1
    if ndis.verifier is not None:
        ndis.verifier.check_link_child(child, parent)
    child.parent_net_buffer_list = parent
    parent.child_ref_count += 1


def unlink_child_net_buffer_list(ndis: Ndis, child: NetBufferList) -> NetBufferList | None:
    """InterlockedDecrement(&child->ParentNetBufferList->ChildRefCount) (one ``interlocked_ops``); returns the
    parent when its count reached 0 (time to complete or free it), else None."""
    c = ndis.counters
    c.ddk_calls += 1
    c.interlocked_ops += 1
    if ndis.verifier is not None:
        ndis.verifier.check_unlink_child(child)
    parent = child.parent_net_buffer_list
    child.parent_net_buffer_list = None
    if parent is None:
        return None
    parent.child_ref_count -= 1
    return parent if parent.child_ref_count == 0 else None


def copy_from_net_buffer_to_net_buffer(
    ndis: Ndis,
    destination: NetBuffer,
    destination_offset: int,
    bytes_to_copy: int,
    source: NetBuffer,
    source_offset: int,
) -> int:
    """NdisCopyFromNetBufferToNetBuffer(Destination, DestinationOffset, BytesToCopy, Source, SourceOffset,
    BytesCopied): copies used data to used data; returns BytesCopied (limited by both used-data lengths) and
    counts them in ``bytes_copied``."""
    from ndis_replay.engine.ndis.structs import gather_net_buffer

    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not (
        v.check_net_buffer_call(destination, "NdisCopyFromNetBufferToNetBuffer")
        and v.check_net_buffer_call(source, "NdisCopyFromNetBufferToNetBuffer")
    ):
        return 0
    data = gather_net_buffer(source)[source_offset : source_offset + bytes_to_copy]
    room = max(0, destination.data_length - destination_offset)
    data = data[:room]
    position = destination.data_offset + destination_offset
    mdl = destination.mdl_chain
    while mdl is not None and position >= mdl.byte_count:
        position -= mdl.byte_count
        mdl = mdl.next
    written = 0
    while mdl is not None and written < len(data):
        take = min(mdl.byte_count - position, len(data) - written)
        mdl.data[position : position + take] = data[written : written + take]
        written += take
        position = 0
        mdl = mdl.next
    c.bytes_copied += written
    return written


def copy_send_net_buffer_list_info(ndis: Ndis, destination: NetBufferList, source: NetBufferList) -> None:
    """NdisCopySendNetBufferListInfo(DestNetBufferList, SrcNetBufferList): the send OOB slots, for a clone."""
    ndis.counters.ddk_calls += 1
    destination.net_buffer_list_info[:] = list(source.net_buffer_list_info)


__all__ = [
    "AllocateMdlHandler",
    "FreeMdlHandler",
    "NblContext",
    "advance_net_buffer_data_start",
    "advance_net_buffer_list_data_start",
    "allocate_clone_net_buffer_list",
    "allocate_fragment_net_buffer_list",
    "allocate_net_buffer",
    "allocate_net_buffer_and_net_buffer_list",
    "allocate_net_buffer_list",
    "allocate_net_buffer_list_context",
    "allocate_net_buffer_mdl_and_data",
    "allocate_reassembled_net_buffer_list",
    "copy_from_net_buffer_to_net_buffer",
    "copy_send_net_buffer_list_info",
    "free_clone_net_buffer_list",
    "free_fragment_net_buffer_list",
    "free_net_buffer",
    "free_net_buffer_list",
    "free_net_buffer_list_context",
    "free_reassembled_net_buffer_list",
    "get_pool_from_net_buffer_list",
    "link_child_net_buffer_list",
    "net_buffer_list_context_data_size",
    "net_buffer_list_context_data_start",
    "retreat_net_buffer_data_start",
    "retreat_net_buffer_list_data_start",
    "unlink_child_net_buffer_list",
]
