"""x64 sizes of the modelled structures, as derived in NDIS_MODEL.md §1."""

from __future__ import annotations

import pytest

from ndis_replay.engine.ndis import constants as k


def nbl_size(info_slots: int) -> int:
    """sizeof(NET_BUFFER_LIST) x64 = 144 + 8·N rounded up to 16 (NDIS_MODEL.md §1.1, DERIVED)."""
    return k.round_up(k.NBL_INFO_OFFSET + 8 * info_slots, 16)


@pytest.mark.parametrize(
    ("info_slots", "size"),
    [(11, 240), (18, 288), (24, 336), (26, 352), (27, 368), (29, 384)],
    ids=["ndis6.0", "ndis6.20", "ndis6.30", "ndis6.50", "ndis6.80-driver", "ndis.sys-wrapper"],
)
def test_nbl_size_by_header_version(info_slots: int, size: int) -> None:
    assert nbl_size(info_slots) == size


def test_fixed_sizes() -> None:
    assert k.MAX_NET_BUFFER_LIST_INFO == 27
    assert k.NBL_SIZE == nbl_size(k.MAX_NET_BUFFER_LIST_INFO) == 0x170
    assert k.NB_SIZE == 0xB0
    assert k.MDL_SIZE == 0x30
    assert k.NBL_CONTEXT_HEADER_SIZE == 16
    assert k.MDL_FIXED_BLOCK_SIZE == 48 + 8 * 23
    assert k.NDIS_PACKET_PROTOCOL_RESERVED_OFFSET == 96
    assert k.NDIS_PACKET_OOB_DATA_SIZE == 40
    assert k.NDIS_PACKET_EXTENSION_SIZE == 96


@pytest.mark.parametrize(
    ("protocol_reserved", "size"),
    [(0, 240), (1, 240), (8, 240), (9, 256), (16, 256), (32, 272), (64, 304)],
    ids=lambda v: str(v),
)
def test_ndis_packet_size(protocol_reserved: int, size: int) -> None:
    # 96 + round8(reserved) + 40 OOB + 96 extension, rounded to 16
    assert k.ndis_packet_size(protocol_reserved) == size


@pytest.mark.parametrize(
    ("offset", "length", "pages"),
    [(0, 0, 0), (0, 1, 1), (0, 4096, 1), (0, 4097, 2), (4095, 2, 2), (100, 1500, 1), (3000, 1500, 2), (8192, 10, 1)],
    ids=["empty", "one-byte", "full-page", "page+1", "straddle", "small", "straddle-1500", "offset-mod-page"],
)
def test_pages_spanned_and_mdl_size(offset: int, length: int, pages: int) -> None:
    assert k.pages_spanned(offset, length) == pages
    assert k.mm_size_of_mdl(offset, length) == 48 + 8 * pages


def test_send_completion_statuses_are_failures_or_success() -> None:
    assert k.NDIS_STATUS_SUCCESS in k.SEND_COMPLETION_STATUSES
    assert k.NDIS_STATUS_PENDING not in k.SEND_COMPLETION_STATUSES
    assert all(s == 0 or s & 0xC0000000 == 0xC0000000 for s in k.SEND_COMPLETION_STATUSES)
