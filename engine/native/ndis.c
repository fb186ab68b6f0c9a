/* Pools, MDLs and the send path of the native core, counted exactly as engine/ndis/{pools,mdl,nbl,send}.py count.
 *
 * Memory is real: a pool block is one aligned_alloc of the NBL (368 bytes), its preallocated NB (176) and context
 * (16 + ContextSize), exactly the Python model's block_size; freed blocks go on the pool's lookaside list (LIFO,
 * linked through NET_BUFFER_LIST.Next as the SLIST entry) and back to the C heap when the pool is freed. Fixed-size
 * MDLs (<= 23 pages) are 232-byte blocks on one runtime-wide lookaside list, bigger MDLs are allocated and freed
 * each time. Allocation zeroes the NBL and NB headers (memset of NBL_SIZE + NB_SIZE bytes: bytes_zeroed).
 */
#include "ndis.h"

#include <stdlib.h>
#include <string.h>

const char *const ndis_counter_names[] = {
#define NDIS_COUNTER_NAME(name) #name,
    NDIS_COUNTER_LIST(NDIS_COUNTER_NAME)
#undef NDIS_COUNTER_NAME
};

void NdisRtInit(NDIS_RT *rt) {
    memset(rt, 0, sizeof(*rt));
}

void NdisRtRelease(NDIS_RT *rt) {
    MDL *mdl = rt->mdl_lookaside;
    while (mdl != NULL) {
        MDL *next = mdl->Next;
        free(mdl);
        mdl = next;
    }
    rt->mdl_lookaside = NULL;
}

void *NdisRegisterProtocol(NDIS_RT *rt, SEND_NBL_COMPLETE_HANDLER handler, void *context) {
    rt->protocol_send_complete = handler;
    rt->protocol_context = context;
    return &rt->binding;
}

void NdisRegisterMiniport(NDIS_RT *rt, MINIPORT_SEND_NBL_HANDLER handler, void *context) {
    rt->miniport_send = handler;
    rt->miniport_context = context;
}

/* --- NBL pools ---------------------------------------------------------------------------------------------------- */

NDIS_NBL_POOL *NdisAllocateNetBufferListPool(NDIS_RT *rt, const NET_BUFFER_LIST_POOL_PARAMETERS *params) {
    rt->c.ddk_calls += 1;
    /* NULL for invalid parameters, as NDIS (DOC: ContextSize a multiple of MEMORY_ALLOCATION_ALIGNMENT; DataSize
     * needs fAllocateNetBuffer) */
    if (params->ContextSize % MEMORY_ALLOCATION_ALIGNMENT || (params->DataSize && !params->fAllocateNetBuffer) ||
        params->ContextSize > 0xFFF0u || params->DataSize > (1u << 25))
        return NULL;
    NDIS_NBL_POOL *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateNetBufferListPool");
        return NULL;
    }
    pool->params = *params;
    uint32_t size = NBL_SIZE;
    if (params->fAllocateNetBuffer) size += NB_SIZE;
    if (params->ContextSize) size += NBL_CONTEXT_HEADER_SIZE + params->ContextSize;
    /* DataSize: the NB's MDL (MmSizeOfMdl of the buffer) and the buffer follow, in the same block */
    if (params->DataSize) size += mm_size_of_mdl(0, params->DataSize) + params->DataSize;
    pool->block_size = size;
    return pool;
}

/* a pool's end (NdisFreeNetBufferListPool, NdisFreeNetBufferPool): its cached blocks go back to the heap, counted.
 * NBLs and NBs alike link their free list through their first field, Next. */
_Static_assert(offsetof(NET_BUFFER_LIST, Next) == 0 && offsetof(NET_BUFFER, Next) == 0, "Next leads both");
static void free_cached(NDIS_RT *rt, void *head, int64_t cached, uint32_t block_size) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    c->sys_frees += cached;
    c->mem_bytes -= cached * (int64_t)block_size;
    while (head != NULL) {
        void *next = *(void **)head;
        free(head);
        head = next;
    }
}

void NdisFreeNetBufferListPool(NDIS_RT *rt, NDIS_NBL_POOL *pool) {
    free_cached(rt, pool->free_list, pool->cached, pool->block_size);
    free(pool);
}

static inline NET_BUFFER *block_nb(const NDIS_NBL_POOL *pool, NET_BUFFER_LIST *nbl) {
    return pool->params.fAllocateNetBuffer ? (NET_BUFFER *)(nbl + 1) : NULL;
}

static inline NET_BUFFER_LIST_CONTEXT *block_ctx(const NDIS_NBL_POOL *pool, NET_BUFFER_LIST *nbl) {
    if (!pool->params.ContextSize) return NULL;
    return (NET_BUFFER_LIST_CONTEXT *)((char *)nbl + NBL_SIZE + (pool->params.fAllocateNetBuffer ? NB_SIZE : 0));
}

