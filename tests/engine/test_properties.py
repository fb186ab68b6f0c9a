"""Properties, with hypothesis: random *valid* driver programs (NBL reuse with random MDL splits, backfill, retreats,
contexts, completion timing) give no error finding, transmit exactly their frames, leak nothing, and count the
same in checked and unchecked mode."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NetBuffer,
    NetBufferList,
    NetBufferListPoolParameters,
    advance_net_buffer_data_start,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list_context,
    allocate_net_buffer_list_pool,
    free_net_buffer_list,
    free_net_buffer_list_context,
    free_net_buffer_list_pool,
    locate_offset,
    ndis_allocate_mdl,
    ndis_free_mdl,
    retreat_net_buffer_data_start,
    send_net_buffer_lists,
)
from ndis_replay.engine.ndis import constants as k
from tests.engine.conftest import Loopback

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Frame:
    length: int
    cuts: tuple[int, ...]
    backfill: int
    header: int
    page_offset: int
    poll_after: bool
    context: int


frame_st = st.builds(
    Frame,
    length=st.integers(1, 3000),
    cuts=st.lists(st.integers(1, 2999), max_size=3).map(lambda c: tuple(sorted(set(c)))),
    backfill=st.integers(0, 40),
    header=st.integers(0, 40),
    page_offset=st.integers(0, 4095),
    poll_after=st.booleans(),
    context=st.sampled_from([0, 8, 24, 64]),
)
program_st = st.tuples(
    st.integers(1, 5), st.sampled_from(["sync", "deferred", "batched"]), st.lists(frame_st, min_size=1, max_size=12)
)


def _write_used(nb: NetBuffer, data: bytes) -> None:
    """Write the first bytes of the used data through the MDL chain (a driver filling in its header)."""
    mdl: Mdl | None = nb.current_mdl
    offset = nb.current_mdl_offset
    done = 0
    while mdl is not None and done < len(data):
        take = min(mdl.byte_count - offset, len(data) - done)
        mdl.data[offset : offset + take] = data[done : done + take]
        done += take
        offset = 0
        mdl = mdl.next


class Reuser:
    """A reuse strategy: NBLs from bind, MDLs per send (split at random cuts), backfill in front of the frame,
    a header retreated in and advanced away on completion, a context pushed and popped around each send."""

    def __init__(self, ndis: Ndis, depth: int) -> None:
        self.ndis = ndis
        ndis.register_protocol(send_net_buffer_lists_complete_handler=self.complete)
        pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(16, True, name="prop"))
        assert pool is not None
        self.pool = pool
        self.free = [allocate_net_buffer_and_net_buffer_list(ndis, pool) for _ in range(depth)]
        self.meta: dict[int, tuple[int, int]] = {}

    def send(self, memory: memoryview, frame: Frame) -> bool:
        if not self.free:
            return False
        nbl = self.free.pop()
        nb = nbl.first_net_buffer
        assert nb is not None
        region = memory[: frame.backfill + frame.length]
        points = [0, *(c + frame.backfill for c in frame.cuts if c < frame.length), len(region)]
        mdls = [
            ndis_allocate_mdl(self.ndis, region[a:b], page_offset=(frame.page_offset + a) % k.PAGE_SIZE)
            for a, b in itertools.pairwise(points)
            if b > a
        ]
        for first, second in itertools.pairwise(mdls):
            first.next = second
        nb.mdl_chain = mdls[0]
        nb.data_offset = frame.backfill
        nb.data_length = frame.length
        nb.current_mdl, nb.current_mdl_offset = locate_offset(mdls[0], frame.backfill)
        if frame.header:
            assert retreat_net_buffer_data_start(self.ndis, nb, frame.header) == k.NDIS_STATUS_SUCCESS
            _write_used(nb, b"H" * frame.header)
        if frame.context:
            allocate_net_buffer_list_context(self.ndis, nbl, frame.context)
        self.meta[id(nbl)] = (frame.header, frame.context)
        nbl.net_buffer_list_info[k.TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO] = None
        nbl.status = k.NDIS_STATUS_SUCCESS
        nbl.source_handle = self.ndis.binding_handle
        nbl.next = None
        send_net_buffer_lists(self.ndis, self.ndis.binding_handle, nbl)
        return True

    def complete(self, chain: NetBufferList | None) -> None:
        while chain is not None:
            nbl, chain = chain, chain.next
            nbl.next = None
            assert nbl.status == k.NDIS_STATUS_SUCCESS
            header, context = self.meta.pop(id(nbl))
            nb = nbl.first_net_buffer
            assert nb is not None
            if context:
                free_net_buffer_list_context(self.ndis, nbl, context)
            if header:
                advance_net_buffer_data_start(self.ndis, nb, header, True)
            mdl = nb.mdl_chain
            while mdl is not None:
                following = mdl.next
                ndis_free_mdl(self.ndis, mdl)
                mdl = following
            nb.mdl_chain = nb.current_mdl = None
            nb.data_length = nb.data_offset = nb.current_mdl_offset = 0
            self.free.append(nbl)

    def unbind(self) -> None:
        for nbl in self.free:
            free_net_buffer_list(self.ndis, nbl)
        free_net_buffer_list_pool(self.ndis, self.pool)


def run(checked: bool, depth: int, mode: str, program: list[Frame]) -> tuple[Ndis, list[bytes], list[bytes]]:
    ndis = Ndis(checked=checked)
    miniport = Loopback(ndis, mode)
    strategy = Reuser(ndis, depth)
    expected: list[bytes] = []
    for index, frame in enumerate(program):
        if ndis.verifier is not None:
            ndis.verifier.packet_index = index
        payload = bytes((index + i) % 256 for i in range(frame.length))
        memory = ndis.declare_nonpaged(memoryview(bytearray(frame.backfill) + payload))
        expected.append(b"H" * frame.header + payload)
        while not strategy.send(memory, frame):
            miniport.poll()
        if frame.poll_after:
            miniport.poll()
    miniport.poll()
    strategy.unbind()
    return ndis, miniport.wire, expected


@SETTINGS
@given(program_st)
def test_valid_programs_give_no_errors_and_exact_bytes(case: tuple[int, str, list[Frame]]) -> None:
    depth, mode, program = case
    checked, wire, expected = run(True, depth, mode, program)
    assert wire == expected
    assert checked.verifier is not None
    checked.verifier.finish()
    assert checked.verifier.errors == [], checked.verifier.errors
    assert {f.rule for f in checked.verifier.findings} <= {"RETREAT-ALLOC"}
    c = checked.counters
    assert c.nbl_outstanding == c.nb_outstanding == c.mdl_outstanding == c.ctx_outstanding == c.data_outstanding == 0
    assert c.mem_bytes == len(checked.mdl_lookaside) * k.MDL_FIXED_BLOCK_SIZE  # only the MDL lookaside's blocks
    unchecked, wire_unchecked, _ = run(False, depth, mode, program)
    assert wire_unchecked == expected
    assert unchecked.counters.snapshot() == c.snapshot()
