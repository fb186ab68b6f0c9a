"""The header-length walk and link-layer direction (``ndis_replay.importers.headers``).

Expected header lengths are written out from the protocol definitions (``14 + 20 + 32``), never computed by
the code under test; the vectorised walk is then checked against the per-packet reference on generated,
mutated and real packets.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dot11 import Dot11, RadioTap
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, LLC, SNAP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

from ndis_replay.importers.headers import (
    LINKTYPE_NAMES,
    header_length,
    header_lengths,
    link_direction,
    link_directions,
    link_header_known,
    linktype_name,
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

NULL, ETHERNET, RAW, LOOP, SLL, RADIOTAP, IPV4, IPV6, SLL2 = 0, 1, 101, 108, 113, 127, 228, 229, 276
SEND, RECV, UNKNOWN = 0, 1, 2

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # explicit, so scapy does no ARP lookup
V4 = {"src": "192.0.2.1", "dst": "192.0.2.2"}
V6 = {"src": "2001:db8::1", "dst": "2001:db8::2"}
TCP_OPTS = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]  # 12 option bytes: data offset 8 (32 bytes)
PAYLOAD = Raw(b"payload!!!")


def raw(p: Packet) -> bytes:
    return bytes(p)


def eth(p: Packet) -> bytes:
    return bytes(Ether(**MAC) / p)


def sll(proto: int, pkttype: int = 0) -> bytes:
    """Linux cooked v1 header: pkttype, ARPHRD type, address length, 8 address bytes, protocol."""
    return struct.pack(">HHH8sH", pkttype, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", proto)


def sll2(proto: int, pkttype: int = 0) -> bytes:
    """Linux cooked v2 header: protocol, reserved, ifindex, ARPHRD type, pkttype, address length, address."""
    return struct.pack(">HHIHBB8s", proto, 0, 3, 1, pkttype, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00")


def ext(next_header: int, length: int, total: int) -> bytes:
    """A raw IPv6 extension header of ``total`` bytes with the given next-header and length fields."""
    return bytes([next_header, length]) + bytes(total - 2)


def radiotap(it_len: int, body: bytes = bytes(24)) -> bytes:
    """A radiotap header claiming ``it_len`` bytes (version 0, no present bits), padded to 12 bytes."""
    return struct.pack("<BBHI", 0, 0, it_len, 0) + bytes(4) + body


def with_byte(data: bytes, pos: int, value: int) -> bytes:
    return data[:pos] + bytes([value]) + data[pos + 1 :]


def vlan_tags(count: int, tpid: int = 0x8100) -> bytes:
    """``count`` 4-byte tags, each TPID + TCI, as they sit between the MAC addresses and the ethertype."""
    return b"".join(struct.pack(">HH", tpid, 100 + i) for i in range(count))


def tagged_frame(count: int, inner: bytes, ethertype: int = 0x0800) -> bytes:
    macs = bytes.fromhex("020000000002020000000001")
    return macs + vlan_tags(count) + struct.pack(">H", ethertype) + inner


IPV4_TCP = raw(IP(**V4) / TCP() / PAYLOAD)
IPV4_UDP = raw(IP(**V4) / UDP() / PAYLOAD)
IPV6_TCP = raw(IPv6(**V6) / TCP() / PAYLOAD)
IPV6_UDP = raw(IPv6(**V6) / UDP() / PAYLOAD)
UDP_HDR = raw(UDP() / PAYLOAD)
TCP_HDR = raw(TCP() / PAYLOAD)
ETH_IPV4_TCP = eth(IP(**V4) / TCP() / PAYLOAD)

# (link type, packet bytes, expected header_len)
CASES = [
    # --- Ethernet, IPv4
    pytest.param(ETHERNET, ETH_IPV4_TCP, 14 + 20 + 20, id="eth-ipv4-tcp"),
    pytest.param(ETHERNET, eth(IP(**V4) / TCP(options=TCP_OPTS) / PAYLOAD), 14 + 20 + 32, id="eth-ipv4-tcp-options"),
    pytest.param(ETHERNET, eth(IP(**V4) / UDP() / PAYLOAD), 14 + 20 + 8, id="eth-ipv4-udp"),
    pytest.param(
        ETHERNET,
        eth(IP(options=[IPOption_Router_Alert()], **V4) / UDP() / PAYLOAD),
        14 + 24 + 8,
        id="eth-ipv4-options-udp",
    ),
    pytest.param(ETHERNET, eth(IP(**V4) / ICMP() / PAYLOAD), 14 + 20 + 8, id="eth-ipv4-icmp"),
    pytest.param(ETHERNET, eth(IP(**V4) / SCTP() / PAYLOAD), 14 + 20 + 12, id="eth-ipv4-sctp"),
    pytest.param(ETHERNET, eth(IP(proto=136, **V4) / UDP_HDR), 14 + 20 + 8, id="eth-ipv4-udplite"),
    pytest.param(ETHERNET, eth(IP(proto=47, **V4) / Raw(bytes(24))), 14 + 20, id="eth-ipv4-gre-not-walked"),
    pytest.param(ETHERNET, eth(IP(proto=51, **V4) / Raw(bytes(24))), 14 + 20, id="eth-ipv4-ah-not-walked"),
    pytest.param(ETHERNET, eth(IP(flags="MF", **V4) / UDP() / PAYLOAD), 14 + 20 + 8, id="eth-ipv4-first-fragment-udp"),
    pytest.param(ETHERNET, eth(IP(frag=185, proto=17, **V4) / Raw(bytes(40))), 14 + 20, id="eth-ipv4-later-fragment"),
    pytest.param(
        ETHERNET,
        eth(IP(flags="MF", frag=1, proto=6, **V4) / TCP_HDR),
        14 + 20,
        id="eth-ipv4-later-fragment-offset-8",
    ),
    pytest.param(
        ETHERNET, eth(IP(frag=0x1000, proto=17, **V4) / UDP_HDR), 14 + 20, id="eth-ipv4-later-fragment-offset-32k"
    ),
    pytest.param(ETHERNET, eth(IP(flags="DF", **V4) / UDP() / PAYLOAD), 14 + 20 + 8, id="eth-ipv4-df-udp"),
    pytest.param(
        ETHERNET, eth(IP(flags="evil+DF+MF", **V4) / UDP() / PAYLOAD), 14 + 20 + 8, id="eth-ipv4-all-flags-udp"
    ),
    # --- Ethernet, IPv6
    pytest.param(ETHERNET, eth(IPv6(**V6) / TCP() / PAYLOAD), 14 + 40 + 20, id="eth-ipv6-tcp"),
    pytest.param(ETHERNET, eth(IPv6(**V6) / ICMPv6EchoRequest() / PAYLOAD), 14 + 40 + 8, id="eth-ipv6-icmpv6"),
    pytest.param(ETHERNET, eth(IPv6(nh=59, **V6) / Raw(b"abc")), 14 + 40, id="eth-ipv6-no-next-header"),
    pytest.param(
        ETHERNET,
        eth(IPv6(**V6) / IPv6ExtHdrFragment(offset=0, m=1) / UDP() / PAYLOAD),
        14 + 40 + 8 + 8,
        id="eth-ipv6-first-fragment-udp",
    ),
    pytest.param(
        ETHERNET,
        eth(IPv6(**V6) / IPv6ExtHdrFragment(offset=100, nh=17) / Raw(bytes(30))),
        14 + 40 + 8,
        id="eth-ipv6-later-fragment",
    ),
    pytest.param(
        ETHERNET,
        eth(IPv6(nh=43, **V6) / Raw(ext(6, 2, 24) + TCP_HDR)),
        14 + 40 + 24 + 20,
        id="eth-ipv6-routing24-tcp",
    ),
    pytest.param(
        ETHERNET,
        eth(IPv6(nh=0, **V6) / Raw(ext(60, 1, 16) + ext(17, 0, 8) + UDP_HDR)),
        14 + 40 + 16 + 8 + 8,
        id="eth-ipv6-hbh16-destopt-udp",
    ),
    pytest.param(
        ETHERNET,
        eth(IPv6(nh=51, **V6) / Raw(ext(6, 4, 24) + TCP_HDR)),
        14 + 40 + 24 + 20,
        id="eth-ipv6-ah-tcp",
    ),
    pytest.param(ETHERNET, eth(IPv6(nh=135, **V6) / Raw(ext(59, 0, 8) + b"xx")), 14 + 40 + 8, id="eth-ipv6-mobility"),
    pytest.param(
        ETHERNET,
        eth(IPv6(nh=60, **V6) / Raw(ext(60, 0, 8) * 7 + ext(17, 0, 8) + UDP_HDR)),
        14 + 40 + 8 * 8 + 8,
        id="eth-ipv6-8-ext-headers-udp",
    ),
    pytest.param(
        ETHERNET,
        eth(IPv6(nh=60, **V6) / Raw(ext(60, 0, 8) * 8 + ext(17, 0, 8) + UDP_HDR)),
        14 + 40 + 8 * 8,
        id="eth-ipv6-9-ext-headers-bounded",
    ),
    pytest.param(
        ETHERNET,
        eth(IPv6(nh=60, **V6) / Raw(ext(17, 10, 22))),
        14 + 40,
        id="eth-ipv6-ext-past-capture",
    ),
    # --- Ethernet, VLAN tags
    pytest.param(ETHERNET, eth(Dot1Q(vlan=5) / IP(**V4) / TCP() / PAYLOAD), 14 + 4 + 20 + 20, id="eth-dot1q-ipv4-tcp"),
    pytest.param(
        ETHERNET,
        eth(Dot1Q(vlan=5) / Dot1Q(vlan=6) / IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / UDP() / PAYLOAD),
        14 + 4 + 4 + 40 + 8 + 8 + 8,
        id="eth-dot1q-dot1q-ipv6-hbh-routing-udp",
    ),
    pytest.param(
        ETHERNET,
        eth(Dot1AD(vlan=5) / Dot1Q(vlan=6) / IPv6(**V6) / UDP() / PAYLOAD),
        14 + 4 + 4 + 40 + 8,
        id="eth-qinq-88a8-ipv6-udp",
    ),
    pytest.param(
        ETHERNET,
        bytes(Ether(type=0x9100, **MAC) / Dot1Q(vlan=5, type=0x8100) / Dot1Q(vlan=6) / IP(**V4) / UDP() / PAYLOAD),
        14 + 4 + 4 + 20 + 8,
        id="eth-9100-8100-ipv4-udp",
    ),
    pytest.param(ETHERNET, tagged_frame(4, IPV4_UDP), 14 + 16 + 20 + 8, id="eth-4-tags-ipv4-udp"),
    pytest.param(ETHERNET, tagged_frame(5, IPV4_UDP), 14 + 16, id="eth-5-tags-stops-at-4"),
    pytest.param(ETHERNET, eth(Dot1Q(vlan=5) / ARP()), 14 + 4, id="eth-dot1q-arp"),
    # --- Ethernet, not IP
    pytest.param(ETHERNET, eth(ARP()), 14, id="eth-arp"),
    pytest.param(ETHERNET, bytes(Dot3(**MAC) / LLC() / SNAP() / PAYLOAD), 14, id="eth-8023-llc-snap"),
    pytest.param(ETHERNET, bytes(Ether(type=0x88CC, **MAC) / Raw(bytes(30))), 14, id="eth-lldp"),
    pytest.param(ETHERNET, ETH_IPV4_TCP[:14], 14, id="eth-header-only"),
    pytest.param(ETHERNET, ETH_IPV4_TCP[:13], 0, id="eth-13-bytes"),
    pytest.param(ETHERNET, b"", 0, id="eth-empty"),
    # --- malformed
    pytest.param(ETHERNET, with_byte(ETH_IPV4_TCP, 14, 0x44), 14, id="eth-ipv4-ihl-4"),
    pytest.param(ETHERNET, with_byte(ETH_IPV4_TCP, 14, 0x65), 14, id="eth-ipv4-version-6"),
    pytest.param(ETHERNET, with_byte(eth(IPV6_TCP), 14, 0x45), 14, id="eth-ipv6-version-4"),
    pytest.param(ETHERNET, with_byte(ETH_IPV4_TCP, 14 + 20 + 12, 0x40), 14 + 20, id="eth-tcp-data-offset-4"),
    pytest.param(ETHERNET, with_byte(ETH_IPV4_TCP, 14 + 20 + 12, 0xF0), 14 + 20, id="eth-tcp-data-offset-past-end"),
    pytest.param(ETHERNET, with_byte(ETH_IPV4_TCP, 14, 0x4F), 14, id="eth-ipv4-ihl-past-end"),
    # --- Linux cooked
    pytest.param(SLL, sll(0x0800) + IPV4_TCP, 16 + 20 + 20, id="sll-ipv4-tcp"),
    pytest.param(SLL, sll(0x86DD, 4) + IPV6_UDP, 16 + 40 + 8, id="sll-ipv6-udp"),
    pytest.param(SLL, sll(0x0806) + raw(ARP()), 16, id="sll-arp"),
    pytest.param(SLL, sll(0x0800)[:15], 0, id="sll-15-bytes"),
    pytest.param(SLL2, sll2(0x86DD, 4) + IPV6_TCP, 20 + 40 + 20, id="sll2-ipv6-tcp"),
    pytest.param(SLL2, sll2(0x0800) + IPV4_UDP, 20 + 20 + 8, id="sll2-ipv4-udp"),
    pytest.param(SLL2, sll2(0x0800)[:19], 0, id="sll2-19-bytes"),
    # --- BSD loopback
    pytest.param(NULL, struct.pack("<I", 2) + IPV4_UDP, 4 + 20 + 8, id="null-le-ipv4-udp"),
    pytest.param(NULL, struct.pack(">I", 2) + IPV4_UDP, 4 + 20 + 8, id="null-be-ipv4-udp"),
    pytest.param(NULL, struct.pack("<I", 24) + IPV6_TCP, 4 + 40 + 20, id="null-le-24-ipv6-tcp"),
    pytest.param(NULL, struct.pack(">I", 30) + IPV6_UDP, 4 + 40 + 8, id="null-be-30-ipv6-udp"),
    pytest.param(NULL, struct.pack("<I", 28) + IPV6_UDP, 4 + 40 + 8, id="null-le-28-ipv6-udp"),
    pytest.param(NULL, struct.pack(">I", 10) + IPV6_UDP, 4 + 40 + 8, id="null-be-10-ipv6-udp"),
    pytest.param(NULL, struct.pack("<I", 7) + IPV4_UDP, 4, id="null-unknown-family"),
    pytest.param(NULL, b"\x02\x00\x00", 0, id="null-3-bytes"),
    pytest.param(LOOP, struct.pack(">I", 2) + raw(IP(**V4) / ICMP()), 4 + 20 + 8, id="loop-ipv4-icmp"),
    pytest.param(LOOP, struct.pack(">I", 24) + IPV6_UDP, 4 + 40 + 8, id="loop-ipv6-udp"),
    pytest.param(LOOP, struct.pack("<I", 2) + IPV4_UDP, 4, id="loop-little-endian-is-not-ipv4"),
    # --- no link header
    pytest.param(RAW, IPV4_TCP, 20 + 20, id="raw-ipv4-tcp"),
    pytest.param(RAW, IPV6_UDP, 40 + 8, id="raw-ipv6-udp"),
    pytest.param(RAW, with_byte(IPV4_TCP, 0, 0x55), 0, id="raw-version-5"),
    pytest.param(RAW, b"", 0, id="raw-empty"),
    pytest.param(12, IPV4_UDP, 20 + 8, id="dlt12-ipv4-udp"),
    pytest.param(14, IPV6_TCP, 40 + 20, id="dlt14-ipv6-tcp"),
    pytest.param(IPV4, IPV4_UDP, 20 + 8, id="ipv4-udp"),
    pytest.param(IPV4, IPV6_UDP, 0, id="ipv4-linktype-with-ipv6"),
    pytest.param(IPV6, IPV6_TCP, 40 + 20, id="ipv6-tcp"),
    pytest.param(IPV6, IPV4_TCP, 0, id="ipv6-linktype-with-ipv4"),
    # --- link header only
    pytest.param(RADIOTAP, bytes(RadioTap() / Dot11()), 8, id="radiotap-8"),
    pytest.param(RADIOTAP, radiotap(12), 12, id="radiotap-12"),
    pytest.param(RADIOTAP, radiotap(200), 0, id="radiotap-past-capture"),
    pytest.param(RADIOTAP, radiotap(4), 0, id="radiotap-too-small"),
    pytest.param(9, b"\xff\x03\x00\x21" + IPV4_TCP, 0, id="ppp-not-walked"),
    pytest.param(147, ETH_IPV4_TCP, 0, id="user0-not-walked"),
    pytest.param(274, ETH_IPV4_TCP, 0, id="ethernet-mpacket-not-walked"),
]


def batch(
    items: Sequence[tuple[int, bytes]],
    prefix: bytes = b"\xee\xee\xee",
    suffix: bytes = b"\x45\x86\xdd",
    gap: bytes = b"\x08\x00\x45\x0f",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(linktypes, buf, starts, lengths)`` for ``items`` laid out as in a capture chunk: after ``prefix`` (so
    starts[0] > 0), separated by ``gap`` (like record headers; bytes that look like an ethertype and an IPv4
    header, so a read past a packet's end would walk on) and before ``suffix``."""
    linktypes = np.array([lt for lt, _ in items], dtype=np.uint16)
    lengths = np.array([len(d) for _, d in items], dtype=np.int64)
    starts = np.full(len(items), len(prefix), dtype=np.int64)
    starts[1:] += np.cumsum(lengths[:-1] + len(gap))
    buf = np.frombuffer(prefix + gap.join(d for _, d in items) + suffix, dtype=np.uint8)
    return linktypes, buf, starts, lengths