/* a DataSize pool's MDL: after the NBL, the NB and the context (16-byte multiples, so the MDL stays aligned) */
static inline MDL *block_mdl(const NDIS_NBL_POOL *pool, NET_BUFFER_LIST *nbl) {
    if (!pool->params.DataSize) return NULL;
    uint32_t at = NBL_SIZE + NB_SIZE;
    if (pool->params.ContextSize) at += NBL_CONTEXT_HEADER_SIZE + pool->params.ContextSize;
    return (MDL *)((char *)nbl + at);
}

static void describe_data(MDL *mdl, uint32_t data_size);

/* NdisReserved[0] keeps the context head right after the allocate call and NdisReserved[1] its Offset then: NDIS's
 * own bookkeeping (the Python model's _ctx_base/_ctx_base_offset), in the NDIS-only field */
static void reserve_context(NDIS_RT *rt, NET_BUFFER_LIST *nbl, uint32_t size, uint32_t backfill) {
    NDIS_COUNTERS *c = &rt->c;
    NET_BUFFER_LIST_CONTEXT *head = nbl->Context;
    if (head != NULL && head->Offset >= size) {
        head->Offset = (uint16_t)(head->Offset - size);
    } else {
        uint32_t total = size + backfill;
        uint32_t block = NBL_CONTEXT_HEADER_SIZE + total;
        NET_BUFFER_LIST_CONTEXT *ctx = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(block, 16));
        if (ctx == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateNetBufferListContext");
            return;
        }
        ctx->Size = (uint16_t)total;
        ctx->Offset = (uint16_t)backfill;
        ctx->Next = head;
        nbl->Context = ctx;
        sys_alloc(c, block);
    }
    c->ctx_allocs += 1;
    PEAK(c, ctx);
}

static NET_BUFFER_LIST *take_nbl(NDIS_RT *rt, NDIS_NBL_POOL *pool, uint32_t context_size, uint32_t backfill) {
    NDIS_COUNTERS *c = &rt->c;
    NET_BUFFER_LIST *nbl = pool->free_list;
    c->interlocked_ops += 1; /* InterlockedPopEntrySList, served or not */
    if (nbl != NULL) {
        c->pool_hits += 1;
        pool->free_list = nbl->Next;
        pool->cached -= 1;
    } else {
        c->pool_misses += 1;
        nbl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(pool->block_size, MEMORY_ALLOCATION_ALIGNMENT));
        if (nbl == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateNetBufferAndNetBufferList");
            return NULL;
        }
        sys_alloc(c, pool->block_size);
        if (pool->params.DataSize) describe_data(block_mdl(pool, nbl), pool->params.DataSize);
    }
    NET_BUFFER *nb = block_nb(pool, nbl);
    /* "allocate and initialize": the NBL and NB headers are zeroed on every allocation */
    memset(nbl, 0, NB_SIZE * (nb != NULL) + NBL_SIZE);
    nbl->NdisPoolHandle = pool;
    nbl->FirstNetBuffer = nb;
    if (nb != NULL) nb->NdisPoolHandle = pool;
    MDL *data_mdl = block_mdl(pool, nbl);
    if (data_mdl != NULL) {
        /* the NB describes its whole buffer: DataOffset 0, DataLength = DataSize (the model's convention) */
        data_mdl->Next = NULL;
        nb->MdlChain = nb->CurrentMdl = data_mdl;
        nb->DataLength = data_mdl->ByteCount;
    }
    NET_BUFFER_LIST_CONTEXT *ctx = block_ctx(pool, nbl);
    nbl->Context = ctx;
    if (ctx != NULL) {
        ctx->Next = NULL;
        ctx->Size = (uint16_t)pool->params.ContextSize;
        ctx->Offset = ctx->Size;
    }
    if (context_size || backfill) {
        if (ctx != NULL && ctx->Size >= context_size) {
            ctx->Offset = (uint16_t)(ctx->Size - context_size);
            c->ctx_allocs += 1;
            PEAK(c, ctx);
        } else {
            reserve_context(rt, nbl, context_size, backfill);
        }
        nbl->NdisReserved[0] = nbl->Context;
        nbl->NdisReserved[1] = (void *)(uintptr_t)(nbl->Context != NULL ? nbl->Context->Offset : 0);
    } else {
        nbl->NdisReserved[0] = ctx;
        nbl->NdisReserved[1] = (void *)(uintptr_t)(ctx != NULL ? ctx->Size : 0);
    }
    pool->allocated += 1;
    c->nbl_allocs += 1;
    PEAK(c, nbl);
    if (nb == NULL) {
        c->bytes_zeroed += NBL_SIZE;
    } else {
        c->nb_allocs += 1;
        PEAK(c, nb);
        c->bytes_zeroed += NBL_SIZE + NB_SIZE;
        if (data_mdl != NULL) {
            c->mdl_allocs += 1;
            c->data_allocs += 1;
            PEAK(c, mdl);
            PEAK(c, data);
        }
    }
    return nbl;
}

