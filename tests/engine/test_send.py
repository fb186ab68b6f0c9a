"""The NDIS 6 send path: routing, ownership hand-over, completion chains, the filter, counts in both modes."""

from __future__ import annotations

import pytest

from ndis_replay.engine.ndis import (
    Ndis,
    NetBufferList,
    NetBufferListPoolParameters,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list_pool,
    f_send_net_buffer_lists,
    f_send_net_buffer_lists_complete,
    free_net_buffer_list,
    io_allocate_mdl,
    m_send_net_buffer_lists_complete,
    send_net_buffer_lists,
)
from ndis_replay.engine.ndis import constants as k
from ndis_replay.engine.verifier import NdisBugCheck, OwnerState
from tests.engine.conftest import Loopback, chain_to_list


def _nbl(ndis: Ndis, payload: bytes, pool: object = None) -> NetBufferList:
    if pool is None:
        pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(f_allocate_net_buffer=True))
    mdl = io_allocate_mdl(ndis, memoryview(payload))
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool, 0, 0, mdl, 0, len(payload))  # type: ignore[arg-type]
    nbl.source_handle = ndis.binding_handle
    return nbl


def test_send_reaches_the_miniport_and_completes_to_the_protocol(any_ndis: Ndis) -> None:
    ndis = any_ndis
    miniport = Loopback(ndis, "deferred")
    completed: list[list[NetBufferList]] = []
    ndis.register_protocol(send_net_buffer_lists_complete_handler=lambda chain: completed.append(chain_to_list(chain)))
    first, second = _nbl(ndis, b"one"), _nbl(ndis, b"two")
    first.next = second
    send_net_buffer_lists(ndis, ndis.binding_handle, first)
    assert miniport.wire == [b"one", b"two"]
    if ndis.verifier is not None:
        assert ndis.verifier.state_of(first) is OwnerState.STACK
    assert completed == []
    miniport.poll()
    assert completed == [[first], [second]]  # one completion per NBL: deferred mode completes them one by one
    assert (ndis.counters.nbls_sent, ndis.counters.nbls_completed, ndis.counters.ddk_calls) == (2, 2, 2 + 2 + 2 + 1 + 2)
    assert first.status == k.NDIS_STATUS_SUCCESS
    if ndis.verifier is not None:
        assert ndis.verifier.state_of(first) is OwnerState.COMPLETED
        assert ndis.verifier.findings == []


def test_completion_status_argument(any_ndis: Ndis) -> None:
    ndis = any_ndis
    statuses: list[int] = []
    ndis.register_protocol(send_net_buffer_lists_complete_handler=lambda chain: statuses.append(chain.status))
    pending: list[NetBufferList] = []
    ndis.register_miniport(send_net_buffer_lists_handler=pending.append)
    send_net_buffer_lists(ndis, ndis.binding_handle, _nbl(ndis, b"x"))
    with ndis.acting_as(ndis.miniport_adapter_handle):
        m_send_net_buffer_lists_complete(ndis, pending[0], status=k.NDIS_STATUS_SEND_ABORTED)
    assert statuses == [k.NDIS_STATUS_SEND_ABORTED]
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_unchecked_completion_routes_by_source_handle() -> None:
    ndis = Ndis()
    Loopback(ndis, "sync")
    completed: list[NetBufferList] = []
    ndis.register_protocol(send_net_buffer_lists_complete_handler=completed.append)
    nbl = _nbl(ndis, b"x")
    nbl.source_handle = None  # a strategy that forgot SourceHandle: NDIS cannot route the completion
    with pytest.raises(NdisBugCheck) as info:
        send_net_buffer_lists(ndis, ndis.binding_handle, nbl)
    assert info.value.finding.rule == "SOURCEHANDLE-SET"
    assert completed == []


def test_checked_completion_reports_and_routes_by_originator(checked: Ndis) -> None:
    Loopback(checked, "sync")
    completed: list[NetBufferList] = []
    checked.register_protocol(send_net_buffer_lists_complete_handler=completed.append)
    nbl = _nbl(checked, b"x")
    nbl.source_handle = None
    assert checked.verifier is not None
    checked.verifier.packet_index = 3
    send_net_buffer_lists(checked, checked.binding_handle, nbl)
    assert completed == [nbl]
    assert {(f.rule, f.packet_index) for f in checked.verifier.findings} == {("SOURCEHANDLE-SET", 3)}


def test_unregistered_miniport_is_a_harness_error(any_ndis: Ndis) -> None:
    with pytest.raises(RuntimeError, match="register"):
        send_net_buffer_lists(any_ndis, any_ndis.binding_handle, _nbl(any_ndis, b"x"))


class PassThroughFilter:
    """ndislwf: passes the protocol's NBLs down unchanged and completes them up (NDIS_MODEL.md §3.2)."""

    def __init__(self, ndis: Ndis) -> None:
        self.ndis = ndis
        self.outstanding = 0
        ndis.register_filter(
            send_net_buffer_lists_handler=self.send, send_net_buffer_lists_complete_handler=self.complete
        )

    def send(self, chain: NetBufferList) -> None:
        self.outstanding += len(chain_to_list_keep(chain))
        f_send_net_buffer_lists(self.ndis, self.ndis.filter_handle, chain)

    def complete(self, chain: NetBufferList) -> None:
        self.outstanding -= len(chain_to_list_keep(chain))
        f_send_net_buffer_lists_complete(self.ndis, self.ndis.filter_handle, chain)


def chain_to_list_keep(chain: NetBufferList | None) -> list[NetBufferList]:
    out = []
    while chain is not None:
        out.append(chain)
        chain = chain.next
    return out


def test_filter_pass_through(any_ndis: Ndis) -> None:
    ndis = any_ndis
    miniport = Loopback(ndis, "batched")
    filt = PassThroughFilter(ndis)
    completed: list[NetBufferList] = []
    ndis.register_protocol(send_net_buffer_lists_complete_handler=lambda c: completed.extend(chain_to_list(c)))
    pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(f_allocate_net_buffer=True))
    nbls = [_nbl(ndis, bytes([i]) * 4, pool) for i in range(3)]
    for nbl in nbls:
        send_net_buffer_lists(ndis, ndis.binding_handle, nbl)
    assert filt.outstanding == 3
    miniport.poll()
    assert completed == nbls and filt.outstanding == 0
    assert miniport.wire == [bytes([i]) * 4 for i in range(3)]
    assert (ndis.counters.nbls_sent, ndis.counters.nbls_completed) == (6, 3)  # protocol → filter → miniport
    for nbl in nbls:
        free_net_buffer_list(ndis, nbl)
    if ndis.verifier is not None:
        assert ndis.verifier.findings == []


def test_counts_do_not_depend_on_the_mode() -> None:
    def run(checked: bool) -> dict[str, int]:
        ndis = Ndis(checked=checked)
        miniport = Loopback(ndis, "batched")
        free: list[NetBufferList] = []
        ndis.register_protocol(send_net_buffer_lists_complete_handler=lambda c: free.extend(chain_to_list(c)))
        pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(16, True))
        for i in range(20):
            nbl = free.pop() if free else None
            if nbl is None:
                nbl = _nbl(ndis, b"p" * (i + 1), pool)
            else:
                free_net_buffer_list(ndis, nbl)
                nbl = _nbl(ndis, b"p" * (i + 1), pool)
            send_net_buffer_lists(ndis, ndis.binding_handle, nbl)
            if i % 3 == 2:
                miniport.poll()
        return ndis.counters.snapshot()

    assert run(False) == run(True)
