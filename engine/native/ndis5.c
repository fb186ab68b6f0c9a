/* NDIS 5 in the native core: packet and buffer pools, the NDIS_PACKET / NDIS_BUFFER calls and macros, the send
 * path, and the strategies ndis5-alloc and ndis5-reuse (engine/strategies/ndis5.py) as an ndisprot 5.x driver
 * writer writes them (NDIS_MODEL.md section 3.4). Counted exactly as engine/ndis/ndis5.py and mdl.py count;
 * tests/test_native.py holds the two to the same counters per round and the same transmitted bytes.
 */
#include "ndis5.h"

#include <stdlib.h>
#include <string.h>

#include "engine.h"

uint32_t NdisPacketSize(uint32_t ProtocolReservedSize) {
    /* DERIVED (engine/ndis/constants.py ndis_packet_size): the packet up to ProtocolReserved, ProtocolReserved
     * rounded up to a pointer, then the OOB data and the packet extension, the whole rounded up to 16 */
    uint32_t body = round_up((uint32_t)offsetof(NDIS_PACKET, ProtocolReserved) + ProtocolReservedSize, 8);
    return round_up(body + (uint32_t)sizeof(NDIS_PACKET_OOB_DATA) + NDIS_PACKET_EXTENSION_SIZE,
                    MEMORY_ALLOCATION_ALIGNMENT);
}

void *NdisRegisterProtocol5(NDIS_RT *rt, SEND_COMPLETE_HANDLER handler, void *context) {
    rt->protocol_send_complete5 = handler;
    rt->protocol_context5 = context;
    return &rt->binding;
}

void NdisRegisterMiniport5(NDIS_RT *rt, MINIPORT_SEND_PACKETS_HANDLER handler, void *context) {
    rt->miniport_send_packets = handler;
    rt->miniport_context5 = context;
}

/* --- packet pools and packets ------------------------------------------------------------------------------------- */

static inline int is_static(const NDIS_PACKET_POOL *pool, const NDIS_PACKET *packet) {
    const uint8_t *at = (const uint8_t *)packet;
    return pool->static_block != NULL && at >= pool->static_block &&
           at < pool->static_block + (size_t)pool->number_of_descriptors * pool->packet_size;
}

NDIS_PACKET_POOL *NdisAllocatePacketPoolEx(NDIS_RT *rt, NDIS_STATUS *Status, uint32_t NumberOfDescriptors,
                                           uint32_t NumberOfOverflowDescriptors, uint32_t ProtocolReservedLength) {
    rt->c.ddk_calls += 1;
    *Status = NDIS_STATUS_RESOURCES;
    if ((uint64_t)NumberOfDescriptors + NumberOfOverflowDescriptors > NDIS_PACKET_POOL_MAX_DESCRIPTORS ||
        ProtocolReservedLength > NDIS_PACKET_MAX_PROTOCOL_RESERVED)
        return NULL;
    NDIS_PACKET_POOL *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        fail(rt, NDIS_FAIL_MEMORY, "NdisAllocatePacketPoolEx");
        return NULL;
    }
    pool->number_of_descriptors = NumberOfDescriptors;
    pool->number_of_overflow_descriptors = NumberOfOverflowDescriptors;
    pool->protocol_reserved_length = ProtocolReservedLength;
    pool->packet_size = NdisPacketSize(ProtocolReservedLength);
    if (NumberOfDescriptors) {
        /* the static descriptors come with the pool: one allocation, all on the free list */
        size_t bytes = (size_t)NumberOfDescriptors * pool->packet_size;
        pool->static_block = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, bytes);
        if (pool->static_block == NULL) {
            free(pool);
            fail(rt, NDIS_FAIL_MEMORY, "NdisAllocatePacketPoolEx");
            return NULL;
        }
        pool->held_bytes = (int64_t)bytes;
        sys_alloc(&rt->c, (int64_t)bytes);
        for (uint32_t i = NumberOfDescriptors; i-- > 0;) {
            NDIS_PACKET *packet = (NDIS_PACKET *)(pool->static_block + (size_t)i * pool->packet_size);
            packet->Private.Head = (MDL *)pool->free_list;
            pool->free_list = packet;
        }
    }
    *Status = NDIS_STATUS_SUCCESS;
    return pool;
}