def check_batch(items: Sequence[tuple[int, bytes]], prefix: bytes = b"\xee\xee\xee", suffix: bytes = b"") -> None:
    got = header_lengths(*batch(items, prefix, suffix))
    want = [header_length(lt, d) for lt, d in items]
    assert got.dtype == np.uint16
    assert got.tolist() == want
    assert all(h <= len(d) for h, (_, d) in zip(want, items, strict=True))


# --- known packets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("linktype", "data", "expected"), CASES)
def test_header_length(linktype: int, data: bytes, expected: int) -> None:
    assert header_length(linktype, data) == expected


@pytest.mark.parametrize(("linktype", "data", "expected"), CASES)
def test_header_lengths_single(linktype: int, data: bytes, expected: int) -> None:
    got = header_lengths(*batch([(linktype, data)]))
    assert got.tolist() == [expected]


def test_header_lengths_all_cases_in_one_batch() -> None:
    items = [(p.values[0], p.values[1]) for p in CASES]
    got = header_lengths(*batch(items))
    assert got.tolist() == [p.values[2] for p in CASES]


# (link type, packet, the layer boundaries of its headers)
TRUNCATION_CASES = [
    pytest.param(
        ETHERNET, eth(IP(**V4) / TCP(options=TCP_OPTS) / PAYLOAD), [14, 14 + 20, 14 + 20 + 32], id="eth-ipv4-tcp-opts"
    ),
    pytest.param(
        ETHERNET,
        eth(IP(options=[IPOption_Router_Alert()], **V4) / UDP() / PAYLOAD),
        [14, 14 + 24, 14 + 24 + 8],
        id="eth-ipv4-options-udp",
    ),
    pytest.param(ETHERNET, eth(IP(**V4) / SCTP() / PAYLOAD), [14, 14 + 20, 14 + 20 + 12], id="eth-ipv4-sctp"),
    pytest.param(
        ETHERNET,
        eth(Dot1Q(vlan=5) / Dot1Q(vlan=6) / IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / UDP() / PAYLOAD),
        [14, 14 + 4, 14 + 8, 22 + 40, 22 + 40 + 8, 22 + 40 + 16, 22 + 40 + 16 + 8],
        id="eth-dot1q-dot1q-ipv6-hbh-routing-udp",
    ),
    pytest.param(ETHERNET, eth(Dot1Q(vlan=5) / ARP()), [14, 14 + 4], id="eth-dot1q-arp"),
    pytest.param(
        SLL2,
        sll2(0x86DD) + raw(IPv6(**V6) / IPv6ExtHdrFragment(offset=0) / TCP() / PAYLOAD),
        [20, 20 + 40, 20 + 40 + 8, 20 + 40 + 8 + 20],
        id="sll2-ipv6-frag-tcp",
    ),
    pytest.param(SLL, sll(0x0806) + raw(ARP()), [16], id="sll-arp"),
    pytest.param(
        NULL,
        struct.pack("<I", 30) + raw(IPv6(nh=51, **V6) / Raw(ext(6, 4, 24) + TCP_HDR)),
        [4, 4 + 40, 4 + 40 + 24, 4 + 40 + 24 + 20],
        id="null-ipv6-ah-tcp",
    ),
    pytest.param(
        LOOP, struct.pack(">I", 2) + raw(IP(frag=3, proto=6, **V4) / TCP_HDR), [4, 4 + 20], id="loop-later-fragment"
    ),
    pytest.param(RAW, raw(IP(**V4) / ICMP() / PAYLOAD), [20, 20 + 8], id="raw-ipv4-icmp"),
    pytest.param(IPV6, raw(IPv6(**V6) / ICMPv6EchoRequest() / PAYLOAD), [40, 40 + 8], id="ipv6-icmpv6"),
    pytest.param(RADIOTAP, radiotap(12), [12], id="radiotap"),
]


