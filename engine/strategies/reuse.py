"""``reuse``: NBLs allocated once at bind, re-pointed per send, recycled on completion (NDIS_MODEL.md §2.2).

The documented reuse ("re-initialize the NB with a different MDL chain while the driver owns it") done with the
reset checklist of §2.2, as XDP for Windows' TX path does it (§3.5). The per-packet path is a handful of attribute
writes plus the MDL work; everything else happened at bind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ndis_replay.engine.ndis import (
    Mdl,
    NetBuffer,
    NetBufferList,
    NetBufferListPoolParameters,
    advance_net_buffer_data_start,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list_pool,
    free_net_buffer_list,
    free_net_buffer_list_pool,
    mm_build_mdl_for_non_paged_pool,
    mm_get_system_address_for_mdl_safe,
    mm_initialize_mdl,
    move_memory,
    ndis_allocate_mdl,
    ndis_free_mdl,
    retreat_net_buffer_data_start,
    send_net_buffer_lists,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.strategies.base import BindContext, SendCall, StrategyParams
from ndis_replay.engine.strategies.common import FreeListStrategy, check_choice, check_int, declare_frames
from ndis_replay.errors import ConfigError

#: what ``header`` accepts
REUSE_HEADER_MODES = ("whole", "split", "retreat")
_CHECKSUM = k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO
_LSO = k.TCP_LARGE_SEND_NET_BUFFER_LIST_INFO
_SUCCESS = k.NDIS_STATUS_SUCCESS


@dataclass(frozen=True)
class ReuseParams(StrategyParams):
    """Parameters of ``reuse``."""

    pool_depth: int = field(
        default=0,
        metadata={
            "help": "NBLs allocated at bind; 0 = the most the miniport can hold (BindContext.max_in_flight). When "
            "the free list runs dry the strategy allocates one more NBL (counted in stats as pool_growth), which "
            "joins the free list on completion: never a wait, never more than the packets in flight"
        },
    )
    header: str = field(
        default="whole",
        metadata={
            "help": "'whole': one MDL over the frame; 'split': a header MDL (header_len bytes) and a payload MDL; "
            "'retreat': a payload MDL only, the header prepended with NdisRetreatNetBufferDataStart (NDIS allocates "
            "it: a RETREAT-ALLOC warning) and NdisAdvanceNetBufferDataStart(FreeMdl) in the completion"
        },
    )
    mdl_reuse: bool = field(
        default=False,
        metadata={
            "help": "re-initialise MDLs kept in each NBL's context (MmInitializeMdl + MmBuildMdlForNonPagedPool, as "
            "XDP embeds its MDL) instead of NdisAllocateMdl per send and NdisFreeMdl per completion"
        },
    )
    clear_oob: bool = field(
        default=True,
        metadata={"help": "clear the checksum and LSO NetBufferListInfo slots per send (reset checklist step 6)"},
    )
    reset_status: bool = field(
        default=True, metadata={"help": "write NDIS_STATUS_SUCCESS into Status before each send (XDP)"}
    )

    def validate(self) -> None:
        """Pool depth ≥ 0 and ≤ 1,000,000; a known header mode."""
        super().validate()
        check_int("pool_depth", self.pool_depth, 0, 1_000_000)
        check_choice("header", self.header, REUSE_HEADER_MODES)


class ReuseStrategy(FreeListStrategy[NetBufferList]):
    """NDIS 6 NBL reuse with the §2.2 reset checklist (XDP-style TX, NDIS_MODEL.md §2.2, §3.5).

    Bind: one pool (fAllocateNetBuffer; ContextSize = room for the embedded MDLs with ``mdl_reuse``) and
    ``pool_depth`` NBLs from NdisAllocateNetBufferAndNetBufferList(pool, ContextSize, 0, NULL, 0, 0), SourceHandle
    set once (checklist step 8), all on the driver's own free list.

    Per send (each packet), no NDIS allocation of NBLs: pop a free NBL; describe the frame — NdisAllocateMdl
    (1, or 2 with ``header = "split"``), or with ``mdl_reuse`` MmInitializeMdl + MmBuildMdlForNonPagedPool per MDL
    (no allocation); re-point the NB (step 5: MdlChain, CurrentMdl, CurrentMdlOffset 0, DataOffset 0,
    DataLength); clear the checksum and LSO slots (step 6); Status = SUCCESS (XDP); link in wire order.
    ``header = "retreat"`` describes only the payload, then NdisRetreatNetBufferDataStart(header_len) and
    NdisMoveMemory of the header into the space NDIS allocated. Per call: one NdisSendNetBufferLists.

    Per completion (each NBL): save Next, set Next = NULL (step 1); read Status (step 2); with "retreat"
    NdisAdvanceNetBufferDataStart(header_len, FreeMdl=TRUE) first (step 4); NdisFreeMdl of the old MDLs (step 3,
    none with ``mdl_reuse``); clear MdlChain/CurrentMdl (no dangling pointer to a freed MDL); push on the free list.
    Unbind: clear the NB fields (step 9), NdisFreeNetBufferList each, NdisFreeNetBufferListPool.

    Counts per packet after bind (whole): 0 NBL/NB allocations; 1 MDL allocated, built and freed (2 lookaside
    operations); none at all with ``mdl_reuse`` but one MDL build.
    """

    name = "reuse"
    ndis_version = 6
    summary = "NDIS 6 NBL reuse: NBLs allocated at bind, re-pointed per send with the reset checklist"
    Params = ReuseParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, ReuseParams)
        self.p: ReuseParams = p
        self._all: list[NetBufferList] = []

    # --- bind / unbind -------------------------------------------------------------------------------------------

    def bind(self, ctx: BindContext) -> None:
        """Pool and ``pool_depth`` NBLs (0: ``ctx.max_in_flight``), SourceHandle set once on each."""
        ndis = self.ndis = ctx.ndis
        self.ctx = ctx
        self.binding = ndis.register_protocol(send_net_buffer_lists_complete_handler=self._send_complete)
        p = self.p
        self._whole = p.header == "whole"
        self._split = p.header == "split"
        self._retreat = p.header == "retreat"
        self._checked = ndis.checked
        self._mdl_reuse = p.mdl_reuse
        self._clear_oob = p.clear_oob
        self._reset_status = p.reset_status
        # embedded MDL storage (XDP: the MDL lives in the NBL context): MmSizeOfMdl for the largest frame, per MDL
        pieces = 2 if self._split else 1
        self._context_size = (
            pieces * k.round_up(k.mm_size_of_mdl(k.PAGE_SIZE - 1, max(ctx.max_frame, 1)), k.MEMORY_ALLOCATION_ALIGNMENT)
            if p.mdl_reuse
            else 0
        )
        pool = allocate_net_buffer_list_pool(
            ndis,
            NetBufferListPoolParameters(context_size=self._context_size, f_allocate_net_buffer=True, name="reuse"),
        )
        if pool is None:
            raise ConfigError("pool_depth", p.pool_depth, "NdisAllocateNetBufferListPool refused the parameters")
        self.pool = pool
        depth = p.pool_depth or max(ctx.max_in_flight, ctx.max_call, 1)
        self._fill(depth)

    def _allocate(self) -> NetBufferList:
        """One NBL for the free list: NdisAllocateNetBufferAndNetBufferList with no MDL chain, SourceHandle set."""
        nbl = allocate_net_buffer_and_net_buffer_list(self.ndis, self.pool, self._context_size, 0, None, 0, 0)
        nbl.source_handle = self.binding  # checklist step 8: once; NDIS never changes it
        self._all.append(nbl)
        return nbl

    def unbind(self) -> None:
        """Step 9 (clear the NB fields), NdisFreeNetBufferList of every NBL, NdisFreeNetBufferListPool."""
        for nbl in self._free:
            nb = nbl.first_net_buffer
            if nb is not None:
                nb.mdl_chain = nb.current_mdl = None
                nb.data_length = nb.data_offset = nb.current_mdl_offset = 0
            free_net_buffer_list(self.ndis, nbl)
        self._free.clear()
        self._all.clear()
        free_net_buffer_list_pool(self.ndis, self.pool)

    # --- send ---------------------------------------------------------------------------------------------------------

    def build(self, call: SendCall) -> NetBufferList:
        """Pop, re-point (:meth:`_prepare`), link in wire order. A one-packet call writes no Next at all: the NBL's
        Next was cleared when it came back (checklist step 1)."""
        free = self._free
        frames = call.frames
        if self._checked:
            declare_frames(self.ndis, frames)
        head = free.pop() if free else self._grow()
        self._prepare(head, frames[0], call.header_lens[0])
        if len(frames) > 1:
            previous = head
            header_lens = call.header_lens
            for position in range(1, len(frames)):
                nbl = free.pop() if free else self._grow()
                self._prepare(nbl, frames[position], header_lens[position])
                previous.next = nbl
                previous = nbl
        return head

    def _describe(self, frame: memoryview) -> Mdl:
        """An MDL over ``frame``: NdisAllocateMdl, or MmInitializeMdl + MmBuildMdlForNonPagedPool (mdl_reuse)."""
        if self._mdl_reuse:
            mdl = mm_initialize_mdl(self.ndis, frame)
            mm_build_mdl_for_non_paged_pool(self.ndis, mdl)
            return mdl
        return ndis_allocate_mdl(self.ndis, frame)

    def _prepare(self, nbl: NetBufferList, frame: memoryview, header_len: int) -> None:
        """Checklist steps 5 (re-point the NB), 6 (OOB slots), 2 (Status = SUCCESS)."""
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        length = len(frame)
        if self._whole or not 0 < header_len < length:
            mdl = self._describe(frame)
            header_len = 0
        elif self._split:
            mdl = self._describe(frame[:header_len])
            mdl.next = self._describe(frame[header_len:])
        else:  # retreat: describe the payload, prepend the header below
            mdl = self._describe(frame[header_len:])
            length -= header_len
        nb.mdl_chain = nb.current_mdl = mdl
        nb.current_mdl_offset = nb.data_offset = 0
        nb.data_length = length
        if self._retreat and header_len:
            self._prepend(nbl, nb, frame[:header_len])
        if self._clear_oob:
            info = nbl.net_buffer_list_info
            info[_CHECKSUM] = None
            info[_LSO] = None
        if self._reset_status:
            nbl.status = _SUCCESS

    def _prepend(self, nbl: NetBufferList, nb: NetBuffer, header: memoryview) -> None:
        """``header = "retreat"``: NdisRetreatNetBufferDataStart(len(header)), then copy the header into the space
        the retreat made (NDIS's buffer: DataOffset is 0 before it, so NDIS allocates); the payload MDL is kept in
        ProtocolReserved[0] (ours) to free it in the completion."""
        ndis = self.ndis
        nbl.protocol_reserved[0] = nb.mdl_chain
        if retreat_net_buffer_data_start(ndis, nb, len(header)) != _SUCCESS:
            raise MemoryError("NdisRetreatNetBufferDataStart failed")  # the model's retreat cannot fail
        mdl: Mdl = nb.current_mdl  # type: ignore[assignment]
        offset = nb.current_mdl_offset
        move_memory(ndis, mm_get_system_address_for_mdl_safe(ndis, mdl)[offset : offset + len(header)], header)
        nbl.protocol_reserved[1] = len(header)

    def submit(self, built: object) -> None:
        """NdisSendNetBufferLists(binding, chain)."""
        send_net_buffer_lists(self.ndis, self.binding, built)  # type: ignore[arg-type]

    # --- completion -----------------------------------------------------------------------------------------------

    def _send_complete(self, completed: NetBufferList) -> None:
        """ProtocolSendNetBufferListsComplete: detach each NBL (step 1), release its MDLs, back on the free list."""
        chain: NetBufferList | None = completed
        free = self._free
        while chain is not None:
            nbl = chain
            chain = nbl.next  # step 1: save Next first, then clear it
            nbl.next = None
            self._release(nbl)
            free.append(nbl)

    def _release(self, nbl: NetBufferList) -> None:
        """Steps 2 (Status, valid now), 4 (undo the retreat), 3 (free our old MDLs); no dangling MDL pointer."""
        if nbl.status != _SUCCESS:
            self.failed_sends += 1
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        mdl = nb.mdl_chain
        if self._retreat:
            payload = nbl.protocol_reserved[0]
            if payload is not None:
                self._undo_retreat(nbl, nb)
                nbl.protocol_reserved[0] = None
                mdl = payload  # ours: the head of the chain again once NDIS's header MDL is gone
        if not self._mdl_reuse:
            while mdl is not None:
                following = mdl.next
                ndis_free_mdl(self.ndis, mdl)
                mdl = following
        nb.mdl_chain = nb.current_mdl = None

    def _undo_retreat(self, nbl: NetBufferList, nb: NetBuffer) -> None:
        """Step 4: NdisAdvanceNetBufferDataStart(header_len, FreeMdl=TRUE) frees NDIS's header MDL and buffer."""
        advance_net_buffer_data_start(self.ndis, nb, nbl.protocol_reserved[1], True)


__all__ = ["REUSE_HEADER_MODES", "ReuseParams", "ReuseStrategy"]
