"""The NDIS 5 strategies: ``ndis5-alloc`` (ndisprot 5x: a packet per send) and ``ndis5-reuse`` (packet reuse).

NDIS 5 sends NDIS_PACKETs whose data is a chain of NDIS_BUFFERs (MDLs on NT) through NdisSendPackets; the
miniport completes each packet with NdisMSendComplete and NDIS calls ProtocolSendComplete once per packet, the only
moment the packet may be freed or reused (NDIS_MODEL.md §2.6, "Packet Reuse in a Protocol Driver (NDIS 5.1)").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ndis_replay.engine.ndis import (
    BufferPool,
    Mdl,
    NdisPacket,
    PacketPool,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_packet,
    allocate_packet_pool_ex,
    chain_buffer_at_back,
    free_buffer,
    free_buffer_pool,
    free_packet,
    free_packet_pool,
    mm_build_mdl_for_non_paged_pool,
    mm_initialize_mdl,
    reinitialize_packet,
    send_packets,
    unchain_buffer_at_front,
    zero_packet_oob_data,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.strategies.base import BindContext, SendCall, Strategy, StrategyParams
from ndis_replay.engine.strategies.common import FreeListStrategy, PoolExhausted, check_int, cut, declare_frames

#: NPROT_SEND_PACKET_RSVD stand-in: the "IRP" (the packet's trace index) and a RefCount (SAMP5 send.c)
_RSVD = struct.Struct("<qI")
#: NDIS_PACKET_POOL_MAX_DESCRIPTORS: static + overflow descriptors of one pool (§2.6)
_MAX_DESCRIPTORS = 0xFFFF


@dataclass(frozen=True)
class Ndis5AllocParams(StrategyParams):
    """Parameters of ``ndis5-alloc``."""

    descriptors: int = field(
        default=0,
        metadata={
            "help": "static descriptors of the send packet pool (NdisAllocatePacketPoolEx NumberOfDescriptors); "
            "0 = BindContext.max_in_flight"
        },
    )
    overflow: int = field(
        default=-1,
        metadata={
            "help": "overflow descriptors (allocated one by one when the static ones are out, counted as pool "
            "misses); -1 = up to the 0xFFFF total, so a send never fails"
        },
    )
    protocol_reserved: int = field(
        default=16, metadata={"help": "ProtocolReservedLength, bytes (ndisprot: IRP pointer + RefCount = 16)"}
    )
    split_header: bool = field(
        default=True, metadata={"help": "one NDIS_BUFFER for the header (header_len bytes), one for the payload"}
    )

    def validate(self) -> None:
        """Descriptor counts within the 0xFFFF pool limit; ProtocolReservedLength ≥ 16 (the IRP + RefCount)."""
        super().validate()
        check_int("descriptors", self.descriptors, 0, _MAX_DESCRIPTORS)
        check_int("overflow", self.overflow, -1, _MAX_DESCRIPTORS)
        check_int("protocol_reserved", self.protocol_reserved, _RSVD.size, 4096, 8)


class Ndis5AllocStrategy(Strategy):
    """NDIS 5, allocate per send: ndisprot 5x's NdisProtWrite / NdisProtSendComplete (NDIS_MODEL.md §3.4).

    Bind: NdisAllocatePacketPoolEx(descriptors, overflow, ProtocolReservedLength) and NdisAllocateBufferPool.

    Per send (each packet): NdisAllocatePacket; NdisAllocateBuffer for the header and the payload (one buffer
    when not splitting or a part is empty); NdisChainBufferAtBack each; the IRP stand-in and RefCount 1 written in
    ProtocolReserved. Per call: one NdisSendPackets with the call's packets.

    Per completion (ProtocolSendComplete, each packet): read ProtocolReserved; NdisUnchainBufferAtFront +
    NdisFreeBuffer until the chain is empty; NdisFreePacket (back to the pool's free list: "pool reuse", no
    NdisReinitializePacket).

    Counts per packet (split, two non-empty parts): 1 packet and 2 buffers allocated and freed, 2 spin-lock
    acquisitions (packet pool), 2 MDL lookaside pops and 2 pushes.
    """

    name = "ndis5-alloc"
    ndis_version = 5
    summary = "NDIS 5 ndisprot: NdisAllocatePacket + NdisAllocateBuffer per send, freed in ProtocolSendComplete"
    Params = Ndis5AllocParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, Ndis5AllocParams)
        self.p: Ndis5AllocParams = p
        self.failed_sends = 0

    def bind(self, ctx: BindContext) -> None:
        """The send packet pool and buffer pool (ndisprotCreateBinding); ProtocolSendComplete registered."""
        ndis = self.ndis = ctx.ndis
        self.binding = ndis.register_protocol(send_complete_handler=self._send_complete)
        p = self.p
        static = min(p.descriptors or max(ctx.max_in_flight, ctx.max_call, 1), _MAX_DESCRIPTORS)
        overflow = _MAX_DESCRIPTORS - static if p.overflow < 0 else min(p.overflow, _MAX_DESCRIPTORS - static)
        pool = allocate_packet_pool_ex(ndis, static, overflow, p.protocol_reserved, name="ndis5 send")
        if pool is None:
            raise PoolExhausted("NdisAllocatePacketPoolEx: NDIS_STATUS_RESOURCES")
        self.pool: PacketPool = pool
        self.buffers: BufferPool = allocate_buffer_pool(ndis, 2 * static, name="ndis5 send buffers")

    def _buffers(self, packet: NdisPacket, frame: memoryview, header_len: int) -> None:
        """NdisAllocateBuffer over the header and the payload, NdisChainBufferAtBack each."""
        ndis = self.ndis
        at = cut(len(frame), header_len, self.p.split_header)
        if at:
            chain_buffer_at_back(ndis, packet, allocate_buffer(ndis, self.buffers, frame[:at]))
            chain_buffer_at_back(ndis, packet, allocate_buffer(ndis, self.buffers, frame[at:]))
        else:
            chain_buffer_at_back(ndis, packet, allocate_buffer(ndis, self.buffers, frame))

    def build(self, call: SendCall) -> list[NdisPacket]:
        """One packet per frame, in wire order (the NdisSendPackets array)."""
        ndis = self.ndis
        if ndis.checked:
            declare_frames(ndis, call.frames)
        packets: list[NdisPacket] = []
        for position, frame in enumerate(call.frames):
            packet = allocate_packet(ndis, self.pool)
            if packet is None:
                raise PoolExhausted("NdisAllocatePacket: NDIS_STATUS_RESOURCES")
            self._buffers(packet, frame, call.header_lens[position])
            _RSVD.pack_into(packet.protocol_reserved, 0, call.indices[position], 1)
            packets.append(packet)
        return packets

    def submit(self, built: object) -> None:
        """NdisSendPackets(binding, packets, n)."""
        send_packets(self.ndis, self.binding, built)  # type: ignore[arg-type]

    def _send_complete(self, packet: NdisPacket, status: int) -> None:
        """ProtocolSendComplete: dereference, free the buffers, NdisFreePacket."""
        if status != k.NDIS_STATUS_SUCCESS:
            self.failed_sends += 1
        _RSVD.unpack_from(packet.protocol_reserved)  # the IRP to complete
        ndis = self.ndis
        while (buffer := unchain_buffer_at_front(ndis, packet)) is not None:
            free_buffer(ndis, buffer)
        free_packet(ndis, packet)

    def unbind(self) -> None:
        """NdisFreePacketPool, NdisFreeBufferPool."""
        free_packet_pool(self.ndis, self.pool)
        free_buffer_pool(self.ndis, self.buffers)

    def stats(self) -> dict[str, int]:
        """Completions with a status other than NDIS_STATUS_SUCCESS."""
        return {"failed_sends": self.failed_sends}


@dataclass(frozen=True)
class Ndis5ReuseParams(StrategyParams):
    """Parameters of ``ndis5-reuse``."""

    pool_depth: int = field(
        default=0,
        metadata={
            "help": "packets allocated at bind (NdisAllocatePacketPool NumberOfDescriptors); 0 = "
            "BindContext.max_in_flight. A dry free list allocates one more overflow packet (stats: pool_growth)"
        },
    )
    keep_buffers: bool = field(
        default=True,
        metadata={
            "help": "keep the buffer descriptors: unchain them in the completion and re-initialise them over the next "
            "frame (MmInitializeMdl + MmBuildMdlForNonPagedPool, NT); false: NdisAllocateBuffer per send and "
            "NdisFreeBuffer per completion"
        },
    )
    split_header: bool = field(
        default=True, metadata={"help": "one NDIS_BUFFER for the header (header_len bytes), one for the payload"}
    )
    protocol_reserved: int = field(default=16, metadata={"help": "ProtocolReservedLength, bytes"})

    def validate(self) -> None:
        """Depth within the 0xFFFF pool limit."""
        super().validate()
        check_int("pool_depth", self.pool_depth, 0, _MAX_DESCRIPTORS)
        check_int("protocol_reserved", self.protocol_reserved, 0, 4096, 8)


class Ndis5ReuseStrategy(FreeListStrategy[NdisPacket]):
    """NDIS 5 packet reuse: packets allocated at bind, reinitialised and reused (NDIS_MODEL.md §2.6; the team's
    NDIS 5 driver).

    Bind: NdisAllocatePacketPoolEx(depth, overflow up to the 0xFFFF total), NdisAllocateBufferPool, ``pool_depth``
    NdisAllocatePacket onto the driver's free list.

    Per send (each packet): pop a packet; describe the frame with 1–2 buffers — kept descriptors re-initialised
    (MmInitializeMdl + MmBuildMdlForNonPagedPool each, no allocation) or NdisAllocateBuffer each
    (``keep_buffers = false``); NdisChainBufferAtBack each. Per call: one NdisSendPackets.

    Per completion (ProtocolSendComplete, each packet): NdisUnchainBufferAtFront until empty (NdisFreeBuffer each
    unless kept — the descriptors must be off the packet first, NDIS5-REINIT-LEAK), NdisReinitializePacket, reset
    the OOB data (NdisZeroMemory of NDIS_OOB_DATA_FROM_PACKET, 40 bytes: NdisReinitializePacket does not, and the
    miniport set Status), push on the free list.

    Counts per packet after bind (keep_buffers, split): 0 allocations; 2 MDL builds; 40 bytes zeroed;
    no spin lock (the driver's own free list).
    """

    name = "ndis5-reuse"
    ndis_version = 5
    summary = "NDIS 5 packet reuse: unchain, NdisReinitializePacket, reset OOB, reuse"
    Params = Ndis5ReuseParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, Ndis5ReuseParams)
        self.p: Ndis5ReuseParams = p

    def bind(self, ctx: BindContext) -> None:
        """Pools and ``pool_depth`` packets on the driver's free list."""
        ndis = self.ndis = ctx.ndis
        self.binding = ndis.register_protocol(send_complete_handler=self._send_complete)
        depth = min(self.p.pool_depth or max(ctx.max_in_flight, ctx.max_call, 1), _MAX_DESCRIPTORS)
        # overflow descriptors: the fallback when more packets are in flight than the pool holds (counted)
        pool = allocate_packet_pool_ex(
            ndis, depth, _MAX_DESCRIPTORS - depth, self.p.protocol_reserved, name="ndis5 reuse"
        )
        if pool is None:
            raise PoolExhausted("NdisAllocatePacketPoolEx: NDIS_STATUS_RESOURCES")
        self.pool: PacketPool = pool
        self.buffers: BufferPool = allocate_buffer_pool(ndis, 2 * depth, name="ndis5 reuse buffers")
        self._fill(depth)
        self._keep = self.p.keep_buffers
        self._split = self.p.split_header

    def _allocate(self) -> NdisPacket:
        packet = allocate_packet(self.ndis, self.pool)
        if packet is None:
            raise PoolExhausted("NdisAllocatePacket: NDIS_STATUS_RESOURCES")
        return packet

    def _buffer(self, frame: memoryview) -> Mdl:
        ndis = self.ndis
        if self._keep:
            # the kept descriptor's storage re-initialised over the new data (an NDIS_BUFFER is an MDL on NT)
            mdl = mm_initialize_mdl(ndis, frame)
            mm_build_mdl_for_non_paged_pool(ndis, mdl)
            return mdl
        return allocate_buffer(ndis, self.buffers, frame)

    def build(self, call: SendCall) -> list[NdisPacket]:
        """Pop a packet per frame, chain its buffers, in wire order."""
        ndis = self.ndis
        if ndis.checked:
            declare_frames(ndis, call.frames)
        free = self._free
        packets: list[NdisPacket] = []
        for position, frame in enumerate(call.frames):
            packet = free.pop() if free else self._grow()
            at = cut(len(frame), call.header_lens[position], self._split)
            if at:
                chain_buffer_at_back(ndis, packet, self._buffer(frame[:at]))
                chain_buffer_at_back(ndis, packet, self._buffer(frame[at:]))
            else:
                chain_buffer_at_back(ndis, packet, self._buffer(frame))
            packets.append(packet)
        return packets

    def submit(self, built: object) -> None:
        """NdisSendPackets(binding, packets, n)."""
        send_packets(self.ndis, self.binding, built)  # type: ignore[arg-type]

    def _send_complete(self, packet: NdisPacket, status: int) -> None:
        """ProtocolSendComplete: unchain (free unless kept), NdisReinitializePacket, reset OOB, reuse."""
        if status != k.NDIS_STATUS_SUCCESS:
            self.failed_sends += 1
        self._unchain(packet)
        reinitialize_packet(self.ndis, packet)
        self._reset_oob(packet)
        self._free.append(packet)

    def _unchain(self, packet: NdisPacket) -> None:
        """NdisUnchainBufferAtFront until empty; NdisFreeBuffer each unless the descriptors are kept."""
        ndis = self.ndis
        keep = self._keep
        while (buffer := unchain_buffer_at_front(ndis, packet)) is not None:
            if not keep:
                free_buffer(ndis, buffer)

    def _reset_oob(self, packet: NdisPacket) -> None:
        """NdisZeroMemory(NDIS_OOB_DATA_FROM_PACKET(packet), sizeof(NDIS_PACKET_OOB_DATA))."""
        zero_packet_oob_data(self.ndis, packet)

    def unbind(self) -> None:
        """NdisFreePacket each, NdisFreePacketPool, NdisFreeBufferPool."""
        for packet in self._free:
            free_packet(self.ndis, packet)
        self._free.clear()
        free_packet_pool(self.ndis, self.pool)
        free_buffer_pool(self.ndis, self.buffers)


__all__ = ["Ndis5AllocParams", "Ndis5AllocStrategy", "Ndis5ReuseParams", "Ndis5ReuseStrategy"]
