"""``copy``: pre-allocated NBLs that own their data buffers; each frame is copied in (NDIS_MODEL.md §2.1).

The bounce-buffer design: no per-send MDL or NBL work at all, one copy of the frame per send. The buffers come
from a DataSize pool (NdisAllocateNetBufferList hands out NBL + NB + MDL + data in one block) or, with
``buffers = "mdl-and-data"``, from NdisAllocateNetBufferMdlAndData on a DataSize NB pool chained to NBLs from a
plain NBL pool ("to achieve high performance", DOC §2.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ndis_replay.engine.ndis import (
    Mdl,
    NetBuffer,
    NetBufferList,
    NetBufferListPoolParameters,
    NetBufferPool,
    NetBufferPoolParameters,
    allocate_net_buffer_list,
    allocate_net_buffer_list_pool,
    allocate_net_buffer_mdl_and_data,
    allocate_net_buffer_pool,
    free_net_buffer,
    free_net_buffer_list,
    free_net_buffer_list_pool,
    free_net_buffer_pool,
    mm_get_system_address_for_mdl_safe,
    move_memory,
    send_net_buffer_lists,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.strategies.base import BindContext, SendCall, StrategyParams
from ndis_replay.engine.strategies.common import FreeListStrategy, check_choice, check_int
from ndis_replay.errors import ConfigError

COPY_BUFFERS = ("pool", "mdl-and-data")
_SUCCESS = k.NDIS_STATUS_SUCCESS


@dataclass(frozen=True)
class CopyParams(StrategyParams):
    """Parameters of ``copy``."""

    pool_depth: int = field(
        default=0,
        metadata={
            "help": "NBLs (with data buffers) allocated at bind; 0 = BindContext.max_in_flight. A dry free list "
            "allocates one more (stats: pool_growth)"
        },
    )
    backfill: int = field(
        default=-1,
        metadata={
            "help": "bytes of unused data space in front of each frame (DataOffset) so lower drivers can retreat "
            "without allocating; -1 = the miniport's declared backfill"
        },
    )
    buffers: str = field(
        default="pool",
        metadata={
            "help": "'pool': NdisAllocateNetBufferList from a DataSize pool; 'mdl-and-data': "
            "NdisAllocateNetBufferMdlAndData from a DataSize NB pool, chained to NBLs of a plain NBL pool"
        },
    )

    def validate(self) -> None:
        """Depth ≥ 0, backfill ≥ -1, a known buffer source."""
        super().validate()
        check_int("pool_depth", self.pool_depth, 0, 1_000_000)
        check_int("backfill", self.backfill, -1, 65536)
        check_choice("buffers", self.buffers, COPY_BUFFERS)


class CopyStrategy(FreeListStrategy[NetBufferList]):
    """NDIS 6 copy into pre-allocated NBLs with their own data buffers (DataSize pools, NDIS_MODEL.md §2.1).

    Bind: DataSize = backfill + the trace's largest frame; ``pool_depth`` NBLs (NdisAllocateNetBufferList from the
    DataSize pool, or NdisAllocateNetBufferList + NdisAllocateNetBufferMdlAndData), SourceHandle set once.

    Per send (each packet): pop; MmGetSystemAddressForMdlSafe of the NB's own MDL and NdisMoveMemory of the frame
    to DataOffset = backfill; DataLength = length, CurrentMdl = the MDL, CurrentMdlOffset = backfill; clear the
    checksum/LSO slots; Status = SUCCESS; link. Per call: one NdisSendNetBufferLists.
    Per completion (each NBL): save and clear Next, read Status, push on the free list.

    Counts per packet after bind: 0 allocations, ``bytes_copied`` = the frame length, 2 DDK calls (map + move).
    """

    name = "copy"
    ndis_version = 6
    summary = "NDIS 6 copy: pre-allocated NBLs with their own data buffers, each frame copied in"
    Params = CopyParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, CopyParams)
        self.p: CopyParams = p
        self._all: list[NetBufferList] = []
        self.nb_pool: NetBufferPool | None = None

    def bind(self, ctx: BindContext) -> None:
        """Pools sized from the trace (largest frame) and the miniport (backfill); ``pool_depth`` NBLs."""
        ndis = self.ndis = ctx.ndis
        self.binding = ndis.register_protocol(send_net_buffer_lists_complete_handler=self._send_complete)
        p = self.p
        self.backfill = ctx.miniport.backfill if p.backfill < 0 else p.backfill
        self.data_size = self.backfill + max(ctx.max_frame, 1)
        if p.buffers == "pool":
            params = NetBufferListPoolParameters(data_size=self.data_size, f_allocate_net_buffer=True, name="copy")
        else:
            params = NetBufferListPoolParameters(name="copy")
            self.nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters(self.data_size, name="copy data"))
        pool = allocate_net_buffer_list_pool(ndis, params)
        if pool is None:
            raise ConfigError("backfill", self.backfill, "NdisAllocateNetBufferListPool refused the data size")
        self.pool = pool
        self._fill(p.pool_depth or max(ctx.max_in_flight, ctx.max_call, 1))

    def _allocate(self) -> NetBufferList:
        nbl = allocate_net_buffer_list(self.ndis, self.pool)
        if self.nb_pool is not None:
            nbl.first_net_buffer = allocate_net_buffer_mdl_and_data(self.ndis, self.nb_pool)
        nbl.source_handle = self.binding
        self._all.append(nbl)
        return nbl

    def build(self, call: SendCall) -> NetBufferList:
        """Pop, copy in (:meth:`_prepare`), link in wire order."""
        free = self._free
        frames = call.frames
        head = free.pop() if free else self._grow()
        self._prepare(head, frames[0])
        previous = head
        for position in range(1, len(frames)):
            nbl = free.pop() if free else self._grow()
            self._prepare(nbl, frames[position])
            previous.next = nbl
            previous = nbl
        return head

    def _prepare(self, nbl: NetBufferList, frame: memoryview) -> None:
        """Copy the frame to DataOffset = backfill in the NB's own buffer; make the NB describe it."""
        ndis = self.ndis
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        mdl: Mdl = nb.mdl_chain  # type: ignore[assignment]
        at = self.backfill
        length = len(frame)
        move_memory(ndis, mm_get_system_address_for_mdl_safe(ndis, mdl)[at : at + length], frame)
        nb.current_mdl = mdl
        nb.data_offset = nb.current_mdl_offset = at
        nb.data_length = length
        info = nbl.net_buffer_list_info
        info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = None
        info[k.TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = None
        nbl.status = _SUCCESS

    def submit(self, built: object) -> None:
        """NdisSendNetBufferLists(binding, chain)."""
        send_net_buffer_lists(self.ndis, self.binding, built)  # type: ignore[arg-type]

    def _send_complete(self, completed: NetBufferList) -> None:
        """Detach (save Next, clear it), read Status, back on the free list."""
        chain: NetBufferList | None = completed
        free = self._free
        while chain is not None:
            nbl = chain
            chain = nbl.next
            nbl.next = None
            if nbl.status != _SUCCESS:
                self.failed_sends += 1
            free.append(nbl)

    def unbind(self) -> None:
        """Free every NBL (its own NB first with mdl-and-data: NB-BEFORE-NBL), then the pools."""
        ndis = self.ndis
        for nbl in self._free:
            if self.nb_pool is not None:
                nb = nbl.first_net_buffer
                nbl.first_net_buffer = None
                if nb is not None:
                    free_net_buffer(ndis, nb)
            free_net_buffer_list(ndis, nbl)
        self._free.clear()
        self._all.clear()
        free_net_buffer_list_pool(ndis, self.pool)
        if self.nb_pool is not None:
            free_net_buffer_pool(ndis, self.nb_pool)


__all__ = ["COPY_BUFFERS", "CopyParams", "CopyStrategy"]
