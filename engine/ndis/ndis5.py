"""NDIS 5.x: packet and buffer pools, NDIS_PACKET and NDIS_BUFFER calls and macros, NdisSendPackets.

Counting conventions:

* NdisAllocatePacketPool(Ex) allocates its NumberOfDescriptors descriptors with the pool (one ``sys_allocs``,
  ``mem_bytes`` += N × NdisPacketSize); overflow descriptors are allocated one by one when the static ones are all
  out (``pool_misses`` + ``sys_allocs``), and a descriptor freed while overflow ones are outstanding goes back to
  system memory (``sys_frees``) (DOC, NDIS_MODEL.md §2.6). A static descriptor handed out is a ``pool_hits``.
* Pool access is serialized by the pool's spin lock (NDIS 3 docs, §2.6): one ``spinlock_acquires`` per
  NdisAllocatePacket and per NdisFreePacket; no interlocked SLIST operations.
* NdisAllocatePacket zero-initialises the descriptor: ``bytes_zeroed`` += NdisPacketSize (DOC §2.6).
* On NT an NDIS_BUFFER is an MDL: NdisAllocateBuffer is IoAllocateMdl + MmBuildMdlForNonPagedPool (same lookaside
  counting, one ``mdl_builds``) but counted as ``buffer_allocs``; NdisFreeBuffer is IoFreeMdl (``buffer_frees``).
  The buffer pool handle only tracks the count outstanding (NdisFreeBufferPool with buffers out is
  POOL-FREE-OUTSTANDING); it does not limit allocations.
* The chain/unchain/reinitialize/OOB macros count one ``ddk_calls`` each and nothing else.

The modelled miniport is deserialized: MiniportSendPackets takes the packets and completes every one later with
:func:`m_send_complete` (NdisMSendComplete), which calls ProtocolSendComplete once per packet (§2.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ndis_replay.engine.ndis.constants import (
    MDL_SOURCE_IS_NONPAGED_POOL,
    NDIS_PACKET_OOB_DATA_SIZE,
    NDIS_PACKET_POOL_MAX_DESCRIPTORS,
    ndis_packet_size,
)
from ndis_replay.engine.ndis.mdl import give_mdl, take_mdl
from ndis_replay.engine.ndis.send import call_as
from ndis_replay.engine.ndis.structs import MDL_KIND_BUFFER, Mdl, NdisPacket

if TYPE_CHECKING:
    from ndis_replay.engine.ndis.runtime import Handle, Ndis

_NO_PACKET_INFO = (None,) * 12


class PacketPool:
    """An NDIS 5 packet pool (NdisAllocatePacketPool(Ex)'s handle).

    ``number_of_descriptors`` static descriptors (allocated with the pool) plus up to
    ``number_of_overflow_descriptors`` allocated on demand; ``packet_size`` = NdisPacketSize(ProtocolReservedLength).
    """

    __slots__ = (
        "allocated",
        "free_list",
        "freed",
        "held_bytes",
        "name",
        "number_of_descriptors",
        "number_of_overflow_descriptors",
        "overflow_out",
        "owner",
        "packet_size",
        "protocol_reserved_length",
    )

    def __init__(
        self,
        number_of_descriptors: int,
        number_of_overflow_descriptors: int,
        protocol_reserved_length: int,
        owner: Handle,
        name: str,
    ) -> None:
        self.number_of_descriptors = number_of_descriptors
        self.number_of_overflow_descriptors = number_of_overflow_descriptors
        self.protocol_reserved_length = protocol_reserved_length
        self.packet_size = ndis_packet_size(protocol_reserved_length)
        self.owner = owner
        self.name = name or "packets"
        self.free_list: list[NdisPacket] = []
        self.allocated = 0
        self.overflow_out = 0
        self.held_bytes = 0
        self.freed = False

    def __repr__(self) -> str:
        return f"<PacketPool {self.name} {self.allocated} out>"


class BufferPool:
    """An NDIS 5 buffer pool (NdisAllocateBufferPool's handle); nominal on NT, it counts buffers outstanding."""

    __slots__ = ("allocated", "freed", "name", "number_of_descriptors", "owner")

    def __init__(self, number_of_descriptors: int, owner: Handle, name: str) -> None:
        self.number_of_descriptors = number_of_descriptors
        self.owner = owner
        self.name = name or "buffers"
        self.allocated = 0
        self.freed = False

    def __repr__(self) -> str:
        return f"<BufferPool {self.name} {self.allocated} out>"


# --- packet pools and packets -------------------------------------------------------------------------------------


def _new_packet(ndis: Ndis, pool: PacketPool) -> NdisPacket:
    ndis.serial_packet += 1
    packet = ndis.packet_class(ndis.serial_packet, pool, pool.protocol_reserved_length, ndis.oob_class())
    packet.oob._packet = packet
    return packet


def allocate_packet_pool_ex(
    ndis: Ndis,
    number_of_descriptors: int,
    number_of_overflow_descriptors: int,
    protocol_reserved_length: int,
    *,
    name: str = "",
) -> PacketPool | None:
    """NdisAllocatePacketPoolEx(Status, PoolHandle, NumberOfDescriptors, NumberOfOverflowDescriptors,
    ProtocolReservedLength); None for NDIS_STATUS_RESOURCES (more than 0xFFFF descriptors in all, §2.6)."""
    ndis.counters.ddk_calls += 1
    return _allocate_packet_pool(
        ndis, number_of_descriptors, number_of_overflow_descriptors, protocol_reserved_length, name
    )


def allocate_packet_pool(
    ndis: Ndis, number_of_descriptors: int, protocol_reserved_length: int, *, name: str = ""
) -> PacketPool | None:
    """NdisAllocatePacketPool(Status, PoolHandle, NumberOfDescriptors, ProtocolReservedLength): no overflow."""
    ndis.counters.ddk_calls += 1
    return _allocate_packet_pool(ndis, number_of_descriptors, 0, protocol_reserved_length, name)


def _allocate_packet_pool(
    ndis: Ndis,
    number_of_descriptors: int,
    number_of_overflow_descriptors: int,
    protocol_reserved_length: int,
    name: str,
) -> PacketPool | None:
    c = ndis.counters
    total = number_of_descriptors + number_of_overflow_descriptors
    if number_of_descriptors < 0 or number_of_overflow_descriptors < 0 or protocol_reserved_length < 0:
        return None
    if total > NDIS_PACKET_POOL_MAX_DESCRIPTORS:
        return None
    owner = ndis.verifier.actor if ndis.verifier is not None else ndis.binding_handle
    pool = PacketPool(number_of_descriptors, number_of_overflow_descriptors, protocol_reserved_length, owner, name)
    if number_of_descriptors:
        pool.held_bytes = number_of_descriptors * pool.packet_size
        c.sys_alloc(pool.held_bytes)
        pool.free_list = [_new_packet(ndis, pool) for _ in range(number_of_descriptors)]
    return pool


def free_packet_pool(ndis: Ndis, pool_handle: PacketPool) -> None:
    """NdisFreePacketPool(PoolHandle): all descriptors must be back (POOL-FREE-OUTSTANDING otherwise, §2.6)."""
    c = ndis.counters
    c.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_pool(pool_handle, "NdisFreePacketPool"):
        return
    c.sys_frees += 1 + pool_handle.overflow_out
    c.mem_bytes -= pool_handle.held_bytes
    pool_handle.held_bytes = 0
    pool_handle.free_list.clear()
    pool_handle.freed = True


def allocate_packet(ndis: Ndis, pool_handle: PacketPool) -> NdisPacket | None:
    """NdisAllocatePacket(Status, Packet, PoolHandle): a zero-initialised packet with no buffers, or None for
    NDIS_STATUS_RESOURCES when the static and overflow descriptors are all out."""
    c = ndis.counters
    c.ddk_calls += 1
    c.spinlock_acquires += 1  # the pool's spin lock
    v = ndis.verifier
    pool = pool_handle
    if v is not None:
        v.check_pool_usable(pool, "NdisAllocatePacket")
    free = pool.free_list
    if free:
        c.pool_hits += 1
        packet = free.pop()
        if ndis.checked:
            packet = _new_packet(ndis, pool)  # the freed one stays quarantined
    elif pool.allocated < pool.number_of_descriptors + pool.number_of_overflow_descriptors:
        c.pool_misses += 1
        pool.overflow_out += 1
        pool.held_bytes += pool.packet_size
        c.sys_alloc(pool.packet_size)
        packet = _new_packet(ndis, pool)
    else:
        return None
    packet.head = packet.tail = None
    packet.valid_counts = False
    packet.physical_count = packet.total_length = packet.count = 0
    packet.flags = packet.ndis_packet_flags = 0
    oob = packet.oob
    oob.time_to_send = oob.time_received = oob.header_size = oob.size_media_specific_info = oob.status = 0
    oob.media_specific_information = None
    packet.packet_info[:] = _NO_PACKET_INFO
    packet.miniport_reserved[:] = (None, None)
    packet.protocol_reserved[:] = bytes(pool.protocol_reserved_length)
    pool.allocated += 1
    c.packet_allocs += 1
    out = c.packet_allocs - c.packet_frees
    if out > c.packet_peak:
        c.packet_peak = out
    c.bytes_zeroed += pool.packet_size
    if v is not None:
        v.on_packet_allocated(packet)
    return packet


def free_packet(ndis: Ndis, packet: NdisPacket) -> None:
    """NdisFreePacket(Packet): back to its pool's static list, or to system memory while overflow descriptors are
    outstanding (§2.6). Chained buffers are not freed (ndisprot frees the packet with the IRP's MDL chained)."""
    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_packet(packet, "NdisFreePacket"):
        return
    c.spinlock_acquires += 1
    pool: PacketPool = packet.pool
    pool.allocated -= 1
    c.packet_frees += 1
    if pool.freed:
        pass
    elif pool.overflow_out:
        pool.overflow_out -= 1
        pool.held_bytes -= pool.packet_size
        c.sys_frees += 1
        c.mem_bytes -= pool.packet_size
    else:
        pool.free_list.append(packet)
    if v is not None:
        v.on_freed(packet)


def get_pool_from_packet(ndis: Ndis, packet: NdisPacket) -> PacketPool:
    """NdisGetPoolFromPacket(Packet): Private.Pool."""
    ndis.counters.ddk_calls += 1
    pool: PacketPool = packet.pool
    return pool


def reinitialize_packet(ndis: Ndis, packet: NdisPacket) -> None:
    """NdisReinitializePacket(Packet): exactly the WDK macro — Private.Head = NULL, Private.ValidCounts = FALSE.

    Nothing else: Tail, the OOB data and the reserved areas keep their values (§1.4, §2.6). Buffers still chained
    leak (NDIS5-REINIT-LEAK): unchain them first; reset the OOB data yourself (NDIS5-OOB-STALE).
    """
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_reinitialize(packet):
        return
    packet.head = None
    packet.valid_counts = False


# --- buffers ----------------------------------------------------------------------------------------------------


def allocate_buffer_pool(ndis: Ndis, number_of_descriptors: int, *, name: str = "") -> BufferPool:
    """NdisAllocateBufferPool(Status, PoolHandle, NumberOfDescriptors)."""
    ndis.counters.ddk_calls += 1
    owner = ndis.verifier.actor if ndis.verifier is not None else ndis.binding_handle
    return BufferPool(number_of_descriptors, owner, name)


def free_buffer_pool(ndis: Ndis, pool_handle: BufferPool) -> None:
    """NdisFreeBufferPool(PoolHandle); buffers still out are POOL-FREE-OUTSTANDING."""
    ndis.counters.ddk_calls += 1
    if ndis.verifier is not None and not ndis.verifier.check_free_pool(pool_handle, "NdisFreeBufferPool"):
        return
    pool_handle.freed = True


def allocate_buffer(
    ndis: Ndis, pool_handle: BufferPool, virtual_address: memoryview, length: int | None = None, *, page_offset: int = 0
) -> Mdl:
    """NdisAllocateBuffer(Status, Buffer, PoolHandle, VirtualAddress, Length): an NDIS_BUFFER (an MDL) over
    nonpaged memory (pageable memory is MDL-LOCK-BALANCE in checked mode)."""
    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        v.check_pool_usable(pool_handle, "NdisAllocateBuffer")
    data = virtual_address if length is None else virtual_address[:length]
    buffer = take_mdl(ndis, MDL_KIND_BUFFER, data, page_offset)
    c.mdl_builds += 1
    buffer.mdl_flags |= MDL_SOURCE_IS_NONPAGED_POOL
    buffer._pool = pool_handle
    pool_handle.allocated += 1
    if v is not None:
        v.check_nonpaged(buffer, "NdisAllocateBuffer")
    return buffer


def free_buffer(ndis: Ndis, buffer: Mdl) -> None:
    """NdisFreeBuffer(Buffer): IoFreeMdl of the buffer (§1.3)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_free_mdl(buffer, "NdisFreeBuffer"):
        return
    pool = buffer._pool
    if pool is not None:
        pool.allocated -= 1
    give_mdl(ndis, buffer)


def chain_buffer_at_front(ndis: Ndis, packet: NdisPacket, buffer: Mdl) -> None:
    """NdisChainBufferAtFront(Packet, Buffer): the buffer chain goes in front of Head; Tail is set only when the
    packet was empty; ValidCounts = FALSE (WDK macro, §1.4)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_packet_call(packet, "NdisChainBufferAtFront"):
        return
    last = buffer
    hops = 0
    while last.next is not None and hops < 1 << 16:
        last = last.next
        hops += 1
    if packet.head is None:
        packet.tail = last
    last.next = packet.head
    packet.head = buffer
    packet.valid_counts = False


def chain_buffer_at_back(ndis: Ndis, packet: NdisPacket, buffer: Mdl) -> None:
    """NdisChainBufferAtBack(Packet, Buffer): the buffer chain goes after Tail (or becomes Head); Tail = its last
    buffer; ValidCounts = FALSE (WDK macro)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_packet_call(packet, "NdisChainBufferAtBack"):
        return
    last = buffer
    hops = 0
    while last.next is not None and hops < 1 << 16:
        last = last.next
        hops += 1
    if packet.head is not None and packet.tail is not None:
        packet.tail.next = buffer
    else:
        packet.head = buffer
    packet.tail = last
    packet.valid_counts = False


def unchain_buffer_at_front(ndis: Ndis, packet: NdisPacket) -> Mdl | None:
    """NdisUnchainBufferAtFront(Packet, Buffer): removes and returns Head (None when empty), clearing its Next
    link (DERIVED) and ValidCounts."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_packet_call(packet, "NdisUnchainBufferAtFront"):
        return None
    buffer = packet.head
    if buffer is None:
        return None
    packet.head = buffer.next
    if packet.head is None:
        packet.tail = None
    buffer.next = None
    packet.valid_counts = False
    return buffer


def unchain_buffer_at_back(ndis: Ndis, packet: NdisPacket) -> Mdl | None:
    """NdisUnchainBufferAtBack(Packet, Buffer): removes and returns the last buffer (None when empty)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None and not v.check_packet_call(packet, "NdisUnchainBufferAtBack"):
        return None
    head = packet.head
    if head is None:
        return None
    if head.next is None:
        packet.head = packet.tail = None
        packet.valid_counts = False
        return head
    previous = head
    hops = 0
    while previous.next is not None and previous.next.next is not None and hops < 1 << 16:
        previous = previous.next
        hops += 1
    buffer = previous.next
    previous.next = None
    packet.tail = previous
    packet.valid_counts = False
    return buffer


def query_packet(ndis: Ndis, packet: NdisPacket) -> tuple[int, int, Mdl | None, int]:
    """NdisQueryPacket(Packet, PhysicalBufferCount, BufferCount, FirstBuffer, TotalPacketLength): the cached counts
    when ValidCounts, else a walk of the chain that refreshes them."""
    ndis.counters.ddk_calls += 1
    if not packet.valid_counts:
        count = physical = total = 0
        buffer = packet.head
        hops = 0
        while buffer is not None and hops < 1 << 16:
            count += 1
            physical += buffer._pages
            total += buffer.byte_count
            buffer = buffer.next
            hops += 1
        packet.count = count
        packet.physical_count = physical
        packet.total_length = total
        packet.valid_counts = True
    return packet.physical_count, packet.count, packet.head, packet.total_length


# --- OOB macros ------------------------------------------------------------------------------------------------------


def _oob_call(ndis: Ndis, packet: NdisPacket, call: str) -> bool:
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is None:
        return True
    if not v.check_packet_call(packet, call):
        return False
    v.on_oob_written(packet)
    return True


def ndis_set_packet_status(ndis: Ndis, packet: NdisPacket, status: int) -> None:
    """NDIS_SET_PACKET_STATUS(Packet, Status): the OOB Status."""
    if _oob_call(ndis, packet, "NDIS_SET_PACKET_STATUS"):
        packet.oob.status = status


def ndis_get_packet_status(ndis: Ndis, packet: NdisPacket) -> int:
    """NDIS_GET_PACKET_STATUS(Packet)."""
    ndis.counters.ddk_calls += 1
    v = ndis.verifier
    if v is not None:
        v.check_packet_call(packet, "NDIS_GET_PACKET_STATUS")
    return packet.oob.status


def ndis_set_packet_time_to_send(ndis: Ndis, packet: NdisPacket, time_to_send: int) -> None:
    """NDIS_SET_PACKET_TIME_TO_SEND(Packet, TimeToSend)."""
    if _oob_call(ndis, packet, "NDIS_SET_PACKET_TIME_TO_SEND"):
        packet.oob.time_to_send = time_to_send


def ndis_set_packet_header_size(ndis: Ndis, packet: NdisPacket, header_size: int) -> None:
    """NDIS_SET_PACKET_HEADER_SIZE(Packet, HdrSize)."""
    if _oob_call(ndis, packet, "NDIS_SET_PACKET_HEADER_SIZE"):
        packet.oob.header_size = header_size


def ndis_set_packet_media_specific_info(ndis: Ndis, packet: NdisPacket, info: object, size: int) -> None:
    """NDIS_SET_PACKET_MEDIA_SPECIFIC_INFO(Packet, MediaSpecificInfo, SizeMediaSpecificInfo)."""
    if _oob_call(ndis, packet, "NDIS_SET_PACKET_MEDIA_SPECIFIC_INFO"):
        packet.oob.media_specific_information = info
        packet.oob.size_media_specific_info = size


def zero_packet_oob_data(ndis: Ndis, packet: NdisPacket) -> None:
    """NdisZeroMemory(NDIS_OOB_DATA_FROM_PACKET(Packet), sizeof(NDIS_PACKET_OOB_DATA)): the documented OOB reset
    before reuse (§2.6); counts ``bytes_zeroed`` += 40."""
    if _oob_call(ndis, packet, "NdisZeroMemory(NDIS_OOB_DATA_FROM_PACKET)"):
        oob = packet.oob
        oob.time_to_send = oob.time_received = oob.header_size = oob.size_media_specific_info = oob.status = 0
        oob.media_specific_information = None
        ndis.counters.bytes_zeroed += NDIS_PACKET_OOB_DATA_SIZE


# --- send path -------------------------------------------------------------------------------------------------------


def send_packets(ndis: Ndis, ndis_binding_handle: Handle, packet_array: Sequence[NdisPacket]) -> None:
    """NdisSendPackets(NdisBindingHandle, PacketArray, NumberOfPackets): hands the packets to MiniportSendPackets;
    each comes back through ProtocolSendComplete, once, and only then may it be reused (NDIS5-PENDING, §2.6)."""
    c = ndis.counters
    c.ddk_calls += 1
    target = ndis._miniport_send_packets
    if target is None:
        raise RuntimeError("no miniport send-packets handler registered: call Ndis.register_miniport first")
    packets = list(packet_array)
    v = ndis.verifier
    if v is None:
        c.packets_sent += len(packets)
        target(packets)
        return
    if ndis_binding_handle is not ndis.binding_handle:
        v.report("SOURCEHANDLE-SET", "NdisSendPackets", f"called with {ndis_binding_handle!r}, not the binding")
    v.on_send_packets(packets, ndis.binding_handle, "NdisSendPackets")
    c.packets_sent += len(packets)
    call_as(v, ndis.miniport_adapter_handle, target, packets)


def m_send_complete(ndis: Ndis, packet: NdisPacket, status: int) -> None:
    """NdisMSendComplete(MiniportAdapterHandle, Packet, Status): ProtocolSendComplete(Packet, Status) of the
    binding that sent it; exactly once per pending packet (NDIS5-MINIPORT-COMPLETE)."""
    c = ndis.counters
    c.ddk_calls += 1
    handler = ndis._protocol_send_complete5
    if handler is None:
        raise RuntimeError("no protocol send-complete handler registered: call Ndis.register_protocol first")
    v = ndis.verifier
    if v is None:
        c.packets_completed += 1
        handler(packet, status)
        return
    sender = v.on_packet_complete(packet, "NdisMSendComplete")
    if sender is None:
        return
    c.packets_completed += 1
    call_as(v, sender, handler, packet, status)