@pytest.mark.parametrize(("linktype", "data", "boundaries"), TRUNCATION_CASES)
def test_truncated_at_every_length(linktype: int, data: bytes, boundaries: list[int]) -> None:
    expected = [max([0, *(b for b in boundaries if b <= cut)]) for cut in range(len(data) + 1)]
    assert [header_length(linktype, data[:cut]) for cut in range(len(data) + 1)] == expected
    got = header_lengths(*batch([(linktype, data[:cut]) for cut in range(len(data) + 1)]))
    assert got.tolist() == expected


# --- vectorised == reference --------------------------------------------------------------------------------

LINKTYPES = [NULL, ETHERNET, 12, 14, RAW, LOOP, SLL, RADIOTAP, IPV4, IPV6, SLL2, 9, 105, 147, 274, 65535]
VALID = [(p.values[0], p.values[1]) for p in CASES + TRUNCATION_CASES if p.values[1]]

packets = st.lists(st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=96)), min_size=1, max_size=24)
prefixes = st.binary(min_size=1, max_size=9)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[int, bytes]:
    """A valid packet with some bytes overwritten, maybe truncated, rarely under another link type."""
    linktype, data = draw(st.sampled_from(VALID))
    buf = bytearray(data)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), max_size=4)):
        buf[pos] = value
    if draw(st.booleans()):
        del buf[draw(st.integers(0, len(buf))) :]
    if draw(st.integers(0, 9)) == 0:
        linktype = draw(st.sampled_from(LINKTYPES))
    return linktype, bytes(buf)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(items=packets, prefix=prefixes, suffix=st.binary(max_size=4))
