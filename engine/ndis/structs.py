"""The NDIS 6 and NDIS 5 descriptors: NET_BUFFER_LIST, NET_BUFFER, NET_BUFFER_LIST_CONTEXT, MDL, NDIS_PACKET.

Plain ``__slots__`` classes whose public attributes are the snake_case DDK fields (each class docstring maps them);
attributes starting with ``_`` are the model's bookkeeping (what ndis.sys keeps in NDIS-private memory: which pool
a block came from, what was preallocated with it) and are not for strategies. Descriptors are created only by the
DDK calls in :mod:`ndis_replay.engine.ndis.calls` and :mod:`ndis_replay.engine.ndis.ndis5` — never directly: a
strategy that builds or copies one itself breaks POOL-ORIGIN (NDIS_MODEL.md §2.1).

The bytes an MDL describes are a real ``memoryview``: what a strategy points an NB at is what the miniport gathers
(:func:`gather_net_buffer`) and transmits.

In checked mode the runtime creates the ``Checked…`` subclasses from :mod:`ndis_replay.engine.verifier`, which
guard attribute access; the classes here carry no checks, so the unchecked (timed) path pays nothing for them.
"""

from __future__ import annotations

from typing import Any

from ndis_replay.engine.ndis.constants import (
    MAX_NET_BUFFER_LIST_INFO,
    MAX_PER_PACKET_INFO,
    MDL_SIZE,
    PFN_SIZE,
    pages_spanned,
)

# Where a descriptor came from (model bookkeeping, used by the verifier's FREE-KIND and by the frees).
#: NET_BUFFER_LIST: NdisAllocateNetBufferList / NdisAllocateNetBufferAndNetBufferList
NBL_KIND_POOL = 0
#: NdisAllocateCloneNetBufferList
NBL_KIND_CLONE = 1
#: NdisAllocateFragmentNetBufferList
NBL_KIND_FRAGMENT = 2
#: NdisAllocateReassembledNetBufferList
NBL_KIND_REASSEMBLED = 3
NBL_KIND_NAMES = ("pool", "clone", "fragment", "reassembled")

#: MDL: IoAllocateMdl (or NdisAllocateBuffer in NDIS 5, which is IoAllocateMdl on NT, NDIS_MODEL.md §1.3)
MDL_KIND_IO = 0
#: NdisAllocateMdl
MDL_KIND_NDIS = 1
#: allocated by NdisRetreatNetBufferDataStart (freed by an advance with FreeMdl, §2.4)
MDL_KIND_RETREAT = 2
#: preallocated with its NET_BUFFER (DataSize pools, NdisAllocateNetBufferMdlAndData; §2.1)
MDL_KIND_PREALLOCATED = 3
#: built by NDIS for a clone / fragment / reassembled NBL (freed by the matching Free*NetBufferList)
MDL_KIND_DERIVED = 4
#: initialised in caller storage by MmInitializeMdl (XDP's MDL embedded in the NBL context, §3.5)
MDL_KIND_EMBEDDED = 5
#: NDIS 5 NdisAllocateBuffer (an NDIS_BUFFER is an MDL)
MDL_KIND_BUFFER = 6
MDL_KIND_NAMES = ("IoAllocateMdl", "NdisAllocateMdl", "retreat", "preallocated", "derived", "embedded", "NDIS_BUFFER")


class NonPagedBuffer(bytearray):
    """Nonpaged memory: a ``bytearray`` allocated through NDIS (NdisAllocateMemoryWithTagPriority, pool data,
    retreat buffers). NdisAllocateMdl, MmBuildMdlForNonPagedPool and NdisAllocateBuffer accept only nonpaged memory
    (DOC, NDIS_MODEL.md §1.3); the checked runtime recognises it by this type or by ``Ndis.declare_nonpaged``."""

    __slots__ = ()