void NdisFreePacketPool(NDIS_RT *rt, NDIS_PACKET_POOL *pool) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    c->sys_frees += 1 + pool->overflow_out;
    c->mem_bytes -= pool->held_bytes;
    pool->held_bytes = 0;
    pool->freed = 1;
    if (pool->allocated) {
        /* descriptors still out: NDIS asserts; their memory stays (no use after free), the round stops */
        fail(rt, NDIS_FAIL_BUGCHECK, "NdisFreePacketPool with packets outstanding");
        return;
    }
    NDIS_PACKET *packet = pool->free_list;
    while (packet != NULL) {
        NDIS_PACKET *next = (NDIS_PACKET *)packet->Private.Head;
        if (!is_static(pool, packet)) free(packet);
        packet = next;
    }
    free(pool->static_block);
    free(pool);
}

NDIS_PACKET *NdisAllocatePacket(NDIS_RT *rt, NDIS_STATUS *Status, NDIS_PACKET_POOL *pool) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    c->spinlock_acquires += 1; /* the pool's spin lock */
    NDIS_PACKET *packet = pool->free_list;
    if (packet != NULL) {
        c->pool_hits += 1;
        pool->free_list = (NDIS_PACKET *)packet->Private.Head;
    } else if (pool->allocated < (int64_t)pool->number_of_descriptors + pool->number_of_overflow_descriptors) {
        /* an overflow descriptor, allocated on its own */
        c->pool_misses += 1;
        packet = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, pool->packet_size);
        if (packet == NULL) {
            fail(rt, NDIS_FAIL_MEMORY, "NdisAllocatePacket");
            *Status = NDIS_STATUS_RESOURCES;
            return NULL;
        }
        pool->overflow_out += 1;
        pool->held_bytes += pool->packet_size;
        sys_alloc(c, pool->packet_size);
    } else {
        *Status = NDIS_STATUS_RESOURCES;
        return NULL;
    }
    /* zero-initialised: no buffers, counts invalid, OOB data and reserved areas cleared */
    memset(packet, 0, pool->packet_size);
    packet->Private.Pool = pool;
    packet->Private.NdisPacketOobOffset =
        (uint16_t)round_up((uint32_t)offsetof(NDIS_PACKET, ProtocolReserved) + pool->protocol_reserved_length, 8);
    pool->allocated += 1;
    c->packet_allocs += 1;
    PEAK(c, packet);
    c->bytes_zeroed += pool->packet_size;
    *Status = NDIS_STATUS_SUCCESS;
    return packet;
}

void NdisFreePacket(NDIS_RT *rt, NDIS_PACKET *packet) {
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    c->spinlock_acquires += 1;
    NDIS_PACKET_POOL *pool = packet->Private.Pool;
    pool->allocated -= 1;
    c->packet_frees += 1;
    if (pool->overflow_out) {
        /* overflow descriptors are out: this one goes back to system memory (a static one leaves circulation; its
         * bytes stay in the static block until the pool is freed) */
        pool->overflow_out -= 1;
        pool->held_bytes -= pool->packet_size;
        c->sys_frees += 1;
        c->mem_bytes -= pool->packet_size;
        if (!is_static(pool, packet)) free(packet);
    } else {
        packet->Private.Head = (MDL *)pool->free_list;
        pool->free_list = packet;
    }
}

void NdisReinitializePacket(NDIS_RT *rt, NDIS_PACKET *packet) {
    /* the WDK macro: Head and ValidCounts only (Tail, the OOB data and the reserved areas keep their values) */
    rt->c.ddk_calls += 1;
    packet->Private.Head = NULL;
    packet->Private.ValidCounts = 0;
}

/* --- buffers (MDLs on NT) ----------------------------------------------------------------------------------------- */

NDIS_BUFFER_POOL *NdisAllocateBufferPool(NDIS_RT *rt, NDIS_STATUS *Status, uint32_t NumberOfDescriptors) {
    rt->c.ddk_calls += 1;
    NDIS_BUFFER_POOL *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        fail(rt, NDIS_FAIL_MEMORY, "NdisAllocateBufferPool");
        *Status = NDIS_STATUS_RESOURCES;
        return NULL;
    }
    pool->number_of_descriptors = NumberOfDescriptors;
    *Status = NDIS_STATUS_SUCCESS;
    return pool;
}

