"""NDIS 5: packet and buffer pools, NdisReinitializePacket exactly as the macro, chaining, the send path."""

from __future__ import annotations

import pytest

from ndis_replay.engine.ndis import (
    Ndis,
    NdisPacket,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_memory_with_tag_priority,
    allocate_packet,
    allocate_packet_pool,
    allocate_packet_pool_ex,
    chain_buffer_at_back,
    chain_buffer_at_front,
    free_buffer,
    free_buffer_pool,
    free_packet,
    free_packet_pool,
    get_pool_from_packet,
    ndis_get_packet_status,
    ndis_set_packet_header_size,
    ndis_set_packet_media_specific_info,
    ndis_set_packet_status,
    ndis_set_packet_time_to_send,
    query_packet,
    reinitialize_packet,
    send_packets,
    unchain_buffer_at_back,
    unchain_buffer_at_front,
    zero_packet_oob_data,
)
from ndis_replay.engine.ndis import constants as k
from tests.engine.conftest import Loopback


def _packet(ndis: Ndis, pool: object) -> NdisPacket:
    packet = allocate_packet(ndis, pool)  # type: ignore[arg-type]
    assert packet is not None
    return packet


def test_packet_pool_static_then_overflow_then_resources(any_ndis: Ndis) -> None:
    ndis = any_ndis
    c = ndis.counters
    pool = allocate_packet_pool_ex(ndis, 2, 1, 16, name="send")
    assert pool is not None and pool.packet_size == 256
    assert (c.sys_allocs, c.mem_bytes) == (1, 2 * 256)
    a, b, extra = _packet(ndis, pool), _packet(ndis, pool), _packet(ndis, pool)
    assert allocate_packet(ndis, pool) is None  # NDIS_STATUS_RESOURCES
    assert (c.pool_hits, c.pool_misses, c.sys_allocs, c.mem_bytes) == (2, 1, 2, 3 * 256)
    assert (c.packet_allocs, c.spinlock_acquires, c.bytes_zeroed, c.interlocked_ops) == (3, 4, 3 * 256, 0)
    free_packet(ndis, a)  # an overflow descriptor is out: this one goes back to system memory
    assert (c.sys_frees, c.mem_bytes) == (1, 2 * 256)
    free_packet(ndis, b)
    free_packet(ndis, extra)
    assert (c.packet_frees, c.packet_outstanding, c.packet_peak) == (3, 0, 3)
    again = _packet(ndis, pool)
    assert c.pool_hits == 3 and get_pool_from_packet(ndis, again) is pool
    free_packet(ndis, again)
    free_packet_pool(ndis, pool)
    assert c.mem_bytes == 0
    if ndis.verifier is not None:
        assert ndis.verifier.finish() == []


@pytest.mark.parametrize(("static", "overflow"), [(0x10000, 0), (0xFFFF, 1)], ids=["too-many", "too-many-ex"])
def test_packet_pool_limit(ndis: Ndis, static: int, overflow: int) -> None:
    assert allocate_packet_pool_ex(ndis, static, overflow, 0) is None


def test_allocate_packet_zero_initialises(ndis: Ndis) -> None:
    pool = allocate_packet_pool(ndis, 1, 8)
    assert pool is not None
    packet = _packet(ndis, pool)
    packet.protocol_reserved[:] = b"12345678"
    ndis_set_packet_status(ndis, packet, k.NDIS_STATUS_PENDING)
    ndis_set_packet_time_to_send(ndis, packet, 99)
    ndis_set_packet_header_size(ndis, packet, 14)
    assert (packet.oob.time_to_send, packet.oob.header_size) == (99, 14)
    packet.packet_info[k.PACKET_CANCEL_ID] = "id"
    free_packet(ndis, packet)
    again = _packet(ndis, pool)
    assert again is packet
    assert again.protocol_reserved == bytearray(8) and again.oob.status == 0 and again.oob.time_to_send == 0
    assert again.oob.header_size == 0
    assert again.packet_info[k.PACKET_CANCEL_ID] is None and again.head is None


