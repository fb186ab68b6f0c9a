/* The native core's NDIS 5 model: packet and buffer pools, the NDIS_PACKET / NDIS_BUFFER calls and macros,
 * NdisSendPackets and NdisMSendComplete, counted exactly as engine/ndis/ndis5.py counts them.
 *
 * On NT an NDIS_BUFFER is an MDL: NdisAllocateBuffer takes one from the same system-wide fixed-size lookaside as
 * IoAllocateMdl (ndis.c) but counts buffer_allocs; the buffer pool handle only tracks how many are out. A packet
 * pool's static descriptors are one allocation made with the pool; overflow descriptors are allocated one by one
 * (NDIS_MODEL.md section 2.6). The free descriptors are linked through Private.Head, as NDIS 3's NdisFreePacket does
 * (section 1.4).
 */
#ifndef NDIS_REPLAY_NATIVE_NDIS5_H
#define NDIS_REPLAY_NATIVE_NDIS5_H

#include "ndis.h"

#define NDIS_STATUS_PENDING ((NDIS_STATUS)0x00000103)
#define NDIS_STATUS_RESOURCES ((NDIS_STATUS)0xC000009Au)
#define NDIS_PACKET_POOL_MAX_DESCRIPTORS 0xFFFFu
/* NDIS_PACKET_OOB_DATA and NDIS_PACKET_EXTENSION (x64): the blocks NDIS places behind ProtocolReserved */
#define NDIS_PACKET_EXTENSION_SIZE 96u
/* the largest ProtocolReservedLength the strategies accept (their Params bound it at 4096) */
#define NDIS_PACKET_MAX_PROTOCOL_RESERVED 4096u

typedef MDL NDIS_BUFFER;

/* NDIS_PACKET_OOB_DATA (ndis.h, NDIS 5): 40 bytes on x64 */
typedef struct _NDIS_PACKET_OOB_DATA {
    union {
        uint64_t TimeToSend;
        uint64_t TimeSent;
    };
    uint64_t TimeReceived;
    uint32_t HeaderSize;
    uint32_t SizeMediaSpecificInfo;
    void *MediaSpecificInformation;
    NDIS_STATUS Status;
} NDIS_PACKET_OOB_DATA;
_Static_assert(sizeof(NDIS_PACKET_OOB_DATA) == 40, "NDIS_PACKET_OOB_DATA x64");

#define NDIS_OOB_DATA_FROM_PACKET(p)                                                                                \
    ((NDIS_PACKET_OOB_DATA *)((uint8_t *)(p) + (p)->Private.NdisPacketOobOffset))
#define NDIS_SET_PACKET_STATUS(rt, p, s) NdisSetPacketStatus((rt), (p), (s))

typedef struct _NDIS_PACKET_POOL {
    uint32_t number_of_descriptors;
    uint32_t number_of_overflow_descriptors;
    uint32_t protocol_reserved_length;
    uint32_t packet_size; /* NdisPacketSize(ProtocolReservedLength) */
    uint8_t *static_block; /* the number_of_descriptors descriptors allocated with the pool */
    NDIS_PACKET *free_list; /* linked through Private.Head */
    int64_t allocated;      /* descriptors out */
    int64_t overflow_out;   /* overflow descriptors out (a free while any is out gives one back to the system) */
    int64_t held_bytes;     /* descriptor bytes the pool holds (counted in mem_bytes) */
    int freed;
} NDIS_PACKET_POOL;

typedef struct _NDIS_BUFFER_POOL {
    uint32_t number_of_descriptors;
    int64_t allocated;
    int freed;
} NDIS_BUFFER_POOL;

uint32_t NdisPacketSize(uint32_t ProtocolReservedSize);
/* NdisRegisterProtocol's ProtocolSendComplete and the miniport's MiniportSendPackets (kept in NDIS_RT) */
void *NdisRegisterProtocol5(NDIS_RT *rt, SEND_COMPLETE_HANDLER handler, void *context);
void NdisRegisterMiniport5(NDIS_RT *rt, MINIPORT_SEND_PACKETS_HANDLER handler, void *context);

NDIS_PACKET_POOL *NdisAllocatePacketPoolEx(NDIS_RT *rt, NDIS_STATUS *Status, uint32_t NumberOfDescriptors,
                                           uint32_t NumberOfOverflowDescriptors, uint32_t ProtocolReservedLength);
void NdisFreePacketPool(NDIS_RT *rt, NDIS_PACKET_POOL *pool);
NDIS_PACKET *NdisAllocatePacket(NDIS_RT *rt, NDIS_STATUS *Status, NDIS_PACKET_POOL *pool);
void NdisFreePacket(NDIS_RT *rt, NDIS_PACKET *packet);
void NdisReinitializePacket(NDIS_RT *rt, NDIS_PACKET *packet);

NDIS_BUFFER_POOL *NdisAllocateBufferPool(NDIS_RT *rt, NDIS_STATUS *Status, uint32_t NumberOfDescriptors);
void NdisFreeBufferPool(NDIS_RT *rt, NDIS_BUFFER_POOL *pool);
NDIS_BUFFER *NdisAllocateBuffer(NDIS_RT *rt, NDIS_STATUS *Status, NDIS_BUFFER_POOL *pool, void *VirtualAddress,
                                uint32_t Length);
void NdisFreeBuffer(NDIS_RT *rt, NDIS_BUFFER *buffer);
void NdisChainBufferAtBack(NDIS_RT *rt, NDIS_PACKET *packet, NDIS_BUFFER *buffer);
NDIS_BUFFER *NdisUnchainBufferAtFront(NDIS_RT *rt, NDIS_PACKET *packet);

void NdisSetPacketStatus(NDIS_RT *rt, NDIS_PACKET *packet, NDIS_STATUS status);
void NdisZeroPacketOobData(NDIS_RT *rt, NDIS_PACKET *packet);

void NdisSendPackets(NDIS_RT *rt, void *NdisBindingHandle, NDIS_PACKET **PacketArray, uint32_t NumberOfPackets);
void NdisMSendComplete(NDIS_RT *rt, NDIS_PACKET *packet, NDIS_STATUS status);

#endif