void NdisFreeBufferPool(NDIS_RT *rt, NDIS_BUFFER_POOL *pool) {
    rt->c.ddk_calls += 1;
    free(pool);
}

NDIS_BUFFER *NdisAllocateBuffer(NDIS_RT *rt, NDIS_STATUS *Status, NDIS_BUFFER_POOL *pool, void *VirtualAddress,
                                uint32_t Length) {
    /* IoAllocateMdl + MmBuildMdlForNonPagedPool, from the same fixed-size lookaside as every MDL (ndis.c); the
     * pool handle limits nothing on NT */
    (void)pool;
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    uint32_t pages = pages_spanned(0, Length);
    uint16_t flags;
    MDL *mdl = MdlBlockAllocate(rt, Length, "NdisAllocateBuffer", &flags);
    if (mdl == NULL) {
        *Status = NDIS_STATUS_RESOURCES;
        return NULL;
    }
    /* the model's convention (engine/ndis/mdl.py): the buffer starts at page offset 0 */
    mdl->Next = NULL;
    mdl->Size = (int16_t)mm_size_of_mdl(0, Length);
    mdl->MdlFlags = flags | MDL_SOURCE_IS_NONPAGED_POOL;
    mdl->Process = NULL;
    mdl->StartVa = VirtualAddress;
    mdl->ByteOffset = 0;
    mdl->ByteCount = Length;
    mdl->MappedSystemVa = VirtualAddress;
    PFN_NUMBER *pfn = MmGetMdlPfnArray(mdl);
    PFN_NUMBER first = (PFN_NUMBER)((uintptr_t)VirtualAddress / PAGE_SIZE);
    for (uint32_t i = 0; i < pages; i++) pfn[i] = first + i;
    c->buffer_allocs += 1;
    PEAK(c, buffer);
    c->mdl_builds += 1;
    *Status = NDIS_STATUS_SUCCESS;
    return mdl;
}

void NdisFreeBuffer(NDIS_RT *rt, NDIS_BUFFER *buffer) {
    /* IoFreeMdl */
    NDIS_COUNTERS *c = &rt->c;
    c->ddk_calls += 1;
    c->buffer_frees += 1;
    if (buffer->MdlFlags & MDL_ALLOCATED_FIXED_SIZE) {
        c->interlocked_ops += 1; /* push on the fixed-size MDL lookaside list */
        buffer->Next = rt->mdl_lookaside;
        rt->mdl_lookaside = buffer;
    } else {
        c->sys_frees += 1;
        c->mem_bytes -= mm_size_of_mdl(0, buffer->ByteCount);
        free(buffer);
    }
}

void NdisChainBufferAtBack(NDIS_RT *rt, NDIS_PACKET *packet, NDIS_BUFFER *buffer) {
    /* the WDK macro: the chain goes after Tail (or becomes Head), Tail = its last buffer, ValidCounts = FALSE */
    rt->c.ddk_calls += 1;
    NDIS_BUFFER *last = buffer;
    while (last->Next != NULL) last = last->Next;
    if (packet->Private.Head != NULL && packet->Private.Tail != NULL)
        packet->Private.Tail->Next = buffer;
    else
        packet->Private.Head = buffer;
    packet->Private.Tail = last;
    packet->Private.ValidCounts = 0;
}

NDIS_BUFFER *NdisUnchainBufferAtFront(NDIS_RT *rt, NDIS_PACKET *packet) {
    rt->c.ddk_calls += 1;
    NDIS_BUFFER *buffer = packet->Private.Head;
    if (buffer == NULL) return NULL;
    packet->Private.Head = buffer->Next;
    if (packet->Private.Head == NULL) packet->Private.Tail = NULL;
    buffer->Next = NULL;
    packet->Private.ValidCounts = 0;
    return buffer;
}

void NdisSetPacketStatus(NDIS_RT *rt, NDIS_PACKET *packet, NDIS_STATUS status) {
    rt->c.ddk_calls += 1;
    NDIS_OOB_DATA_FROM_PACKET(packet)->Status = status;
}

