/* The built-in strategies in C, as a driver writer writes them: engine/strategies/reuse.py and alloc.py, call for
 * call (the differential tests hold the two to the same operation counts and the same transmitted bytes). */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ======================================= reuse (NDIS_MODEL.md section 2.2, XDP TX) ================================ */
#define REUSE_DEPTH 0
#define REUSE_SPLIT 1
#define REUSE_MDL_REUSE 2
#define REUSE_CLEAR_OOB 3
#define REUSE_RESET_STATUS 4

static NET_BUFFER_LIST *ReuseAllocate(STRATEGY *s) {
    /* one NBL for the free list: NdisAllocateNetBufferAndNetBufferList with no MDL chain, SourceHandle set once
     * (checklist step 8) */
    NET_BUFFER_LIST *nbl = NdisAllocateNetBufferAndNetBufferList(s->rt, s->pool, s->context_size, 0, NULL, 0, 0);
    if (nbl == NULL) return NULL;
    nbl->SourceHandle = s->binding;
    s->pool_size += 1;
    if (s->pool_size > s->free_capacity) {
        /* the free list holds at most every NBL ever allocated: room for all of them, so a push never fails */
        int64_t capacity = s->free_capacity ? s->free_capacity * 2 : 64;
        NET_BUFFER_LIST **bigger = realloc(s->free_nbls, (size_t)capacity * sizeof(*bigger));
        if (bigger == NULL) {
            s->rt->failure = NDIS_FAIL_MEMORY;
            s->rt->failure_text = "reuse free list";
            return NULL;
        }
        s->free_nbls = bigger;
        s->free_capacity = capacity;
    }
    return nbl;
}

static MDL *ReuseDescribe(STRATEGY *s, NET_BUFFER_LIST *nbl, int slot, uint8_t *va, uint32_t length) {
    if (s->p[REUSE_MDL_REUSE]) {
        /* XDP: the MDL lives in the NBL's context, re-initialised and rebuilt per send (no allocation) */
        MDL *mdl = (MDL *)(NET_BUFFER_LIST_CONTEXT_DATA_START(nbl) + (size_t)slot * s->mdl_slot);
        MmInitializeMdl(s->rt, mdl, va, length);
        MmBuildMdlForNonPagedPool(s->rt, mdl);
        return mdl;
    }
    return NdisAllocateMdl(s->rt, va, length);
}

