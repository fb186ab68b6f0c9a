"""The NDIS 6 send path: NdisSendNetBufferLists, NdisFSendNetBufferLists and the completions back up.

NDIS delivers a protocol's send to the filter module when one is registered, else to the miniport, and routes a
completion back by SourceHandle (NDIS_MODEL.md §1.1, §2.2). Ownership moves with the call: the sender loses the
NBLs, their NBs, MDLs and NetBufferListInfo until the completion handler runs (§2.2 Ownership).

Counting: each call is one ``ddk_calls``; ``nbls_sent`` counts NBLs passed to NdisSendNetBufferLists and
NdisFSendNetBufferLists, ``nbls_completed`` those the miniport completes. Nothing else is counted here (the
modelled NDIS does no allocation on the send path).

Unchecked mode routes completions by SourceHandle exactly as NDIS does: an NBL whose SourceHandle names no bound
driver cannot be delivered and raises :class:`~ndis_replay.engine.verifier.NdisBugCheck`. Checked mode reports a
wrong SourceHandle when the NBL is sent (SOURCEHANDLE-SET) and then routes by originator, so the checked pass goes
on finding further violations.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ndis_replay.engine.ndis.structs import NetBufferList
from ndis_replay.engine.verifier import Finding, NdisBugCheck

if TYPE_CHECKING:
    from ndis_replay.engine.ndis.runtime import Handle, Ndis
    from ndis_replay.engine.verifier import Verifier


def call_as(verifier: Verifier, handle: Handle, handler: Callable[..., None], *args: Any) -> None:
    """Run a registered driver handler as that driver (checked mode ownership), restoring the caller after."""
    previous = verifier.actor
    verifier.actor = handle
    try:
        handler(*args)
    finally:
        verifier.actor = previous


def _relink(nbls: list[NetBufferList]) -> NetBufferList | None:
    """Link ``nbls`` into one NULL-terminated chain (NDIS splitting/merging completion chains)."""
    for first, second in pairwise(nbls):
        first.next = second
    if nbls:
        nbls[-1].next = None
        return nbls[0]
    return None


def _unbound(what: str) -> RuntimeError:
    return RuntimeError(f"no {what} handler registered with this Ndis: call Ndis.register_* first")


def send_net_buffer_lists(
    ndis: Ndis, ndis_binding_handle: Handle, net_buffer_lists: NetBufferList, port_number: int = 0, send_flags: int = 0
) -> None:
    """NdisSendNetBufferLists(NdisBindingHandle, NetBufferLists, PortNumber, SendFlags): the protocol's send.

    Every NBL must carry SourceHandle = ``ndis_binding_handle`` (SOURCEHANDLE-SET), form a NULL-terminated list
    (LIST-LINKAGE), describe consistent data (REUSE-CONSISTENCY) and hold no children (PARENT-PASSED-DOWN). The
    chain goes to FilterSendNetBufferLists when a filter is registered, else to MiniportSendNetBufferLists. No
    return status: the outcome arrives in ProtocolSendNetBufferListsComplete.
    """
    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    target = ndis._filter_send
    if v is None:
        n = 0
        nbl: NetBufferList | None = net_buffer_lists
        while nbl is not None:
            n += 1
            nbl = nbl.next
        c.nbls_sent += n
        if target is None:
            target = ndis._miniport_send
            if target is None:
                raise _unbound("miniport send")
        target(net_buffer_lists)
        return
    if ndis_binding_handle is not ndis.binding_handle:
        v.report("SOURCEHANDLE-SET", "NdisSendNetBufferLists", f"called with {ndis_binding_handle!r}, not the binding")
    receiver = ndis.filter_handle if target is not None else ndis.miniport_adapter_handle
    n = v.on_send(net_buffer_lists, ndis.binding_handle, receiver, "NdisSendNetBufferLists")
    if not n:
        return
    c.nbls_sent += n
    if target is not None:
        v.on_filter_receive(net_buffer_lists)
    else:
        target = ndis._miniport_send
        if target is None:
            raise _unbound("miniport send")
    call_as(v, receiver, target, net_buffer_lists)


def f_send_net_buffer_lists(
    ndis: Ndis, ndis_filter_handle: Handle, net_buffer_lists: NetBufferList, port_number: int = 0, send_flags: int = 0
) -> None:
    """NdisFSendNetBufferLists(NdisFilterHandle, NetBufferList, PortNumber, SendFlags): the filter passes NBLs
    down — its own (SourceHandle = the filter handle) or the protocol's unchanged (SOURCEHANDLE-FOREIGN)."""
    c = ndis.counters
    c.ddk_calls += 1
    target = ndis._miniport_send
    if target is None:
        raise _unbound("miniport send")
    v = ndis.verifier
    if v is None:
        n = 0
        nbl: NetBufferList | None = net_buffer_lists
        while nbl is not None:
            n += 1
            nbl = nbl.next
        c.nbls_sent += n
        target(net_buffer_lists)
        return
    n = v.on_send(net_buffer_lists, ndis.filter_handle, ndis.miniport_adapter_handle, "NdisFSendNetBufferLists")
    if not n:
        return
    c.nbls_sent += n
    call_as(v, ndis.miniport_adapter_handle, target, net_buffer_lists)