def test_random_bytes_match_reference(items: list[tuple[int, bytes]], prefix: bytes, suffix: bytes) -> None:
    check_batch(items, prefix, suffix)


@SETTINGS
@given(items=st.lists(mutated(), min_size=1, max_size=24), prefix=prefixes, suffix=st.binary(max_size=4))
def test_mutated_packets_match_reference(items: list[tuple[int, bytes]], prefix: bytes, suffix: bytes) -> None:
    check_batch(items, prefix, suffix)


@SETTINGS
@given(linktype=st.sampled_from(LINKTYPES), items=st.lists(mutated(), min_size=1, max_size=24), prefix=prefixes)
def test_one_link_type_per_batch_matches_reference(
    linktype: int, items: list[tuple[int, bytes]], prefix: bytes
) -> None:
    check_batch([(linktype, d) for _, d in items], prefix)


def test_empty_batch() -> None:
    none = np.zeros(0, np.int64)
    got = header_lengths(np.zeros(0, np.uint16), np.zeros(0, np.uint8), none, none)
    assert got.dtype == np.uint16
    assert got.shape == (0,)
    assert link_directions(np.zeros(0, np.uint16), np.zeros(0, np.uint8), none, none).shape == (0,)


def test_empty_packets_only() -> None:
    lts = np.array([ETHERNET, RAW, SLL], dtype=np.uint16)
    got = header_lengths(lts, np.zeros(0, np.uint8), np.zeros(3, np.int64), np.zeros(3, np.int64))
    assert got.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("starts", "lengths"),
    [
        pytest.param([0, 10], [5, 11], id="past-buf"),
        pytest.param([-1, 5], [1, 1], id="negative-start"),
        pytest.param([0, 5], [3, -1], id="negative-length"),
        pytest.param([0], [5], id="wrong-count"),
    ],
)
def test_packets_outside_buf_rejected(starts: list[int], lengths: list[int]) -> None:
    args = (np.ones(2, np.uint16), np.zeros(20, np.uint8), np.array(starts, np.int64), np.array(lengths, np.int64))
    with pytest.raises(ValueError):
        header_lengths(*args)
    with pytest.raises(ValueError):
        link_directions(*args)


