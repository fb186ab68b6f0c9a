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

#define PEAK(c, kind)                                                                                               \
    do {                                                                                                            \
        int64_t out_ = (c)->kind##_allocs - (c)->kind##_frees;                                                      \
        if (out_ > (c)->kind##_peak) (c)->kind##_peak = out_;                                                       \
    } while (0)

static void sys_alloc(NDIS_COUNTERS *c, int64_t size) {
    c->sys_allocs += 1;
    c->mem_bytes += size;
    if (c->mem_bytes > c->mem_peak) c->mem_peak = c->mem_bytes;
}

static void fail(NDIS_RT *rt, int kind, const char *text) {
    if (!rt->failure) {
        rt->failure = kind;
        rt->failure_text = text;
    }
}

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
     * needs fAllocateNetBuffer); DataSize pools are not modelled natively yet */
    if (params->ContextSize % MEMORY_ALLOCATION_ALIGNMENT || params->DataSize || params->ContextSize > 0xFFF0u)
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
    pool->block_size = size;
    return pool;
}

void NdisFreeNetBufferListPool(NDIS_RT *rt, NDIS_NBL_POOL *pool) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    c->sys_frees += pool->cached;
    c->mem_bytes -= pool->cached * (int64_t)pool->block_size;
    NET_BUFFER_LIST *nbl = pool->free_list;
    while (nbl != NULL) {
        NET_BUFFER_LIST *next = nbl->Next;
        free(nbl);
        nbl = next;
    }
    free(pool);
}

static inline NET_BUFFER *block_nb(const NDIS_NBL_POOL *pool, NET_BUFFER_LIST *nbl) {
    return pool->params.fAllocateNetBuffer ? (NET_BUFFER *)(nbl + 1) : NULL;
}

static inline NET_BUFFER_LIST_CONTEXT *block_ctx(const NDIS_NBL_POOL *pool, NET_BUFFER_LIST *nbl) {
    if (!pool->params.ContextSize) return NULL;
    return (NET_BUFFER_LIST_CONTEXT *)((char *)nbl + NBL_SIZE + (pool->params.fAllocateNetBuffer ? NB_SIZE : 0));
}

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
        nbl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, pool->block_size);
        if (nbl == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateNetBufferAndNetBufferList");
            return NULL;
        }
        sys_alloc(c, pool->block_size);
    }
    NET_BUFFER *nb = block_nb(pool, nbl);
    /* "allocate and initialize": the NBL and NB headers are zeroed on every allocation */
    memset(nbl, 0, NB_SIZE * (nb != NULL) + NBL_SIZE);
    nbl->NdisPoolHandle = pool;
    nbl->FirstNetBuffer = nb;
    if (nb != NULL) nb->NdisPoolHandle = pool;
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

void NdisFreeNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *nbl) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
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

static MDL *take_mdl(NDIS_RT *rt, void *va, uint32_t length) {
    NDIS_COUNTERS *c = &rt->c;
    uint32_t pages = pages_spanned(0, length);
    MDL *mdl;
    if (pages <= MDL_LOOKASIDE_MAX_PAGES) {
        c->interlocked_ops += 1; /* pop from the fixed-size MDL lookaside list */
        mdl = rt->mdl_lookaside;
        if (mdl != NULL) {
            c->pool_hits += 1;
            rt->mdl_lookaside = mdl->Next;
        } else {
            c->pool_misses += 1;
            mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(MDL_FIXED_BLOCK_SIZE, MEMORY_ALLOCATION_ALIGNMENT));
            if (mdl == NULL) {
                fail(rt, NDIS_FAIL_MEMORY, "IoAllocateMdl");
                return NULL;
            }
            sys_alloc(c, MDL_FIXED_BLOCK_SIZE);
        }
        describe(mdl, va, length);
        mdl->MdlFlags = MDL_ALLOCATED_FIXED_SIZE;
    } else {
        uint32_t size = mm_size_of_mdl(0, length);
        mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, round_up(size, 16));
        if (mdl == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "IoAllocateMdl");
            return NULL;
        }
        sys_alloc(c, size);
        describe(mdl, va, length);
        mdl->MdlFlags = 0;
    }
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
        c->mem_bytes -= mm_size_of_mdl(0, mdl->ByteCount);
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
    rt->miniport_send(rt->miniport_context, chain);
}

void NdisMSendNetBufferListsComplete(NDIS_RT *rt, NET_BUFFER_LIST *chain) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    int64_t n = 0;
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
