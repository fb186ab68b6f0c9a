"""One small scenario per rule of NDIS_MODEL.md §4: the verifier names the rule and the packet (index 7 here)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NdisPacket,
    NetBufferList,
    NetBufferListPoolParameters,
    NetBufferPoolParameters,
    advance_net_buffer_data_start,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_clone_net_buffer_list,
    allocate_fragment_net_buffer_list,
    allocate_memory_with_tag_priority,
    allocate_net_buffer,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list_context,
    allocate_net_buffer_list_pool,
    allocate_net_buffer_pool,
    allocate_packet,
    allocate_packet_pool,
    chain_buffer_at_front,
    f_send_net_buffer_lists,
    f_send_net_buffer_lists_complete,
    free_clone_net_buffer_list,
    free_fragment_net_buffer_list,
    free_memory,
    free_net_buffer,
    free_net_buffer_list,
    free_net_buffer_list_context,
    free_net_buffer_list_pool,
    free_packet_pool,
    io_allocate_mdl,
    io_free_mdl,
    link_child_net_buffer_list,
    m_send_complete,
    m_send_net_buffer_lists_complete,
    mm_probe_and_lock_pages,
    mm_unlock_pages,
    ndis_allocate_mdl,
    ndis_free_mdl,
    reinitialize_packet,
    retreat_net_buffer_data_start,
    send_net_buffer_lists,
    send_packets,
    unchain_buffer_at_front,
    unlink_child_net_buffer_list,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.verifier import RULES, NdisBugCheck, OwnerState
from tests.engine.conftest import Loopback, chain_to_list

BUGGY = 7  # the packet index every scenario's mistake happens at


class Proto:
    """A protocol driver for the scenarios: a send pool, nonpaged payload memory, completed NBLs kept."""

    def __init__(self, mode: str = "deferred", *, detach: bool = True, free_on_complete: bool = False) -> None:
        self.ndis = ndis = Ndis(checked=True)
        assert ndis.verifier is not None
        self.v = ndis.verifier
        self.miniport = Loopback(ndis, mode)
        self.detach = detach
        self.free_on_complete = free_on_complete
        self.completed: list[NetBufferList] = []
        self.packets: list[NdisPacket] = []
        ndis.register_protocol(
            send_net_buffer_lists_complete_handler=self.complete,
            send_complete_handler=lambda packet, status: self.packets.append(packet),
        )
        pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(16, True, name="send"))
        assert pool is not None
        self.pool = pool
        self.memory = allocate_memory_with_tag_priority(ndis, 4096)
        self.memory[:] = bytes(range(256)) * 16

    def complete(self, chain: NetBufferList) -> None:
        if self.detach:
            nbls = chain_to_list(chain)
        else:
            nbls = []
            while chain is not None:
                nbls.append(chain)
                chain = chain.next
        if self.free_on_complete:
            for nbl in nbls:
                free_net_buffer_list(self.ndis, nbl)
        self.completed.extend(nbls)

    def mdl(self, start: int = 0, length: int = 60) -> Mdl:
        return ndis_allocate_mdl(self.ndis, self.memory[start : start + length])

    def nbl(self, length: int = 60) -> NetBufferList:
        nbl = allocate_net_buffer_and_net_buffer_list(self.ndis, self.pool, 16, 0, self.mdl(0, length), 0, length)
        nbl.source_handle = self.ndis.binding_handle
        return nbl

    def send(self, nbl: NetBufferList) -> None:
        send_net_buffer_lists(self.ndis, self.ndis.binding_handle, nbl)

    def at(self, index: int = BUGGY) -> None:
        self.v.packet_index = index


# --- scenarios: each makes one classic mistake at packet BUGGY --------------------------------------------------


def own_after_send_write(p: Proto) -> None:
    nbl = p.nbl()
    p.send(nbl)
    p.at()
    nbl.first_net_buffer.data_length = 10  # type: ignore[union-attr]  # re-pointing before the completion


def own_after_send_info(p: Proto) -> None:
    nbl = p.nbl()
    info = nbl.net_buffer_list_info  # a reference kept across the send
    p.send(nbl)
    p.at()
    info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = 1


def own_after_send_mdl(p: Proto) -> None:
    nbl = p.nbl()
    mdl = nbl.first_net_buffer.mdl_chain  # type: ignore[union-attr]
    p.send(nbl)
    p.at()
    mdl.next = None  # type: ignore[union-attr]


def own_after_send_free(p: Proto) -> None:
    nbl = p.nbl()
    p.send(nbl)
    p.at()
    free_net_buffer_list(p.ndis, nbl)


def status_before_complete(p: Proto) -> None:
    nbl = p.nbl()
    p.send(nbl)
    p.at()
    _ = nbl.status


def miniport_after_complete(p: Proto) -> None:
    ndis = p.ndis

    def touchy(chain: NetBufferList) -> None:
        chain.status = k.NDIS_STATUS_SUCCESS
        m_send_net_buffer_lists_complete(ndis, chain)
        _ = chain.first_net_buffer  # the miniport looks again after completing

    ndis.register_miniport(send_net_buffer_lists_handler=touchy)
    p.at()
    p.send(p.nbl())


def status_not_set(p: Proto) -> None:
    p.miniport.write_status = False
    p.at()
    p.send(p.nbl())
    p.at(8)
    p.miniport.poll()  # reported for the packet the NBL carried


def sourcehandle_missing(p: Proto) -> None:
    nbl = p.nbl()
    nbl.source_handle = None
    p.at()
    p.send(nbl)


def sourcehandle_wrong(p: Proto) -> None:
    nbl = p.nbl()
    nbl.source_handle = p.ndis.miniport_adapter_handle
    p.at()
    p.send(nbl)


class Filter:
    """A filter for the scenarios; ``on_send`` / ``on_complete`` customise the mistake."""

    def __init__(
        self,
        p: Proto,
        on_send: Callable[[Filter, NetBufferList], None] | None = None,
        on_complete: Callable[[Filter, NetBufferList], None] | None = None,
    ) -> None:
        self.p = p
        self.ndis = p.ndis
        self.on_send = on_send
        self.on_complete = on_complete
        with self.ndis.acting_as(self.ndis.filter_handle):
            pool = allocate_net_buffer_list_pool(
                self.ndis, NetBufferListPoolParameters(name="filter"), ndis_handle=self.ndis.filter_handle
            )
        assert pool is not None
        self.pool = pool
        self.ndis.register_filter(
            send_net_buffer_lists_handler=self.send, send_net_buffer_lists_complete_handler=self.done
        )

    def send(self, chain: NetBufferList) -> None:
        if self.on_send is not None:
            self.on_send(self, chain)
        else:
            f_send_net_buffer_lists(self.ndis, self.ndis.filter_handle, chain)

    def done(self, chain: NetBufferList) -> None:
        if self.on_complete is not None:
            self.on_complete(self, chain)
        else:
            f_send_net_buffer_lists_complete(self.ndis, self.ndis.filter_handle, chain)


def sourcehandle_foreign(p: Proto) -> None:
    def send(f: Filter, chain: NetBufferList) -> None:
        chain.source_handle = f.ndis.filter_handle
        f_send_net_buffer_lists(f.ndis, f.ndis.filter_handle, chain)

    Filter(p, on_send=send)
    p.at()
    p.send(p.nbl())


def own_nbl_completed_up(p: Proto) -> None:
    def send(f: Filter, chain: NetBufferList) -> None:
        mine = allocate_clone_net_buffer_list(f.ndis, chain, f.pool)
        assert mine is not None
        mine.source_handle = f.ndis.filter_handle
        f_send_net_buffer_lists(f.ndis, f.ndis.filter_handle, mine)
        f_send_net_buffer_lists_complete(f.ndis, f.ndis.filter_handle, chain)

    def complete(f: Filter, chain: NetBufferList) -> None:
        f_send_net_buffer_lists_complete(f.ndis, f.ndis.filter_handle, chain)  # its own clone, upward

    Filter(p, on_send=send, on_complete=complete)
    p.send(p.nbl())
    p.at()
    p.miniport.poll()


def nb_list_changed_by_filter(p: Proto) -> None:
    def send(f: Filter, chain: NetBufferList) -> None:
        nb = chain.first_net_buffer
        assert nb is not None
        nb.next = None  # not the creator of the NB
        f_send_net_buffer_lists(f.ndis, f.ndis.filter_handle, chain)

    Filter(p, on_send=send)
    p.at()
    p.send(p.nbl())


def next_not_reset(p: Proto) -> None:
    p.detach = False  # the completion handler keeps the chain's links
    p.miniport.mode = "batched"
    first, second = p.nbl(), p.nbl()
    p.send(first)
    p.send(second)
    p.miniport.poll()
    first.first_net_buffer.data_length = 30  # type: ignore[union-attr]
    p.at()
    p.send(first)  # first.Next still points at second


def chain_loops(p: Proto) -> None:
    first, second = p.nbl(), p.nbl()
    first.next = second
    second.next = first
    p.at()
    p.send(first)


def sent_twice(p: Proto) -> None:
    nbl = p.nbl()
    p.send(nbl)
    p.at()
    p.send(nbl)


def empty_completion(p: Proto) -> None:
    p.at()
    with p.ndis.acting_as(p.ndis.miniport_adapter_handle):
        m_send_net_buffer_lists_complete(p.ndis, None)  # type: ignore[arg-type]


def not_restored(p: Proto) -> None:
    def send(f: Filter, chain: NetBufferList) -> None:
        nb = chain.first_net_buffer
        assert nb is not None
        retreat_net_buffer_data_start(f.ndis, nb, 4)  # a VLAN tag, never undone
        f_send_net_buffer_lists(f.ndis, f.ndis.filter_handle, chain)

    Filter(p, on_send=send)
    p.at()
    p.send(p.nbl())
    p.at(8)
    p.miniport.poll()  # reported for the packet the NBL carried


def struct_copy(p: Proto) -> None:
    template = p.nbl()
    p.at()
    forged = copy.copy(template)  # the OSR crash: an NBL made by copying another
    forged.next = None


def hand_made_nbl_sent(p: Proto) -> None:
    nbl = NetBufferList(1, p.pool, 0)  # "allocated from private memory or the stack"
    nbl.source_handle = p.ndis.binding_handle
    p.at()
    p.send(nbl)


def nbl_and_nb_from_wrong_pool(p: Proto) -> None:
    pool = allocate_net_buffer_list_pool(p.ndis, NetBufferListPoolParameters(name="bare"))
    assert pool is not None
    p.at()
    allocate_net_buffer_and_net_buffer_list(p.ndis, pool)


def pool_handle_overwritten(p: Proto) -> None:
    other = allocate_net_buffer_list_pool(p.ndis, NetBufferListPoolParameters(16, True, name="other"))
    nbl = p.nbl()
    p.at()
    nbl.ndis_pool_handle = other  # then freed "to" the other pool


def free_clone_as_nbl(p: Proto) -> None:
    parent = p.nbl()
    clone = allocate_clone_net_buffer_list(p.ndis, parent)
    assert clone is not None
    p.at()
    free_net_buffer_list(p.ndis, clone)


def free_clone_other_flags(p: Proto) -> None:
    parent = p.nbl()
    clone = allocate_clone_net_buffer_list(p.ndis, parent, None, None, k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS)
    assert clone is not None
    p.at()
    free_clone_net_buffer_list(p.ndis, clone, 0)


def free_fragment_other_delta(p: Proto) -> None:
    parent = p.nbl(200)
    fragment = allocate_fragment_net_buffer_list(p.ndis, parent, None, None, 0, 100, 20)
    assert fragment is not None
    p.at()
    free_fragment_net_buffer_list(p.ndis, fragment, 0)


def free_foreign_nbl(p: Proto) -> None:
    def send(f: Filter, chain: NetBufferList) -> None:
        free_net_buffer_list(f.ndis, chain)  # the protocol's NBL: complete it, never free it

    Filter(p, on_send=send)
    p.at()
    p.send(p.nbl())


def wrong_mdl_free_routine(p: Proto) -> None:
    mdl = p.mdl()
    p.at()
    io_free_mdl(p.ndis, mdl)  # NdisAllocateMdl's MDL: NdisFreeMdl


def pool_freed_with_nbls_out(p: Proto) -> None:
    p.nbl()
    p.at()
    free_net_buffer_list_pool(p.ndis, p.pool)


def packet_pool_freed_with_packets_out(p: Proto) -> None:
    pool = allocate_packet_pool(p.ndis, 4, 8)
    assert pool is not None
    allocate_packet(p.ndis, pool)
    p.at()
    free_packet_pool(p.ndis, pool)


def nb_not_freed_before_nbl(p: Proto) -> None:
    bare = allocate_net_buffer_list_pool(p.ndis, NetBufferListPoolParameters(name="bare"))
    nbs = allocate_net_buffer_pool(p.ndis, NetBufferPoolParameters())
    assert bare is not None and nbs is not None
    nbl = allocate_net_buffer_and_net_buffer_list(p.ndis, p.pool)
    nbl.first_net_buffer = allocate_net_buffer(p.ndis, nbs, p.mdl(), 0, 60)
    p.at()
    free_net_buffer_list(p.ndis, nbl)


def preallocated_nb_freed(p: Proto) -> None:
    nbl = p.nbl()
    p.at()
    free_net_buffer(p.ndis, nbl.first_net_buffer)  # type: ignore[arg-type]


def context_not_freed(p: Proto) -> None:
    nbl = p.nbl()
    allocate_net_buffer_list_context(p.ndis, nbl, 32)
    p.at()
    free_net_buffer_list(p.ndis, nbl)


def allocate_call_context_freed(p: Proto) -> None:
    nbl = p.nbl()
    p.at()
    free_net_buffer_list_context(p.ndis, nbl, 16)


def context_size_not_pointer_multiple(p: Proto) -> None:
    nbl = p.nbl()
    p.at()
    allocate_net_buffer_list_context(p.ndis, nbl, 12)


def parent_freed_with_children(p: Proto) -> None:
    parent = p.nbl()
    child = allocate_clone_net_buffer_list(p.ndis, parent)
    assert child is not None
    link_child_net_buffer_list(p.ndis, child, parent)
    p.at()
    free_net_buffer_list(p.ndis, parent)


def parent_passed_down(p: Proto) -> None:
    parent = p.nbl()
    child = allocate_clone_net_buffer_list(p.ndis, parent)
    assert child is not None
    link_child_net_buffer_list(p.ndis, child, parent)
    p.at()
    p.send(parent)


def parent_pointer_overwritten(p: Proto) -> None:
    def send(f: Filter, chain: NetBufferList) -> None:
        clone = allocate_clone_net_buffer_list(f.ndis, chain, f.pool)
        assert clone is not None
        chain.parent_net_buffer_list = clone  # a received NBL may itself be a child: never overwrite
        f_send_net_buffer_lists(f.ndis, f.ndis.filter_handle, chain)

    Filter(p, on_send=send)
    p.at()
    p.send(p.nbl())


def childcount_not_owner(p: Proto) -> None:
    parent = p.nbl()
    p.send(parent)
    p.at()
    parent.child_ref_count += 1


def child_without_parent(p: Proto) -> None:
    parent = p.nbl()
    child = allocate_clone_net_buffer_list(p.ndis, parent)
    assert child is not None
    p.at()
    unlink_child_net_buffer_list(p.ndis, child)


def data_beyond_chain(p: Proto) -> None:
    nbl = p.nbl()
    nb = nbl.first_net_buffer
    assert nb is not None
    nb.mdl_chain = nb.current_mdl = p.mdl(0, 40)
    nb.data_offset = 0
    nb.data_length = 60  # the old length: the new chain has 40 bytes
    p.at()
    p.send(nbl)


def current_mdl_not_reset(p: Proto) -> None:
    nbl = p.nbl()
    nb = nbl.first_net_buffer
    assert nb is not None
    header, payload = p.mdl(0, 14), p.mdl(100, 50)
    header.next = payload
    nb.mdl_chain = header
    nb.data_offset = 14  # used data starts in the second MDL …
    nb.data_length = 50
    nb.current_mdl = header  # … but CurrentMdl still says the first
    nb.current_mdl_offset = 14
    p.at()
    p.send(nbl)


def retreat_beyond_backfill(p: Proto) -> None:
    nbl = p.nbl()
    p.at()
    retreat_net_buffer_data_start(p.ndis, nbl.first_net_buffer, 14)  # type: ignore[arg-type]


def retreat_leaked(p: Proto) -> None:
    nbl = p.nbl()
    retreat_net_buffer_data_start(p.ndis, nbl.first_net_buffer, 14)  # type: ignore[arg-type]
    p.at()
    free_net_buffer_list(p.ndis, nbl)  # no advance with FreeMdl first


def retreat_leaked_on_reuse(p: Proto) -> None:
    nbl = p.nbl()
    nb = nbl.first_net_buffer
    assert nb is not None
    retreat_net_buffer_data_start(p.ndis, nb, 14)
    p.at()
    nb.mdl_chain = p.mdl()


def advance_underflow(p: Proto) -> None:
    nbl = p.nbl()
    p.at()
    advance_net_buffer_data_start(p.ndis, nbl.first_net_buffer, 61, False)  # type: ignore[arg-type]


def _ndis5(p: Proto) -> tuple[object, object]:
    pool = allocate_packet_pool(p.ndis, 4, 16, name="ndis5")
    buffers = allocate_buffer_pool(p.ndis, 4)
    return pool, buffers


def _packet(p: Proto) -> NdisPacket:
    pool, buffers = _ndis5(p)
    packet = allocate_packet(p.ndis, pool)  # type: ignore[arg-type]
    assert packet is not None
    chain_buffer_at_front(p.ndis, packet, allocate_buffer(p.ndis, buffers, p.memory[:60]))  # type: ignore[arg-type]
    return packet


def reinit_with_buffers(p: Proto) -> None:
    packet = _packet(p)
    p.at()
    reinitialize_packet(p.ndis, packet)


def reinit_foreign(p: Proto) -> None:
    pool, _ = _ndis5(p)
    with p.ndis.acting_as(p.ndis.miniport_adapter_handle):
        packet = allocate_packet(p.ndis, pool)  # type: ignore[arg-type]
    assert packet is not None
    # stand-in for a receive indication handing the miniport's packet to the protocol (not modelled)
    object.__setattr__(packet, "_v_holder", p.ndis.binding_handle)
    p.at()
    reinitialize_packet(p.ndis, packet)


def oob_stale(p: Proto) -> None:
    p.miniport.mode = "sync"
    packet = _packet(p)
    send_packets(p.ndis, p.ndis.binding_handle, [packet])
    buffer = unchain_buffer_at_front(p.ndis, packet)
    reinitialize_packet(p.ndis, packet)
    chain_buffer_at_front(p.ndis, packet, buffer)  # type: ignore[arg-type]
    p.at()
    send_packets(p.ndis, p.ndis.binding_handle, [packet])  # OOB Status still PENDING from the last send


def packet_touched_while_pending(p: Proto) -> None:
    packet = _packet(p)
    send_packets(p.ndis, p.ndis.binding_handle, [packet])
    p.at()
    _ = packet.head


def packet_resent_while_pending(p: Proto) -> None:
    packet = _packet(p)
    send_packets(p.ndis, p.ndis.binding_handle, [packet])
    p.at()
    send_packets(p.ndis, p.ndis.binding_handle, [packet])


def packet_completed_twice(p: Proto) -> None:
    packet = _packet(p)
    send_packets(p.ndis, p.ndis.binding_handle, [packet])
    p.miniport.poll()
    p.at()
    with p.ndis.acting_as(p.ndis.miniport_adapter_handle):
        m_send_complete(p.ndis, packet, k.NDIS_STATUS_SUCCESS)


def double_lock(p: Proto) -> None:
    mdl = io_allocate_mdl(p.ndis, memoryview(bytes(100)))
    mm_probe_and_lock_pages(p.ndis, mdl)
    p.at()
    mm_probe_and_lock_pages(p.ndis, mdl)


def unlock_unlocked(p: Proto) -> None:
    mdl = io_allocate_mdl(p.ndis, memoryview(bytes(100)))
    p.at()
    mm_unlock_pages(p.ndis, mdl)


def freed_while_locked(p: Proto) -> None:
    mdl = io_allocate_mdl(p.ndis, memoryview(bytes(100)))
    mm_probe_and_lock_pages(p.ndis, mdl)
    p.at()
    io_free_mdl(p.ndis, mdl)


def ndis_mdl_on_pageable(p: Proto) -> None:
    p.at()
    ndis_allocate_mdl(p.ndis, memoryview(bytes(100)))  # trace bytes are a user's pageable buffer


def use_after_free(p: Proto) -> None:
    nbl = p.nbl()
    free_net_buffer_list(p.ndis, nbl)
    p.at()
    _ = nbl.first_net_buffer


def double_free(p: Proto) -> None:
    nbl = p.nbl()
    free_net_buffer_list(p.ndis, nbl)
    p.at()
    free_net_buffer_list(p.ndis, nbl)


def mdl_use_after_free(p: Proto) -> None:
    mdl = p.mdl()
    ndis_free_mdl(p.ndis, mdl)
    p.at()
    _ = mdl.byte_count


def double_free_memory(p: Proto) -> None:
    memory = allocate_memory_with_tag_priority(p.ndis, 10)
    free_memory(p.ndis, memory)
    p.at()
    free_memory(p.ndis, memory)


def leak_at_end(p: Proto) -> None:
    p.at()
    p.mdl()
    p.v.finish()


def in_flight_at_end(p: Proto) -> None:
    p.send(p.nbl())
    p.at()
    p.v.finish()


def locked_at_end(p: Proto) -> None:
    mdl = io_allocate_mdl(p.ndis, memoryview(bytes(100)))
    mm_probe_and_lock_pages(p.ndis, mdl)
    p.at()
    p.v.finish()


SCENARIOS: list[tuple[str, Callable[[Proto], None], bool]] = [
    # (rule, scenario, raises NdisBugCheck)
    ("OWN-AFTER-SEND", own_after_send_write, False),
    ("OWN-AFTER-SEND", own_after_send_info, False),
    ("OWN-AFTER-SEND", own_after_send_mdl, False),
    ("OWN-AFTER-SEND", own_after_send_free, False),
    ("STATUS-BEFORE-COMPLETE", status_before_complete, False),
    ("MINIPORT-AFTER-COMPLETE", miniport_after_complete, False),
    ("STATUS-SET", status_not_set, False),
    ("SOURCEHANDLE-SET", sourcehandle_missing, False),
    ("SOURCEHANDLE-SET", sourcehandle_wrong, False),
    ("SOURCEHANDLE-FOREIGN", sourcehandle_foreign, False),
    ("OWN-NBL-NOT-COMPLETED-UP", own_nbl_completed_up, False),
    ("NB-LIST-IMMUTABLE", nb_list_changed_by_filter, False),
    ("LIST-LINKAGE", next_not_reset, False),
    ("LIST-LINKAGE", chain_loops, True),
    ("LIST-LINKAGE", sent_twice, True),
    ("LIST-LINKAGE", empty_completion, False),
    ("RESTORE-ON-COMPLETE", not_restored, False),
    ("POOL-ORIGIN", struct_copy, False),
    ("POOL-ORIGIN", hand_made_nbl_sent, True),
    ("POOL-ORIGIN", nbl_and_nb_from_wrong_pool, False),
    ("POOL-ORIGIN", pool_handle_overwritten, False),
    ("FREE-KIND", free_clone_as_nbl, False),
    ("FREE-KIND", free_clone_other_flags, False),
    ("FREE-KIND", free_fragment_other_delta, False),
    ("FREE-KIND", free_foreign_nbl, False),
    ("FREE-KIND", wrong_mdl_free_routine, False),
    ("POOL-FREE-OUTSTANDING", pool_freed_with_nbls_out, False),
    ("POOL-FREE-OUTSTANDING", packet_pool_freed_with_packets_out, False),
    ("POOL-FREE-OUTSTANDING", in_flight_at_end, False),
    ("NB-BEFORE-NBL", nb_not_freed_before_nbl, False),
    ("NB-BEFORE-NBL", preallocated_nb_freed, False),
    ("CTX-LIFO", context_not_freed, False),
    ("CTX-LIFO", allocate_call_context_freed, False),
    ("CTX-LIFO", context_size_not_pointer_multiple, False),
    ("PARENT-FREED-WITH-CHILDREN", parent_freed_with_children, False),
    ("PARENT-PASSED-DOWN", parent_passed_down, False),
    ("PARENT-PTR-OVERWRITE", parent_pointer_overwritten, False),
    ("CHILDCOUNT-NOT-OWNER", childcount_not_owner, False),
    ("CHILDCOUNT-NOT-OWNER", child_without_parent, False),
    ("REUSE-CONSISTENCY", data_beyond_chain, False),
    ("REUSE-CONSISTENCY", current_mdl_not_reset, False),
    ("RETREAT-ALLOC", retreat_beyond_backfill, False),
    ("RETREAT-LEAK", retreat_leaked, False),
    ("RETREAT-LEAK", retreat_leaked_on_reuse, False),
    ("ADVANCE-UNDERFLOW", advance_underflow, False),
    ("NDIS5-REINIT-LEAK", reinit_with_buffers, False),
    ("NDIS5-REINIT-FOREIGN", reinit_foreign, False),
    ("NDIS5-OOB-STALE", oob_stale, False),
    ("NDIS5-PENDING", packet_touched_while_pending, False),
    ("NDIS5-PENDING", packet_resent_while_pending, True),
    ("NDIS5-MINIPORT-COMPLETE", packet_completed_twice, False),
    ("MDL-LOCK-BALANCE", double_lock, False),
    ("MDL-LOCK-BALANCE", unlock_unlocked, False),
    ("MDL-LOCK-BALANCE", freed_while_locked, False),
    ("MDL-LOCK-BALANCE", ndis_mdl_on_pageable, False),
    ("MDL-LOCK-BALANCE", locked_at_end, False),
    ("UAF-QUARANTINE", use_after_free, False),
    ("UAF-QUARANTINE", double_free, False),
    ("UAF-QUARANTINE", mdl_use_after_free, False),
    ("UAF-QUARANTINE", double_free_memory, False),
    ("SDV-ALLOC-FREE", leak_at_end, False),
]


@pytest.mark.parametrize(
    ("rule", "scenario", "bug_check"), SCENARIOS, ids=[f"{rule}:{fn.__name__}" for rule, fn, _ in SCENARIOS]
)
def test_rule_is_caught_at_its_packet(rule: str, scenario: Callable[[Proto], None], bug_check: bool) -> None:
    p = Proto()
    p.at(0)
    if bug_check:
        with pytest.raises(NdisBugCheck) as info:
            scenario(p)
        assert (info.value.finding.rule, info.value.finding.packet_index) == (rule, BUGGY)
    else:
        scenario(p)
    found = {(f.rule, f.packet_index) for f in p.v.findings}
    assert (rule, BUGGY) in found, p.v.findings
    # no error was reported before the mistake (warnings such as RETREAT-ALLOC may precede it)
    assert all(f.packet_index >= BUGGY for f in p.v.errors), p.v.findings


def test_every_enforced_rule_has_a_scenario() -> None:
    covered = {rule for rule, _, _ in SCENARIOS}
    enforced = {name for name, rule in RULES.items() if rule.enforced}
    assert enforced - covered == set()


def test_rule_names_are_those_of_the_table() -> None:
    assert {rule for rule, _, _ in SCENARIOS} <= set(RULES)
    assert RULES["RETREAT-ALLOC"].severity == "warning"
    assert all(rule.severity == "error" for name, rule in RULES.items() if name != "RETREAT-ALLOC")


def test_warnings_do_not_fail_a_run() -> None:
    p = Proto()
    retreat_beyond_backfill(p)
    assert p.v.findings and p.v.ok and not p.v.errors


def test_findings_are_deduplicated_and_capped() -> None:
    p = Proto()
    nbl = p.nbl()
    p.send(nbl)
    for index in range(5):
        p.at(index)
        for _ in range(3):
            _ = nbl.first_net_buffer
    assert p.v.counts["OWN-AFTER-SEND"] == 5
    p.v.max_findings_per_rule = 2
    p.at(99)
    nbl.scratch = 1
    assert p.v.counts["OWN-AFTER-SEND"] == 6 and len([f for f in p.v.findings if f.rule == "OWN-AFTER-SEND"]) == 5


def test_finding_descriptor_and_dict() -> None:
    p = Proto()
    nbl = p.nbl()
    p.send(nbl)
    p.at()
    _ = nbl.status
    finding = p.v.findings[0]
    assert finding.descriptor == "NBL#1 (pool send)"
    assert finding.to_dict() == {
        "rule": "STATUS-BEFORE-COMPLETE",
        "packet_index": BUGGY,
        "descriptor": "NBL#1 (pool send)",
        "message": finding.message,
        "severity": "error",
    }
    assert "STATUS-BEFORE-COMPLETE at packet 7" in str(finding)


def test_a_struct_copy_is_independent_but_shares_pointers() -> None:
    p = Proto()
    nbl = p.nbl()
    forged = copy.copy(nbl)
    forged.net_buffer_list_info[0] = "x"
    assert nbl.net_buffer_list_info[0] is None
    assert forged.first_net_buffer is nbl.first_net_buffer
    assert p.v.describe(forged) == "NBL#1' (copy of NBL#1 (pool send))"


def test_owner_states_follow_the_nbl() -> None:
    p = Proto()
    nbl = p.nbl()
    assert p.v.state_of(nbl) is OwnerState.DRIVER
    p.send(nbl)
    assert p.v.state_of(nbl) is OwnerState.STACK
    p.miniport.poll()
    assert p.v.state_of(nbl) is OwnerState.COMPLETED
    free_net_buffer_list(p.ndis, nbl)
    assert p.v.state_of(nbl) is OwnerState.FREED