# --- link-layer direction -----------------------------------------------------------------------------------

DIRECTION_CASES = [
    pytest.param(SLL, sll(0x0800, 4) + IPV4_TCP, SEND, id="sll-outgoing"),
    pytest.param(SLL, sll(0x0800, 0) + IPV4_TCP, RECV, id="sll-host"),
    pytest.param(SLL, sll(0x0800, 1) + IPV4_TCP, RECV, id="sll-broadcast"),
    pytest.param(SLL, sll(0x0800, 2) + IPV4_TCP, RECV, id="sll-multicast"),
    pytest.param(SLL, sll(0x0800, 3) + IPV4_TCP, RECV, id="sll-otherhost"),
    pytest.param(SLL, sll(0x0800, 5) + IPV4_TCP, UNKNOWN, id="sll-loopback-type-5"),
    pytest.param(SLL, sll(0x0800, 0x0104) + IPV4_TCP, UNKNOWN, id="sll-type-0x0104"),
    pytest.param(SLL, b"\x00\x04", SEND, id="sll-2-bytes"),
    pytest.param(SLL, b"\x00", UNKNOWN, id="sll-1-byte"),
    pytest.param(SLL2, sll2(0x86DD, 4) + IPV6_UDP, SEND, id="sll2-outgoing"),
    pytest.param(SLL2, sll2(0x86DD, 0) + IPV6_UDP, RECV, id="sll2-host"),
    pytest.param(SLL2, sll2(0x86DD, 3) + IPV6_UDP, RECV, id="sll2-otherhost"),
    pytest.param(SLL2, sll2(0x86DD, 7) + IPV6_UDP, UNKNOWN, id="sll2-type-7"),
    pytest.param(SLL2, sll2(0x86DD, 4)[:11], SEND, id="sll2-11-bytes"),
    pytest.param(SLL2, sll2(0x86DD, 4)[:10], UNKNOWN, id="sll2-10-bytes"),
    pytest.param(ETHERNET, ETH_IPV4_TCP, UNKNOWN, id="ethernet"),
    pytest.param(ETHERNET, b"\x00\x04" + bytes(30), UNKNOWN, id="ethernet-looks-like-sll"),
    pytest.param(RAW, IPV4_TCP, UNKNOWN, id="raw"),
]