void NdisZeroPacketOobData(NDIS_RT *rt, NDIS_PACKET *packet) {
    /* NdisZeroMemory(NDIS_OOB_DATA_FROM_PACKET(packet), sizeof(NDIS_PACKET_OOB_DATA)) */
    rt->c.ddk_calls += 1;
    memset(NDIS_OOB_DATA_FROM_PACKET(packet), 0, sizeof(NDIS_PACKET_OOB_DATA));
    rt->c.bytes_zeroed += sizeof(NDIS_PACKET_OOB_DATA);
}

/* --- the send path ------------------------------------------------------------------------------------------------ */

void NdisSendPackets(NDIS_RT *rt, void *NdisBindingHandle, NDIS_PACKET **PacketArray, uint32_t NumberOfPackets) {
    (void)NdisBindingHandle;
    rt->c.ddk_calls += 1;
    rt->c.packets_sent += NumberOfPackets;
    rt->miniport_send_packets(rt->miniport_context5, PacketArray, NumberOfPackets);
}

void NdisMSendComplete(NDIS_RT *rt, NDIS_PACKET *packet, NDIS_STATUS status) {
    rt->c.ddk_calls += 1;
    rt->c.packets_completed += 1;
    rt->protocol_send_complete5(rt->protocol_context5, packet, status);
}

/* ================================= the strategies ================================================================ */

static inline uint32_t cut(uint32_t length, int64_t header_len, int64_t split) {
    /* where a frame is cut into a header buffer and a payload buffer; 0: one buffer (engine/strategies/common.py) */
    return split && 0 < header_len && header_len < (int64_t)length ? (uint32_t)header_len : 0;
}

/* the strategy's NDIS 5 state (STRATEGY.ndis5) */
struct _NDIS5_STRATEGY {
    NDIS_PACKET_POOL *pool;
    NDIS_BUFFER_POOL *buffers;
    NDIS_PACKET **packets; /* the send call's NdisSendPackets array (max_call entries) */
    uint32_t count;
    uint32_t protocol_reserved;
    /* ndis5-reuse: the driver's free list of packets (a stack: pop hands out the first allocated first) */
    NDIS_PACKET **free;
    int64_t free_count, free_capacity;
    /* ndis5-reuse keep_buffers: the kept buffer descriptors, linked through Next, each kept_size bytes of storage
     * (an MDL header and room for the largest frame's PFN array) */
    MDL *kept;
    uint32_t kept_size;
};

static void strategy_failed(STRATEGY *s, const char *text) {
    fail(s->rt, NDIS_FAIL_MEMORY, text);
}

/* ======================= ndis5-alloc (ndisprot 5x NdisProtWrite / NdisProtSendComplete) ========================== */
#define N5A_DESCRIPTORS 0
#define N5A_OVERFLOW 1 /* overflow + 1: 0 = up to the 0xFFFF total */
#define N5A_PROTOCOL_RESERVED 2
#define N5A_SPLIT 3

/* NPROT_SEND_PACKET_RSVD stand-in: the "IRP" (the packet's trace index) and a RefCount, 12 bytes (<qI) */
typedef struct __attribute__((packed)) {
    int64_t Irp;
    uint32_t RefCount;
} NPROT_SEND_PACKET_RSVD;

static NDIS_BUFFER *N5Buffer(STRATEGY *s, uint8_t *va, uint32_t length) {
    NDIS_STATUS status;
    NDIS_BUFFER *buffer = NdisAllocateBuffer(s->rt, &status, s->ndis5->buffers, va, length);
    return status == NDIS_STATUS_SUCCESS ? buffer : NULL;
}

static NET_BUFFER_LIST *N5AllocBuild(STRATEGY *s, int64_t call) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    const REPLAY_INPUT *in = s->in;
    int64_t first = in->call_start[call], end = in->call_start[call + 1];
    n5->count = 0;
    for (int64_t i = first; i < end; i++) {
        NDIS_STATUS status;
        NDIS_PACKET *packet = NdisAllocatePacket(s->rt, &status, n5->pool);
        if (status != NDIS_STATUS_SUCCESS) {
            strategy_failed(s, "NdisAllocatePacket: NDIS_STATUS_RESOURCES");
            return NULL;
        }
        uint8_t *frame = frame_of(in, i);
        uint32_t length = length_of(in, i);
        uint32_t at = cut(length, in->header_len[i], s->p[N5A_SPLIT]);
        NDIS_BUFFER *buffer = N5Buffer(s, frame, at ? at : length);
        if (buffer == NULL) return NULL;
        NdisChainBufferAtBack(s->rt, packet, buffer);
        if (at) {
            buffer = N5Buffer(s, frame + at, length - at);
            if (buffer == NULL) return NULL;
            NdisChainBufferAtBack(s->rt, packet, buffer);
        }
        NPROT_SEND_PACKET_RSVD rsvd = {.Irp = in->index[i], .RefCount = 1};
        memcpy(packet->ProtocolReserved, &rsvd, sizeof(rsvd));
        n5->packets[n5->count++] = packet;
    }
    /* what submit sends is the packet array; the returned pointer only says "built" to the timed loop */
    return (NET_BUFFER_LIST *)n5->packets;
}

static void N5Submit(STRATEGY *s, NET_BUFFER_LIST *built) {
    (void)built;
    NdisSendPackets(s->rt, s->binding, s->ndis5->packets, s->ndis5->count);
}

static void N5AllocSendComplete(void *context, NDIS_PACKET *packet, NDIS_STATUS status) {
    /* ProtocolSendComplete: the IRP from ProtocolReserved, free the buffers, NdisFreePacket */
    STRATEGY *s = context;
    if (status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
    NPROT_SEND_PACKET_RSVD rsvd;
    memcpy(&rsvd, packet->ProtocolReserved, sizeof(rsvd)); /* the IRP to complete (not modelled further) */
    NDIS_BUFFER *buffer;
    while ((buffer = NdisUnchainBufferAtFront(s->rt, packet)) != NULL) NdisFreeBuffer(s->rt, buffer);
    NdisFreePacket(s->rt, packet);
}

static void N5Release(STRATEGY *s) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    if (n5 == NULL) return;
    while (n5->kept != NULL) {
        MDL *next = n5->kept->Next;
        free(n5->kept);
        n5->kept = next;
    }
    free(n5->free);
    free(n5->packets);
    free(n5);
    s->ndis5 = NULL;
}

static void N5AllocUnbind(STRATEGY *s) {
    NdisFreePacketPool(s->rt, s->ndis5->pool);
    NdisFreeBufferPool(s->rt, s->ndis5->buffers);
    N5Release(s);
}

static int64_t bind_depth(int64_t asked, int64_t max_in_flight, int64_t max_call) {
    /* asked, or BindContext.max_in_flight (at least one send call), within the 0xFFFF descriptors of a pool */
    int64_t depth = asked;
    if (!depth) {
        depth = max_in_flight > max_call ? max_in_flight : max_call;
        if (depth < 1) depth = 1;
    }
    return depth < NDIS_PACKET_POOL_MAX_DESCRIPTORS ? depth : NDIS_PACKET_POOL_MAX_DESCRIPTORS;
}

static int N5Pools(STRATEGY *s, int64_t depth, int64_t overflow) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    NDIS_STATUS status;
    n5->pool = NdisAllocatePacketPoolEx(s->rt, &status, (uint32_t)depth, (uint32_t)overflow, n5->protocol_reserved);
    if (status != NDIS_STATUS_SUCCESS) return -1;
    n5->buffers = NdisAllocateBufferPool(s->rt, &status, (uint32_t)(2 * depth));
    return status == NDIS_STATUS_SUCCESS ? 0 : -1;
}

static int N5AllocBind(STRATEGY *s, int64_t max_in_flight) {
    int64_t overflow_asked = s->p[N5A_OVERFLOW] - 1, prl = s->p[N5A_PROTOCOL_RESERVED];
    if (s->p[N5A_DESCRIPTORS] > NDIS_PACKET_POOL_MAX_DESCRIPTORS || overflow_asked > NDIS_PACKET_POOL_MAX_DESCRIPTORS ||
        prl < (int64_t)sizeof(NPROT_SEND_PACKET_RSVD) || prl > NDIS_PACKET_MAX_PROTOCOL_RESERVED || prl % 8)
        return -1;
    s->ndis5->protocol_reserved = (uint32_t)prl;
    s->binding = NdisRegisterProtocol5(s->rt, N5AllocSendComplete, s);
    int64_t descriptors = bind_depth(s->p[N5A_DESCRIPTORS], max_in_flight, s->in->max_call);
    int64_t room = NDIS_PACKET_POOL_MAX_DESCRIPTORS - descriptors;
    int64_t overflow = overflow_asked < 0 || overflow_asked > room ? room : overflow_asked;
    s->build = N5AllocBuild;
    s->submit = N5Submit;
    s->unbind = N5AllocUnbind;
    if (N5Pools(s, descriptors, overflow)) {
        if (!s->rt->failure) strategy_failed(s, "NdisAllocatePacketPoolEx: NDIS_STATUS_RESOURCES");
    }
    return 0;
}

