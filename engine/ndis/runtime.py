"""The :class:`Ndis` system object every modelled DDK call goes through.

One ``Ndis`` per strategy run holds what the real ndis.sys would: the operation counters, the handles of the
drivers bound in the modelled stack (protocol binding, optional filter module, miniport adapter), the handlers
each driver registered, the system-wide MDL lookaside list, and — in checked mode — the verifier.

The modelled stack, top to bottom: a protocol driver (the strategy, or the harness playing the upper protocol of a
filter strategy), an optional filter module, the miniport. NDIS routes a send from a protocol to the filter when one
is registered, else to the miniport; a completion goes back up by SourceHandle, as ndis.sys does
(NDIS_MODEL.md §1.1 SourceHandle, §2.2 Ownership).

Checked mode (``Ndis(checked=True)``): pools hand out the ``Checked…`` descriptor classes of
:mod:`ndis_replay.engine.verifier`, every DDK call runs its rule checks, and freed descriptors are quarantined —
never handed out again, any later access is UAF-QUARANTINE (NET_BUFFER_LIST_POOL_FLAG_VERIFY emulation). The
counters do not depend on the mode: a pool still counts a hit when its free list would have served the request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ndis_replay.engine import verifier as _verifier
from ndis_replay.engine.ndis import pools as _pools
from ndis_replay.engine.ndis.counters import OpCounters
from ndis_replay.engine.ndis.structs import (
    Mdl,
    NblContext,
    NdisPacket,
    NdisPacketOobData,
    NetBuffer,
    NetBufferList,
    NonPagedBuffer,
)

if TYPE_CHECKING:
    from ndis_replay.engine.verifier import Verifier

#: ProtocolSendNetBufferListsComplete / FilterSendNetBufferLists / FilterSendNetBufferListsComplete /
#: MiniportSendNetBufferLists, reduced to the NBL chain (the port number and flags are not modelled).
NblHandler = Callable[[NetBufferList], None]
#: MiniportSendPackets(MiniportAdapterContext, PacketArray, NumberOfPackets)
SendPacketsHandler = Callable[[list[NdisPacket]], None]
#: ProtocolSendComplete(ProtocolBindingContext, Packet, Status)
SendCompleteHandler = Callable[[NdisPacket, int], None]


class Handle:
    """An opaque NDIS_HANDLE naming one driver instance: ``role`` is "binding" (NdisBindingHandle of a protocol),
    "filter" (NdisFilterHandle), "miniport" (MiniportAdapterHandle) or "ndis" (NDIS itself)."""

    __slots__ = ("name", "role")

    def __init__(self, role: str, name: str) -> None:
        self.role = role
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.role} handle {self.name}>"


class _ActingAs:
    """Context manager behind :meth:`Ndis.acting_as`."""

    __slots__ = ("_handle", "_previous", "_verifier")

    def __init__(self, verifier: Verifier | None, handle: Handle) -> None:
        self._verifier = verifier
        self._handle = handle
        self._previous: Handle | None = None

    def __enter__(self) -> Handle:
        if self._verifier is not None:
            self._previous = self._verifier.actor
            self._verifier.actor = self._handle
        return self._handle

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._verifier is not None and self._previous is not None:
            self._verifier.actor = self._previous


class Ndis:
    """The modelled NDIS: counters, handles, registered handlers, MDL lookaside, verifier (checked mode).

    ``checked`` selects the verifier; ``max_findings_per_rule`` bounds how many findings of one rule are kept
    (all are counted); ``quarantine_depth`` how many freed descriptors are kept for diagnostics (quarantine itself
    is unbounded: a freed descriptor is never handed out again).
    """

    __slots__ = (
        "_filter_send",
        "_filter_send_complete",
        "_miniport_send",
        "_miniport_send_packets",
        "_nonpaged",
        "_protocol_send_complete",
        "_protocol_send_complete5",
        "binding_handle",
        "checked",
        "counters",
        "ctx_class",
        "filter_handle",
        "internal_nb_pool",
        "internal_nbl_pool",
        "mdl_class",
        "mdl_lookaside",
        "miniport_adapter_handle",
        "nb_class",
        "nbl_class",
        "ndis_handle",
        "oob_class",
        "packet_class",
        "quarantine",
        "serial_mdl",
        "serial_nb",
        "serial_nbl",
        "serial_packet",
        "verifier",
    )

    def __init__(
        self, *, checked: bool = False, max_findings_per_rule: int = 100, quarantine_depth: int = 1024
    ) -> None:
        self.counters = OpCounters()
        self.checked = checked
        self.binding_handle = Handle("binding", "protocol")
        self.filter_handle = Handle("filter", "filter")
        self.miniport_adapter_handle = Handle("miniport", "miniport")
        self.ndis_handle = Handle("ndis", "ndis")
        #: IoAllocateMdl's fixed-size lookaside list (constants.MDL_LOOKASIDE_MAX_PAGES)
        self.mdl_lookaside: list[Mdl] = []
        #: recently freed descriptors (checked mode), newest last
        self.quarantine: deque[object] = deque(maxlen=quarantine_depth)
        self.serial_nbl = 0
        self.serial_nb = 0
        self.serial_mdl = 0
        self.serial_packet = 0
        self._nonpaged: dict[int, object] = {}
        self._protocol_send_complete: NblHandler | None = None
        self._protocol_send_complete5: SendCompleteHandler | None = None
        self._filter_send: NblHandler | None = None
        self._filter_send_complete: NblHandler | None = None
        self._miniport_send: NblHandler | None = None
        self._miniport_send_packets: SendPacketsHandler | None = None
        self.nbl_class: type[NetBufferList]
        self.nb_class: type[NetBuffer]
        self.mdl_class: type[Mdl]
        self.ctx_class: type[NblContext]
        self.packet_class: type[NdisPacket]
        self.oob_class: type[NdisPacketOobData]
        self.verifier: Verifier | None
        if checked:
            verifier = _verifier.Verifier(self, max_findings_per_rule=max_findings_per_rule)
            self.verifier = verifier
            self.nbl_class = verifier.nbl_class
            self.nb_class = verifier.nb_class
            self.mdl_class = verifier.mdl_class
            self.ctx_class = verifier.ctx_class
            self.packet_class = verifier.packet_class
            self.oob_class = verifier.oob_class
        else:
            self.verifier = None
            self.nbl_class = NetBufferList
            self.nb_class = NetBuffer
            self.mdl_class = Mdl
            self.ctx_class = NblContext
            self.packet_class = NdisPacket
            self.oob_class = NdisPacketOobData
        # NDIS's own pools for derived NBLs allocated with a NULL pool handle (clone, fragment, reassembled)
        self.internal_nbl_pool = _pools.NetBufferListPool(
            _pools.NetBufferListPoolParameters(name="ndis internal"), self.ndis_handle
        )
        self.internal_nb_pool = _pools.NetBufferPool(
            _pools.NetBufferPoolParameters(name="ndis internal"), self.ndis_handle
        )

    # --- the stack ---------------------------------------------------------------------------------------------

    def register_protocol(
        self,
        *,
        send_net_buffer_lists_complete_handler: NblHandler | None = None,
        send_complete_handler: SendCompleteHandler | None = None,
    ) -> Handle:
        """Bind the protocol driver (NdisRegisterProtocolDriver + NdisOpenAdapterEx); returns its binding handle.

        ``send_net_buffer_lists_complete_handler`` is ProtocolSendNetBufferListsComplete (NDIS 6);
        ``send_complete_handler`` is ProtocolSendComplete (NDIS 5). Handlers run as the protocol (see
        :meth:`acting_as`).
        """
        self._protocol_send_complete = send_net_buffer_lists_complete_handler
        self._protocol_send_complete5 = send_complete_handler
        return self.binding_handle

    def register_filter(
        self,
        *,
        send_net_buffer_lists_handler: NblHandler,
        send_net_buffer_lists_complete_handler: NblHandler,
    ) -> Handle:
        """Attach a filter module between protocol and miniport (NdisFRegisterFilterDriver + FilterAttach).

        From now on the protocol's sends reach FilterSendNetBufferLists and every completion passes through
        FilterSendNetBufferListsComplete, which must complete the protocol's NBLs upward with
        :func:`~ndis_replay.engine.ndis.send.f_send_net_buffer_lists_complete`.
        """
        self._filter_send = send_net_buffer_lists_handler
        self._filter_send_complete = send_net_buffer_lists_complete_handler
        return self.filter_handle

    def register_miniport(
        self,
        *,
        send_net_buffer_lists_handler: NblHandler | None = None,
        send_packets_handler: SendPacketsHandler | None = None,
    ) -> Handle:
        """Register the miniport (NdisMRegisterMiniportDriver + MiniportInitializeEx); returns the adapter handle.

        ``send_net_buffer_lists_handler`` is MiniportSendNetBufferLists (NDIS 6), ``send_packets_handler``
        MiniportSendPackets (NDIS 5, deserialized: every packet is completed later with
        :func:`~ndis_replay.engine.ndis.ndis5.m_send_complete`). Handlers run as the miniport.
        """
        self._miniport_send = send_net_buffer_lists_handler
        self._miniport_send_packets = send_packets_handler
        return self.miniport_adapter_handle

    def acting_as(self, handle: Handle) -> _ActingAs:
        """``with ndis.acting_as(handle):`` — code in the block runs as that driver (checked mode ownership).

        NDIS switches drivers itself when it calls a registered handler. Driver code the harness calls directly
        runs as the protocol by default; wrap a filter strategy's bind/unbind in ``acting_as(ndis.filter_handle)``
        and a miniport's deferred-completion poll (its DPC) in ``acting_as(ndis.miniport_adapter_handle)``. A no-op
        in unchecked mode.
        """
        return _ActingAs(self.verifier, handle)

    # --- memory ------------------------------------------------------------------------------------------------

    def declare_nonpaged(self, buffer: memoryview) -> memoryview:
        """Declare memory the harness owns to be nonpaged (e.g. a copy of the trace standing in for kernel data).

        Buffers from :func:`~ndis_replay.engine.ndis.mdl.allocate_memory_with_tag_priority` are nonpaged already;
        trace bytes are treated as a user's pageable buffer unless declared (they must then be described with
        IoAllocateMdl + MmProbeAndLockPages, as the I/O manager does for a direct-I/O write).
        """
        self._nonpaged[id(buffer.obj)] = buffer.obj
        return buffer

    def is_nonpaged(self, buffer: memoryview) -> bool:
        """True when ``buffer`` lies in memory known to be nonpaged."""
        obj: Any = buffer.obj
        return isinstance(obj, NonPagedBuffer) or self._nonpaged.get(id(obj)) is obj