NET_BUFFER_LIST *NdisAllocateNetBufferAndNetBufferList(NDIS_RT *rt, NDIS_NBL_POOL *pool, uint32_t ContextSize,
                                                       uint32_t ContextBackFill, MDL *MdlChain, uint32_t DataOffset,
                                                       uint32_t DataLength) {
    rt->c.ddk_calls += 1;
    NET_BUFFER_LIST *nbl = take_nbl(rt, pool, ContextSize, ContextBackFill);
    if (nbl == NULL) return NULL;
    NET_BUFFER *nb = nbl->FirstNetBuffer;
    if (nb != NULL) {
        nb->MdlChain = MdlChain;
        nb->DataOffset = DataOffset;
        nb->DataLength = DataLength;
        /* CurrentMdl/CurrentMdlOffset: walk DataOffset bytes, skipping MDLs wholly inside it */
        MDL *mdl = MdlChain;
        uint32_t offset = DataOffset;
        while (mdl != NULL && offset >= mdl->ByteCount && mdl->Next != NULL) {
            offset -= mdl->ByteCount;
            mdl = mdl->Next;
        }
        nb->CurrentMdl = mdl;
        nb->CurrentMdlOffset = offset;
    }
    return nbl;
}

static void give_nbl(NDIS_RT *rt, NET_BUFFER_LIST *nbl);

void NdisFreeNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *nbl) {
    rt->c.ddk_calls += 1;
    give_nbl(rt, nbl);
}

/* the part of every NBL free that returns the block to its pool (NdisFreeNetBufferList, the derived frees) */
static void give_nbl(NDIS_RT *rt, NET_BUFFER_LIST *nbl) {
    NDIS_COUNTERS *c = &rt->c;
    NDIS_NBL_POOL *pool = nbl->NdisPoolHandle;
    pool->allocated -= 1;
    c->nbl_frees += 1;
    NET_BUFFER_LIST_CONTEXT *base = nbl->NdisReserved[0];
    NET_BUFFER_LIST_CONTEXT *prealloc = block_ctx(pool, nbl);
    if (base != NULL) {
        if (base != prealloc) {
            c->ctx_frees += 1;
            c->sys_frees += 1;
            c->mem_bytes -= NBL_CONTEXT_HEADER_SIZE + base->Size;
            free(base);
        } else if ((uintptr_t)nbl->NdisReserved[1] < base->Size) {
            c->ctx_frees += 1;
        }
    }
    if (block_nb(pool, nbl) != NULL) c->nb_frees += 1;
    if (pool->params.DataSize) {
        c->mdl_frees += 1;
        c->data_frees += 1;
    }
    if (pool->freed) {
        c->sys_frees += 1;
        c->mem_bytes -= pool->block_size;
        free(nbl);
    } else {
        c->interlocked_ops += 1; /* InterlockedPushEntrySList */
        nbl->Next = pool->free_list;
        pool->free_list = nbl;
        pool->cached += 1;
    }
}

/* --- MDLs --------------------------------------------------------------------------------------------------------- */

static void describe(MDL *mdl, void *va, uint32_t length) {
    /* the model's convention (engine/ndis/mdl.py): a buffer starts at page offset 0, so it spans
     * ceil(length / PAGE_SIZE) pages; StartVa is the buffer and ByteOffset 0 */
    mdl->Next = NULL;
    mdl->StartVa = va;
    mdl->ByteOffset = 0;
    mdl->ByteCount = length;
    mdl->Size = (int16_t)mm_size_of_mdl(0, length);
    mdl->Process = NULL;
    mdl->MappedSystemVa = NULL;
}

static void fill_pfns(MDL *mdl) {
    /* the PFN array: one entry per page spanned (the virtual page numbers stand in for physical ones) */
    PFN_NUMBER *pfn = MmGetMdlPfnArray(mdl);
    uint32_t pages = pages_spanned(mdl->ByteOffset, mdl->ByteCount);
    PFN_NUMBER first = (PFN_NUMBER)((uintptr_t)mdl->StartVa / PAGE_SIZE);
    for (uint32_t i = 0; i < pages; i++) pfn[i] = first + i;
    mdl->MappedSystemVa = (char *)mdl->StartVa + mdl->ByteOffset;
}

MDL *MdlBlockAllocate(NDIS_RT *rt, uint32_t length, const char *who, uint16_t *flags) {
    NDIS_COUNTERS *c = &rt->c;
    MDL *mdl;
    if (pages_spanned(0, length) <= MDL_LOOKASIDE_MAX_PAGES) {
        c->interlocked_ops += 1; /* pop from the fixed-size MDL lookaside list */
        mdl = rt->mdl_lookaside;
        if (mdl != NULL) {
            c->pool_hits += 1;
            rt->mdl_lookaside = mdl->Next;
        } else {
            c->pool_misses += 1;
            mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(MDL_FIXED_BLOCK_SIZE, MEMORY_ALLOCATION_ALIGNMENT));
            if (mdl == NULL) {
                fail(rt, NDIS_FAIL_MEMORY, who);
                return NULL;
            }
            sys_alloc(c, MDL_FIXED_BLOCK_SIZE);
        }
        *flags = MDL_ALLOCATED_FIXED_SIZE;
        return mdl;
    }
    uint32_t size = mm_size_of_mdl(0, length);
    mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(size, MEMORY_ALLOCATION_ALIGNMENT));
    if (mdl == NULL) {
        fail(rt, NDIS_FAIL_MEMORY, who);
        return NULL;
    }
    sys_alloc(c, size);
    *flags = 0;
    return mdl;
}

