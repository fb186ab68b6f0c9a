"""The in-process loopback miniport: transmits by gathering each NET_BUFFER's bytes, completes per policy.

What it models: a deserialized NDIS 6 miniport (MiniportSendNetBufferLists) that is also an NDIS 5 deserialized
miniport (MiniportSendPackets). For each NET_BUFFER it gathers DataLength bytes from DataOffset along the MDL chain
(:func:`~ndis_replay.engine.ndis.gather_net_buffer`), as a DMA engine would — only when a wire sink is given, so the
timed rounds pay nothing for it; an NDIS 5 packet is gathered from its buffer chain. It writes each NBL's Status
(NDIS_STATUS_SUCCESS, NDIS_MODEL.md §4 STATUS-SET) or sets each packet's OOB status to PENDING
(NDIS_SET_PACKET_STATUS, MiniportSendPackets convention, §2.6) and completes:

* NDIS 6: one NdisMSendNetBufferListsComplete per send call (sync, deferred, delay) or per N NBLs (batched:N, the
  miniport relinking the NBLs it holds into chains of N);
* NDIS 5: one NdisMSendComplete per packet (NDIS 5 has no chained completion), grouped the same way.

DDK calls per packet (counted in ``ddk_calls``): NDIS 6 — none per NBL plus one completion call per chain; NDIS 5 —
NDIS_SET_PACKET_STATUS + NdisMSendComplete (2 per packet).

Timing (contract): after the completion call for the k-th packet returns, ``complete_ns[k] = perf_counter_ns()``;
a chain completed in one call stamps all its packets with one reading. Nothing is allocated per packet in timed mode:
a counter, numpy slots, and FIFO deques of the descriptors themselves.

The TAP-backed miniport (a later issue) follows the same shape: register both handlers in ``open``, hand the
gathered frames to the device in the send handlers (``_transmit``), complete per the policy.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ndis_replay.engine.miniports.base import CompletionPolicy, Miniport, MiniportInfo, MiniportParams, WireSink
from ndis_replay.engine.ndis import (
    gather_ndis_packet,
    gather_net_buffer,
    m_send_complete,
    m_send_net_buffer_lists_complete,
    ndis_set_packet_status,
)
from ndis_replay.engine.ndis.constants import NDIS_STATUS_PENDING, NDIS_STATUS_SUCCESS
from ndis_replay.errors import ConfigError

if TYPE_CHECKING:
    import numpy

    from ndis_replay.engine.ndis import Ndis, NdisPacket, NetBufferList

_perf_counter_ns = time.perf_counter_ns


@dataclass(frozen=True)
class LoopbackParams(MiniportParams):
    """Parameters of the loopback miniport."""

    backfill: int = field(
        default=0,
        metadata={"help": "data backfill (bytes) the miniport declares; strategies owning data buffers reserve it"},
    )
    mtu: int = field(
        default=65536,
        metadata={
            "help": "MTU (bytes, link header included) declared to the stack; a fragmenting filter (clone) cuts "
            "frames above it. The loopback itself transmits any length"
        },
    )
    from_current_mdl: bool = field(
        default=False,
        metadata={"help": "gather from CurrentMdl+CurrentMdlOffset instead of walking DataOffset from MdlChain"},
    )

    def validate(self) -> None:
        """Backfill ≥ 0, MTU ≥ 64 (a minimum Ethernet frame)."""
        if isinstance(self.backfill, bool) or not isinstance(self.backfill, int) or self.backfill < 0:
            raise ConfigError("backfill", self.backfill, "must be a whole number of bytes ≥ 0")
        if isinstance(self.mtu, bool) or not isinstance(self.mtu, int) or self.mtu < 64:
            raise ConfigError("mtu", self.mtu, "must be a whole number of bytes ≥ 64")
        if not isinstance(self.from_current_mdl, bool):
            raise ConfigError("from_current_mdl", self.from_current_mdl, "not true or false")


class LoopbackMiniport(Miniport):
    """In-process loopback adapter: gathers what it is sent (when a wire sink is given) and completes it per the
    completion policy (sync, deferred, batched:N, delay:DURATION); FIFO in every policy."""

    name = "loopback"
    summary = "in-process adapter: gathers each NB as DMA would, completes per policy, optional pcap of the wire"
    Params = LoopbackParams

    def __init__(self, params: MiniportParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, LoopbackParams)
        self._p: LoopbackParams = p
        self._ndis: Ndis | None = None
        self.policy = CompletionPolicy("sync")
        self._complete_ns: numpy.ndarray[Any, Any] | None = None
        self._wire: WireSink | None = None
        #: packets completed in this round (the next complete_ns slot)
        self.completed = 0
        # NDIS 6 pending work: chain heads with their NBL counts (deferred/delay), or single NBLs (batched)
        self._chains: deque[NetBufferList] = deque()
        self._counts: deque[int] = deque()
        self._sent_ns: deque[int] = deque()
        self._nbls: deque[NetBufferList] = deque()
        # NDIS 5 pending work: packets, and the send time of each send call's first packet (delay)
        self._packets: deque[NdisPacket] = deque()
        self._packet_calls: deque[int] = deque()
        self._packet_sent_ns: deque[int] = deque()

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def open(self, ndis: Ndis, completion: CompletionPolicy) -> MiniportInfo:
        """MiniportInitializeEx: registers MiniportSendNetBufferLists and MiniportSendPackets."""
        self._ndis = ndis
        self.policy = completion
        self._register()
        return MiniportInfo(self.name, self._p.backfill, self._p.mtu, str(completion))

    def begin(self, complete_ns: numpy.ndarray[Any, Any] | None, wire: WireSink | None) -> None:
        """Start a round: where completion times and transmitted bytes go. Re-registers the send handlers
        specialised for this combination (the timed path carries no per-packet branch for the unused ones)."""
        if self.pending:
            raise RuntimeError("loopback: begin() with completions still pending; drain() first")
        self._complete_ns = complete_ns
        self._wire = wire
        self.completed = 0
        self._register()

    @property
    def pending(self) -> int:
        """NBLs and packets sent and not yet completed."""
        return sum(self._counts) + len(self._nbls) + len(self._packets)

    def _register(self) -> None:
        ndis = self._ndis
        if ndis is None:
            raise RuntimeError("loopback: open() first")
        kind = self.policy.kind
        send6 = self._send_sync if kind == "sync" else self._send_queue_nbls if kind == "batched" else self._send_queue
        send5 = self._send_packets_sync if kind == "sync" else self._send_packets_queue
        ndis.register_miniport(send_net_buffer_lists_handler=send6, send_packets_handler=send5)

    def close(self) -> None:
        """MiniportHaltEx: completes anything still pending, then forgets the round's sinks."""
        self.drain()
        self._complete_ns = None
        self._wire = None

    # --- transmit ------------------------------------------------------------------------------------------------

    def _transmit(self, chain: NetBufferList, wire: WireSink) -> None:
        """DMA: one gathered frame per NB, one wire call per NBL."""
        current = self._p.from_current_mdl
        nbl: NetBufferList | None = chain
        while nbl is not None:
            frames = []
            nb = nbl.first_net_buffer
            while nb is not None:
                frames.append(gather_net_buffer(nb, from_current_mdl=current))
                nb = nb.next
            wire.transmit(frames)
            nbl = nbl.next

    def _stamp(self, n: int) -> None:
        """complete_ns for the next ``n`` packets, right after their completion call returned."""
        stamps = self._complete_ns
        k = self.completed
        if stamps is not None:
            now = _perf_counter_ns()
            if n == 1:
                stamps[k] = now
            else:
                stamps[k : k + n] = now
        self.completed = k + n

    # --- NDIS 6 ------------------------------------------------------------------------------------------------------

    def _send_sync(self, chain: NetBufferList) -> None:
        """MiniportSendNetBufferLists, sync policy: Status = SUCCESS on each NBL, complete the chain at once."""
        if self._wire is not None:
            self._transmit(chain, self._wire)
        n = 0
        nbl: NetBufferList | None = chain
        while nbl is not None:
            nbl.status = NDIS_STATUS_SUCCESS
            n += 1
            nbl = nbl.next
        # the NBLs belong to the protocol again once this returns: count first, never touch them after
        m_send_net_buffer_lists_complete(self._ndis, chain)  # type: ignore[arg-type]
        stamps = self._complete_ns
        k = self.completed
        if stamps is not None:
            if n == 1:
                stamps[k] = _perf_counter_ns()
            else:
                stamps[k : k + n] = _perf_counter_ns()
        self.completed = k + n

    def _send_queue(self, chain: NetBufferList) -> None:
        """MiniportSendNetBufferLists, deferred/delay: keep the chain as it came, complete it on a later poll."""
        if self._wire is not None:
            self._transmit(chain, self._wire)
        n = 0
        nbl: NetBufferList | None = chain
        while nbl is not None:
            nbl.status = NDIS_STATUS_SUCCESS
            n += 1
            nbl = nbl.next
        self._chains.append(chain)
        self._counts.append(n)
        if self.policy.kind == "delay":
            self._sent_ns.append(_perf_counter_ns())

    def _send_queue_nbls(self, chain: NetBufferList) -> None:
        """MiniportSendNetBufferLists, batched: queue the NBLs one by one (relinked into chains of N on poll)."""
        if self._wire is not None:
            self._transmit(chain, self._wire)
        queue = self._nbls
        nbl: NetBufferList | None = chain
        while nbl is not None:
            nbl.status = NDIS_STATUS_SUCCESS
            queue.append(nbl)
            nbl = nbl.next

    def _complete_chains(self, limit_ns: int | None) -> None:
        ndis = self._ndis
        chains, counts, sent = self._chains, self._counts, self._sent_ns
        while chains:
            if limit_ns is not None and sent[0] > limit_ns:
                break
            chain = chains.popleft()
            n = counts.popleft()
            if sent:
                sent.popleft()
            m_send_net_buffer_lists_complete(ndis, chain)  # type: ignore[arg-type]
            self._stamp(n)

    def _complete_batches(self, everything: bool) -> None:
        ndis = self._ndis
        queue = self._nbls
        size = self.policy.count
        while queue and (everything or len(queue) >= size):
            take = min(size, len(queue)) if size else len(queue)
            head = tail = queue.popleft()
            for _ in range(take - 1):
                nbl = queue.popleft()
                tail.next = nbl
                tail = nbl
            tail.next = None
            m_send_net_buffer_lists_complete(ndis, head)  # type: ignore[arg-type]
            self._stamp(take)

    # --- NDIS 5 ------------------------------------------------------------------------------------------------------

    def _send_packets_sync(self, packets: list[NdisPacket]) -> None:
        """MiniportSendPackets, sync: each packet's status PENDING, then NdisMSendComplete(SUCCESS) one by one."""
        ndis = self._ndis
        wire = self._wire
        for packet in packets:
            if wire is not None:
                wire.transmit([gather_ndis_packet(packet)])
            ndis_set_packet_status(ndis, packet, NDIS_STATUS_PENDING)  # type: ignore[arg-type]
        stamps = self._complete_ns
        for packet in packets:
            m_send_complete(ndis, packet, NDIS_STATUS_SUCCESS)  # type: ignore[arg-type]
            k = self.completed
            if stamps is not None:
                stamps[k] = _perf_counter_ns()
            self.completed = k + 1

    def _send_packets_queue(self, packets: list[NdisPacket]) -> None:
        """MiniportSendPackets, deferred/batched/delay: status PENDING, complete on a later poll."""
        ndis = self._ndis
        wire = self._wire
        queue = self._packets
        for packet in packets:
            if wire is not None:
                wire.transmit([gather_ndis_packet(packet)])
            ndis_set_packet_status(ndis, packet, NDIS_STATUS_PENDING)  # type: ignore[arg-type]
            queue.append(packet)
        if self.policy.kind == "delay":
            self._packet_calls.append(len(packets))
            self._packet_sent_ns.append(_perf_counter_ns())
        elif self.policy.kind == "deferred":
            self._packet_calls.append(len(packets))

    def _complete_packets(self, n: int) -> None:
        ndis = self._ndis
        queue = self._packets
        stamps = self._complete_ns
        for _ in range(n):
            m_send_complete(ndis, queue.popleft(), NDIS_STATUS_SUCCESS)  # type: ignore[arg-type]
            k = self.completed
            if stamps is not None:
                stamps[k] = _perf_counter_ns()
            self.completed = k + 1

    # --- completion ---------------------------------------------------------------------------------------------------

    def poll(self) -> None:
        """The DPC: complete what the policy says is due (deferred: everything; batched:N: full chains of N;
        delay: send calls at least DURATION old), as the miniport."""
        if not (self._chains or self._nbls or self._packets):
            return
        ndis = self._ndis
        assert ndis is not None
        with ndis.acting_as(ndis.miniport_adapter_handle):
            kind = self.policy.kind
            if kind == "batched":
                self._complete_batches(False)
                size = self.policy.count
                while len(self._packets) >= size:
                    self._complete_packets(size)
            elif kind == "delay":
                limit = _perf_counter_ns() - self.policy.delay_ns
                self._complete_chains(limit)
                sent = self._packet_sent_ns
                while self._packet_calls and sent and sent[0] <= limit:
                    sent.popleft()
                    self._complete_packets(self._packet_calls.popleft())
            else:
                self._complete_chains(None)
                while self._packet_calls:
                    self._complete_packets(self._packet_calls.popleft())

    def drain(self) -> None:
        """Complete everything still pending (end of a round), FIFO, as the miniport."""
        if not (self._chains or self._nbls or self._packets):
            return
        ndis = self._ndis
        assert ndis is not None
        with ndis.acting_as(ndis.miniport_adapter_handle):
            self._complete_chains(None)
            self._complete_batches(True)
            self._packet_calls.clear()
            self._packet_sent_ns.clear()
            self._complete_packets(len(self._packets))


__all__ = ["LoopbackMiniport", "LoopbackParams"]