def m_send_net_buffer_lists_complete(
    ndis: Ndis, net_buffer_lists: NetBufferList, send_complete_flags: int = 0, *, status: int | None = None
) -> None:
    """NdisMSendNetBufferListsComplete(MiniportAdapterHandle, NetBufferLists, SendCompleteFlags).

    The miniport writes each NBL's Status before calling (STATUS-SET); ``status``, when given, does that for the
    whole chain. Ownership goes back up: to FilterSendNetBufferListsComplete when a filter is registered, else to
    ProtocolSendNetBufferListsComplete, by SourceHandle.
    """
    c = ndis.counters
    c.ddk_calls += 1
    v = ndis.verifier
    if v is None:
        n = 0
        mixed = False
        binding = ndis.binding_handle
        nbl: NetBufferList | None = net_buffer_lists
        while nbl is not None:
            n += 1
            if status is not None:
                nbl.status = status
            if nbl.source_handle is not binding:
                mixed = True
            nbl = nbl.next
        c.nbls_completed += n
        filter_complete = ndis._filter_send_complete
        if filter_complete is not None:
            filter_complete(net_buffer_lists)
            return
        if mixed:
            _route_unchecked(ndis, net_buffer_lists)
            return
        protocol = ndis._protocol_send_complete
        if protocol is None:
            raise _unbound("protocol send-complete")
        protocol(net_buffer_lists)
        return
    if status is not None and net_buffer_lists is not None:
        for each in v.walk_nbls(net_buffer_lists, "NdisMSendNetBufferListsComplete"):
            each.status = status
            v.mark_status_written(each)
    delivered = v.on_miniport_complete(net_buffer_lists, "NdisMSendNetBufferListsComplete")
    c.nbls_completed += len(delivered)
    chain = _relink(delivered)
    if chain is None:
        return
    filter_complete = ndis._filter_send_complete
    if filter_complete is not None:
        call_as(v, ndis.filter_handle, filter_complete, chain)
        return
    protocol = ndis._protocol_send_complete
    if protocol is None:
        raise _unbound("protocol send-complete")
    v.on_delivered(chain)
    call_as(v, ndis.binding_handle, protocol, chain)


def _route_unchecked(ndis: Ndis, chain: NetBufferList) -> None:
    """Split a completion chain by SourceHandle (unchecked mode, no filter): NDIS's routing."""
    binding = ndis.binding_handle
    mine: list[NetBufferList] = []
    nbl: NetBufferList | None = chain
    while nbl is not None:
        following = nbl.next
        if nbl.source_handle is not binding:
            raise NdisBugCheck(
                Finding(
                    "SOURCEHANDLE-SET",
                    -1,
                    f"NBL#{nbl._serial}",
                    f"completion cannot be routed: SourceHandle {nbl.source_handle!r} names no bound driver",
                )
            )
        mine.append(nbl)
        nbl = following
    head = _relink(mine)
    protocol = ndis._protocol_send_complete
    if protocol is None:
        raise _unbound("protocol send-complete")
    if head is not None:
        protocol(head)


def f_send_net_buffer_lists_complete(
    ndis: Ndis, ndis_filter_handle: Handle, net_buffer_lists: NetBufferList, send_complete_flags: int = 0
) -> None:
    """NdisFSendNetBufferListsComplete(NdisFilterHandle, NetBufferList, SendCompleteFlags): the filter completes
    the protocol's NBLs upward — never its own (OWN-NBL-NOT-COMPLETED-UP), each restored to the state it came in
    (RESTORE-ON-COMPLETE), none with children outstanding (PARENT-FREED-WITH-CHILDREN)."""
    c = ndis.counters
    c.ddk_calls += 1
    protocol = ndis._protocol_send_complete
    if protocol is None:
        raise _unbound("protocol send-complete")
    v = ndis.verifier
    if v is None:
        protocol(net_buffer_lists)
        return
    delivered = v.on_filter_complete(net_buffer_lists, "NdisFSendNetBufferListsComplete")
    chain = _relink(delivered)
    if chain is None:
        return
    v.on_delivered(chain)
    call_as(v, ndis.binding_handle, protocol, chain)