static MDL *take_mdl(NDIS_RT *rt, void *va, uint32_t length) {
    NDIS_COUNTERS *c = &rt->c;
    uint16_t flags;
    MDL *mdl = MdlBlockAllocate(rt, length, "IoAllocateMdl", &flags);
    if (mdl == NULL) return NULL;
    describe(mdl, va, length);
    mdl->MdlFlags = flags;
    c->mdl_allocs += 1;
    PEAK(c, mdl);
    return mdl;
}

static void give_mdl(NDIS_RT *rt, MDL *mdl) {
    NDIS_COUNTERS *c = &rt->c;
    c->mdl_frees += 1;
    if (mdl->MdlFlags & MDL_ALLOCATED_FIXED_SIZE) {
        c->interlocked_ops += 1; /* push on the fixed-size MDL lookaside list */
        mdl->Next = rt->mdl_lookaside;
        rt->mdl_lookaside = mdl;
    } else {
        c->sys_frees += 1;
        c->mem_bytes -= mm_size_of_mdl(mdl->ByteOffset, mdl->ByteCount);
        free(mdl);
    }
}

MDL *IoAllocateMdl(NDIS_RT *rt, void *VirtualAddress, uint32_t Length) {
    rt->c.ddk_calls += 1;
    return take_mdl(rt, VirtualAddress, Length);
}

void IoFreeMdl(NDIS_RT *rt, MDL *mdl) {
    rt->c.ddk_calls += 1;
    give_mdl(rt, mdl);
}

void MmProbeAndLockPages(NDIS_RT *rt, MDL *mdl) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    if (mdl->MdlFlags & MDL_PAGES_LOCKED) return; /* MDL-LOCK-BALANCE: not counted again */
    c->mdl_builds += 1;
    c->pages_locked += pages_spanned(mdl->ByteOffset, mdl->ByteCount);
    fill_pfns(mdl);
    mdl->MdlFlags |= MDL_PAGES_LOCKED;
}

void MmUnlockPages(NDIS_RT *rt, MDL *mdl) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    if (!(mdl->MdlFlags & MDL_PAGES_LOCKED)) return;
    c->pages_unlocked += pages_spanned(mdl->ByteOffset, mdl->ByteCount);
    mdl->MdlFlags &= (uint16_t)~MDL_PAGES_LOCKED;
}

MDL *NdisAllocateMdl(NDIS_RT *rt, void *VirtualAddress, uint32_t Length) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    MDL *mdl = take_mdl(rt, VirtualAddress, Length);
    if (mdl == NULL) return NULL;
    c->mdl_builds += 1;
    fill_pfns(mdl);
    mdl->MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL;
    return mdl;
}

void NdisFreeMdl(NDIS_RT *rt, MDL *mdl) {
    rt->c.ddk_calls += 1;
    give_mdl(rt, mdl);
}

void MmInitializeMdl(NDIS_RT *rt, MDL *mdl, void *BaseVa, uint32_t Length) {
    rt->c.ddk_calls += 1;
    describe(mdl, BaseVa, Length);
    mdl->MdlFlags = 0;
}

void MmBuildMdlForNonPagedPool(NDIS_RT *rt, MDL *mdl) {
    rt->c.ddk_calls += 1;
    rt->c.mdl_builds += 1;
    fill_pfns(mdl);
    mdl->MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL;
}

/* --- the send path ---------------------------------------------------------------------------------------------- */

void NdisSendNetBufferLists(NDIS_RT *rt, void *NdisBindingHandle, NET_BUFFER_LIST *chain, uint32_t SendFlags) {
    (void)NdisBindingHandle;
    (void)SendFlags;
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    int64_t n = 0;
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) n++;
    c->nbls_sent += n;
    if (rt->filter_send != NULL) { /* a filter module is attached: FilterSendNetBufferLists gets the chain */
        rt->filter_send(rt->filter_context, chain);
        return;
    }
    rt->miniport_send(rt->miniport_context, chain);
}

void NdisMSendNetBufferListsComplete(NDIS_RT *rt, NET_BUFFER_LIST *chain) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    int64_t n = 0;
    if (rt->filter_send_complete != NULL) {
        /* every completion passes through FilterSendNetBufferListsComplete, which routes its own NBLs */
        for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) n++;
        c->nbls_completed += n;
        rt->filter_send_complete(rt->filter_context, chain);
        return;
    }
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) {
        n++;
        if (nbl->SourceHandle != &rt->binding) {
            /* no bound driver to route the completion to: NDIS bug checks (Python: NdisBugCheck) */
            fail(rt, NDIS_FAIL_BUGCHECK, "completion cannot be routed: SourceHandle names no bound driver");
            return;
        }
    }
    c->nbls_completed += n;
    rt->protocol_send_complete(rt->protocol_context, chain);
}

