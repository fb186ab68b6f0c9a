/* The native core's NDIS model: x64 DDK layouts, pools over lookaside free lists, the DDK-like calls, counters.
 *
 * Layouts follow NDIS_MODEL.md section 1 (x64, NDIS 6.80+ driver view, MEMORY_ALLOCATION_ALIGNMENT 16): every
 * offset the table gives is checked by a _Static_assert below, and the Python tests read the same numbers back
 * through ndis_replay.engine.native._core.layouts(). Counting conventions are those of the Python model
 * (engine/ndis/pools.py, mdl.py, nbl.py, send.py): the native core and the model count the same call sequence
 * the same way, which tests/test_native.py proves call sequence by call sequence.
 */
#ifndef NDIS_REPLAY_NATIVE_NDIS_H
#define NDIS_REPLAY_NATIVE_NDIS_H

#include <stddef.h>
#include <stdint.h>

typedef int32_t NDIS_STATUS;
#define NDIS_STATUS_SUCCESS ((NDIS_STATUS)0x00000000)

#define PAGE_SIZE 4096u
#define MEMORY_ALLOCATION_ALIGNMENT 16u
#define MAX_NET_BUFFER_LIST_INFO 27
#define TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO 0
#define TCP_LARGE_SEND_NET_BUFFER_LIST_INFO 2
#define NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK 0x2u

#define MDL_MAPPED_TO_SYSTEM_VA 0x0001u
#define MDL_PAGES_LOCKED 0x0002u
#define MDL_SOURCE_IS_NONPAGED_POOL 0x0004u
#define MDL_ALLOCATED_FIXED_SIZE 0x0008u
/* IoAllocateMdl serves MDLs of at most 23 pages from a fixed-size lookaside list (NDIS_MODEL.md section 5) */
#define MDL_LOOKASIDE_MAX_PAGES 23u

/* SLIST_HEADER on x64: 16 bytes, 16-byte aligned (the Link member of NBL and NB headers) */
typedef union _SLIST_HEADER {
    _Alignas(16) uint64_t Alignment;
    struct {
        uint64_t Alignment_;
        uint64_t Region;
    };
} SLIST_HEADER;

/* MDL (wdm.h): 0x30 bytes on x64, the PFN_NUMBER array follows it */
typedef struct _MDL {
    struct _MDL *Next;
    int16_t Size; /* CSHORT: bytes of header + PFN array */
    uint16_t MdlFlags;
    uint16_t AllocationProcessorNumber;
    uint16_t Reserved;
    void *Process;
    void *MappedSystemVa;
    void *StartVa;
    uint32_t ByteCount;
    uint32_t ByteOffset;
} MDL;
typedef uint64_t PFN_NUMBER;
#define MmGetMdlPfnArray(mdl) ((PFN_NUMBER *)((mdl) + 1))

/* NET_BUFFER (nbl.h) */
typedef struct _NET_BUFFER {
    union {
        struct {
            struct _NET_BUFFER *Next;
            MDL *CurrentMdl;
            uint32_t CurrentMdlOffset;
            union {
                uint32_t DataLength;
                size_t stDataLength;
            };
            MDL *MdlChain;
            uint32_t DataOffset;
        };
        SLIST_HEADER Link;
    };
    uint16_t ChecksumBias;
    uint16_t Reserved;
    void *NdisPoolHandle;
    _Alignas(16) void *NdisReserved[2];
    _Alignas(16) void *ProtocolReserved[6];
    _Alignas(16) void *MiniportReserved[4];
    uint64_t DataPhysicalAddress;
    union {
        void *SharedMemoryInfo;
        void *ScatterGatherList;
    };
} NET_BUFFER;

/* NET_BUFFER_LIST_CONTEXT (nbl.h): a 16-byte header, ContextData 16-byte aligned */
typedef struct _NET_BUFFER_LIST_CONTEXT {
    struct _NET_BUFFER_LIST_CONTEXT *Next;
    uint16_t Size;
    uint16_t Offset;
    _Alignas(16) uint8_t ContextData[];
} NET_BUFFER_LIST_CONTEXT;