class Mdl:
    """MDL (wdm.h; NDIS_MODEL.md §1.3). In NDIS 5 an NDIS_BUFFER is an MDL.

    Fields: ``next`` = Next, ``size`` = Size (bytes of header + PFN array), ``mdl_flags`` = MdlFlags,
    ``byte_count`` = ByteCount, ``byte_offset`` = ByteOffset (offset of the first byte in its page). ``data`` is the
    model of StartVa + ByteOffset … + ByteCount: the bytes the MDL describes (what MmGetSystemAddressForMdlSafe
    maps). Drivers may touch only ``next`` and ``mdl_flags`` (DOC); the rest is set by the MDL calls.
    """

    __slots__ = (
        "_block",
        "_kind",
        "_pages",
        "_pool",
        "_retreat",
        "_serial",
        "byte_count",
        "byte_offset",
        "data",
        "mdl_flags",
        "next",
        "size",
    )

    next: Mdl | None
    size: int
    mdl_flags: int
    byte_count: int
    byte_offset: int
    data: memoryview
    _serial: int
    _kind: int
    _pages: int
    _block: int
    _retreat: bool
    _pool: Any

    def __init__(self, serial: int, kind: int, data: memoryview, byte_offset: int, block: int) -> None:
        self.next = None
        self.mdl_flags = 0
        self.data = data
        self.byte_count = len(data)
        self.byte_offset = byte_offset
        self._pages = pages_spanned(byte_offset, self.byte_count)
        self.size = MDL_SIZE + PFN_SIZE * self._pages
        self._serial = serial
        self._kind = kind
        #: bytes of memory this MDL block occupies (0 when it lives in caller storage or a pool block)
        self._block = block
        #: chained at the front of an NB by NdisRetreatNetBufferDataStart (advance with FreeMdl frees it)
        self._retreat = False
        #: the NDIS 5 buffer pool of an NDIS_BUFFER (None for other MDLs)
        self._pool = None

    def __repr__(self) -> str:
        return f"<MDL#{self._serial} {MDL_KIND_NAMES[self._kind]} {self.byte_count} B>"


#: NDIS_BUFFER: in NDIS 5 on NT an NDIS_BUFFER is an MDL (NDIS_MODEL.md §1.3), so the model uses one class.
NdisBuffer = Mdl


class NblContext:
    """NET_BUFFER_LIST_CONTEXT (nbl.h; NDIS_MODEL.md §1.1).

    Fields: ``next`` = Next, ``size`` = Size (total context bytes, used + unused), ``offset`` = Offset (unused bytes;
    the used data starts at ContextData + Offset), ``context_data`` = ContextData (the real bytes). LIFO: the newest
    context is at the head of the NBL's ``context`` chain.
    """

    __slots__ = ("_block", "_preallocated", "context_data", "next", "offset", "size")

    next: NblContext | None
    size: int
    offset: int
    context_data: bytearray
    _block: int
    _preallocated: bool

    def __init__(self, size: int, block: int, preallocated: bool) -> None:
        self.next = None
        self.size = size
        self.offset = size
        self.context_data = bytearray(size)
        self._block = block
        self._preallocated = preallocated