/* --- DataSize pools, NB pools, memory (the copy strategy's descriptors) ------------------------------------------ */

static void describe_data(MDL *mdl, uint32_t data_size) {
    /* the preallocated MDL of a DataSize block: the buffer right after the MDL's PFN array, page offset 0 */
    uint8_t *data = (uint8_t *)mdl + mm_size_of_mdl(0, data_size);
    describe(mdl, data, data_size);
    mdl->MdlFlags = MDL_SOURCE_IS_NONPAGED_POOL;
    fill_pfns(mdl);
}

NET_BUFFER_LIST *NdisAllocateNetBufferList(NDIS_RT *rt, NDIS_NBL_POOL *pool, uint32_t ContextSize,
                                           uint32_t ContextBackFill) {
    rt->c.ddk_calls += 1;
    return take_nbl(rt, pool, ContextSize, ContextBackFill);
}

NDIS_NB_POOL *NdisAllocateNetBufferPool(NDIS_RT *rt, uint32_t DataSize) {
    rt->c.ddk_calls += 1;
    if (DataSize > (1u << 25)) return NULL;
    NDIS_NB_POOL *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateNetBufferPool");
        return NULL;
    }
    pool->DataSize = DataSize;
    pool->block_size = NB_SIZE + (DataSize ? mm_size_of_mdl(0, DataSize) + DataSize : 0);
    return pool;
}

void NdisFreeNetBufferPool(NDIS_RT *rt, NDIS_NB_POOL *pool) {
    free_cached(rt, pool->free_list, pool->cached, pool->block_size);
    free(pool);
}

static inline MDL *nb_block_mdl(const NDIS_NB_POOL *pool, NET_BUFFER *nb) {
    return pool->DataSize ? (MDL *)(nb + 1) : NULL;
}

static NET_BUFFER *take_nb(NDIS_RT *rt, NDIS_NB_POOL *pool) {
    NDIS_COUNTERS *c = &rt->c;
    c->interlocked_ops += 1; /* InterlockedPopEntrySList */
    NET_BUFFER *nb = pool->free_list;
    if (nb != NULL) {
        c->pool_hits += 1;
        pool->free_list = nb->Next;
        pool->cached -= 1;
    } else {
        c->pool_misses += 1;
        nb = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(pool->block_size, MEMORY_ALLOCATION_ALIGNMENT));
        if (nb == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateNetBuffer");
            return NULL;
        }
        sys_alloc(c, pool->block_size);
        if (pool->DataSize) describe_data(nb_block_mdl(pool, nb), pool->DataSize);
    }
    memset(nb, 0, NB_SIZE);
    nb->NdisPoolHandle = pool;
    pool->allocated += 1;
    c->nb_allocs += 1;
    PEAK(c, nb);
    c->bytes_zeroed += NB_SIZE;
    return nb;
}

static void give_nb(NDIS_RT *rt, NET_BUFFER *nb) {
    NDIS_COUNTERS *c = &rt->c;
    NDIS_NB_POOL *pool = nb->NdisPoolHandle;
    pool->allocated -= 1;
    c->nb_frees += 1;
    if (pool->DataSize) {
        c->mdl_frees += 1;
        c->data_frees += 1;
    }
    if (pool->freed) {
        c->sys_frees += 1;
        c->mem_bytes -= pool->block_size;
        free(nb);
    } else {
        c->interlocked_ops += 1; /* InterlockedPushEntrySList */
        nb->Next = pool->free_list;
        pool->free_list = nb;
        pool->cached += 1;
    }
}

NET_BUFFER *NdisAllocateNetBufferMdlAndData(NDIS_RT *rt, NDIS_NB_POOL *pool) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    NET_BUFFER *nb = take_nb(rt, pool);
    if (nb == NULL) return NULL;
    MDL *mdl = nb_block_mdl(pool, nb);
    nb->MdlChain = nb->CurrentMdl = mdl;
    if (mdl != NULL) {
        mdl->Next = NULL;
        nb->DataLength = mdl->ByteCount;
        c->mdl_allocs += 1;
        c->data_allocs += 1;
        PEAK(c, mdl);
        PEAK(c, data);
    }
    return nb;
}

void NdisFreeNetBuffer(NDIS_RT *rt, NET_BUFFER *nb) {
    rt->c.ddk_calls += 1;
    give_nb(rt, nb);
}

void *MmGetSystemAddressForMdlSafe(NDIS_RT *rt, MDL *mdl) {
    rt->c.ddk_calls += 1;
    mdl->MdlFlags |= MDL_MAPPED_TO_SYSTEM_VA;
    return mdl->MappedSystemVa;
}

void NdisMoveMemory(NDIS_RT *rt, void *Destination, const void *Source, uint32_t Length) {
    rt->c.ddk_calls += 1;
    memcpy(Destination, Source, Length);
    rt->c.bytes_copied += Length;
}