/* NET_BUFFER_LIST (nbl.h), NetBufferListInfo[27] */
typedef struct _NET_BUFFER_LIST {
    union {
        struct {
            struct _NET_BUFFER_LIST *Next;
            NET_BUFFER *FirstNetBuffer;
        };
        SLIST_HEADER Link;
    };
    NET_BUFFER_LIST_CONTEXT *Context;
    struct _NET_BUFFER_LIST *ParentNetBufferList;
    void *NdisPoolHandle;
    _Alignas(16) void *NdisReserved[2];
    _Alignas(16) void *ProtocolReserved[4];
    _Alignas(16) void *MiniportReserved[2];
    void *Scratch;
    void *SourceHandle;
    uint32_t NblFlags;
    int32_t ChildRefCount;
    uint32_t Flags;
    NDIS_STATUS Status;
    void *NetBufferListInfo[MAX_NET_BUFFER_LIST_INFO];
} NET_BUFFER_LIST;

/* NDIS_PACKET (NDIS 5.x): the 48-byte Private part, the Miniport/Wrapper reserved union, Reserved[2], then
 * ProtocolReserved (variable: the pool's ProtocolReservedLength; one byte declared, as the header does) */
typedef struct _NDIS_PACKET_PRIVATE {
    uint32_t PhysicalCount;
    uint32_t TotalLength;
    MDL *Head;
    MDL *Tail;
    void *Pool;
    uint32_t Count;
    uint32_t Flags;
    uint8_t ValidCounts;
    uint8_t NdisPacketFlags;
    uint16_t NdisPacketOobOffset;
} NDIS_PACKET_PRIVATE;

typedef struct _NDIS_PACKET {
    NDIS_PACKET_PRIVATE Private;
    union {
        struct {
            uint8_t MiniportReserved[2 * sizeof(void *)];
            uint8_t WrapperReserved[2 * sizeof(void *)];
        };
        struct {
            uint8_t MiniportReservedEx[3 * sizeof(void *)];
            uint8_t WrapperReservedEx[sizeof(void *)];
        };
        struct {
            uint8_t MacReserved[4 * sizeof(void *)];
        };
    };
    uintptr_t Reserved[2];
    uint8_t ProtocolReserved[1];
} NDIS_PACKET;

/* --- the x64 sizes and offsets of NDIS_MODEL.md section 1 ---------------------------------------------------- */
_Static_assert(sizeof(void *) == 8, "the native core models x64");
_Static_assert(sizeof(MDL) == 0x30, "sizeof(MDL) x64");
_Static_assert(offsetof(MDL, Next) == 0 && offsetof(MDL, Size) == 8 && offsetof(MDL, MdlFlags) == 0xA, "MDL");
_Static_assert(offsetof(MDL, Process) == 0x10 && offsetof(MDL, MappedSystemVa) == 0x18, "MDL");
_Static_assert(offsetof(MDL, StartVa) == 0x20 && offsetof(MDL, ByteCount) == 0x28, "MDL");
_Static_assert(offsetof(MDL, ByteOffset) == 0x2C, "MDL");
_Static_assert(sizeof(NET_BUFFER) == 176, "sizeof(NET_BUFFER) x64 = 0xB0");
_Static_assert(offsetof(NET_BUFFER, CurrentMdl) == 8 && offsetof(NET_BUFFER, CurrentMdlOffset) == 16, "NB");
_Static_assert(offsetof(NET_BUFFER, DataLength) == 24 && offsetof(NET_BUFFER, MdlChain) == 32, "NB");
_Static_assert(offsetof(NET_BUFFER, DataOffset) == 40 && offsetof(NET_BUFFER, ChecksumBias) == 48, "NB");
_Static_assert(offsetof(NET_BUFFER, NdisPoolHandle) == 56 && offsetof(NET_BUFFER, NdisReserved) == 64, "NB");
_Static_assert(offsetof(NET_BUFFER, ProtocolReserved) == 80 && offsetof(NET_BUFFER, MiniportReserved) == 128, "NB");
_Static_assert(offsetof(NET_BUFFER, DataPhysicalAddress) == 160 && offsetof(NET_BUFFER, SharedMemoryInfo) == 168,
               "NB");
_Static_assert(sizeof(NET_BUFFER_LIST) == 368, "sizeof(NET_BUFFER_LIST) x64, 27 info slots = 0x170");
_Static_assert(offsetof(NET_BUFFER_LIST, FirstNetBuffer) == 8 && offsetof(NET_BUFFER_LIST, Context) == 16, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, ParentNetBufferList) == 24, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, NdisPoolHandle) == 32 && offsetof(NET_BUFFER_LIST, NdisReserved) == 48,
               "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, ProtocolReserved) == 64, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, MiniportReserved) == 96 && offsetof(NET_BUFFER_LIST, Scratch) == 112, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, SourceHandle) == 120 && offsetof(NET_BUFFER_LIST, NblFlags) == 128, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, ChildRefCount) == 132 && offsetof(NET_BUFFER_LIST, Flags) == 136, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, Status) == 140, "NBL");
