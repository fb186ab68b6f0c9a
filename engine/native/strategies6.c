/* The NDIS 6 strategies copy, cache and clone in C, as a driver writer writes them: engine/strategies/copy.py,
 * cache.py and clone.py, call for call (tests/test_native.py holds each to the model's operation counts and to the
 * transmitted bytes).
 *
 * Parameters (STRATEGY.p, resolved by engine/native/__init__.py: -1 and 0 "the miniport's" already replaced):
 *   copy:  pool_depth, backfill (bytes), buffers (0 'pool', 1 'mdl-and-data')
 *   cache: context_size, context_backfill, flags (CACHE_SPLIT | CACHE_LOCKED), cache_depth, cpus
 *   clone: upper (0 reuse, 1 alloc: each with its default parameters), use_original_mdls, mtu (bytes)
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static void out_of_memory(STRATEGY *s, const char *what) {
    if (!s->rt->failure) {
        s->rt->failure = NDIS_FAIL_MEMORY;
        s->rt->failure_text = what;
    }
}

/* ====================== copy (NDIS_MODEL.md section 2.1: NBLs that own their data buffers) ====================== */
#define COPY_DEPTH 0
#define COPY_BACKFILL 1
#define COPY_MDL_AND_DATA 2

typedef struct {
    NDIS_NB_POOL *nb_pool; /* mdl-and-data: NB + MDL + data blocks, chained to NBLs of a plain NBL pool */
    uint32_t backfill;     /* bytes of unused data space in front of each frame (DataOffset) */
} COPY_STATE;

static NET_BUFFER_LIST *CopyAllocate(STRATEGY *s) {
    /* one NBL for the free list, with its own data buffer; SourceHandle set once */
    COPY_STATE *st = s->state;
    NET_BUFFER_LIST *nbl = NdisAllocateNetBufferList(s->rt, s->pool, 0, 0);
    if (nbl == NULL) return NULL;
    if (st->nb_pool != NULL) {
        nbl->FirstNetBuffer = NdisAllocateNetBufferMdlAndData(s->rt, st->nb_pool);
        if (nbl->FirstNetBuffer == NULL) return NULL;
    }
    nbl->SourceHandle = s->binding;
    s->pool_size += 1;
    if (s->pool_size > s->free_capacity) {
        /* room for every NBL ever allocated, so a push on completion never fails */
        int64_t capacity = s->free_capacity ? s->free_capacity * 2 : 64;
        NET_BUFFER_LIST **bigger = realloc(s->free_nbls, (size_t)capacity * sizeof(*bigger));
        if (bigger == NULL) {
            out_of_memory(s, "copy free list");
            return NULL;
        }
        s->free_nbls = bigger;
        s->free_capacity = capacity;
    }
    return nbl;
}

static inline NET_BUFFER_LIST *CopyPop(STRATEGY *s) {
    if (s->free_count) return s->free_nbls[--s->free_count];
    s->pool_growth += 1; /* the free list ran dry: one more NBL, which joins the list on completion */
    return CopyAllocate(s);
}

static void CopyPrepare(STRATEGY *s, NET_BUFFER_LIST *nbl, int64_t i) {
    /* the frame into the NB's own buffer at DataOffset = backfill; the NB describes it */
    COPY_STATE *st = s->state;
    NET_BUFFER *nb = nbl->FirstNetBuffer;
    MDL *mdl = nb->MdlChain;
    uint32_t length = length_of(s->in, i);
    uint8_t *va = MmGetSystemAddressForMdlSafe(s->rt, mdl);
    NdisMoveMemory(s->rt, va + st->backfill, frame_of(s->in, i), length);
    nb->CurrentMdl = mdl;
    nb->DataOffset = nb->CurrentMdlOffset = st->backfill;
    nb->DataLength = length;
    nbl->NetBufferListInfo[TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = NULL;
    nbl->NetBufferListInfo[TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = NULL;
    nbl->Status = NDIS_STATUS_SUCCESS;
}

static NET_BUFFER_LIST *CopyBuild(STRATEGY *s, int64_t call) {
    int64_t first = s->in->call_start[call], end = s->in->call_start[call + 1];
    NET_BUFFER_LIST *head = CopyPop(s);
    if (head == NULL) return NULL;
    CopyPrepare(s, head, first);
    NET_BUFFER_LIST *previous = head;
    for (int64_t i = first + 1; i < end; i++) {
        NET_BUFFER_LIST *nbl = CopyPop(s);
        if (nbl == NULL) return NULL;
        CopyPrepare(s, nbl, i);
        previous->Next = nbl;
        previous = nbl;
    }
    return head;
}

static void CopySubmit(STRATEGY *s, NET_BUFFER_LIST *chain) {
    NdisSendNetBufferLists(s->rt, s->binding, chain, 0);
}

static void CopySendComplete(void *context, NET_BUFFER_LIST *completed) {
    /* detach (save Next, clear it), read Status, back on the free list */
    STRATEGY *s = context;
    NET_BUFFER_LIST *chain = completed;
    while (chain != NULL) {
        NET_BUFFER_LIST *nbl = chain;
        chain = nbl->Next;
        nbl->Next = NULL;
        if (nbl->Status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
        s->free_nbls[s->free_count++] = nbl;
    }
}

static void CopyUnbind(STRATEGY *s) {
    /* every NBL (its own NB first with mdl-and-data: NB-BEFORE-NBL), then the pools; the model frees in free-list
     * order (index 0 first) */
    COPY_STATE *st = s->state;
    for (int64_t i = 0; i < s->free_count; i++) {
        NET_BUFFER_LIST *nbl = s->free_nbls[i];
        if (st->nb_pool != NULL) {
            NET_BUFFER *nb = nbl->FirstNetBuffer;
            nbl->FirstNetBuffer = NULL;
            if (nb != NULL) NdisFreeNetBuffer(s->rt, nb);
        }
        NdisFreeNetBufferList(s->rt, nbl);
    }
    s->free_count = 0;
    NdisFreeNetBufferListPool(s->rt, s->pool);
    s->pool = NULL;
    if (st->nb_pool != NULL) NdisFreeNetBufferPool(s->rt, st->nb_pool);
    free(s->free_nbls);
    s->free_nbls = NULL;
    free(st);
    s->state = NULL;
}

static int CopyStats(STRATEGY *s, const char **names, int64_t *values, int room) {
    if (room < 3) return 0;
    names[0] = "pool_growth";
    values[0] = s->pool_growth;
    names[1] = "failed_sends";
    values[1] = s->failed_sends;
    names[2] = "pool_size";
    values[2] = s->pool_size;
    return 3;
}

static int CopyBind(STRATEGY *s, int64_t max_in_flight) {
    COPY_STATE *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        out_of_memory(s, "copy state");
        return 0;
    }
    s->state = st;
    s->binding = NdisRegisterProtocol(s->rt, CopySendComplete, s);
    st->backfill = (uint32_t)s->p[COPY_BACKFILL];
    uint32_t data_size = st->backfill + (s->in->max_frame > 0 ? (uint32_t)s->in->max_frame : 1);
    NET_BUFFER_LIST_POOL_PARAMETERS params = {0};
    if (!s->p[COPY_MDL_AND_DATA]) {
        params.DataSize = data_size;
        params.fAllocateNetBuffer = 1;
    } else {
        st->nb_pool = NdisAllocateNetBufferPool(s->rt, data_size);
        if (st->nb_pool == NULL) {
            free(st);
            s->state = NULL;
            return -1;
        }
    }
    s->pool = NdisAllocateNetBufferListPool(s->rt, &params);
    if (s->pool == NULL) {
        if (st->nb_pool != NULL) NdisFreeNetBufferPool(s->rt, st->nb_pool);
        free(st);
        s->state = NULL;
        return -1;
    }
    s->build = CopyBuild;
    s->submit = CopySubmit;
    s->unbind = CopyUnbind;
    s->stats = CopyStats;
    FillFreeList(s, s->p[COPY_DEPTH], max_in_flight, CopyAllocate);
    return 0;
}

/* ============================ cache (alloc behind a bounded per-CPU NBL cache) ============================ */
#define CACHE_CONTEXT_SIZE 0
#define CACHE_CONTEXT_BACKFILL 1
#define CACHE_FLAGS 2
#define CACHE_DEPTH 3
#define CACHE_CPUS 4
#define CACHE_SPLIT 1
#define CACHE_LOCKED 2

/* NPROT_SEND_NETBUFLIST_RSVD stand-in, as alloc: the "IRP" (the packet's trace index) and a RefCount (<qI) */
typedef struct __attribute__((packed)) {
    int64_t Irp;
    uint32_t RefCount;
} CACHE_RSVD;

typedef struct {
    /* cpus caches of at most depth NBLs each: touched only by their own CPU at DISPATCH_LEVEL (no lock) */
    NET_BUFFER_LIST **slots; /* [cpus * depth] */
    int64_t *count;          /* [cpus] */
    int64_t depth, cpus;
    int split, locked;
    int64_t hits, misses, frees_avoided, overflow_frees;
} CACHE_STATE;

static MDL *CacheDescribeOne(STRATEGY *s, uint8_t *va, uint32_t length) {
    CACHE_STATE *st = s->state;
    if (!st->locked) return NdisAllocateMdl(s->rt, va, length);
    MDL *mdl = IoAllocateMdl(s->rt, va, length); /* the I/O manager's direct-I/O MDL over a user buffer */
    if (mdl != NULL) MmProbeAndLockPages(s->rt, mdl);
    return mdl;
}

static MDL *CacheDescribe(STRATEGY *s, int64_t i) {
    /* the write's MDLs: header and payload (split, both parts non-empty) or the whole frame */
    CACHE_STATE *st = s->state;
    uint8_t *frame = frame_of(s->in, i);
    uint32_t length = length_of(s->in, i);
    int64_t header_len = s->in->header_len[i];
    if (!(st->split && 0 < header_len && header_len < (int64_t)length)) return CacheDescribeOne(s, frame, length);
    MDL *chain = CacheDescribeOne(s, frame, (uint32_t)header_len);
    if (chain == NULL) return NULL;
    chain->Next = CacheDescribeOne(s, frame + header_len, length - (uint32_t)header_len);
    return chain->Next == NULL ? NULL : chain;
}

static NET_BUFFER_LIST *CacheOne(STRATEGY *s, int64_t call, int64_t i) {
    CACHE_STATE *st = s->state;
    int64_t cpu = call % st->cpus;
    uint32_t context_size = (uint32_t)s->p[CACHE_CONTEXT_SIZE];
    NET_BUFFER_LIST *nbl;
    if (!st->count[cpu]) {
        /* a miss: alloc's NdisAllocateNetBufferAndNetBufferList */
        st->misses += 1;
        MDL *chain = CacheDescribe(s, i);
        if (chain == NULL) return NULL;
        nbl = NdisAllocateNetBufferAndNetBufferList(s->rt, s->pool, context_size,
                                                    (uint32_t)s->p[CACHE_CONTEXT_BACKFILL], chain, 0,
                                                    length_of(s->in, i));
        if (nbl == NULL) return NULL;
        if (context_size) {
            CACHE_RSVD rsvd = {.Irp = s->in->index[i], .RefCount = 1};
            memcpy(NET_BUFFER_LIST_CONTEXT_DATA_START(nbl), &rsvd, sizeof(rsvd));
        }
        nbl->SourceHandle = s->binding;
        if (st->cpus > 1) nbl->ProtocolReserved[0] = (void *)(intptr_t)cpu; /* the cache that takes it back */
        return nbl;
    }
    /* a hit: re-point a cached NBL (section 2.2 checklist), no NDIS call; SourceHandle stays */
    st->hits += 1;
    nbl = st->slots[cpu * st->depth + --st->count[cpu]];
    MDL *chain = CacheDescribe(s, i);
    if (chain == NULL) return NULL;
    NET_BUFFER *nb = nbl->FirstNetBuffer;
    nb->MdlChain = nb->CurrentMdl = chain;
    nb->CurrentMdlOffset = nb->DataOffset = 0;
    nb->DataLength = length_of(s->in, i);
    nbl->NetBufferListInfo[TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = NULL;
    nbl->NetBufferListInfo[TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = NULL;
    nbl->Status = NDIS_STATUS_SUCCESS;
    if (context_size) {
        CACHE_RSVD rsvd = {.Irp = s->in->index[i], .RefCount = 1};
        memcpy(NET_BUFFER_LIST_CONTEXT_DATA_START(nbl), &rsvd, sizeof(rsvd));
    }
    return nbl;
}

static NET_BUFFER_LIST *CacheBuild(STRATEGY *s, int64_t call) {
    int64_t first = s->in->call_start[call], end = s->in->call_start[call + 1];
    NET_BUFFER_LIST *head = CacheOne(s, call, first);
    NET_BUFFER_LIST *previous = head;
    for (int64_t i = first + 1; i < end && previous != NULL; i++) {
        NET_BUFFER_LIST *nbl = CacheOne(s, call, i);
        if (nbl == NULL) return NULL;
        previous->Next = nbl;
        previous = nbl;
    }
    return previous == NULL ? NULL : head;
}

static void CacheSubmit(STRATEGY *s, NET_BUFFER_LIST *chain) {
    NdisSendNetBufferLists(s->rt, s->binding, chain, NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK);
}

static void CacheFreeWriteMdls(STRATEGY *s, MDL *mdl) {
    CACHE_STATE *st = s->state;
    while (mdl != NULL) {
        MDL *following = mdl->Next;
        if (st->locked) {
            MmUnlockPages(s->rt, mdl);
            IoFreeMdl(s->rt, mdl);
        } else {
            NdisFreeMdl(s->rt, mdl);
        }
        mdl = following;
    }
}

static void CacheSendComplete(void *context, NET_BUFFER_LIST *completed) {
    /* per NBL: detach, read Status and the IRP, into its CPU's cache when it has room (else
     * NdisFreeNetBufferList), then the write's MDLs */
    STRATEGY *s = context;
    CACHE_STATE *st = s->state;
    NET_BUFFER_LIST *chain = completed;
    while (chain != NULL) {
        NET_BUFFER_LIST *nbl = chain;
        chain = nbl->Next;
        nbl->Next = NULL;
        if (nbl->Status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
        NET_BUFFER *nb = nbl->FirstNetBuffer;
        MDL *mdl = nb->MdlChain;
        if (s->p[CACHE_CONTEXT_SIZE]) {
            CACHE_RSVD rsvd;
            memcpy(&rsvd, NET_BUFFER_LIST_CONTEXT_DATA_START(nbl), sizeof(rsvd));
            (void)rsvd; /* the IRP to complete (ndisprot) */
        }
        int64_t cpu = st->cpus > 1 ? (int64_t)(intptr_t)nbl->ProtocolReserved[0] : 0;
        if (st->count[cpu] < st->depth) {
            nb->MdlChain = nb->CurrentMdl = NULL; /* no pointer to MDLs about to be freed */
            st->slots[cpu * st->depth + st->count[cpu]++] = nbl;
            st->frees_avoided += 1;
        } else {
            st->overflow_frees += 1;
            NdisFreeNetBufferList(s->rt, nbl);
        }
        CacheFreeWriteMdls(s, mdl);
    }
}

static void CacheUnbind(STRATEGY *s) {
    /* flush every cache (NdisFreeNetBufferList each, oldest first as the model's list), then the pool */
    CACHE_STATE *st = s->state;
    for (int64_t cpu = 0; cpu < st->cpus; cpu++) {
        for (int64_t k = 0; k < st->count[cpu]; k++) {
            NET_BUFFER_LIST *nbl = st->slots[cpu * st->depth + k];
            if (nbl->FirstNetBuffer != NULL) nbl->FirstNetBuffer->DataLength = 0;
            NdisFreeNetBufferList(s->rt, nbl);
        }
        st->count[cpu] = 0;
    }
    NdisFreeNetBufferListPool(s->rt, s->pool);
    s->pool = NULL;
    free(st->slots);
    free(st->count);
    free(st);
    s->state = NULL;
}

static int CacheStats(STRATEGY *s, const char **names, int64_t *values, int room) {
    CACHE_STATE *st = s->state;
    if (room < 5) return 0;
    const char *n[5] = {"failed_sends", "cache_hits", "cache_misses", "frees_avoided", "overflow_frees"};
    int64_t v[5] = {s->failed_sends, st->hits, st->misses, st->frees_avoided, st->overflow_frees};
    memcpy(names, n, sizeof(n));
    memcpy(values, v, sizeof(v));
    return 5;
}

static int CacheBind(STRATEGY *s) {
    CACHE_STATE *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        out_of_memory(s, "cache state");
        return 0;
    }
    s->state = st;
    st->depth = s->p[CACHE_DEPTH];
    st->cpus = s->p[CACHE_CPUS] < 1 ? 1 : s->p[CACHE_CPUS];
    st->split = (s->p[CACHE_FLAGS] & CACHE_SPLIT) != 0;
    st->locked = (s->p[CACHE_FLAGS] & CACHE_LOCKED) != 0;
    st->slots = calloc((size_t)(st->cpus * (st->depth ? st->depth : 1)), sizeof(*st->slots));
    st->count = calloc((size_t)st->cpus, sizeof(*st->count));
    s->build = CacheBuild;
    s->submit = CacheSubmit;
    s->unbind = CacheUnbind;
    s->stats = CacheStats;
    if (st->slots == NULL || st->count == NULL) {
        free(st->slots);
        free(st->count);
        free(st);
        s->state = NULL;
        out_of_memory(s, "cache slots");
        return 0;
    }
    s->binding = NdisRegisterProtocol(s->rt, CacheSendComplete, s);
    NET_BUFFER_LIST_POOL_PARAMETERS params = {
        .ContextSize = (uint32_t)(s->p[CACHE_CONTEXT_SIZE] + s->p[CACHE_CONTEXT_BACKFILL]), .fAllocateNetBuffer = 1};
    s->pool = NdisAllocateNetBufferListPool(s->rt, &params);
    if (s->pool == NULL) {
        free(st->slots);
        free(st->count);
        free(st);
        s->state = NULL;
        return -1;
    }
    return 0;
}

/* ========== clone (a filter module sending clones, or fragments above the MTU; NDIS_MODEL.md 2.5, 3.2) ========== */
#define CLONE_UPPER 0
#define CLONE_USE_ORIGINAL_MDLS 1
#define CLONE_MTU 2
/* ProtocolReserved slots of a child (the filter allocated it): kind, header length */
#define CHILD_KIND 0
#define CHILD_DELTA 1
#define CHILD_CLONE 0
#define CHILD_FRAGMENT 1

typedef struct {
    STRATEGY upper; /* the protocol above the filter (reuse or alloc with default parameters) */
    NDIS_NBL_POOL *pool;
    NDIS_NB_POOL *nb_pool;
    void *filter;
    uint32_t flags;
    uint32_t mtu;
    int64_t first; /* the first packet of the send call being sent (the parents' header lengths) */
    int64_t call_packets;
    uint8_t *header; /* one frame's header, gathered from the parent */
    int64_t fragmented;
} CLONE_STATE;

static void CloneCopyHeaders(STRATEGY *s, NET_BUFFER_LIST *parent, NET_BUFFER_LIST *child, uint32_t header_len) {
    /* the parent's header into each fragment's retreated space (a fragmenting filter replicates it) */
    CLONE_STATE *st = s->state;
    NET_BUFFER *source = parent->FirstNetBuffer;
    MDL *mdl = source->CurrentMdl;
    uint32_t offset = source->CurrentMdlOffset;
    uint32_t got = 0;
    while (mdl != NULL && got < header_len) {
        uint8_t *data = MmGetSystemAddressForMdlSafe(s->rt, mdl);
        uint32_t take = offset < mdl->ByteCount ? mdl->ByteCount - offset : 0;
        if (take > header_len - got) take = header_len - got;
        memcpy(st->header + got, data + offset, take);
        got += take;
        offset = 0;
        mdl = mdl->Next;
    }
    for (NET_BUFFER *nb = child->FirstNetBuffer; nb != NULL; nb = nb->Next) {
        uint8_t *target = MmGetSystemAddressForMdlSafe(s->rt, nb->CurrentMdl);
        NdisMoveMemory(s->rt, target + nb->CurrentMdlOffset, st->header, got);
    }
}

static NET_BUFFER_LIST *CloneDerive(STRATEGY *s, NET_BUFFER_LIST *parent, int64_t header_len) {
    /* one child: a fragment NBL for a frame above the MTU, else a clone */
    CLONE_STATE *st = s->state;
    NET_BUFFER *nb = parent->FirstNetBuffer;
    int64_t length = nb != NULL ? nb->DataLength : 0;
    if (length > st->mtu && 0 < header_len && header_len < st->mtu && header_len < length) {
        uint32_t h = (uint32_t)header_len;
        NET_BUFFER_LIST *child =
            NdisAllocateFragmentNetBufferList(s->rt, parent, st->pool, st->nb_pool, h, st->mtu - h, h, 0);
        if (child != NULL) {
            CloneCopyHeaders(s, parent, child, h);
            child->ProtocolReserved[CHILD_KIND] = (void *)(intptr_t)CHILD_FRAGMENT;
            child->ProtocolReserved[CHILD_DELTA] = (void *)(intptr_t)h;
            st->fragmented += 1;
            return child;
        }
        if (s->rt->failure) return NULL;
    }
    NET_BUFFER_LIST *child = NdisAllocateCloneNetBufferList(s->rt, parent, st->pool, st->nb_pool, st->flags);
    if (child != NULL) child->ProtocolReserved[CHILD_KIND] = (void *)(intptr_t)CHILD_CLONE;
    return child;
}

static void CloneFilterSend(void *context, NET_BUFFER_LIST *chain) {
    /* FilterSendNetBufferLists: one child per parent (the parents stay with the filter), children passed down */
    STRATEGY *s = context;
    CLONE_STATE *st = s->state;
    NET_BUFFER_LIST *head = NULL, *tail = NULL;
    int64_t position = 0;
    for (NET_BUFFER_LIST *parent = chain; parent != NULL; parent = parent->Next, position++) {
        int64_t header_len = position < st->call_packets ? s->in->header_len[st->first + position] : 0;
        NET_BUFFER_LIST *child = CloneDerive(s, parent, header_len);
        if (child == NULL) {
            out_of_memory(s, "NdisAllocateCloneNetBufferList");
            return;
        }
        child->SourceHandle = st->filter;
        NdisLinkChildNetBufferList(s->rt, child, parent);
        if (tail == NULL)
            head = child;
        else
            tail->Next = child;
        tail = child;
    }
    if (head != NULL) NdisFSendNetBufferLists(s->rt, st->filter, head, 0);
}

static void CloneFreeChild(STRATEGY *s, NET_BUFFER_LIST *child) {
    CLONE_STATE *st = s->state;
    if ((intptr_t)child->ProtocolReserved[CHILD_KIND] == CHILD_FRAGMENT)
        NdisFreeFragmentNetBufferList(s->rt, child, (uint32_t)(intptr_t)child->ProtocolReserved[CHILD_DELTA]);
    else
        NdisFreeCloneNetBufferList(s->rt, child, st->flags);
}

static void CloneFilterSendComplete(void *context, NET_BUFFER_LIST *completed) {
    /* FilterSendNetBufferListsComplete: free each child with its own routine; parents whose last child came back go
     * up in one NdisFSendNetBufferListsComplete */
    STRATEGY *s = context;
    CLONE_STATE *st = s->state;
    NET_BUFFER_LIST *up_head = NULL, *up_tail = NULL;
    NET_BUFFER_LIST *chain = completed;
    while (chain != NULL) {
        NET_BUFFER_LIST *nbl = chain;
        chain = nbl->Next;
        nbl->Next = NULL;
        if (nbl->SourceHandle != st->filter) { /* not ours: up untouched (not expected here) */
            NdisFSendNetBufferListsComplete(s->rt, st->filter, nbl);
            continue;
        }
        NDIS_STATUS status = nbl->Status;
        if (status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
        NET_BUFFER_LIST *parent = NdisUnlinkChildNetBufferList(s->rt, nbl);
        CloneFreeChild(s, nbl);
        if (parent != NULL) {
            parent->Status = status;
            parent->Next = NULL;
            if (up_tail == NULL)
                up_head = parent;
            else
                up_tail->Next = parent;
            up_tail = parent;
        }
    }
    if (up_head != NULL) NdisFSendNetBufferListsComplete(s->rt, st->filter, up_head);
}

static NET_BUFFER_LIST *CloneBuild(STRATEGY *s, int64_t call) {
    /* the upper protocol's NBLs (their cost is this strategy's too); the filter takes the header lengths from the
     * trace when it fragments */
    CLONE_STATE *st = s->state;
    st->first = s->in->call_start[call];
    st->call_packets = s->in->call_start[call + 1] - st->first;
    return st->upper.build(&st->upper, call);
}

static void CloneSubmit(STRATEGY *s, NET_BUFFER_LIST *chain) {
    CLONE_STATE *st = s->state;
    st->upper.submit(&st->upper, chain); /* NDIS calls FilterSendNetBufferLists inside */
}

static void CloneUnbind(STRATEGY *s) {
    /* FilterDetach (its pools), then the upper protocol unbinds */
    CLONE_STATE *st = s->state;
    NdisFreeNetBufferListPool(s->rt, st->pool);
    NdisFreeNetBufferPool(s->rt, st->nb_pool);
    st->upper.unbind(&st->upper);
    free(st->header);
    free(st);
    s->state = NULL;
}

static int CloneStats(STRATEGY *s, const char **names, int64_t *values, int room) {
    CLONE_STATE *st = s->state;
    if (room < 5) return 0;
    names[0] = "fragmented";
    values[0] = st->fragmented;
    names[1] = "failed_sends";
    values[1] = s->failed_sends;
    names[2] = "upper_failed_sends";
    values[2] = st->upper.failed_sends;
    if (s->p[CLONE_UPPER]) return 3;
    names[3] = "upper_pool_growth";
    values[3] = st->upper.pool_growth;
    names[4] = "upper_pool_size";
    values[4] = st->upper.pool_size;
    return 5;
}

static int CloneBind(STRATEGY *s, int64_t max_in_flight) {
    CLONE_STATE *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        out_of_memory(s, "clone state");
        return 0;
    }
    s->state = st;
    st->header = malloc(s->in->max_frame > 0 ? (size_t)s->in->max_frame : 1);
    if (st->header == NULL) {
        free(st);
        s->state = NULL;
        out_of_memory(s, "clone header buffer");
        return 0;
    }
    /* the upper protocol with its default parameters (engine/native/__init__.py checks they are the model's) */
    static const int64_t reuse_defaults[5] = {0, 0, 0, 1, 1};
    static const int64_t alloc_defaults[5] = {16, 0, 1, 0, 0};
    int upper = s->p[CLONE_UPPER] ? STRATEGY_ALLOC : STRATEGY_REUSE;
    if (StrategyBind(&st->upper, upper, upper == STRATEGY_ALLOC ? alloc_defaults : reuse_defaults, s->rt, s->in,
                     max_in_flight) < 0) {
        free(st->header);
        free(st);
        s->state = NULL;
        return -1;
    }
    s->binding = st->upper.binding;
    st->mtu = (uint32_t)s->p[CLONE_MTU];
    st->flags = s->p[CLONE_USE_ORIGINAL_MDLS] ? NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS : 0;
    /* FilterAttach: the filter's NBL pool (each with its NB) and the fragments' NB pool */
    NET_BUFFER_LIST_POOL_PARAMETERS params = {.fAllocateNetBuffer = 1};
    st->pool = NdisAllocateNetBufferListPool(s->rt, &params);
    st->nb_pool = NdisAllocateNetBufferPool(s->rt, 0);
    s->build = CloneBuild;
    s->submit = CloneSubmit;
    s->unbind = CloneUnbind;
    s->stats = CloneStats;
    if (st->pool == NULL || st->nb_pool == NULL) {
        out_of_memory(s, "the filter's pools");
        return 0;
    }
    st->filter = NdisFRegisterFilter(s->rt, CloneFilterSend, CloneFilterSendComplete, s);
    return 0;
}

int Strategy6Bind(STRATEGY *s, int which, const int64_t p[5], int64_t max_in_flight) {
    (void)p; /* StrategyBind copied them into s->p */
    if (which == STRATEGY_COPY) return CopyBind(s, max_in_flight);
    if (which == STRATEGY_CACHE) return CacheBind(s);
    if (which == STRATEGY_CLONE) return CloneBind(s, max_in_flight);
    return -1;
}