@pytest.mark.parametrize(("linktype", "data", "expected"), DIRECTION_CASES)
def test_link_direction(linktype: int, data: bytes, expected: int) -> None:
    assert link_direction(linktype, data) == expected
    got = link_directions(*batch([(linktype, data)]))
    assert got.dtype == np.int8
    assert got.tolist() == [expected]


@SETTINGS
@given(
    items=st.lists(
        st.tuples(st.sampled_from([SLL, SLL2, ETHERNET, RAW]), st.binary(max_size=24)), min_size=1, max_size=24
    ),
    prefix=prefixes,
)
def test_link_directions_match_reference(items: list[tuple[int, bytes]], prefix: bytes) -> None:
    got = link_directions(*batch(items, prefix))
    assert got.tolist() == [link_direction(lt, d) for lt, d in items]


# --- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linktype", "name"),
    [
        pytest.param(0, "NULL(0)", id="null"),
        pytest.param(1, "ETHERNET(1)", id="ethernet"),
        pytest.param(101, "RAW(101)", id="raw"),
        pytest.param(113, "LINUX_SLL(113)", id="sll"),
        pytest.param(127, "IEEE802_11_RADIOTAP(127)", id="radiotap"),
        pytest.param(147, "USER0(147)", id="user0"),
        pytest.param(162, "USER15(162)", id="user15"),
        pytest.param(228, "IPV4(228)", id="ipv4"),
        pytest.param(276, "LINUX_SLL2(276)", id="sll2"),
        pytest.param(290, "ETW(290)", id="etw"),
        pytest.param(301, "DECT_NR(301)", id="dect-nr"),
        pytest.param(12, "unknown(12)", id="bsd-raw-12"),
        pytest.param(9999, "unknown(9999)", id="unknown"),
    ],
)
def test_linktype_name(linktype: int, name: str) -> None:
    assert linktype_name(linktype) == name