static int ReusePrepare(STRATEGY *s, NET_BUFFER_LIST *nbl, int64_t i) {
    /* checklist steps 5 (re-point the NB), 6 (OOB slots), 2 (Status = SUCCESS) */
    NET_BUFFER *nb = nbl->FirstNetBuffer;
    uint8_t *frame = frame_of(s->in, i);
    uint32_t length = length_of(s->in, i);
    int64_t header_len = s->in->header_len[i];
    MDL *mdl;
    if (!s->p[REUSE_SPLIT] || !(0 < header_len && header_len < (int64_t)length)) {
        mdl = ReuseDescribe(s, nbl, 0, frame, length);
        if (mdl == NULL) return -1;
    } else {
        mdl = ReuseDescribe(s, nbl, 0, frame, (uint32_t)header_len);
        if (mdl == NULL) return -1;
        mdl->Next = ReuseDescribe(s, nbl, 1, frame + header_len, length - (uint32_t)header_len);
        if (mdl->Next == NULL) return -1;
    }
    nb->MdlChain = nb->CurrentMdl = mdl;
    nb->CurrentMdlOffset = nb->DataOffset = 0;
    nb->DataLength = length;
    if (s->p[REUSE_CLEAR_OOB]) {
        nbl->NetBufferListInfo[TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = NULL;
        nbl->NetBufferListInfo[TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = NULL;
    }
    if (s->p[REUSE_RESET_STATUS]) nbl->Status = NDIS_STATUS_SUCCESS;
    return 0;
}

static inline NET_BUFFER_LIST *ReusePop(STRATEGY *s) {
    if (s->free_count) return s->free_nbls[--s->free_count];
    s->pool_growth += 1; /* the free list ran dry: one more NBL, which joins the list on completion */
    return ReuseAllocate(s);
}

static NET_BUFFER_LIST *ReuseBuild(STRATEGY *s, int64_t call) {
    int64_t first = s->in->call_start[call], end = s->in->call_start[call + 1];
    NET_BUFFER_LIST *head = ReusePop(s);
    if (head == NULL || ReusePrepare(s, head, first)) return NULL;
    NET_BUFFER_LIST *previous = head;
    for (int64_t i = first + 1; i < end; i++) {
        NET_BUFFER_LIST *nbl = ReusePop(s);
        if (nbl == NULL || ReusePrepare(s, nbl, i)) return NULL;
        previous->Next = nbl; /* wire order; a one-packet call writes no Next (cleared on completion, step 1) */
        previous = nbl;
    }
    return head;
}

static void ReuseSubmit(STRATEGY *s, NET_BUFFER_LIST *chain) {
    NdisSendNetBufferLists(s->rt, s->binding, chain, 0);
}

static void ReuseSendComplete(void *context, NET_BUFFER_LIST *completed) {
    /* ProtocolSendNetBufferListsComplete: detach each NBL (step 1), read Status (step 2), free our MDLs (step 3),
     * no dangling MDL pointer, back on the free list */
    STRATEGY *s = context;
    NET_BUFFER_LIST *chain = completed;
    while (chain != NULL) {
        NET_BUFFER_LIST *nbl = chain;
        chain = nbl->Next;
        nbl->Next = NULL;
        if (nbl->Status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
        NET_BUFFER *nb = nbl->FirstNetBuffer;
        if (!s->p[REUSE_MDL_REUSE]) {
            MDL *mdl = nb->MdlChain;
            while (mdl != NULL) {
                MDL *following = mdl->Next;
                NdisFreeMdl(s->rt, mdl);
                mdl = following;
            }
        }
        nb->MdlChain = nb->CurrentMdl = NULL;
        s->free_nbls[s->free_count++] = nbl;
    }
}

static void ReuseUnbind(STRATEGY *s) {
    /* step 9 (clear the NB fields), NdisFreeNetBufferList of every NBL, NdisFreeNetBufferListPool */
    while (s->free_count) {
        NET_BUFFER_LIST *nbl = s->free_nbls[--s->free_count];
        NET_BUFFER *nb = nbl->FirstNetBuffer;
        nb->MdlChain = nb->CurrentMdl = NULL;
        nb->DataLength = nb->DataOffset = nb->CurrentMdlOffset = 0;
        NdisFreeNetBufferList(s->rt, nbl);
    }
    NdisFreeNetBufferListPool(s->rt, s->pool);
    s->pool = NULL;
    free(s->free_nbls);
    s->free_nbls = NULL;
}

static int ReuseBind(STRATEGY *s, int64_t max_in_flight) {
    s->binding = NdisRegisterProtocol(s->rt, ReuseSendComplete, s);
    uint32_t largest = s->in->max_frame > 0 ? (uint32_t)s->in->max_frame : 1;
    s->mdl_slot = round_up(mm_size_of_mdl(PAGE_SIZE - 1, largest), MEMORY_ALLOCATION_ALIGNMENT);
    s->context_size = s->p[REUSE_MDL_REUSE] ? (s->p[REUSE_SPLIT] ? 2 : 1) * s->mdl_slot : 0;
    NET_BUFFER_LIST_POOL_PARAMETERS params = {.ContextSize = s->context_size, .fAllocateNetBuffer = 1};
    s->pool = NdisAllocateNetBufferListPool(s->rt, &params);
    if (s->pool == NULL) return -1;
    s->build = ReuseBuild;
    s->submit = ReuseSubmit;
    s->unbind = ReuseUnbind;
    FillFreeList(s, s->p[REUSE_DEPTH], max_in_flight, ReuseAllocate);
    return 0;
}

void FillFreeList(STRATEGY *s, int64_t depth, int64_t max_in_flight, NET_BUFFER_LIST *(*allocate)(STRATEGY *s)) {
    if (!depth) {
        depth = max_in_flight > s->in->max_call ? max_in_flight : s->in->max_call;
        if (depth < 1) depth = 1;
    }
    for (int64_t i = 0; i < depth; i++) {
        NET_BUFFER_LIST *nbl = allocate(s);
        if (nbl == NULL) return; /* rt->failure says why */
        s->free_nbls[s->free_count++] = nbl;
    }
    for (int64_t i = 0, j = s->free_count - 1; i < j; i++, j--) { /* pop() hands out the first allocated first */
        NET_BUFFER_LIST *t = s->free_nbls[i];
        s->free_nbls[i] = s->free_nbls[j];
        s->free_nbls[j] = t;
    }
}

/* ================================ alloc (ndisprot 6x NdisprotWrite / SendComplete) ================================ */
#define ALLOC_CONTEXT_SIZE 0
#define ALLOC_CONTEXT_BACKFILL 1
#define ALLOC_SPLIT 2
#define ALLOC_LOCKED 3

/* NPROT_SEND_NETBUFLIST_RSVD stand-in: the "IRP" (the packet's trace index) and a RefCount, 12 bytes (<qI) */
typedef struct __attribute__((packed)) {
    int64_t Irp;
    uint32_t RefCount;
} NPROT_SEND_NETBUFLIST_RSVD;

static MDL *AllocDescribeOne(STRATEGY *s, uint8_t *va, uint32_t length) {
    if (!s->p[ALLOC_LOCKED]) return NdisAllocateMdl(s->rt, va, length);
    /* the I/O manager's direct-I/O MDL over a user buffer */
    MDL *mdl = IoAllocateMdl(s->rt, va, length);
    if (mdl != NULL) MmProbeAndLockPages(s->rt, mdl);
    return mdl;
}

static NET_BUFFER_LIST *AllocOne(STRATEGY *s, int64_t i) {
    uint8_t *frame = frame_of(s->in, i);
    uint32_t length = length_of(s->in, i);
    int64_t header_len = s->in->header_len[i];
    int64_t at = (s->p[ALLOC_SPLIT] && 0 < header_len && header_len < (int64_t)length) ? header_len : 0;
    MDL *chain;
    if (!at) {
        chain = AllocDescribeOne(s, frame, length);
        if (chain == NULL) return NULL;
    } else {
        chain = AllocDescribeOne(s, frame, (uint32_t)at);
        if (chain == NULL) return NULL;
        chain->Next = AllocDescribeOne(s, frame + at, length - (uint32_t)at);
        if (chain->Next == NULL) return NULL;
    }
    uint32_t context_size = (uint32_t)s->p[ALLOC_CONTEXT_SIZE];
    NET_BUFFER_LIST *nbl = NdisAllocateNetBufferAndNetBufferList(
        s->rt, s->pool, context_size, (uint32_t)s->p[ALLOC_CONTEXT_BACKFILL], chain, 0, length);
    if (nbl == NULL) return NULL;
    if (context_size) {
        NPROT_SEND_NETBUFLIST_RSVD rsvd = {.Irp = s->in->index[i], .RefCount = 1};
        memcpy(NET_BUFFER_LIST_CONTEXT_DATA_START(nbl), &rsvd, sizeof(rsvd));
    }
    nbl->SourceHandle = s->binding;
    return nbl;
}

static NET_BUFFER_LIST *AllocBuild(STRATEGY *s, int64_t call) {
    int64_t first = s->in->call_start[call], end = s->in->call_start[call + 1];
    NET_BUFFER_LIST *head = AllocOne(s, first);
    NET_BUFFER_LIST *previous = head;
    for (int64_t i = first + 1; i < end && previous != NULL; i++) {
        NET_BUFFER_LIST *nbl = AllocOne(s, i);
        if (nbl == NULL) return NULL;
        previous->Next = nbl;
        previous = nbl;
    }
    return previous == NULL ? NULL : head;
}

static void AllocSubmit(STRATEGY *s, NET_BUFFER_LIST *chain) {
    NdisSendNetBufferLists(s->rt, s->binding, chain, NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK);
}

static void AllocSendComplete(void *context, NET_BUFFER_LIST *completed) {
    /* NdisprotSendComplete: save Next and detach, read Status and the IRP, free the NBL, then the write's MDLs */
    STRATEGY *s = context;
    NET_BUFFER_LIST *chain = completed;
    while (chain != NULL) {
        NET_BUFFER_LIST *nbl = chain;
        chain = nbl->Next;
        nbl->Next = NULL;
        if (nbl->Status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
        NET_BUFFER *nb = nbl->FirstNetBuffer;
        MDL *mdl = nb != NULL ? nb->MdlChain : NULL;
        if (s->p[ALLOC_CONTEXT_SIZE]) {
            NPROT_SEND_NETBUFLIST_RSVD rsvd;
            memcpy(&rsvd, NET_BUFFER_LIST_CONTEXT_DATA_START(nbl), sizeof(rsvd));
            if (rsvd.RefCount != 1) s->failed_sends += 1; /* the IRP to complete: a damaged context is a failure */
        }
        NdisFreeNetBufferList(s->rt, nbl);
        while (mdl != NULL) {
            MDL *following = mdl->Next;
            if (s->p[ALLOC_LOCKED]) {
                MmUnlockPages(s->rt, mdl);
                IoFreeMdl(s->rt, mdl);
            } else {
                NdisFreeMdl(s->rt, mdl);
            }
            mdl = following;
        }
    }
}

static void AllocUnbind(STRATEGY *s) {
    NdisFreeNetBufferListPool(s->rt, s->pool);
    s->pool = NULL;
}

static int AllocBind(STRATEGY *s) {
    s->binding = NdisRegisterProtocol(s->rt, AllocSendComplete, s);
    NET_BUFFER_LIST_POOL_PARAMETERS params = {
        .ContextSize = (uint32_t)(s->p[ALLOC_CONTEXT_SIZE] + s->p[ALLOC_CONTEXT_BACKFILL]), .fAllocateNetBuffer = 1};
    s->pool = NdisAllocateNetBufferListPool(s->rt, &params);
    if (s->pool == NULL) return -1;
    s->build = AllocBuild;
    s->submit = AllocSubmit;
    s->unbind = AllocUnbind;
    return 0;
}

int StrategyBind(STRATEGY *s, int which, const int64_t p[5], NDIS_RT *rt, const REPLAY_INPUT *in,
                 int64_t max_in_flight) {
    memset(s, 0, sizeof(*s));
    s->rt = rt;
    s->in = in;
    memcpy(s->p, p, sizeof(s->p));
    if (which == STRATEGY_REUSE) return ReuseBind(s, max_in_flight);
    if (which == STRATEGY_ALLOC) return AllocBind(s);
    if (which == STRATEGY_COPY || which == STRATEGY_CACHE || which == STRATEGY_CLONE)
        return Strategy6Bind(s, which, p, max_in_flight);
    return -1;
}