def test_reinitialize_packet_is_exactly_the_macro(ndis: Ndis) -> None:
    """Only Private.Head = NULL and Private.ValidCounts = FALSE: Tail, OOB, reserved areas stay (§1.4, §2.6)."""
    pool = allocate_packet_pool(ndis, 1, 8)
    buffers = allocate_buffer_pool(ndis, 2)
    assert pool is not None
    packet = _packet(ndis, pool)
    memory = allocate_memory_with_tag_priority(ndis, 64)
    buffer = allocate_buffer(ndis, buffers, memory)
    chain_buffer_at_front(ndis, packet, buffer)
    query_packet(ndis, packet)
    assert packet.valid_counts
    ndis_set_packet_status(ndis, packet, k.NDIS_STATUS_PENDING)
    ndis_set_packet_media_specific_info(ndis, packet, "info", 4)
    packet.protocol_reserved[:] = b"RRRRRRRR"
    packet.miniport_reserved[0] = "mine"
    before = ndis.counters.copy()
    reinitialize_packet(ndis, packet)
    assert packet.head is None and packet.valid_counts is False
    assert packet.tail is buffer
    assert packet.oob.status == k.NDIS_STATUS_PENDING and packet.oob.media_specific_information == "info"
    assert packet.protocol_reserved == bytearray(b"RRRRRRRR") and packet.miniport_reserved[0] == "mine"
    assert packet.total_length == 64  # the stale cached count, no longer valid
    d = ndis.counters - before
    assert d.ddk_calls == 1 and d.bytes_zeroed == 0 and d.buffer_frees == 0


def test_chain_and_unchain(ndis: Ndis) -> None:
    pool = allocate_packet_pool(ndis, 1, 0)
    buffers = allocate_buffer_pool(ndis, 4)
    assert pool is not None
    packet = _packet(ndis, pool)
    memory = allocate_memory_with_tag_priority(ndis, 30)
    memory[:] = b"a" * 10 + b"b" * 10 + b"c" * 10
    a, b, c = (allocate_buffer(ndis, buffers, memory[i : i + 10]) for i in (0, 10, 20))
    chain_buffer_at_back(ndis, packet, b)
    chain_buffer_at_front(ndis, packet, a)
    chain_buffer_at_back(ndis, packet, c)
    assert (packet.head, packet.tail, a.next, b.next, c.next) == (a, c, b, c, None)
    assert query_packet(ndis, packet) == (3, 3, a, 30)
    assert unchain_buffer_at_back(ndis, packet) is c and packet.tail is b and b.next is None
    assert unchain_buffer_at_front(ndis, packet) is a and a.next is None and packet.head is b
    assert unchain_buffer_at_front(ndis, packet) is b and packet.head is None and packet.tail is None
    assert unchain_buffer_at_front(ndis, packet) is None and unchain_buffer_at_back(ndis, packet) is None
    for buffer in (a, b, c):
        free_buffer(ndis, buffer)
    counters = ndis.counters
    assert (counters.buffer_allocs, counters.buffer_frees, counters.mdl_allocs, counters.mdl_builds) == (3, 3, 0, 3)
    free_buffer_pool(ndis, buffers)


def test_chain_a_buffer_chain_at_front(ndis: Ndis) -> None:
    pool = allocate_packet_pool(ndis, 1, 0)
    buffers = allocate_buffer_pool(ndis, 4)
    assert pool is not None
    packet = _packet(ndis, pool)
    memory = allocate_memory_with_tag_priority(ndis, 30)
    a, b, c = (allocate_buffer(ndis, buffers, memory[i : i + 10]) for i in (0, 10, 20))
    chain_buffer_at_front(ndis, packet, c)
    a.next = b
    chain_buffer_at_front(ndis, packet, a)
    assert (packet.head, a.next, b.next, packet.tail) == (a, b, c, c)


def test_send_packets_and_complete(any_ndis: Ndis) -> None:
    ndis = any_ndis
    miniport = Loopback(ndis, "deferred")
    done: list[tuple[NdisPacket, int]] = []
    ndis.register_protocol(send_complete_handler=lambda packet, status: done.append((packet, status)))
    pool = allocate_packet_pool(ndis, 2, 0)
    buffers = allocate_buffer_pool(ndis, 2)
    assert pool is not None
    memory = allocate_memory_with_tag_priority(ndis, 20)
    memory[:] = bytes(range(20))
    packets = []
    for i in range(2):
        packet = _packet(ndis, pool)
        chain_buffer_at_front(ndis, packet, allocate_buffer(ndis, buffers, memory[i * 10 : i * 10 + 10]))
        packets.append(packet)
    send_packets(ndis, ndis.binding_handle, packets)
    assert miniport.wire == [bytes(range(10)), bytes(range(10, 20))]
    assert done == []
    miniport.poll()
    assert done == [(packets[0], k.NDIS_STATUS_SUCCESS), (packets[1], k.NDIS_STATUS_SUCCESS)]
    assert ndis_get_packet_status(ndis, packets[0]) == k.NDIS_STATUS_PENDING  # what the miniport set
    assert (ndis.counters.packets_sent, ndis.counters.packets_completed) == (2, 2)
    for packet in packets:
        free_buffer(ndis, unchain_buffer_at_front(ndis, packet))  # type: ignore[arg-type]
        zero_packet_oob_data(ndis, packet)
        free_packet(ndis, packet)
    assert ndis.counters.bytes_zeroed == 2 * 240 + 2 * 40
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []
