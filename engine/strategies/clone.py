"""``clone``: a filter module that sends clones (or, above the MTU, fragments) of the NBLs coming from above.

The filter keeps the protocol's NBLs as parents, passes only children down, and completes a parent upward when
its last child comes back (NDIS_MODEL.md §2.5, the caller-maintained ParentNetBufferList/ChildRefCount that XDP
and Juniper vRouter keep; FilterSendNetBufferLists/…Complete shape from the ndislwf sample, §3.2).

The strategy is the whole upper stack of the run: it binds an inner ``reuse`` (or ``alloc``) protocol driver that
produces the "from above" NBLs — its cost is part of this strategy's numbers (compare with the inner strategy run
alone to isolate the filter) — and attaches itself as the filter between that protocol and the miniport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ndis_replay.engine.ndis import (
    NetBufferList,
    NetBufferListPoolParameters,
    NetBufferPoolParameters,
    allocate_clone_net_buffer_list,
    allocate_fragment_net_buffer_list,
    allocate_net_buffer_list_pool,
    allocate_net_buffer_pool,
    f_send_net_buffer_lists,
    f_send_net_buffer_lists_complete,
    free_clone_net_buffer_list,
    free_fragment_net_buffer_list,
    free_net_buffer_list_pool,
    free_net_buffer_pool,
    link_child_net_buffer_list,
    mm_get_system_address_for_mdl_safe,
    move_memory,
    unlink_child_net_buffer_list,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.strategies.alloc import AllocStrategy
from ndis_replay.engine.strategies.base import BindContext, SendCall, Strategy, StrategyParams
from ndis_replay.engine.strategies.common import check_choice, check_int
from ndis_replay.engine.strategies.reuse import ReuseStrategy
from ndis_replay.errors import ConfigError

CLONE_UPPER = ("reuse", "alloc")
#: ProtocolReserved slots of a child (the filter allocated it, so it is the child's protocol): kind, header length
_KIND, _DELTA = 0, 1
_CLONE, _FRAGMENT = 0, 1


@dataclass(frozen=True)
class CloneParams(StrategyParams):
    """Parameters of ``clone``."""

    upper: str = field(
        default="reuse",
        metadata={"help": "the protocol above the filter that produces the parent NBLs: 'reuse' or 'alloc'"},
    )
    use_original_mdls: bool = field(
        default=True,
        metadata={
            "help": "clone with NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS (children share the parent's MDLs); false: NDIS "
            "builds new MDLs per clone (IoAllocateMdl + IoBuildPartialMdl each)"
        },
    )
    mtu: int = field(
        default=0,
        metadata={
            "help": "frames longer than this (bytes) are fragmented into NBs of at most mtu bytes, each with a copy "
            "of the header (NdisAllocateFragmentNetBufferList, DataOffsetDelta = header_len); 0 = the miniport's MTU"
        },
    )

    def validate(self) -> None:
        """A known upper protocol; MTU 0 or ≥ 64."""
        super().validate()
        check_choice("upper", self.upper, CLONE_UPPER)
        check_int("mtu", self.mtu, 0)
        if 0 < self.mtu < 64:
            raise ConfigError("mtu", self.mtu, "must be 0 (the miniport's) or ≥ 64")


class CloneStrategy(Strategy):
    """NDIS 6 cloning/fragmenting filter with parent/child bookkeeping (NDIS_MODEL.md §2.5, §3.2).

    The upper protocol (``upper``: the ``reuse`` or ``alloc`` strategy with default parameters) builds and sends
    its NBLs as it does alone; NDIS hands them to this filter's FilterSendNetBufferLists, which per parent NBL:
    NdisAllocateCloneNetBufferList(parent, filter pool, NB pool, flags) — or, for a frame above the MTU,
    NdisAllocateFragmentNetBufferList(parent, …, StartOffset = header_len, MaximumLength = mtu − header_len,
    DataOffsetDelta = header_len) plus MmGetSystemAddressForMdlSafe + NdisMoveMemory of the header into each
    fragment's retreated space —, SourceHandle = the filter handle, link_child (ParentNetBufferList = parent,
    InterlockedIncrement ChildRefCount); one NdisFSendNetBufferLists of the children per call.

    FilterSendNetBufferListsComplete, per child: save and clear Next, InterlockedDecrement the parent's
    ChildRefCount, NdisFreeCloneNetBufferList (same flags) or NdisFreeFragmentNetBufferList (same
    DataOffsetDelta); a parent whose count reached 0 gets the child's Status and goes up: one
    NdisFSendNetBufferListsComplete per completion call with every such parent.

    Counts per packet (clone, original MDLs), on top of the upper protocol's: 1 NBL + 1 NB allocated and freed
    (filter pool blocks, fAllocateNetBuffer), 2 interlocked ChildRefCount updates.
    """

    name = "clone"
    ndis_version = 6
    summary = "NDIS 6 filter: clones (fragments above the MTU) NBLs from above, parent/child bookkeeping"
    Params = CloneParams

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, CloneParams)
        self.p: CloneParams = p
        self.upper: Strategy = ReuseStrategy() if p.upper == "reuse" else AllocStrategy()
        self._flags = k.NDIS_CLONE_FLAGS_USE_ORIGINAL_MDLS if p.use_original_mdls else 0
        self._header_lens: Sequence[int] = ()
        self.fragmented = 0
        self.failed_sends = 0

    def bind(self, ctx: BindContext) -> None:
        """The upper protocol binds; the filter attaches (FilterAttach: its NBL and NB pools, its handlers)."""
        ndis = self.ndis = ctx.ndis
        self.upper.bind(ctx)
        self.mtu = self.p.mtu or ctx.miniport.mtu
        self.filter = ndis.filter_handle
        with ndis.acting_as(ndis.filter_handle):
            pool = allocate_net_buffer_list_pool(
                ndis,
                NetBufferListPoolParameters(f_allocate_net_buffer=True, name="clone"),
                ndis_handle=ndis.filter_handle,
            )
            nb_pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters(name="fragments"), ndis_handle=self.filter)
        if pool is None or nb_pool is None:
            raise ConfigError("mtu", self.mtu, "NdisAllocateNetBufferListPool refused the filter pool")
        self.pool, self.nb_pool = pool, nb_pool
        ndis.register_filter(
            send_net_buffer_lists_handler=self._filter_send,
            send_net_buffer_lists_complete_handler=self._filter_send_complete,
        )

    def build(self, call: SendCall) -> object:
        """The upper protocol's NBLs for this call (their cost is this strategy's too). The filter "parses" each
        frame's header length when it fragments; the model takes it from the trace (``call.header_lens``)."""
        self._header_lens = call.header_lens
        return self.upper.build(call)

    def submit(self, built: object) -> None:
        """The upper protocol's NdisSendNetBufferLists; NDIS calls FilterSendNetBufferLists inside it."""
        self.upper.submit(built)

    # --- the filter ------------------------------------------------------------------------------------------

    def _derive(self, parent: NetBufferList, header_len: int) -> NetBufferList | None:
        """One child: a fragment NBL for a frame above the MTU, else a clone."""
        ndis = self.ndis
        nb = parent.first_net_buffer
        length = nb.data_length if nb is not None else 0
        if length > self.mtu and 0 < header_len < self.mtu and header_len < length:
            child = allocate_fragment_net_buffer_list(
                ndis, parent, self.pool, self.nb_pool, header_len, self.mtu - header_len, header_len
            )
            if child is not None:
                self._copy_headers(parent, child, header_len)
                child.protocol_reserved[_KIND] = _FRAGMENT
                child.protocol_reserved[_DELTA] = header_len
                self.fragmented += 1
                return child
        child = allocate_clone_net_buffer_list(ndis, parent, self.pool, self.nb_pool, self._flags)
        if child is not None:
            child.protocol_reserved[_KIND] = _CLONE
        return child

    def _copy_headers(self, parent: NetBufferList, child: NetBufferList, header_len: int) -> None:
        """The parent's header into each fragment's retreated space (a fragmenting filter replicates it)."""
        ndis = self.ndis
        source = parent.first_net_buffer
        assert source is not None
        mdl = source.current_mdl
        offset = source.current_mdl_offset
        header = bytearray()
        while mdl is not None and len(header) < header_len:  # gather the header from the parent's used data
            data = mm_get_system_address_for_mdl_safe(ndis, mdl)
            header += data[offset : offset + header_len - len(header)]
            offset = 0
            mdl = mdl.next
        nb = child.first_net_buffer
        while nb is not None:
            target = nb.current_mdl
            assert target is not None
            at = nb.current_mdl_offset
            move_memory(ndis, mm_get_system_address_for_mdl_safe(ndis, target)[at : at + header_len], bytes(header))
            nb = nb.next

    def _filter_send(self, chain: NetBufferList) -> None:
        """FilterSendNetBufferLists: derive one child per parent (kept), pass the children down in order."""
        ndis = self.ndis
        filt = self.filter
        header_lens = self._header_lens
        head: NetBufferList | None = None
        tail: NetBufferList | None = None
        position = 0
        parent: NetBufferList | None = chain
        while parent is not None:
            header_len = header_lens[position] if position < len(header_lens) else 0
            child = self._derive(parent, header_len)
            if child is None:
                raise MemoryError("NdisAllocateCloneNetBufferList failed")  # the model's allocations cannot fail
            child.source_handle = filt
            link_child_net_buffer_list(ndis, child, parent)
            if tail is None:
                head = child
            else:
                tail.next = child
            tail = child
            position += 1
            parent = parent.next
        if head is not None:
            f_send_net_buffer_lists(ndis, filt, head)

    def _filter_send_complete(self, completed: NetBufferList) -> None:
        """FilterSendNetBufferListsComplete: free each child with its own routine; parents whose last child came
        back go up in one NdisFSendNetBufferListsComplete."""
        chain: NetBufferList | None = completed
        ndis = self.ndis
        filt = self.filter
        up_head: NetBufferList | None = None
        up_tail: NetBufferList | None = None
        while chain is not None:
            nbl = chain
            chain = nbl.next
            nbl.next = None
            if nbl.source_handle is not filt:  # not ours: pass it up untouched (not expected here)
                f_send_net_buffer_lists_complete(ndis, filt, nbl)
                continue
            status = nbl.status
            if status != k.NDIS_STATUS_SUCCESS:
                self.failed_sends += 1
            parent = unlink_child_net_buffer_list(ndis, nbl)
            self._free_child(nbl)
            if parent is not None:
                parent.status = status
                parent.next = None
                if up_tail is None:
                    up_head = parent
                else:
                    up_tail.next = parent
                up_tail = parent
        if up_head is not None:
            f_send_net_buffer_lists_complete(ndis, filt, up_head)

    def _free_child(self, child: NetBufferList) -> None:
        """NdisFreeFragmentNetBufferList (same DataOffsetDelta) or NdisFreeCloneNetBufferList (same flags)."""
        reserved = child.protocol_reserved
        if reserved[_KIND] == _FRAGMENT:
            free_fragment_net_buffer_list(self.ndis, child, reserved[_DELTA])
        else:
            free_clone_net_buffer_list(self.ndis, child, self._flags)

    def unbind(self) -> None:
        """FilterDetach (its pools, as the filter), then the upper protocol unbinds."""
        with self.ndis.acting_as(self.filter):
            free_net_buffer_list_pool(self.ndis, self.pool)
            free_net_buffer_pool(self.ndis, self.nb_pool)
        self.upper.unbind()

    def stats(self) -> dict[str, int]:
        """Fragmented parents, failed sends, and the upper protocol's stats (prefixed ``upper_``)."""
        out = {"fragmented": self.fragmented, "failed_sends": self.failed_sends}
        out.update({f"upper_{key}": value for key, value in self.upper.stats().items()})
        return out


__all__ = ["CLONE_UPPER", "CloneParams", "CloneStrategy"]
