"""Documented recipes run under the verifier give ZERO findings, transmit exactly the frames, leak nothing.

The recipes follow NDIS_MODEL.md: ndisprot NDIS 6 allocate/free (§3.1), the reset checklist for NBL reuse (§2.2),
XDP's TX reuse with an MDL embedded in the context (§3.5), ndisprot NDIS 5 allocate/free (§3.4), NDIS 5 packet
reuse with unchain + NdisReinitializePacket + OOB reset (§2.6), and a cloning filter keeping the parent/child
bookkeeping (§2.5). They are also small, readable examples of the engine API for strategy authors.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NdisPacket,
    NetBufferList,
    NetBufferListPoolParameters,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_clone_net_buffer_list,
    allocate_fragment_net_buffer_list,
    allocate_memory_with_tag_priority,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list,
    allocate_net_buffer_list_pool,
    allocate_packet,
    allocate_packet_pool,
    allocate_packet_pool_ex,
    chain_buffer_at_front,
    f_send_net_buffer_lists,
    f_send_net_buffer_lists_complete,
    free_buffer,
    free_buffer_pool,
    free_clone_net_buffer_list,
    free_fragment_net_buffer_list,
    free_memory,
    free_net_buffer_list,
    free_net_buffer_list_pool,
    free_packet,
    free_packet_pool,
    get_pool_from_packet,
    io_allocate_mdl,
    io_build_partial_mdl,
    io_free_mdl,
    link_child_net_buffer_list,
    mm_initialize_mdl,
    mm_prepare_mdl_for_reuse,
    mm_probe_and_lock_pages,
    mm_unlock_pages,
    ndis_allocate_mdl,
    ndis_free_mdl,
    net_buffer_list_context_data_start,
    reinitialize_packet,
    send_net_buffer_lists,
    send_packets,
    unchain_buffer_at_front,
    unlink_child_net_buffer_list,
    zero_packet_oob_data,
)
from ndis_replay.engine.ndis import constants as k
from tests.engine.conftest import Loopback, chain_to_list

HEADER = 54  # Ethernet + IPv4 + TCP


def frames(count: int = 10, sizes: tuple[int, ...] = (60, 1514, 590, 66, 1000)) -> list[bytes]:
    return [bytes((i * 7 + j) % 251 for j in range(sizes[i % len(sizes)])) for i in range(count)]


class Irp:
    """What the I/O manager does for a direct-I/O write: an MDL over the user's (pageable) buffer, pages locked;
    unlocked and freed when the IRP completes."""

    def __init__(self, ndis: Ndis, data: bytes) -> None:
        self.ndis = ndis
        self.mdl = io_allocate_mdl(ndis, memoryview(data))
        mm_probe_and_lock_pages(ndis, self.mdl, k.USER_MODE, k.IO_READ_ACCESS)

    def complete(self) -> None:
        mm_unlock_pages(self.ndis, self.mdl)
        io_free_mdl(self.ndis, self.mdl)


# --- NDIS 6 ------------------------------------------------------------------------------------------------------


class NdisprotAlloc:
    """ndisprot 6x: a fresh NBL per write over the IRP's MDL, freed in the completion (§3.1)."""

    def __init__(self, ndis: Ndis) -> None:
        self.ndis = ndis
        ndis.register_protocol(send_net_buffer_lists_complete_handler=self.send_complete)
        pool = allocate_net_buffer_list_pool(
            ndis, NetBufferListPoolParameters(context_size=16, f_allocate_net_buffer=True, name="ndisprot send")
        )
        assert pool is not None
        self.pool = pool
        self.irps: dict[int, Irp] = {}
        self.statuses: list[int] = []

    def write(self, index: int, frame: bytes) -> None:
        irp = Irp(self.ndis, frame)
        self.irps[index] = irp
        nbl = allocate_net_buffer_and_net_buffer_list(self.ndis, self.pool, 16, 0, irp.mdl, 0, len(frame))
        struct.pack_into("<Q", net_buffer_list_context_data_start(nbl), 0, index)  # the IRP pointer, in the context
        nbl.source_handle = self.ndis.binding_handle
        send_net_buffer_lists(self.ndis, self.ndis.binding_handle, nbl, 0, k.NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK)

    def send_complete(self, chain: NetBufferList) -> None:
        for nbl in chain_to_list(chain):
            (index,) = struct.unpack_from("<Q", net_buffer_list_context_data_start(nbl))
            self.statuses.append(nbl.status)
            free_net_buffer_list(self.ndis, nbl)
            self.irps.pop(index).complete()  # the I/O manager frees the IRP's MDL after the NBL

    def unbind(self) -> None:
        free_net_buffer_list_pool(self.ndis, self.pool)