/* ================================ ndis5-reuse (packet reuse, NDIS_MODEL.md section 2.6) ========================== */
#define N5R_DEPTH 0
#define N5R_KEEP 1
#define N5R_SPLIT 2
#define N5R_PROTOCOL_RESERVED 3

static NDIS_PACKET *N5ReuseAllocate(STRATEGY *s) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    NDIS_STATUS status;
    s->pool_size += 1;
    NDIS_PACKET *packet = NdisAllocatePacket(s->rt, &status, n5->pool);
    if (status != NDIS_STATUS_SUCCESS) {
        strategy_failed(s, "NdisAllocatePacket: NDIS_STATUS_RESOURCES");
        return NULL;
    }
    if (s->pool_size > n5->free_capacity) {
        /* the free list holds at most every packet ever allocated: room for all, so a push never fails */
        int64_t capacity = n5->free_capacity ? n5->free_capacity * 2 : 64;
        NDIS_PACKET **bigger = realloc(n5->free, (size_t)capacity * sizeof(*bigger));
        if (bigger == NULL) {
            strategy_failed(s, "ndis5-reuse free list");
            return NULL;
        }
        n5->free = bigger;
        n5->free_capacity = capacity;
    }
    return packet;
}

static NDIS_BUFFER *N5ReuseBuffer(STRATEGY *s, uint8_t *va, uint32_t length) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    if (!s->p[N5R_KEEP]) return N5Buffer(s, va, length);
    /* a kept descriptor re-initialised over the new data (an NDIS_BUFFER is an MDL on NT): no NDIS allocation.
     * The storage is the driver's own, allocated when first needed and kept to unbind (the model counts none) */
    MDL *mdl = n5->kept;
    if (mdl != NULL) {
        n5->kept = mdl->Next;
    } else {
        mdl = aligned_alloc(MEMORY_ALLOCATION_ALIGNMENT, n5->kept_size);
        if (mdl == NULL) {
            strategy_failed(s, "ndis5-reuse buffer descriptor");
            return NULL;
        }
    }
    MmInitializeMdl(s->rt, mdl, va, length);
    MmBuildMdlForNonPagedPool(s->rt, mdl);
    return mdl;
}

static NET_BUFFER_LIST *N5ReuseBuild(STRATEGY *s, int64_t call) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    const REPLAY_INPUT *in = s->in;
    int64_t first = in->call_start[call], end = in->call_start[call + 1];
    n5->count = 0;
    for (int64_t i = first; i < end; i++) {
        NDIS_PACKET *packet;
        if (n5->free_count) {
            packet = n5->free[--n5->free_count];
        } else {
            s->pool_growth += 1; /* the free list ran dry: one more packet, which joins the list on completion */
            packet = N5ReuseAllocate(s);
            if (packet == NULL) return NULL;
        }
        uint8_t *frame = frame_of(in, i);
        uint32_t length = length_of(in, i);
        uint32_t at = cut(length, in->header_len[i], s->p[N5R_SPLIT]);
        NDIS_BUFFER *buffer = N5ReuseBuffer(s, frame, at ? at : length);
        if (buffer == NULL) return NULL;
        NdisChainBufferAtBack(s->rt, packet, buffer);
        if (at) {
            buffer = N5ReuseBuffer(s, frame + at, length - at);
            if (buffer == NULL) return NULL;
            NdisChainBufferAtBack(s->rt, packet, buffer);
        }
        n5->packets[n5->count++] = packet;
    }
    return (NET_BUFFER_LIST *)n5->packets;
}