/* --- derived NBLs: clones, fragments, retreat/advance (engine/ndis/nbl.py) ---------------------------------------- */

static MDL *take_partial_mdl(NDIS_RT *rt, const MDL *source, uint32_t start, uint32_t length) {
    /* IoAllocateMdl + IoBuildPartialMdl of `length` bytes `start` bytes into `source` (no DDK call of its own: NDIS
     * does it inside the derive call); the partial MDL keeps the source's page offset */
    uint8_t *va = (uint8_t *)source->MappedSystemVa + start;
    uint32_t byte_offset = (source->ByteOffset + start) % PAGE_SIZE;
    NDIS_COUNTERS *c = &rt->c;
    uint32_t pages = pages_spanned(byte_offset, length);
    MDL *mdl;
    if (pages <= MDL_LOOKASIDE_MAX_PAGES) {
        c->interlocked_ops += 1;
        mdl = rt->mdl_lookaside;
        if (mdl != NULL) {
            c->pool_hits += 1;
            rt->mdl_lookaside = mdl->Next;
        } else {
            c->pool_misses += 1;
            mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT,
                                round_up(MDL_FIXED_BLOCK_SIZE, MEMORY_ALLOCATION_ALIGNMENT));
            if (mdl == NULL) {
                fail(rt, NDIS_FAIL_MEMORY, "IoAllocateMdl");
                return NULL;
            }
            sys_alloc(c, MDL_FIXED_BLOCK_SIZE);
        }
        mdl->MdlFlags = MDL_ALLOCATED_FIXED_SIZE;
    } else {
        uint32_t size = mm_size_of_mdl(byte_offset, length);
        mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(size, MEMORY_ALLOCATION_ALIGNMENT));
        if (mdl == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "IoAllocateMdl");
            return NULL;
        }
        sys_alloc(c, size);
        mdl->MdlFlags = 0;
    }
    c->mdl_allocs += 1;
    PEAK(c, mdl);
    mdl->Next = NULL;
    mdl->Size = (int16_t)mm_size_of_mdl(byte_offset, length);
    mdl->Process = NULL;
    mdl->StartVa = (void *)((uintptr_t)va - byte_offset);
    mdl->ByteOffset = byte_offset;
    mdl->ByteCount = length;
    mdl->MappedSystemVa = va;
    PFN_NUMBER *pfn = MmGetMdlPfnArray(mdl);
    PFN_NUMBER first = (PFN_NUMBER)((uintptr_t)mdl->StartVa / PAGE_SIZE);
    for (uint32_t i = 0; i < pages; i++) pfn[i] = first + i;
    c->mdl_builds += 1;
    mdl->MdlFlags |= (uint16_t)(source->MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL);
    return mdl;
}

static MDL *describe_range(NDIS_RT *rt, const NET_BUFFER *nb, uint32_t start, uint32_t length, uint32_t *described) {
    /* new MDLs for `length` bytes of nb's chain from byte `start`, one per source MDL segment */
    MDL *mdl = nb->MdlChain;
    while (mdl != NULL && start >= mdl->ByteCount) {
        start -= mdl->ByteCount;
        mdl = mdl->Next;
    }
    MDL *head = NULL, *tail = NULL;
    *described = 0;
    while (mdl != NULL && length > 0) {
        uint32_t take = mdl->ByteCount - start;
        if (take > length) take = length;
        if (take > 0) {
            MDL *part = take_partial_mdl(rt, mdl, start, take);
            if (part == NULL) return head;
            if (tail == NULL)
                head = part;
            else
                tail->Next = part;
            tail = part;
            length -= take;
            *described += take;
        }
        start = 0;
        mdl = mdl->Next;
    }
    return head;
}

static NET_BUFFER *derived_nb(NDIS_RT *rt, NET_BUFFER_LIST *nbl, NDIS_NB_POOL *pool, int used_prealloc) {
    /* the next NB of a derived NBL: its block's preallocated NB first, then NBs from the NB pool */
    NET_BUFFER *own = block_nb(nbl->NdisPoolHandle, nbl);
    if (!used_prealloc && own != NULL) return own;
    return take_nb(rt, pool);
}

static void free_retreat_mdl(NDIS_RT *rt, MDL *mdl) {
    NDIS_COUNTERS *c = &rt->c;
    c->data_frees += 1;
    c->sys_frees += 1;
    c->mem_bytes -= mdl->ByteCount;
    free(mdl->MappedSystemVa);
    give_mdl(rt, mdl);
}

