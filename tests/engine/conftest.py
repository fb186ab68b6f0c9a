"""Shared pieces of the engine tests: a tiny loopback miniport and runtime factories.

The miniport here is the tests' own (the product's loopback miniport is built elsewhere on the same API): it
gathers every NB as DMA would, writes Status, and completes synchronously, on :meth:`Loopback.poll`, or in
batches (several sends completed in one chain).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from ndis_replay.engine.ndis import (
    Ndis,
    NdisPacket,
    NetBufferList,
    gather_ndis_packet,
    gather_net_buffer,
    m_send_complete,
    m_send_net_buffer_lists_complete,
    ndis_set_packet_status,
)
from ndis_replay.engine.ndis.constants import NDIS_STATUS_PENDING, NDIS_STATUS_SUCCESS


class Loopback:
    """A miniport for the tests. ``mode``: "sync" (complete inside the send), "deferred" (on :meth:`poll`),
    "batched" (like deferred, but every pending NBL completes in one chain)."""

    def __init__(self, ndis: Ndis, mode: str = "sync", *, write_status: bool = True) -> None:
        self.ndis = ndis
        self.mode = mode
        self.write_status = write_status
        self.wire: list[bytes] = []
        self.pending: list[NetBufferList] = []
        self.pending_packets: list[NdisPacket] = []
        ndis.register_miniport(send_net_buffer_lists_handler=self.send, send_packets_handler=self.send_packets)

    def send(self, chain: NetBufferList) -> None:
        nbls: list[NetBufferList] = []
        nbl: NetBufferList | None = chain
        while nbl is not None:
            nb = nbl.first_net_buffer
            while nb is not None:
                self.wire.append(gather_net_buffer(nb))
                nb = nb.next
            if self.write_status:
                nbl.status = NDIS_STATUS_SUCCESS
            nbls.append(nbl)
            nbl = nbl.next
        if self.mode == "sync":
            m_send_net_buffer_lists_complete(self.ndis, chain)
        else:
            self.pending.extend(nbls)

    def send_packets(self, packets: list[NdisPacket]) -> None:
        for packet in packets:
            self.wire.append(gather_ndis_packet(packet))
            ndis_set_packet_status(self.ndis, packet, NDIS_STATUS_PENDING)
        if self.mode == "sync":
            for packet in packets:
                m_send_complete(self.ndis, packet, NDIS_STATUS_SUCCESS)
        else:
            self.pending_packets.extend(packets)

    def poll(self) -> None:
        """Complete what is pending (the miniport's DPC): one chain per NBL, or one chain for all when batched."""
        with self.ndis.acting_as(self.ndis.miniport_adapter_handle):
            pending, self.pending = self.pending, []
            if self.mode == "batched" and pending:
                for first, second in itertools.pairwise(pending):
                    first.next = second
                pending[-1].next = None
                m_send_net_buffer_lists_complete(self.ndis, pending[0])
            else:
                for nbl in pending:
                    nbl.next = None
                    m_send_net_buffer_lists_complete(self.ndis, nbl)
            packets, self.pending_packets = self.pending_packets, []
            for packet in packets:
                m_send_complete(self.ndis, packet, NDIS_STATUS_SUCCESS)


def chain_to_list(chain: NetBufferList | None) -> list[NetBufferList]:
    """The NBLs of a chain, detaching each (save Next, then clear it: the reset checklist's step 1)."""
    out: list[NetBufferList] = []
    while chain is not None:
        following = chain.next
        chain.next = None
        out.append(chain)
        chain = following
    return out


@pytest.fixture(params=[False, True], ids=["unchecked", "checked"])
def any_ndis(request: pytest.FixtureRequest) -> Iterator[Ndis]:
    """A runtime in each mode (counts must not depend on it)."""
    yield Ndis(checked=request.param)


@pytest.fixture
def ndis() -> Ndis:
    """An unchecked runtime."""
    return Ndis()


@pytest.fixture
def checked() -> Ndis:
    """A checked runtime (verifier on)."""
    return Ndis(checked=True)


def rules_at(ndis: Ndis) -> set[tuple[str, int]]:
    """(rule, packet index) of every finding so far."""
    assert ndis.verifier is not None
    return {(f.rule, f.packet_index) for f in ndis.verifier.findings}


def protocol(ndis: Ndis, handler: Callable[[NetBufferList], None]) -> None:
    """Register ``handler`` as ProtocolSendNetBufferListsComplete."""
    ndis.register_protocol(send_net_buffer_lists_complete_handler=handler)