class NetBuffer:
    """NET_BUFFER (nbl.h; NDIS_MODEL.md §1.2).

    Fields: ``next`` = Next, ``current_mdl`` = CurrentMdl, ``current_mdl_offset`` = CurrentMdlOffset,
    ``data_length`` = DataLength, ``mdl_chain`` = MdlChain, ``data_offset`` = DataOffset,
    ``ndis_pool_handle`` = NdisPoolHandle, ``protocol_reserved`` = ProtocolReserved[6],
    ``miniport_reserved`` = MiniportReserved[4] (PVOID arrays as lists of objects).

    Invariant (DERIVED from the DOC definitions, §1.2): DataOffset + DataLength fits in the MDL chain, and
    CurrentMdl/CurrentMdlOffset are the MDL/offset reached by walking DataOffset bytes from MdlChain.
    """

    __slots__ = (
        "_mdl",
        "_owner",
        "_pool",
        "_serial",
        "current_mdl",
        "current_mdl_offset",
        "data_length",
        "data_offset",
        "mdl_chain",
        "miniport_reserved",
        "ndis_pool_handle",
        "next",
        "protocol_reserved",
    )

    next: NetBuffer | None
    current_mdl: Mdl | None
    current_mdl_offset: int
    data_length: int
    mdl_chain: Mdl | None
    data_offset: int
    ndis_pool_handle: Any
    protocol_reserved: list[Any]
    miniport_reserved: list[Any]
    _serial: int
    _pool: Any
    _owner: NetBufferList | None
    _mdl: Mdl | None

    def __init__(self, serial: int, pool: Any, owner: NetBufferList | None) -> None:
        self.next = None
        self.current_mdl = None
        self.current_mdl_offset = 0
        self.data_length = 0
        self.mdl_chain = None
        self.data_offset = 0
        self.ndis_pool_handle = pool
        self.protocol_reserved = [None] * 6
        self.miniport_reserved = [None] * 4
        self._serial = serial
        #: the pool the block was taken from (NetBufferPool, or the NetBufferListPool for a preallocated NB)
        self._pool = pool
        #: the NBL this NB was preallocated with (freed with it), None for NdisAllocateNetBuffer NBs
        self._owner = owner
        #: the MDL (and data) preallocated with this NB, for DataSize pools
        self._mdl = None

    def __repr__(self) -> str:
        return f"<NB#{self._serial} {self.data_offset}+{self.data_length}>"


class NetBufferList:
    """NET_BUFFER_LIST (nbl.h; NDIS_MODEL.md §1.1), the x64 NDIS 6.80+ driver view.

    Fields: ``next`` = Next, ``first_net_buffer`` = FirstNetBuffer, ``context`` = Context,
    ``parent_net_buffer_list`` = ParentNetBufferList, ``ndis_pool_handle`` = NdisPoolHandle,
    ``protocol_reserved`` = ProtocolReserved[4], ``miniport_reserved`` = MiniportReserved[2], ``scratch`` = Scratch,
    ``source_handle`` = SourceHandle, ``nbl_flags`` = NblFlags, ``child_ref_count`` = ChildRefCount,
    ``flags`` = Flags, ``status`` = Status, ``net_buffer_list_info`` = NetBufferListInfo[27] (list, index with the
    ``*_NET_BUFFER_LIST_INFO`` ids of :mod:`~ndis_replay.engine.ndis.constants`).
    """

    __slots__ = (
        "_ctx",
        "_ctx_base",
        "_ctx_base_offset",
        "_derive",
        "_kind",
        "_nb",
        "_pool",
        "_serial",
        "child_ref_count",
        "context",
        "first_net_buffer",
        "flags",
        "miniport_reserved",
        "nbl_flags",
        "ndis_pool_handle",
        "net_buffer_list_info",
        "next",
        "parent_net_buffer_list",
        "protocol_reserved",
        "scratch",
        "source_handle",
        "status",
    )

    next: NetBufferList | None
    first_net_buffer: NetBuffer | None
    context: NblContext | None
    parent_net_buffer_list: NetBufferList | None
    ndis_pool_handle: Any
    protocol_reserved: list[Any]
    miniport_reserved: list[Any]
    scratch: Any
    source_handle: Any
    nbl_flags: int
    child_ref_count: int
    flags: int
    status: int
    net_buffer_list_info: list[Any]
    _serial: int
    _pool: Any
    _kind: int
    _derive: int
    _nb: NetBuffer | None
    _ctx: NblContext | None
    _ctx_base: NblContext | None
    _ctx_base_offset: int

    def __init__(self, serial: int, pool: Any, kind: int) -> None:
        self.next = None
        self.first_net_buffer = None
        self.context = None
        self.parent_net_buffer_list = None
        self.ndis_pool_handle = pool
        self.protocol_reserved = [None] * 4
        self.miniport_reserved = [None] * 2
        self.scratch = None
        self.source_handle = None
        self.nbl_flags = 0
        self.child_ref_count = 0
        self.flags = 0
        self.status = 0
        self.net_buffer_list_info = [None] * MAX_NET_BUFFER_LIST_INFO
        self._serial = serial
        #: the pool the block was taken from (what NdisPoolHandle should say)
        self._pool = pool
        self._kind = kind
        #: clone flags or DataOffsetDelta of a derived NBL (its Free* call must pass the same value, §2.5)
        self._derive = 0
        #: the NB preallocated with this NBL (fAllocateNetBuffer pools), freed with it
        self._nb = None
        #: the NET_BUFFER_LIST_CONTEXT preallocated with this NBL (ContextSize pools)
        self._ctx = None
        #: context head and Offset right after the allocate call: NdisFreeNetBufferListContext must not go past it
        self._ctx_base = None
        self._ctx_base_offset = 0

    def __repr__(self) -> str:
        return f"<NBL#{self._serial} {NBL_KIND_NAMES[self._kind]}>"