static int retreat(NDIS_RT *rt, NET_BUFFER *nb, uint32_t delta, uint32_t back_fill) {
    /* NdisRetreatNetBufferDataStart's work: within the backfill only the offsets move; beyond it NDIS chains a new
     * MDL over a new nonpaged buffer of what the backfill lacks plus DataBackFill (the model's method) */
    nb->DataLength += delta;
    uint32_t offset = nb->DataOffset;
    if (offset >= delta) {
        offset -= delta;
        nb->DataOffset = offset;
        if (nb->CurrentMdl != NULL && nb->CurrentMdlOffset >= delta) {
            nb->CurrentMdlOffset -= delta;
        } else {
            MDL *mdl = nb->MdlChain;
            while (mdl != NULL && offset >= mdl->ByteCount && mdl->Next != NULL) {
                offset -= mdl->ByteCount;
                mdl = mdl->Next;
            }
            nb->CurrentMdl = mdl;
            nb->CurrentMdlOffset = offset;
        }
        return 0;
    }
    uint32_t size = delta - offset + back_fill;
    NDIS_COUNTERS *c = &rt->c;
    uint8_t *buffer = malloc(size ? size : 1);
    if (buffer == NULL) {
        fail(rt, NDIS_FAIL_MEMORY, "NdisRetreatNetBufferDataStart");
        return -1;
    }
    c->data_allocs += 1;
    sys_alloc(c, size);
    PEAK(c, data);
    MDL *mdl = take_mdl(rt, buffer, size);
    if (mdl == NULL) {
        free(buffer);
        return -1;
    }
    c->mdl_builds += 1;
    fill_pfns(mdl);
    mdl->MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL | MDL_INTERNAL;
    mdl->Next = nb->MdlChain;
    nb->MdlChain = nb->CurrentMdl = mdl;
    nb->DataOffset = nb->CurrentMdlOffset = back_fill;
    return 0;
}

static void advance_freeing(NDIS_RT *rt, NET_BUFFER *nb, uint32_t delta) {
    /* NdisAdvanceNetBufferDataStart(FreeMdl = TRUE) without a handler: retreat MDLs now wholly unused are freed */
    nb->DataLength -= delta;
    uint32_t offset = nb->DataOffset + delta;
    nb->DataOffset = offset;
    MDL *mdl = nb->MdlChain;
    if (mdl != NULL && (mdl->MdlFlags & MDL_INTERNAL) && offset >= mdl->ByteCount) {
        while (mdl != NULL && (mdl->MdlFlags & MDL_INTERNAL) && offset >= mdl->ByteCount) {
            MDL *following = mdl->Next;
            offset -= mdl->ByteCount;
            free_retreat_mdl(rt, mdl);
            mdl = following;
        }
        nb->MdlChain = mdl;
        nb->DataOffset = offset;
        while (mdl != NULL && offset >= mdl->ByteCount && mdl->Next != NULL) {
            offset -= mdl->ByteCount;
            mdl = mdl->Next;
        }
        nb->CurrentMdl = mdl;
        nb->CurrentMdlOffset = offset;
        return;
    }
    MDL *current = nb->CurrentMdl;
    if (current == NULL) {
        while (mdl != NULL && offset >= mdl->ByteCount && mdl->Next != NULL) {
            offset -= mdl->ByteCount;
            mdl = mdl->Next;
        }
        nb->CurrentMdl = mdl;
        nb->CurrentMdlOffset = offset;
        return;
    }
    uint32_t position = nb->CurrentMdlOffset + delta;
    while (position >= current->ByteCount && current->Next != NULL) {
        position -= current->ByteCount;
        current = current->Next;
    }
    nb->CurrentMdl = current;
    nb->CurrentMdlOffset = position;
}

static void free_derived(NDIS_RT *rt, NET_BUFFER_LIST *nbl, int free_mdls, uint32_t delta) {
    /* a derived NBL's NBs (advanced by `delta` first), the MDLs NDIS built for them, the NBL */
    NET_BUFFER *own = block_nb(nbl->NdisPoolHandle, nbl);
    NET_BUFFER *nb = nbl->FirstNetBuffer;
    while (nb != NULL) {
        NET_BUFFER *following = nb->Next;
        if (delta) advance_freeing(rt, nb, delta);
        if (free_mdls) {
            MDL *mdl = nb->MdlChain;
            while (mdl != NULL) {
                MDL *after = mdl->Next;
                if (mdl->MdlFlags & MDL_INTERNAL)
                    free_retreat_mdl(rt, mdl);
                else
                    give_mdl(rt, mdl);
                mdl = after;
            }
            nb->MdlChain = nb->CurrentMdl = NULL;
        }
        if (nb != own) give_nb(rt, nb);
        nb = following;
    }
    give_nbl(rt, nbl);
}

NET_BUFFER_LIST *NdisAllocateCloneNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Original, NDIS_NBL_POOL *NblPool,
                                                NDIS_NB_POOL *NbPool, uint32_t AllocateCloneFlags) {
    rt->c.ddk_calls += 1;
    NET_BUFFER_LIST *clone = take_nbl(rt, NblPool, 0, 0);
    if (clone == NULL) return NULL;
    NET_BUFFER *tail = NULL;
    int used_prealloc = 0;
    for (NET_BUFFER *source = Original->FirstNetBuffer; source != NULL; source = source->Next) {
        NET_BUFFER *nb = derived_nb(rt, clone, NbPool, used_prealloc);
        if (nb == NULL) return NULL;
        used_prealloc = 1;
        if (AllocateCloneFlags & NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS) {
            nb->MdlChain = source->MdlChain;
            nb->DataOffset = source->DataOffset;
            nb->DataLength = source->DataLength;
            nb->CurrentMdl = source->CurrentMdl;
            nb->CurrentMdlOffset = source->CurrentMdlOffset;
        } else {
            uint32_t described;
            MDL *chain = describe_range(rt, source, source->DataOffset, source->DataLength, &described);
            if (rt->failure) return NULL;
            nb->MdlChain = nb->CurrentMdl = chain;
            nb->DataOffset = nb->CurrentMdlOffset = 0;
            nb->DataLength = described;
        }
        nb->Next = NULL;
        if (tail == NULL)
            clone->FirstNetBuffer = nb;
        else
            tail->Next = nb;
        tail = nb;
    }
    if (tail == NULL) clone->FirstNetBuffer = NULL;
    return clone;
}

void NdisFreeCloneNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Clone, uint32_t FreeCloneFlags) {
    rt->c.ddk_calls += 1;
    free_derived(rt, Clone, !(FreeCloneFlags & NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS), 0);
}

NET_BUFFER_LIST *NdisAllocateFragmentNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Original, NDIS_NBL_POOL *NblPool,
                                                   NDIS_NB_POOL *NbPool, uint32_t StartOffset,
                                                   uint32_t MaximumLength, uint32_t DataOffsetDelta,
                                                   uint32_t DataBackFill) {
    rt->c.ddk_calls += 1;
    if (MaximumLength == 0) return NULL;
    NET_BUFFER_LIST *fragment = take_nbl(rt, NblPool, 0, 0);
    if (fragment == NULL) return NULL;
    NET_BUFFER *tail = NULL;
    int used_prealloc = 0;
    for (NET_BUFFER *source = Original->FirstNetBuffer; source != NULL; source = source->Next) {
        uint32_t position = source->DataOffset + StartOffset;
        int64_t remaining = (int64_t)source->DataLength - StartOffset;
        while (remaining > 0) {
            uint32_t piece = remaining < MaximumLength ? (uint32_t)remaining : MaximumLength;
            NET_BUFFER *nb = derived_nb(rt, fragment, NbPool, used_prealloc);
            if (nb == NULL) return NULL;
            used_prealloc = 1;
            uint32_t described;
            MDL *chain = describe_range(rt, source, position, piece, &described);
            if (rt->failure) return NULL;
            nb->MdlChain = nb->CurrentMdl = chain;
            nb->DataOffset = nb->CurrentMdlOffset = 0;
            nb->DataLength = described;
            nb->Next = NULL;
            if (DataOffsetDelta && retreat(rt, nb, DataOffsetDelta, DataBackFill)) return NULL;
            if (tail == NULL)
                fragment->FirstNetBuffer = nb;
            else
                tail->Next = nb;
            tail = nb;
            position += piece;
            remaining -= piece;
        }
    }
    if (tail == NULL) fragment->FirstNetBuffer = NULL;
    return fragment;
}

void NdisFreeFragmentNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Fragment, uint32_t DataOffsetDelta) {
    rt->c.ddk_calls += 1;
    free_derived(rt, Fragment, 1, DataOffsetDelta);
}

void NdisLinkChildNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *child, NET_BUFFER_LIST *parent) {
    rt->c.ddk_calls += 1;
    rt->c.interlocked_ops += 1; /* InterlockedIncrement(&parent->ChildRefCount) */
    child->ParentNetBufferList = parent;
    parent->ChildRefCount += 1;
}

NET_BUFFER_LIST *NdisUnlinkChildNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *child) {
    rt->c.ddk_calls += 1;
    rt->c.interlocked_ops += 1; /* InterlockedDecrement(&parent->ChildRefCount) */
    NET_BUFFER_LIST *parent = child->ParentNetBufferList;
    child->ParentNetBufferList = NULL;
    if (parent == NULL) return NULL;
    parent->ChildRefCount -= 1;
    return parent->ChildRefCount == 0 ? parent : NULL;
}

/* --- the filter path --------------------------------------------------------------------------------------------- */

void *NdisFRegisterFilter(NDIS_RT *rt, MINIPORT_SEND_NBL_HANDLER send, SEND_NBL_COMPLETE_HANDLER send_complete,
                          void *context) {
    rt->filter_send = send;
    rt->filter_send_complete = send_complete;
    rt->filter_context = context;
    return &rt->filter;
}

void NdisFSendNetBufferLists(NDIS_RT *rt, void *NdisFilterHandle, NET_BUFFER_LIST *chain, uint32_t SendFlags) {
    (void)NdisFilterHandle;
    (void)SendFlags;
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    int64_t n = 0;
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) n++;
    c->nbls_sent += n;
    rt->miniport_send(rt->miniport_context, chain);
}

void NdisFSendNetBufferListsComplete(NDIS_RT *rt, void *NdisFilterHandle, NET_BUFFER_LIST *chain) {
    (void)NdisFilterHandle;
    rt->c.ddk_calls += 1;
    rt->protocol_send_complete(rt->protocol_context, chain);
}