_Static_assert(offsetof(NET_BUFFER_LIST, NetBufferListInfo) == 144, "NBL NetBufferListInfo (ReactOS C_ASSERT)");
_Static_assert(sizeof(NET_BUFFER_LIST_CONTEXT) == 16, "NET_BUFFER_LIST_CONTEXT header x64");
_Static_assert(sizeof(NDIS_PACKET_PRIVATE) == 48, "NDIS_PACKET_PRIVATE x64");
_Static_assert(offsetof(NDIS_PACKET, ProtocolReserved) == 96, "NDIS_PACKET ProtocolReserved x64");

#define MDL_SIZE ((uint32_t)sizeof(MDL))
#define NBL_SIZE ((uint32_t)sizeof(NET_BUFFER_LIST))
#define NB_SIZE ((uint32_t)sizeof(NET_BUFFER))
#define NBL_CONTEXT_HEADER_SIZE ((uint32_t)sizeof(NET_BUFFER_LIST_CONTEXT))
/* one fixed-size lookaside MDL: header + 23 PFNs */
#define MDL_FIXED_BLOCK_SIZE (MDL_SIZE + (uint32_t)sizeof(PFN_NUMBER) * MDL_LOOKASIDE_MAX_PAGES)

/* --- counters: the fields and order of engine/ndis/counters.py COUNT_FIELDS then GAUGE_FIELDS ---------------- */
#define NDIS_COUNTER_LIST(X)                                                                                        \
    X(ddk_calls) X(nbl_allocs) X(nbl_frees) X(nb_allocs) X(nb_frees) X(mdl_allocs) X(mdl_frees) X(ctx_allocs)       \
    X(ctx_frees) X(packet_allocs) X(packet_frees) X(buffer_allocs) X(buffer_frees) X(data_allocs) X(data_frees)     \
    X(pool_hits) X(pool_misses) X(sys_allocs) X(sys_frees) X(bytes_zeroed) X(bytes_copied) X(mdl_builds)            \
    X(pages_locked) X(pages_unlocked) X(interlocked_ops) X(spinlock_acquires) X(nbls_sent) X(nbls_completed)        \
    X(packets_sent) X(packets_completed) X(nbl_peak) X(nb_peak) X(mdl_peak) X(ctx_peak) X(packet_peak)              \
    X(buffer_peak) X(data_peak) X(mem_bytes) X(mem_peak)

typedef struct _NDIS_COUNTERS {
#define NDIS_COUNTER_FIELD(name) int64_t name;
    NDIS_COUNTER_LIST(NDIS_COUNTER_FIELD)
#undef NDIS_COUNTER_FIELD
} NDIS_COUNTERS;
#define NDIS_COUNTER_COUNT ((int)(sizeof(NDIS_COUNTERS) / sizeof(int64_t)))
extern const char *const ndis_counter_names[];

/* --- the runtime: one per engine (NDIS's global state as the model sees it) -------------------------------------- */
typedef void (*SEND_NBL_COMPLETE_HANDLER)(void *context, NET_BUFFER_LIST *chain);
typedef void (*MINIPORT_SEND_NBL_HANDLER)(void *context, NET_BUFFER_LIST *chain);
/* NDIS 5 (ndis5.h): ProtocolSendComplete, once per packet, and MiniportSendPackets */
typedef void (*SEND_COMPLETE_HANDLER)(void *context, NDIS_PACKET *packet, NDIS_STATUS status);
typedef void (*MINIPORT_SEND_PACKETS_HANDLER)(void *context, NDIS_PACKET **packets, uint32_t count);