def test_linktype_names_table() -> None:
    assert len(LINKTYPE_NAMES) >= 40
    assert len(set(LINKTYPE_NAMES.values())) == len(LINKTYPE_NAMES)
    assert all(name.isupper() or name[0].isupper() for name in LINKTYPE_NAMES.values())


@pytest.mark.parametrize("linktype", [0, 1, 12, 14, 101, 108, 113, 228, 229, 276])
def test_link_header_known(linktype: int) -> None:
    assert link_header_known(linktype)


@pytest.mark.parametrize("linktype", [2, 9, 105, 127, 147, 204, 274, 65535])
def test_link_header_not_known(linktype: int) -> None:
    assert not link_header_known(linktype)


# --- real captures ------------------------------------------------------------------------------------------

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds
    b"\xa1\xb2\x3c\x4d": ">",
}


def classic_pcaps() -> list[tuple[Path, int]]:
    """``(path, link type)`` of the corpus's classic pcap files whose link type the walk knows."""
    found = []
    for folder in ("dpkt", "pcapplusplus"):
        for path in sorted((CORPUS / "pcap" / folder).glob("*.pcap")):
            with path.open("rb") as f:
                head = f.read(24)
            if len(head) < 24 or head[:4] not in PCAP_MAGICS:
                continue
            linktype = struct.unpack(PCAP_MAGICS[head[:4]] + "I", head[20:24])[0] & 0xFFFF  # high bits: FCS info
            if link_header_known(linktype):
                found.append((path, linktype))
    return found