class NdisPacketOobData:
    """NDIS_PACKET_OOB_DATA (NDIS 5 ndis.h; NDIS_MODEL.md §1.4), reached with NDIS_OOB_DATA_FROM_PACKET.

    Fields: ``time_to_send`` = TimeToSend (union TimeSent), ``time_received`` = TimeReceived,
    ``header_size`` = HeaderSize, ``size_media_specific_info`` = SizeMediaSpecificInfo,
    ``media_specific_information`` = MediaSpecificInformation, ``status`` = Status. NdisReinitializePacket does not
    reset any of them (DOC, §2.6).
    """

    __slots__ = (
        "_packet",
        "header_size",
        "media_specific_information",
        "size_media_specific_info",
        "status",
        "time_received",
        "time_to_send",
    )

    time_to_send: int
    time_received: int
    header_size: int
    size_media_specific_info: int
    media_specific_information: Any
    status: int
    _packet: NdisPacket | None

    def __init__(self) -> None:
        #: the packet this block belongs to (NDIS_OOB_DATA_FROM_PACKET's inverse)
        self._packet = None
        self.time_to_send = 0
        self.time_received = 0
        self.header_size = 0
        self.size_media_specific_info = 0
        self.media_specific_information = None
        self.status = 0


class NdisPacket:
    """NDIS_PACKET (NDIS 5.x; NDIS_MODEL.md §1.4). Its NDIS_BUFFERs are :class:`Mdl` objects.

    Private part (NDIS-only, set by the macros): ``physical_count`` = Private.PhysicalCount, ``total_length`` =
    Private.TotalLength, ``head``/``tail`` = Private.Head/Tail (the buffer chain), ``pool`` = Private.Pool,
    ``count`` = Private.Count, ``flags`` = Private.Flags, ``valid_counts`` = Private.ValidCounts,
    ``ndis_packet_flags`` = Private.NdisPacketFlags. Then ``oob`` = the NDIS_PACKET_OOB_DATA block,
    ``packet_info`` = the NDIS_PACKET_EXTENSION's NdisPacketInfo[12], ``miniport_reserved`` = MiniportReserved
    (as 2 pointer slots), ``protocol_reserved`` = ProtocolReserved (bytes, the pool's ProtocolReservedLength).
    """

    __slots__ = (
        "_overflow",
        "_serial",
        "count",
        "flags",
        "head",
        "miniport_reserved",
        "ndis_packet_flags",
        "oob",
        "packet_info",
        "physical_count",
        "pool",
        "protocol_reserved",
        "tail",
        "total_length",
        "valid_counts",
    )

    physical_count: int
    total_length: int
    head: Mdl | None
    tail: Mdl | None
    pool: Any
    count: int
    flags: int
    valid_counts: bool
    ndis_packet_flags: int
    oob: NdisPacketOobData
    packet_info: list[Any]
    miniport_reserved: list[Any]
    protocol_reserved: bytearray
    _serial: int
    _overflow: bool

    def __init__(self, serial: int, pool: Any, protocol_reserved_length: int, oob: NdisPacketOobData) -> None:
        self.physical_count = 0
        self.total_length = 0
        self.head = None
        self.tail = None
        self.pool = pool
        self.count = 0
        self.flags = 0
        self.valid_counts = False
        self.ndis_packet_flags = 0
        self.oob = oob
        self.packet_info = [None] * MAX_PER_PACKET_INFO
        self.miniport_reserved = [None] * 2
        self.protocol_reserved = bytearray(protocol_reserved_length)
        self._serial = serial
        #: an overflow descriptor (NdisAllocatePacketPoolEx), returned to system memory when freed (§2.6)
        self._overflow = False

    def __repr__(self) -> str:
        return f"<PACKET#{self._serial}>"