typedef struct _NDIS_RT {
    NDIS_COUNTERS c;
    /* the system-wide fixed-size MDL lookaside list (LIFO, linked through MDL.Next) */
    MDL *mdl_lookaside;
    SEND_NBL_COMPLETE_HANDLER protocol_send_complete;
    void *protocol_context;
    MINIPORT_SEND_NBL_HANDLER miniport_send;
    void *miniport_context;
    SEND_COMPLETE_HANDLER protocol_send_complete5;
    void *protocol_context5;
    MINIPORT_SEND_PACKETS_HANDLER miniport_send_packets;
    void *miniport_context5;
    /* the binding handle's identity (NdisOpenAdapterEx's NdisBindingHandle) */
    char binding;
    /* an attached filter module (NdisFRegisterFilterDriver + FilterAttach): NDIS routes the protocol's sends to
     * filter_send and every miniport completion to filter_send_complete; `filter` is the NdisFilterHandle */
    MINIPORT_SEND_NBL_HANDLER filter_send;
    SEND_NBL_COMPLETE_HANDLER filter_send_complete;
    void *filter_context;
    char filter;
    /* set when NDIS would bug check or an allocation failed: the round stops and Python raises */
    int failure; /* 0, NDIS_FAIL_MEMORY, NDIS_FAIL_BUGCHECK */
    const char *failure_text;
} NDIS_RT;
#define NDIS_FAIL_MEMORY 1
#define NDIS_FAIL_BUGCHECK 2

typedef struct _NET_BUFFER_LIST_POOL_PARAMETERS {
    uint32_t ContextSize;
    int fAllocateNetBuffer;
    uint32_t DataSize;
    uint32_t Flags;
} NET_BUFFER_LIST_POOL_PARAMETERS;

typedef struct _NDIS_NBL_POOL {
    NET_BUFFER_LIST_POOL_PARAMETERS params;
    /* the lookaside list: free blocks linked through NET_BUFFER_LIST.Next (the Link SLIST entry) */
    NET_BUFFER_LIST *free_list;
    int64_t cached;
    int64_t allocated;
    uint32_t block_size;
    int freed;
} NDIS_NBL_POOL;

void NdisRtInit(NDIS_RT *rt);
void NdisRtRelease(NDIS_RT *rt); /* gives the MDL lookaside's blocks back to the C heap (not counted) */
void *NdisRegisterProtocol(NDIS_RT *rt, SEND_NBL_COMPLETE_HANDLER handler, void *context);
void NdisRegisterMiniport(NDIS_RT *rt, MINIPORT_SEND_NBL_HANDLER handler, void *context);

NDIS_NBL_POOL *NdisAllocateNetBufferListPool(NDIS_RT *rt, const NET_BUFFER_LIST_POOL_PARAMETERS *params);
void NdisFreeNetBufferListPool(NDIS_RT *rt, NDIS_NBL_POOL *pool);
NET_BUFFER_LIST *NdisAllocateNetBufferAndNetBufferList(NDIS_RT *rt, NDIS_NBL_POOL *pool, uint32_t ContextSize,
                                                       uint32_t ContextBackFill, MDL *MdlChain, uint32_t DataOffset,
                                                       uint32_t DataLength);
void NdisFreeNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *nbl);
#define NET_BUFFER_LIST_CONTEXT_DATA_START(nbl) ((nbl)->Context->ContextData + (nbl)->Context->Offset)

MDL *NdisAllocateMdl(NDIS_RT *rt, void *VirtualAddress, uint32_t Length);
void NdisFreeMdl(NDIS_RT *rt, MDL *mdl);
MDL *IoAllocateMdl(NDIS_RT *rt, void *VirtualAddress, uint32_t Length);
void IoFreeMdl(NDIS_RT *rt, MDL *mdl);
void MmProbeAndLockPages(NDIS_RT *rt, MDL *mdl);
void MmUnlockPages(NDIS_RT *rt, MDL *mdl);
void MmInitializeMdl(NDIS_RT *rt, MDL *mdl, void *BaseVa, uint32_t Length);
void MmBuildMdlForNonPagedPool(NDIS_RT *rt, MDL *mdl);

void NdisSendNetBufferLists(NDIS_RT *rt, void *NdisBindingHandle, NET_BUFFER_LIST *chain, uint32_t SendFlags);
void NdisMSendNetBufferListsComplete(NDIS_RT *rt, NET_BUFFER_LIST *chain);

/* --- NDIS 6 data-owning pools, derived NBLs and the filter path (strategies6.c: copy, cache, clone) ------------ */
#define NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS 0x1u
/* MDL_INTERNAL: NDIS allocated this MDL and its buffer for a retreat beyond the backfill (the model's _retreat) */
#define MDL_INTERNAL 0x8000u

typedef struct _NDIS_NB_POOL {
    uint32_t DataSize;
    /* the lookaside list: free NB blocks linked through NET_BUFFER.Next */
    NET_BUFFER *free_list;
    int64_t cached;
    int64_t allocated;
    uint32_t block_size; /* NB (+ MDL + DataSize bytes of data) */
    int freed;
} NDIS_NB_POOL;

