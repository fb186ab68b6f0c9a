"""``alloc``: a fresh NET_BUFFER_LIST per send, freed in the completion (the NDIS 6 ndisprot sample; the port).

Models ``ndisprot/6x/sys/send.c`` (NDIS_MODEL.md §3.1): NdisprotWrite allocates an NBL per write with
NdisAllocateNetBufferAndNetBufferList over the write's MDL chain, stores the IRP in the NBL's context area, sets
SourceHandle and calls NdisSendNetBufferLists; NdisprotSendComplete walks the completion chain (saving Next first),
reads the IRP back from the context and Status, frees the NBL, and the IRP's MDL goes when the IRP completes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ndis_replay.engine.ndis import (
    Mdl,
    NetBufferList,
    NetBufferListPool,
    NetBufferListPoolParameters,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list_pool,
    free_net_buffer_list,
    free_net_buffer_list_pool,
    io_allocate_mdl,
    io_free_mdl,
    mm_probe_and_lock_pages,
    mm_unlock_pages,
    net_buffer_list_context_data_start,
    send_net_buffer_lists,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.strategies.base import BindContext, SendCall, Strategy, StrategyParams
from ndis_replay.engine.strategies.common import check_choice, check_int, cut, declare_frames, frame_mdls, free_mdls
from ndis_replay.errors import ConfigError

#: NPROT_SEND_NETBUFLIST_RSVD stand-in: the "IRP" (here the packet's trace index) and a RefCount (§3.1)
_RSVD = struct.Struct("<qI")
MDL_SOURCES = ("nonpaged", "locked")


@dataclass(frozen=True)
class AllocParams(StrategyParams):
    """Parameters of ``alloc`` (also the base of ``cache``)."""

    context_size: int = field(
        default=16,
        metadata={
            "help": "ContextSize of each allocation, bytes, a multiple of 16 (MEMORY_ALLOCATION_ALIGNMENT); ndisprot: "
            "sizeof(NPROT_SEND_NETBUFLIST_RSVD) = 16 (IRP pointer + RefCount); 0 = no context"
        },
    )
    context_backfill: int = field(
        default=0, metadata={"help": "ContextBackFill of each allocation, bytes, a multiple of 16"}
    )
    split_header: bool = field(
        default=True,
        metadata={"help": "describe each frame with a header MDL (header_len bytes) and a payload MDL; false: one MDL"},
    )
    mdl_source: str = field(
        default="nonpaged",
        metadata={
            "help": "'nonpaged': NdisAllocateMdl over nonpaged memory, NdisFreeMdl in the completion; 'locked': the "
            "I/O manager's direct-I/O MDL (IoAllocateMdl + MmProbeAndLockPages per send, MmUnlockPages + IoFreeMdl "
            "after the NBL is freed, as IRP completion does)"
        },
    )

    def validate(self) -> None:
        """Sizes are multiples of MEMORY_ALLOCATION_ALIGNMENT (DOC §2.1); the MDL source is a known one."""
        super().validate()
        check_int("context_size", self.context_size, 0, 65536 - 16, k.MEMORY_ALLOCATION_ALIGNMENT)
        check_int("context_backfill", self.context_backfill, 0, 65536 - 16, k.MEMORY_ALLOCATION_ALIGNMENT)
        check_choice("mdl_source", self.mdl_source, MDL_SOURCES)
        if self.mdl_source == "locked" and self.context_size < _RSVD.size:
            raise ConfigError("context_size", self.context_size, "mdl_source 'locked' keeps the IRP in the context")


class AllocStrategy(Strategy):
    """NDIS 6, allocate per send: ndisprot 6x's NdisprotWrite / NdisprotSendComplete (NDIS_MODEL.md §3.1).

    Per send (each packet): NdisAllocateMdl for the header and for the payload (one MDL when not splitting or when
    a part is empty; with ``mdl_source = "locked"``: IoAllocateMdl + MmProbeAndLockPages each), then
    NdisAllocateNetBufferAndNetBufferList(pool, ContextSize, ContextBackFill, chain, 0, length); the trace index
    and RefCount 1 go in the context (NET_BUFFER_LIST_CONTEXT_DATA_START, the IRP in ndisprot); SourceHandle =
    the binding handle. Per call: one NdisSendNetBufferLists(NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK) of the chain.

    Per completion (each NBL): save Next and clear it, read the context and Status, NdisFreeNetBufferList, then
    NdisFreeMdl of its MDLs ("locked": MmUnlockPages + IoFreeMdl — the IRP's MDL is freed after the NBL).

    Counts per packet (split, two non-empty parts, nonpaged): 1 NBL + 1 NB + 1 context allocated and freed,
    2 MDLs allocated and freed (2 MDL builds), 2 + 1 pool pops and pushes (NBL block, MDL lookaside).
    """

    name = "alloc"
    ndis_version = 6
    summary = "NDIS 6 ndisprot: NdisAllocateNetBufferAndNetBufferList per send, freed in send-complete"
    Params = AllocParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, AllocParams)
        self.p: AllocParams = p
        self.failed_sends = 0

    def bind(self, ctx: BindContext) -> None:
        """The send NBL pool (fAllocateNetBuffer, ContextSize), as ndisprotCreateBinding; the completion handler."""
        ndis = self.ndis = ctx.ndis
        self.ctx = ctx
        self.binding = ndis.register_protocol(send_net_buffer_lists_complete_handler=self._send_complete)
        self.pool = self._allocate_pool("alloc send")
        self._locked = self.p.mdl_source == "locked"

    def _allocate_pool(self, name: str) -> NetBufferListPool:
        pool = allocate_net_buffer_list_pool(
            self.ndis,
            NetBufferListPoolParameters(
                context_size=self.p.context_size + self.p.context_backfill, f_allocate_net_buffer=True, name=name
            ),
        )
        if pool is None:  # the parameters are validated, so NDIS cannot refuse them
            raise ConfigError("context_size", self.p.context_size, "NdisAllocateNetBufferListPool refused it")
        return pool

    def _describe(self, frame: memoryview, header_len: int) -> Mdl:
        """The MDL chain of one frame (the write's MDLs)."""
        ndis = self.ndis
        at = cut(len(frame), header_len, self.p.split_header)
        if not self._locked:
            return frame_mdls(ndis, frame, at)
        # the I/O manager's direct-I/O MDLs: IoAllocateMdl + MmProbeAndLockPages (pageable user memory)
        pieces = [frame[:at], frame[at:]] if at else [frame]
        head: Mdl | None = None
        tail: Mdl | None = None
        for piece in pieces:
            mdl = io_allocate_mdl(ndis, piece)
            mm_probe_and_lock_pages(ndis, mdl, k.USER_MODE, k.IO_READ_ACCESS)
            if tail is None:
                head = mdl
            else:
                tail.next = mdl
            tail = mdl
        assert head is not None
        return head

    def _allocate(self, call: SendCall, position: int) -> NetBufferList:
        """One packet's NBL: NdisAllocateNetBufferAndNetBufferList over its MDLs, context and SourceHandle set."""
        frame = call.frames[position]
        chain = self._describe(frame, call.header_lens[position])
        p = self.p
        nbl = allocate_net_buffer_and_net_buffer_list(
            self.ndis, self.pool, p.context_size, p.context_backfill, chain, 0, len(frame)
        )
        if p.context_size:
            _RSVD.pack_into(net_buffer_list_context_data_start(nbl), 0, call.indices[position], 1)
        nbl.source_handle = self.binding
        return nbl

    def build(self, call: SendCall) -> NetBufferList:
        """One NBL per packet, linked in wire order (the last one's Next is NULL from the allocation)."""
        if self.ndis.checked and not self._locked:
            declare_frames(self.ndis, call.frames)
        head = previous = self._allocate(call, 0)
        for position in range(1, len(call.frames)):
            nbl = self._allocate(call, position)
            previous.next = nbl
            previous = nbl
        return head

    def submit(self, built: object) -> None:
        """NdisSendNetBufferLists(binding, chain, 0, NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK)."""
        send_net_buffer_lists(
            self.ndis,
            self.binding,
            built,  # type: ignore[arg-type]
            0,
            k.NDIS_SEND_FLAGS_CHECK_FOR_LOOPBACK,
        )

    def _send_complete(self, completed: NetBufferList) -> None:
        """ProtocolSendNetBufferListsComplete (NdisprotSendComplete)."""
        chain: NetBufferList | None = completed
        while chain is not None:
            nbl = chain
            chain = nbl.next  # save Next first, then detach
            nbl.next = None
            self._release(nbl)

    def _release(self, nbl: NetBufferList) -> None:
        """One completed NBL: read Status (and the IRP from the context), free the NBL, then its MDLs."""
        if nbl.status != k.NDIS_STATUS_SUCCESS:
            self.failed_sends += 1
        nb = nbl.first_net_buffer
        mdl = nb.mdl_chain if nb is not None else None
        if self.p.context_size:
            _RSVD.unpack_from(net_buffer_list_context_data_start(nbl))  # the IRP to complete (ndisprot)
        free_net_buffer_list(self.ndis, nbl)
        self._free_write_mdls(mdl)

    def _free_write_mdls(self, mdl: Mdl | None) -> None:
        """The write's MDLs: NdisFreeMdl each, or (locked) the I/O manager's MmUnlockPages + IoFreeMdl."""
        if not self._locked:
            free_mdls(self.ndis, mdl)
            return
        while mdl is not None:
            following = mdl.next
            mm_unlock_pages(self.ndis, mdl)
            io_free_mdl(self.ndis, mdl)
            mdl = following

    def unbind(self) -> None:
        """NdisFreeNetBufferListPool (ndisprotFreeBindResources); every NBL is back by now."""
        free_net_buffer_list_pool(self.ndis, self.pool)

    def stats(self) -> dict[str, int]:
        """Completions with a Status other than NDIS_STATUS_SUCCESS."""
        return {"failed_sends": self.failed_sends}


__all__ = ["MDL_SOURCES", "AllocParams", "AllocStrategy"]