class ResetChecklistReuse:
    """NBLs allocated once, re-pointed per send with every field of the §2.2 checklist reset, header/payload MDLs
    per send (NdisAllocateMdl over nonpaged memory), returned to the driver's free list on completion."""

    def __init__(self, ndis: Ndis, depth: int = 4) -> None:
        self.ndis = ndis
        ndis.register_protocol(send_net_buffer_lists_complete_handler=self.send_complete)
        pool = allocate_net_buffer_list_pool(
            ndis, NetBufferListPoolParameters(f_allocate_net_buffer=True, name="reuse")
        )
        assert pool is not None
        self.pool = pool
        self.free: list[NetBufferList] = []
        for _ in range(depth):
            nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, None, 0, 0)
            nbl.source_handle = ndis.binding_handle  # step 8: set once (re-set per send below, harmless)
            self.free.append(nbl)
        self.backlog: list[tuple[memoryview, int]] = []
        self.statuses: list[int] = []

    def send(self, frame: memoryview) -> bool:
        if not self.free:
            return False
        nbl = self.free.pop()
        nb = nbl.first_net_buffer
        assert nb is not None
        header = ndis_allocate_mdl(self.ndis, frame[:HEADER])
        header.next = ndis_allocate_mdl(self.ndis, frame[HEADER:]) if len(frame) > HEADER else None
        nb.mdl_chain = header  # step 5
        nb.current_mdl = header
        nb.current_mdl_offset = 0
        nb.data_offset = 0
        nb.data_length = len(frame)
        info = nbl.net_buffer_list_info  # step 6: clear the offload slots
        info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = None
        info[k.TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = None
        nbl.status = k.NDIS_STATUS_SUCCESS  # step 2 (XDP writes SUCCESS before each send)
        nbl.source_handle = self.ndis.binding_handle
        nbl.next = None
        send_net_buffer_lists(self.ndis, self.ndis.binding_handle, nbl)
        return True

    def send_complete(self, chain: NetBufferList) -> None:
        while chain is not None:
            nbl = chain
            chain = nbl.next  # step 1: save Next first, then clear it
            nbl.next = None
            self.statuses.append(nbl.status)  # step 2: valid only now
            nb = nbl.first_net_buffer
            assert nb is not None
            mdl = nb.mdl_chain
            while mdl is not None:  # step 3: release the old payload MDLs
                following = mdl.next
                ndis_free_mdl(self.ndis, mdl)
                mdl = following
            nb.mdl_chain = nb.current_mdl = None
            self.free.append(nbl)

    def unbind(self) -> None:
        for nbl in self.free:
            nb = nbl.first_net_buffer
            assert nb is not None
            nb.mdl_chain = nb.current_mdl = None  # step 9
            nb.data_length = nb.data_offset = nb.current_mdl_offset = 0
            free_net_buffer_list(self.ndis, nbl)
        free_net_buffer_list_pool(self.ndis, self.pool)


class XdpReuse:
    """XDP TX: preallocated NBLs, an MDL embedded in each NBL's context (MmInitializeMdl), IoBuildPartialMdl into
    it per frame from the UMEM's MDL, SourceHandle set once, Status SUCCESS per send (§3.5)."""

    SLOT = 2048

    def __init__(self, ndis: Ndis, depth: int = 4) -> None:
        self.ndis = ndis
        ndis.register_protocol(send_net_buffer_lists_complete_handler=self.send_complete)
        context = k.round_up(k.mm_size_of_mdl(0, self.SLOT), 16) + 16  # the MDL + NBL_TX_CONTEXT
        pool = allocate_net_buffer_list_pool(
            ndis, NetBufferListPoolParameters(context_size=context, f_allocate_net_buffer=True, name="xdp tx")
        )
        assert pool is not None
        self.pool = pool
        self.umem = allocate_memory_with_tag_priority(ndis, self.SLOT * depth)
        self.umem_mdl = ndis_allocate_mdl(ndis, self.umem)
        self.free: list[tuple[NetBufferList, Mdl, int]] = []
        self.slots: dict[int, tuple[NetBufferList, Mdl, int]] = {}
        for slot in range(depth):
            nbl = allocate_net_buffer_list(ndis, pool, context)
            nbl.source_handle = ndis.binding_handle
            embedded = mm_initialize_mdl(ndis, self.umem[slot * self.SLOT : (slot + 1) * self.SLOT])
            nb = nbl.first_net_buffer
            assert nb is not None
            nb.mdl_chain = nb.current_mdl = embedded
            self.free.append((nbl, embedded, slot))
        self.statuses: list[int] = []

    def send(self, frame: memoryview) -> bool:
        if not self.free:
            return False
        nbl, embedded, slot = entry = self.free.pop()
        self.slots[id(nbl)] = entry
        start = slot * self.SLOT
        self.umem[start : start + len(frame)] = frame  # the application's frame in its UMEM
        io_build_partial_mdl(self.ndis, self.umem_mdl, embedded, start, len(frame))
        nb = nbl.first_net_buffer
        assert nb is not None
        nb.data_length = len(frame)
        nb.data_offset = 0
        nb.current_mdl_offset = 0
        nbl.status = k.NDIS_STATUS_SUCCESS
        send_net_buffer_lists(self.ndis, self.ndis.binding_handle, nbl)
        return True

    def send_complete(self, chain: NetBufferList) -> None:
        for nbl in chain_to_list(chain):
            if nbl.source_handle is not self.ndis.binding_handle:
                continue  # not ours (XDP classifies by SourceHandle)
            self.statuses.append(nbl.status)
            nbl_, embedded, slot = self.slots.pop(id(nbl))
            mm_prepare_mdl_for_reuse(self.ndis, embedded)
            self.free.append((nbl_, embedded, slot))

    def unbind(self) -> None:
        for nbl, _, _ in self.free:
            nb = nbl.first_net_buffer
            assert nb is not None
            nb.mdl_chain = nb.current_mdl = None
            nb.data_length = 0
            free_net_buffer_list(self.ndis, nbl)
        free_net_buffer_list_pool(self.ndis, self.pool)
        ndis_free_mdl(self.ndis, self.umem_mdl)
        free_memory(self.ndis, self.umem)


def _run_ndis6(ndis: Ndis, strategy: ResetChecklistReuse | XdpReuse, miniport: Loopback, data: list[bytes]) -> None:
    memory = ndis.declare_nonpaged(memoryview(b"".join(data)))
    offsets = [0]
    for frame in data:
        offsets.append(offsets[-1] + len(frame))
    for index in range(len(data)):
        if ndis.verifier is not None:
            ndis.verifier.packet_index = index
        view = memory[offsets[index] : offsets[index + 1]]
        while not strategy.send(view):
            miniport.poll()  # out of NBLs: wait for completions, as a driver would
        if index % 3 == 2:
            miniport.poll()
    miniport.poll()


MODES = ["sync", "deferred", "batched"]


@pytest.mark.parametrize("mode", MODES)
def test_ndisprot_alloc_recipe(mode: str) -> None:
    ndis = Ndis(checked=True)
    miniport = Loopback(ndis, mode)
    strategy = NdisprotAlloc(ndis)
    data = frames()
    for index, frame in enumerate(data):
        assert ndis.verifier is not None
        ndis.verifier.packet_index = index
        strategy.write(index, frame)
    miniport.poll()
    strategy.unbind()
    assert miniport.wire == data
    assert strategy.statuses == [k.NDIS_STATUS_SUCCESS] * 10
    assert ndis.verifier is not None and ndis.verifier.finish() == []
    c = ndis.counters
    assert (c.nbl_allocs, c.nb_allocs, c.ctx_allocs, c.mdl_allocs) == (10, 10, 10, 10)
    assert (c.nbl_frees, c.nb_frees, c.ctx_frees, c.mdl_frees) == (10, 10, 10, 10)
    assert c.pages_locked == c.pages_unlocked == sum(k.pages_spanned(0, len(f)) for f in data)
    assert (c.nbls_sent, c.nbls_completed) == (10, 10)
    if mode == "sync":
        # one NBL block and one MDL block, reused: 2 misses, then hits
        assert (c.pool_misses, c.pool_hits, c.nbl_peak, c.mdl_peak) == (2, 18, 1, 1)
        assert c.interlocked_ops == 4 * 10  # NBL pop + push, MDL pop + push per write


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("recipe", [ResetChecklistReuse, XdpReuse], ids=["reset-checklist", "xdp"])
def test_ndis6_reuse_recipes(recipe: Callable[[Ndis], ResetChecklistReuse | XdpReuse], mode: str) -> None:
    ndis = Ndis(checked=True)
    miniport = Loopback(ndis, mode)
    strategy = recipe(ndis)
    bound = ndis.counters.copy()
    data = frames(25)
    _run_ndis6(ndis, strategy, miniport, data)
    during = ndis.counters - bound
    strategy.unbind()
    assert miniport.wire == data
    assert strategy.statuses == [k.NDIS_STATUS_SUCCESS] * 25
    assert ndis.verifier is not None and ndis.verifier.finish() == [], ndis.verifier.findings
    assert during.nbl_allocs == 0 and during.nb_allocs == 0  # "reuse = 0 allocations after bind"
    assert (during.nbls_sent, during.nbls_completed) == (25, 25)


@pytest.mark.parametrize("recipe", [ResetChecklistReuse, XdpReuse], ids=["reset-checklist", "xdp"])
def test_reuse_counts_equal_in_both_modes(recipe: Callable[[Ndis], ResetChecklistReuse | XdpReuse]) -> None:
    snapshots = []
    for checked in (False, True):
        ndis = Ndis(checked=checked)
        miniport = Loopback(ndis, "batched")
        strategy = recipe(ndis)
        _run_ndis6(ndis, strategy, miniport, frames(12))
        strategy.unbind()
        snapshots.append(ndis.counters.snapshot())
    assert snapshots[0] == snapshots[1]


# --- NDIS 5 ------------------------------------------------------------------------------------------------------


class Ndisprot5Alloc:
    """ndisprot 5x: NdisAllocatePacket per write, the IRP's MDL chained as the NDIS_BUFFER, NdisFreePacket in
    ProtocolSendComplete (no NdisReinitializePacket), then the IRP completes (§3.4)."""

    def __init__(self, ndis: Ndis) -> None:
        self.ndis = ndis
        ndis.register_protocol(send_complete_handler=self.send_complete)
        pool = allocate_packet_pool_ex(ndis, 4, 60, 16, name="ndisprot5 send")
        assert pool is not None
        self.pool = pool
        self.irps: dict[int, Irp] = {}

    def write(self, index: int, frame: bytes) -> None:
        packet = allocate_packet(self.ndis, self.pool)
        assert packet is not None
        irp = Irp(self.ndis, frame)
        self.irps[index] = irp
        struct.pack_into("<QI", packet.protocol_reserved, 0, index, 1)  # IRP + RefCount
        irp.mdl.next = None
        chain_buffer_at_front(self.ndis, packet, irp.mdl)
        send_packets(self.ndis, self.ndis.binding_handle, [packet])

    def send_complete(self, packet: NdisPacket, status: int) -> None:
        index, _ = struct.unpack_from("<QI", packet.protocol_reserved)
        assert get_pool_from_packet(self.ndis, packet) is self.pool
        free_packet(self.ndis, packet)
        self.irps.pop(index).complete()

    def unbind(self) -> None:
        free_packet_pool(self.ndis, self.pool)


class Ndis5Reuse:
    """Preallocated packets; per send a buffer over the frame; in ProtocolSendComplete unchain (and free) the
    buffer, NdisReinitializePacket, reset the OOB data, back to the free list (§2.6)."""

    def __init__(self, ndis: Ndis, depth: int = 4) -> None:
        self.ndis = ndis
        ndis.register_protocol(send_complete_handler=self.send_complete)
        pool = allocate_packet_pool(ndis, depth, 16, name="ndis5 reuse")
        buffers = allocate_buffer_pool(ndis, 2 * depth)
        assert pool is not None
        self.pool, self.buffers = pool, buffers
        self.free: list[NdisPacket] = []
        for _ in range(depth):
            packet = allocate_packet(ndis, pool)
            assert packet is not None
            self.free.append(packet)

    def send(self, frame: memoryview) -> bool:
        if not self.free:
            return False
        packet = self.free.pop()
        chain_buffer_at_front(self.ndis, packet, allocate_buffer(self.ndis, self.buffers, frame[HEADER:]))
        chain_buffer_at_front(self.ndis, packet, allocate_buffer(self.ndis, self.buffers, frame[:HEADER]))
        send_packets(self.ndis, self.ndis.binding_handle, [packet])
        return True

    def send_complete(self, packet: NdisPacket, status: int) -> None:
        while (buffer := unchain_buffer_at_front(self.ndis, packet)) is not None:
            free_buffer(self.ndis, buffer)
        reinitialize_packet(self.ndis, packet)
        zero_packet_oob_data(self.ndis, packet)
        self.free.append(packet)

    def unbind(self) -> None:
        for packet in self.free:
            free_packet(self.ndis, packet)
        free_packet_pool(self.ndis, self.pool)
        free_buffer_pool(self.ndis, self.buffers)


@pytest.mark.parametrize("mode", ["sync", "deferred"])
def test_ndisprot5_alloc_recipe(mode: str) -> None:
    ndis = Ndis(checked=True)
    miniport = Loopback(ndis, mode)
    strategy = Ndisprot5Alloc(ndis)
    data = frames()
    for index, frame in enumerate(data):
        assert ndis.verifier is not None
        ndis.verifier.packet_index = index
        strategy.write(index, frame)
    miniport.poll()
    strategy.unbind()
    assert miniport.wire == data
    assert ndis.verifier is not None and ndis.verifier.finish() == []
    c = ndis.counters
    assert (c.packet_allocs, c.packet_frees, c.mdl_allocs, c.packets_sent, c.packets_completed) == (10, 10, 10, 10, 10)
    assert c.spinlock_acquires == 20


@pytest.mark.parametrize("mode", ["sync", "deferred"])
def test_ndis5_reuse_recipe(mode: str) -> None:
    ndis = Ndis(checked=True)
    miniport = Loopback(ndis, mode)
    strategy = Ndis5Reuse(ndis)
    data = [f for f in frames(20) if len(f) > HEADER]
    memory = ndis.declare_nonpaged(memoryview(b"".join(data)))
    bound = ndis.counters.copy()
    start = 0
    for index, frame in enumerate(data):
        assert ndis.verifier is not None
        ndis.verifier.packet_index = index
        while not strategy.send(memory[start : start + len(frame)]):
            miniport.poll()
        start += len(frame)
    miniport.poll()
    during = ndis.counters - bound
    strategy.unbind()
    assert miniport.wire == data
    assert ndis.verifier is not None and ndis.verifier.finish() == [], ndis.verifier.findings
    assert during.packet_allocs == 0 and during.buffer_allocs == 2 * len(data)
    assert during.bytes_zeroed == 40 * len(data)  # the OOB reset


# --- a cloning filter ---------------------------------------------------------------------------------------------


class CloningFilter:
    """A filter that sends clones (NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS) of the protocol's NBLs, or fragments of those
    above the MTU, and keeps the parents; a parent is completed up when its last child comes back (§2.5)."""

    def __init__(self, ndis: Ndis, mtu: int = 600) -> None:
        self.ndis = ndis
        self.mtu = mtu
        with ndis.acting_as(ndis.filter_handle):
            pool = allocate_net_buffer_list_pool(
                ndis, NetBufferListPoolParameters(name="clones"), ndis_handle=ndis.filter_handle
            )
        assert pool is not None
        self.pool = pool
        self.fragments: set[int] = set()
        ndis.register_filter(
            send_net_buffer_lists_handler=self.send, send_net_buffer_lists_complete_handler=self.complete
        )

    def send(self, chain: NetBufferList) -> None:
        children: list[NetBufferList] = []
        for parent in chain_to_list(chain):
            nb = parent.first_net_buffer
            assert nb is not None
            if nb.data_length > self.mtu:
                child = allocate_fragment_net_buffer_list(
                    self.ndis, parent, self.pool, None, HEADER, self.mtu - HEADER, HEADER
                )
                assert child is not None
                self.fragments.add(id(child))
            else:
                child = allocate_clone_net_buffer_list(
                    self.ndis, parent, self.pool, None, k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS
                )
            assert child is not None
            child.source_handle = self.ndis.filter_handle
            link_child_net_buffer_list(self.ndis, child, parent)
            children.append(child)
        for first, second in itertools.pairwise(children):
            first.next = second
        f_send_net_buffer_lists(self.ndis, self.ndis.filter_handle, children[0])

    def complete(self, chain: NetBufferList) -> None:
        for nbl in chain_to_list(chain):
            if nbl.source_handle is not self.ndis.filter_handle:
                f_send_net_buffer_lists_complete(self.ndis, self.ndis.filter_handle, nbl)
                continue
            parent = unlink_child_net_buffer_list(self.ndis, nbl)
            if id(nbl) in self.fragments:
                self.fragments.discard(id(nbl))
                free_fragment_net_buffer_list(self.ndis, nbl, HEADER)
            else:
                free_clone_net_buffer_list(self.ndis, nbl, k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS)
            if parent is not None:
                parent.status = k.NDIS_STATUS_SUCCESS
                f_send_net_buffer_lists_complete(self.ndis, self.ndis.filter_handle, parent)

    def unbind(self) -> None:
        with self.ndis.acting_as(self.ndis.filter_handle):
            free_net_buffer_list_pool(self.ndis, self.pool)


@pytest.mark.parametrize("mode", MODES)
def test_cloning_filter_recipe(mode: str) -> None:
    ndis = Ndis(checked=True)
    miniport = Loopback(ndis, mode)
    filt = CloningFilter(ndis)
    upper = NdisprotAlloc(ndis)  # the harness plays the protocol above the filter
    data = frames(8, sizes=(60, 1514, 300, 900))
    for index, frame in enumerate(data):
        assert ndis.verifier is not None
        ndis.verifier.packet_index = index
        upper.write(index, frame)
        if index % 2:
            miniport.poll()
    miniport.poll()
    filt.unbind()
    upper.unbind()
    assert ndis.verifier is not None and ndis.verifier.finish() == [], ndis.verifier.findings
    expected: list[bytes] = []
    for frame in data:
        if len(frame) <= filt.mtu:
            expected.append(frame)
        else:
            body = frame[HEADER:]
            step = filt.mtu - HEADER
            expected.extend(bytes(HEADER) + body[i : i + step] for i in range(0, len(body), step))
    assert [len(f) for f in miniport.wire] == [len(f) for f in expected]
    assert [f[HEADER:] for f in miniport.wire] == [f[HEADER:] for f in expected]
    assert upper.statuses == [k.NDIS_STATUS_SUCCESS] * len(data)