static void N5ReuseSendComplete(void *context, NDIS_PACKET *packet, NDIS_STATUS status) {
    /* ProtocolSendComplete: the buffers off the packet first (NDIS5-REINIT-LEAK), NdisReinitializePacket, reset the
     * OOB data the miniport wrote (NdisReinitializePacket does not), back on the free list */
    STRATEGY *s = context;
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    if (status != NDIS_STATUS_SUCCESS) s->failed_sends += 1;
    NDIS_BUFFER *buffer;
    while ((buffer = NdisUnchainBufferAtFront(s->rt, packet)) != NULL) {
        if (s->p[N5R_KEEP]) {
            buffer->Next = n5->kept;
            n5->kept = buffer;
        } else {
            NdisFreeBuffer(s->rt, buffer);
        }
    }
    NdisReinitializePacket(s->rt, packet);
    NdisZeroPacketOobData(s->rt, packet);
    n5->free[n5->free_count++] = packet;
}

static void N5ReuseUnbind(STRATEGY *s) {
    /* NdisFreePacket each, NdisFreePacketPool, NdisFreeBufferPool (in the free list's order, as the model) */
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    for (int64_t i = 0; i < n5->free_count; i++) NdisFreePacket(s->rt, n5->free[i]);
    n5->free_count = 0;
    NdisFreePacketPool(s->rt, n5->pool);
    NdisFreeBufferPool(s->rt, n5->buffers);
    N5Release(s);
}

static int N5ReuseBind(STRATEGY *s, int64_t max_in_flight) {
    struct _NDIS5_STRATEGY *n5 = s->ndis5;
    int64_t prl = s->p[N5R_PROTOCOL_RESERVED];
    if (s->p[N5R_DEPTH] > NDIS_PACKET_POOL_MAX_DESCRIPTORS || prl > NDIS_PACKET_MAX_PROTOCOL_RESERVED || prl % 8)
        return -1;
    n5->protocol_reserved = (uint32_t)prl;
    uint32_t largest = s->in->max_frame > 0 ? (uint32_t)s->in->max_frame : 1;
    n5->kept_size = round_up(mm_size_of_mdl(PAGE_SIZE - 1, largest), MEMORY_ALLOCATION_ALIGNMENT);
    s->binding = NdisRegisterProtocol5(s->rt, N5ReuseSendComplete, s);
    s->build = N5ReuseBuild;
    s->submit = N5Submit;
    s->unbind = N5ReuseUnbind;
    int64_t depth = bind_depth(s->p[N5R_DEPTH], max_in_flight, s->in->max_call);
    if (N5Pools(s, depth, NDIS_PACKET_POOL_MAX_DESCRIPTORS - depth)) {
        if (!s->rt->failure) strategy_failed(s, "NdisAllocatePacketPoolEx: NDIS_STATUS_RESOURCES");
        return 0;
    }
    for (int64_t i = 0; i < depth; i++) {
        NDIS_PACKET *packet = N5ReuseAllocate(s);
        if (packet == NULL) return 0; /* rt->failure says why */
        n5->free[n5->free_count++] = packet;
    }
    for (int64_t i = 0, j = n5->free_count - 1; i < j; i++, j--) { /* pop() hands out the first allocated first */
        NDIS_PACKET *t = n5->free[i];
        n5->free[i] = n5->free[j];
        n5->free[j] = t;
    }
    return 0;
}

int Ndis5StrategyBind(STRATEGY *s, int which, const int64_t p[5], NDIS_RT *rt, const REPLAY_INPUT *in,
                      int64_t max_in_flight) {
    memset(s, 0, sizeof(*s));
    s->rt = rt;
    s->in = in;
    memcpy(s->p, p, sizeof(s->p));
    if (which != STRATEGY_NDIS5_ALLOC && which != STRATEGY_NDIS5_REUSE) return -1;
    s->ndis5 = calloc(1, sizeof(*s->ndis5));
    if (s->ndis5 == NULL) return -1;
    s->ndis5->packets = malloc((size_t)(in->max_call > 0 ? in->max_call : 1) * sizeof(NDIS_PACKET *));
    if (s->ndis5->packets == NULL) {
        N5Release(s);
        return -1;
    }
    int rc = which == STRATEGY_NDIS5_ALLOC ? N5AllocBind(s, max_in_flight) : N5ReuseBind(s, max_in_flight);
    if (rc < 0) N5Release(s);
    return rc;
}
