"""The unchecked (timed) runtime pays nothing for the verifier: plain classes, no guards, no verifier."""

from __future__ import annotations

import pytest

from ndis_replay.engine.ndis import (
    Mdl,
    Ndis,
    NdisPacket,
    NetBuffer,
    NetBufferList,
    NetBufferListPoolParameters,
    allocate_net_buffer_and_net_buffer_list,
    allocate_net_buffer_list_pool,
    allocate_packet,
    allocate_packet_pool,
    io_allocate_mdl,
)


def test_unchecked_descriptors_are_the_plain_classes() -> None:
    ndis = Ndis()
    assert ndis.verifier is None
    pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(16, True))
    assert pool is not None
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool)
    packets = allocate_packet_pool(ndis, 1, 0)
    assert packets is not None
    descriptors = [nbl, nbl.first_net_buffer, io_allocate_mdl(ndis, memoryview(b"x")), allocate_packet(ndis, packets)]
    assert [type(d) for d in descriptors] == [NetBufferList, NetBuffer, Mdl, NdisPacket]
    assert type(nbl.net_buffer_list_info) is list


@pytest.mark.parametrize("cls", [NetBufferList, NetBuffer, Mdl, NdisPacket], ids=lambda c: c.__name__)
def test_plain_classes_have_no_attribute_hooks(cls: type) -> None:
    assert cls.__getattribute__ is object.__getattribute__
    assert cls.__setattr__ is object.__setattr__
    assert not hasattr(cls, "__dict__") or "__dict__" not in cls.__dict__.get("__slots__", ())
    with pytest.raises(AttributeError):
        cls.__new__(cls).unknown_field = 1  # __slots__: no per-object dict


def test_checked_descriptors_are_guarded_subclasses() -> None:
    ndis = Ndis(checked=True)
    pool = allocate_net_buffer_list_pool(ndis, NetBufferListPoolParameters(16, True))
    assert pool is not None
    nbl = allocate_net_buffer_and_net_buffer_list(ndis, pool)
    assert isinstance(nbl, NetBufferList) and type(nbl) is not NetBufferList
    assert type(nbl).__getattribute__ is not object.__getattribute__
