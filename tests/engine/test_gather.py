"""What the miniport's DMA sees: gather_net_buffer / gather_ndis_packet and the DataOffset walk."""

from __future__ import annotations

import itertools

import pytest

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NetBufferPoolParameters,
    allocate_buffer,
    allocate_buffer_pool,
    allocate_memory_with_tag_priority,
    allocate_net_buffer,
    allocate_net_buffer_pool,
    allocate_packet,
    allocate_packet_pool,
    chain_buffer_at_back,
    gather_ndis_packet,
    gather_net_buffer,
    io_allocate_mdl,
    locate_offset,
    mdl_chain_length,
)

FRAME = bytes(range(256)) * 4


def mdl_chain(ndis: Ndis, sizes: list[int], data: bytes = FRAME) -> list[Mdl]:
    """MDLs over consecutive slices of ``data`` with the given sizes, chained in order."""
    view = memoryview(data)
    mdls: list[Mdl] = []
    start = 0
    for size in sizes:
        mdls.append(io_allocate_mdl(ndis, view[start : start + size]))
        start += size
    for first, second in itertools.pairwise(mdls):
        first.next = second
    return mdls


@pytest.mark.parametrize(
    ("sizes", "offset", "length"),
    [
        ([100], 0, 100),
        ([100], 14, 60),
        ([14, 20, 66], 0, 100),
        ([14, 20, 66], 14, 86),
        ([14, 20, 66], 20, 50),
        ([14, 20, 66], 34, 10),
        ([10, 0, 30, 5], 5, 35),
        ([64, 64, 64, 64], 130, 100),
    ],
    ids=[
        "one-mdl",
        "one-mdl-offset",
        "three-from-0",
        "skip-first",
        "mid-second",
        "start-of-third",
        "empty-mdl",
        "deep",
    ],
)
def test_gather_walks_from_data_offset(ndis: Ndis, sizes: list[int], offset: int, length: int) -> None:
    mdls = mdl_chain(ndis, sizes)
    pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters())
    assert pool is not None
    nb = allocate_net_buffer(ndis, pool, mdls[0], offset, length)
    assert gather_net_buffer(nb) == FRAME[offset : offset + length]
    # NDIS set CurrentMdl/Offset by the same walk: gathering from them gives the same bytes
    assert gather_net_buffer(nb, from_current_mdl=True) == FRAME[offset : offset + length]
    assert mdl_chain_length(mdls[0]) == sum(sizes)


def test_gather_short_chain_returns_what_is_there(ndis: Ndis) -> None:
    mdls = mdl_chain(ndis, [10, 10])
    pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters())
    assert pool is not None
    nb = allocate_net_buffer(ndis, pool, mdls[0], 5, 100)
    assert gather_net_buffer(nb) == FRAME[5:20]
    nb.data_length = 0
    assert gather_net_buffer(nb) == b""
    nb.mdl_chain = None
    nb.data_length = 4
    assert gather_net_buffer(nb) == b""


def test_gather_from_a_wrong_current_mdl_sends_wrong_bytes(ndis: Ndis) -> None:
    """A strategy that re-points MdlChain but forgets CurrentMdl transmits the old bytes to a CurrentMdl miniport."""
    old = mdl_chain(ndis, [50], data=b"o" * 50)
    new = mdl_chain(ndis, [50], data=b"n" * 50)
    pool = allocate_net_buffer_pool(ndis, NetBufferPoolParameters())
    assert pool is not None
    nb = allocate_net_buffer(ndis, pool, old[0], 0, 50)
    nb.mdl_chain = new[0]
    assert gather_net_buffer(nb) == b"n" * 50
    assert gather_net_buffer(nb, from_current_mdl=True) == b"o" * 50


@pytest.mark.parametrize(
    ("offset", "index", "in_mdl"),
    [(0, 0, 0), (13, 0, 13), (14, 1, 0), (33, 1, 19), (34, 2, 0), (99, 2, 65), (100, 2, 66)],
    ids=["start", "inside-first", "boundary-1", "inside-second", "boundary-2", "last-byte", "end"],
)
def test_locate_offset(ndis: Ndis, offset: int, index: int, in_mdl: int) -> None:
    mdls = mdl_chain(ndis, [14, 20, 66])
    mdl, position = locate_offset(mdls[0], offset)
    assert mdl is mdls[index]
    assert position == in_mdl


def test_gather_ndis_packet_concatenates_buffers(ndis: Ndis) -> None:
    pool = allocate_packet_pool(ndis, 4, 16)
    buffers = allocate_buffer_pool(ndis, 4)
    assert pool is not None
    packet = allocate_packet(ndis, pool)
    assert packet is not None
    memory = allocate_memory_with_tag_priority(ndis, 100)
    memory[:] = FRAME[:100]
    for start, end in ((0, 14), (14, 34), (34, 100)):
        chain_buffer_at_back(ndis, packet, allocate_buffer(ndis, buffers, memory[start:end]))
    assert gather_ndis_packet(packet) == FRAME[:100]