# --- walking and gathering (what the miniport's DMA does) -----------------------------------------------------


def mdl_chain_length(mdl: Mdl | None) -> int:
    """Σ ByteCount over an MDL chain: the total data size it can describe."""
    total = 0
    while mdl is not None:
        total += mdl.byte_count
        mdl = mdl.next
    return total


def locate_offset(mdl: Mdl | None, offset: int) -> tuple[Mdl | None, int]:
    """The MDL and in-MDL offset reached by walking ``offset`` bytes from ``mdl`` (how NDIS derives CurrentMdl).

    MDLs wholly inside the first ``offset`` bytes are skipped (NET_BUFFER CurrentMdl, DOC §1.2); an offset that
    ends exactly at an MDL boundary lands at offset 0 of the next MDL, or at the end of the last one.
    """
    while mdl is not None and offset >= mdl.byte_count and mdl.next is not None:
        offset -= mdl.byte_count
        mdl = mdl.next
    return mdl, offset


def gather_net_buffer(net_buffer: NetBuffer, *, from_current_mdl: bool = False) -> bytes:
    """The bytes a NET_BUFFER describes, gathered as a DMA engine would: DataLength bytes from DataOffset.

    By default the walk starts at MdlChain and skips DataOffset bytes; ``from_current_mdl`` starts at
    CurrentMdl + CurrentMdlOffset instead (what a miniport using the CurrentMdl optimization transmits). A chain
    shorter than DataOffset + DataLength yields fewer bytes (never an exception): the verifier reports the
    inconsistency (REUSE-CONSISTENCY) and the wire comparison shows the damage.
    """
    remaining = net_buffer.data_length
    if remaining <= 0:
        return b""
    if from_current_mdl:
        mdl = net_buffer.current_mdl
        offset = net_buffer.current_mdl_offset
    else:
        mdl = net_buffer.mdl_chain
        offset = net_buffer.data_offset
        while mdl is not None and offset >= mdl.byte_count:
            offset -= mdl.byte_count
            mdl = mdl.next
    if mdl is None:
        return b""
    # the common case: the used data sits in one MDL
    if mdl.byte_count - offset >= remaining:
        return bytes(mdl.data[offset : offset + remaining])
    parts: list[memoryview] = []
    while mdl is not None and remaining > 0:
        take = min(mdl.byte_count - offset, remaining)
        if take > 0:
            parts.append(mdl.data[offset : offset + take])
            remaining -= take
        offset = 0
        mdl = mdl.next
    return b"".join(parts)


def gather_net_buffer_list(net_buffer_list: NetBufferList) -> list[bytes]:
    """The frames of every NET_BUFFER of one NBL, in order (one frame per NB)."""
    frames: list[bytes] = []
    nb = net_buffer_list.first_net_buffer
    while nb is not None:
        frames.append(gather_net_buffer(nb))
        nb = nb.next
    return frames


def gather_ndis_packet(packet: NdisPacket) -> bytes:
    """The frame an NDIS 5 packet describes: every chained NDIS_BUFFER's ByteCount bytes, Head to the end."""
    buffer = packet.head
    if buffer is not None and buffer.next is None:
        return bytes(buffer.data[: buffer.byte_count])
    parts: list[memoryview] = []
    while buffer is not None:
        parts.append(buffer.data[: buffer.byte_count])
        buffer = buffer.next
    return b"".join(parts)
