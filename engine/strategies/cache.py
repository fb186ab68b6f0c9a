"""``cache``: ``alloc`` with a bounded per-CPU cache of NBLs in front of the pool.

A common middle way between allocate-per-send and full reuse: completed NBLs go to a small per-CPU free list
(touched only by its own CPU at DISPATCH_LEVEL, so no lock and no interlocked operation) and the next send on that
CPU takes one from there, re-pointed with the §2.2 reset checklist; when the cache is empty the send falls back to
NdisAllocateNetBufferAndNetBufferList, when it is full the completion falls back to NdisFreeNetBufferList.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ndis_replay.engine.ndis import (
    NetBuffer,
    NetBufferList,
    free_net_buffer_list,
    free_net_buffer_list_pool,
    net_buffer_list_context_data_start,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.strategies.alloc import _RSVD, AllocParams, AllocStrategy
from ndis_replay.engine.strategies.base import BindContext, SendCall
from ndis_replay.engine.strategies.common import check_int

_SUCCESS = k.NDIS_STATUS_SUCCESS


@dataclass(frozen=True)
class CacheParams(AllocParams):
    """Parameters of ``cache``: those of ``alloc`` plus the cache's shape."""

    cache_depth: int = field(
        default=64, metadata={"help": "NBLs each CPU's cache holds at most (0 = no cache: exactly alloc)"}
    )
    cpus: int = field(
        default=1,
        metadata={
            "help": "modelled CPUs, each with its own cache; send call c runs on CPU c mod cpus and its completion on "
            "the same CPU (the model's simplification of interrupt/DPC affinity)"
        },
    )

    def validate(self) -> None:
        """Depth 0..65536, 1..1024 CPUs."""
        super().validate()
        check_int("cache_depth", self.cache_depth, 0, 65536)
        check_int("cpus", self.cpus, 1, 1024)


class CacheStrategy(AllocStrategy):
    """NDIS 6 ``alloc`` behind a bounded per-CPU NBL cache (a lookaside in the driver).

    Per send (each packet): the MDLs as ``alloc`` (NdisAllocateMdl ×2 with the split); then a cache hit pops an
    NBL of this CPU's cache and re-points it (MdlChain, CurrentMdl, CurrentMdlOffset 0, DataOffset 0, DataLength;
    checksum/LSO slots cleared; Status = SUCCESS; the context's IRP rewritten; SourceHandle stays) — no NDIS call;
    a miss is ``alloc``'s NdisAllocateNetBufferAndNetBufferList. Per call: one NdisSendNetBufferLists.
    Per completion (each NBL): save and clear Next, read Status and the context, then push the NBL on its CPU's
    cache (MdlChain/CurrentMdl cleared) or, when that cache is full, NdisFreeNetBufferList; then NdisFreeMdl of the
    old MDLs. Unbind flushes every cache with NdisFreeNetBufferList.

    What it saves is counted in :meth:`stats`: ``cache_hits`` = NdisAllocateNetBufferAndNetBufferList calls
    avoided, ``frees_avoided`` = NdisFreeNetBufferList calls avoided.
    """

    name = "cache"
    ndis_version = 6
    summary = "alloc with a bounded per-CPU NBL cache in front of the pool"
    Params = CacheParams

    def bind(self, ctx: BindContext) -> None:
        """``alloc``'s pool and handler, plus empty caches."""
        super().bind(ctx)
        p = self.params
        assert isinstance(p, CacheParams)
        self.depth = p.cache_depth
        self.cpus = p.cpus
        self.caches: list[list[NetBufferList]] = [[] for _ in range(p.cpus)]
        self.cache_hits = 0
        self.cache_misses = 0
        self.frees_avoided = 0
        self.overflow_frees = 0

    def _allocate(self, call: SendCall, position: int) -> NetBufferList:
        """A cached NBL re-pointed at the new MDLs, or ``alloc``'s allocation."""
        cpu = call.call % self.cpus
        cache = self.caches[cpu]
        if not cache:
            self.cache_misses += 1
            nbl = super()._allocate(call, position)
            if self.cpus > 1:
                nbl.protocol_reserved[0] = cpu  # the CPU whose cache takes it back (ProtocolReserved is ours)
            return nbl
        self.cache_hits += 1
        nbl = cache.pop()
        frame = call.frames[position]
        chain = self._describe(frame, call.header_lens[position])
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        nb.mdl_chain = nb.current_mdl = chain
        nb.current_mdl_offset = nb.data_offset = 0
        nb.data_length = len(frame)
        info = nbl.net_buffer_list_info
        info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = None
        info[k.TCP_LARGE_SEND_NET_BUFFER_LIST_INFO] = None
        nbl.status = _SUCCESS
        if self.p.context_size:
            _RSVD.pack_into(net_buffer_list_context_data_start(nbl), 0, call.indices[position], 1)
        return nbl

    def _release(self, nbl: NetBufferList) -> None:
        """Status and context read; into the CPU's cache when it has room, else NdisFreeNetBufferList; the MDLs."""
        if nbl.status != _SUCCESS:
            self.failed_sends += 1
        nb: NetBuffer = nbl.first_net_buffer  # type: ignore[assignment]
        mdl = nb.mdl_chain
        if self.p.context_size:
            _RSVD.unpack_from(net_buffer_list_context_data_start(nbl))
        cache = self.caches[nbl.protocol_reserved[0] if self.cpus > 1 else 0]
        if len(cache) < self.depth:
            nb.mdl_chain = nb.current_mdl = None  # no pointer to MDLs about to be freed
            cache.append(nbl)
            self.frees_avoided += 1
        else:
            self.overflow_frees += 1
            free_net_buffer_list(self.ndis, nbl)
        self._free_write_mdls(mdl)

    def unbind(self) -> None:
        """Flush the caches (NdisFreeNetBufferList each), then the pool."""
        for cache in self.caches:
            for nbl in cache:
                nb = nbl.first_net_buffer
                if nb is not None:
                    nb.data_length = 0
                free_net_buffer_list(self.ndis, nbl)
            cache.clear()
        free_net_buffer_list_pool(self.ndis, self.pool)

    def stats(self) -> dict[str, int]:
        """What the cache saved and what it could not."""
        return {
            **super().stats(),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "frees_avoided": self.frees_avoided,
            "overflow_frees": self.overflow_frees,
        }


__all__ = ["CacheParams", "CacheStrategy"]