def read_records(path: Path) -> list[bytes]:
    """The captured bytes of every whole record, up to the first damaged record header or cut-off data (a
    damaged capture still gives its whole records, as the importer salvages them)."""
    data = path.read_bytes()
    order = PCAP_MAGICS[data[:4]]
    records, pos = [], 24
    while pos + 16 <= len(data):
        incl_len = struct.unpack_from(order + "I", data, pos + 8)[0]
        if pos + 16 + incl_len > len(data):
            break
        records.append(data[pos + 16 : pos + 16 + incl_len])
        pos += 16 + incl_len
    return records


@pytest.mark.parametrize(
    ("path", "linktype"),
    [pytest.param(path, lt, id=f"{path.parent.name}/{path.name}") for path, lt in classic_pcaps()],
)
def test_corpus_capture_matches_reference(path: Path, linktype: int) -> None:
    records = read_records(path)
    assert records, f"{path.name}: no whole record"
    check_batch([(linktype, r) for r in records])


def test_corpus_walk_reaches_l4() -> None:
    """Guards against a walk that agrees with the reference by stopping early everywhere: most packets of the
    Ethernet captures are TCP or UDP over IP, so most header lengths reach past L2 + 20 bytes of IPv4."""
    lengths = [
        header_length(ETHERNET, r)
        for path, linktype in classic_pcaps()
        if linktype == ETHERNET
        for r in read_records(path)
    ]
    assert lengths, f"no Ethernet captures under {CORPUS}: the corpus is missing"
    assert sum(h > 14 + 20 for h in lengths) > 0.8 * len(lengths)