NET_BUFFER_LIST *NdisAllocateNetBufferList(NDIS_RT *rt, NDIS_NBL_POOL *pool, uint32_t ContextSize,
                                           uint32_t ContextBackFill);
NDIS_NB_POOL *NdisAllocateNetBufferPool(NDIS_RT *rt, uint32_t DataSize);
void NdisFreeNetBufferPool(NDIS_RT *rt, NDIS_NB_POOL *pool);
/* not a DDK call: the block behind IoAllocateMdl and NdisAllocateBuffer — from the fixed-size MDL lookaside when
 * the buffer spans few enough pages (flags = MDL_ALLOCATED_FIXED_SIZE), else from the heap (flags = 0); counted;
 * NULL (failure recorded under who) when the heap refuses */
MDL *MdlBlockAllocate(NDIS_RT *rt, uint32_t length, const char *who, uint16_t *flags);
NET_BUFFER *NdisAllocateNetBufferMdlAndData(NDIS_RT *rt, NDIS_NB_POOL *pool);
void NdisFreeNetBuffer(NDIS_RT *rt, NET_BUFFER *nb);
void *MmGetSystemAddressForMdlSafe(NDIS_RT *rt, MDL *mdl);
void NdisMoveMemory(NDIS_RT *rt, void *Destination, const void *Source, uint32_t Length);
NET_BUFFER_LIST *NdisAllocateCloneNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Original, NDIS_NBL_POOL *NblPool,
                                                NDIS_NB_POOL *NbPool, uint32_t AllocateCloneFlags);
void NdisFreeCloneNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Clone, uint32_t FreeCloneFlags);
NET_BUFFER_LIST *NdisAllocateFragmentNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Original, NDIS_NBL_POOL *NblPool,
                                                   NDIS_NB_POOL *NbPool, uint32_t StartOffset,
                                                   uint32_t MaximumLength, uint32_t DataOffsetDelta,
                                                   uint32_t DataBackFill);
void NdisFreeFragmentNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *Fragment, uint32_t DataOffsetDelta);
/* the caller's side of a derived NBL (ParentNetBufferList + InterlockedIncrement/Decrement of ChildRefCount),
 * counted as the model's link_child_net_buffer_list / unlink_child_net_buffer_list */
void NdisLinkChildNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *child, NET_BUFFER_LIST *parent);
NET_BUFFER_LIST *NdisUnlinkChildNetBufferList(NDIS_RT *rt, NET_BUFFER_LIST *child);
void *NdisFRegisterFilter(NDIS_RT *rt, MINIPORT_SEND_NBL_HANDLER send, SEND_NBL_COMPLETE_HANDLER send_complete,
                          void *context);
void NdisFSendNetBufferLists(NDIS_RT *rt, void *NdisFilterHandle, NET_BUFFER_LIST *chain, uint32_t SendFlags);
void NdisFSendNetBufferListsComplete(NDIS_RT *rt, void *NdisFilterHandle, NET_BUFFER_LIST *chain);

static inline uint32_t pages_spanned(uint32_t byte_offset, uint32_t length) {
    /* ADDRESS_AND_SIZE_TO_SPAN_PAGES; 0 for an empty buffer */
    return length ? (byte_offset % PAGE_SIZE + length + PAGE_SIZE - 1) / PAGE_SIZE : 0;
}
static inline uint32_t mm_size_of_mdl(uint32_t byte_offset, uint32_t length) {
    return MDL_SIZE + (uint32_t)sizeof(PFN_NUMBER) * pages_spanned(byte_offset, length);
}
static inline uint32_t round_up(uint32_t value, uint32_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}

/* --- shared by the .c files: peak gauges, general-allocator accounting, the first failure of a round ------------ */

#define PEAK(c, kind)                                                                                               \
    do {                                                                                                            \
        int64_t out_ = (c)->kind##_allocs - (c)->kind##_frees;                                                      \
        if (out_ > (c)->kind##_peak) (c)->kind##_peak = out_;                                                       \
    } while (0)

static inline void sys_alloc(NDIS_COUNTERS *c, int64_t size) {
    c->sys_allocs += 1;
    c->mem_bytes += size;
    if (c->mem_bytes > c->mem_peak) c->mem_peak = c->mem_bytes;
}

static inline void fail(NDIS_RT *rt, int kind, const char *text) {
    if (!rt->failure) {
        rt->failure = kind;
        rt->failure_text = text;
    }
}

#endif
