"""Per-packet header length and link-layer direction, for every link type a capture can declare.

``header_len`` contract
-----------------------
``header_len`` is the number of bytes of L2 + L3 + L4 headers at the start of a captured packet: the "header"
part of a header/payload split send. The walk goes layer by layer and a layer counts only if its *whole* header
lies inside the captured bytes; otherwise the walk stops at the end of the previous complete layer. So
``header_len`` is always a layer boundary and never exceeds the captured length. A malformed value (IPv4 IHL
< 5, TCP data offset < 5, an IP version nibble that disagrees with the link header, an IPv6 extension header
running past the capture) also stops the walk at the previous layer.

L2 (link header), by LINKTYPE_ number:

* ETHERNET (1): 14 bytes, ethertype at offset 12. While the ethertype is 0x8100, 0x88A8 or 0x9100 (802.1Q,
  802.1ad, old QinQ), 4 bytes more and the next ethertype is read; at most 4 tags, and a tag counts only if its
  4 bytes and the 2-byte ethertype after it are captured. An ethertype < 0x0600 is an 802.3 length: L2 only.
* LINUX_SLL (113): 16 bytes, protocol at 14. LINUX_SLL2 (276): 20 bytes, protocol at 0.
* NULL (0): 4 bytes, an address family in the capturing host's byte order (both orders are accepted);
  LOOP (108): the same, always big-endian. 2 is IPv4; 10, 24, 28 and 30 are IPv6 (Linux, the BSDs, macOS).
* RAW (101), and 12 and 14 (DLT_RAW as some BSDs wrote it into old files): no link header, the IP version
  nibble picks IPv4 or IPv6. IPV4 (228) and IPV6 (229): no link header, the link type picks.
* IEEE802_11_RADIOTAP (127): the radiotap header only (``it_len``, u16 little-endian at offset 2); 802.11 is
  not walked.
* Any other link type: 0; the link header's length is not known here.

L3: IPv4 (ethertype 0x0800) is IHL * 4 bytes; a non-first fragment (fragment offset != 0) has no L4 header, so
the walk stops after L3. IPv6 (0x86DD) is 40 bytes, then extension headers (hop-by-hop, routing, destination
options, mobility: ``(len + 1) * 8``; fragment: 8, and a non-first fragment stops the walk after it; AH:
``(len + 2) * 4``; no-next-header stops), at most 8 of them. Any other ethertype (ARP, ...): L2 only.

L4: TCP is its data offset * 4 bytes; UDP, UDP-Lite, ICMP and ICMPv6 are 8; SCTP's common header is 12. Any
other protocol: the walk stops after L3.

:func:`header_length` is the readable reference for one packet; :func:`header_lengths` is the vectorised
version the importers use and gives exactly the same numbers.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

# LINKTYPE_* values as listed at https://www.tcpdump.org/linktypes.html (and libpcap's pcap-common.c).
LINKTYPE_NAMES: Final[dict[int, str]] = {
    0: "NULL",
    1: "ETHERNET",
    2: "EXP_ETHERNET",
    3: "AX25",
    4: "PRONET",
    5: "CHAOS",
    6: "IEEE802_5",
    7: "ARCNET_BSD",
    8: "SLIP",
    9: "PPP",
    10: "FDDI",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    99: "SYMANTEC_FIREWALL",
    100: "ATM_RFC1483",
    101: "RAW",
    102: "SLIP_BSDOS",
    103: "PPP_BSDOS",
    104: "C_HDLC",
    105: "IEEE802_11",
    106: "ATM_CLIP",
    107: "FRELAY",
    108: "LOOP",
    109: "ENC",
    113: "LINUX_SLL",
    114: "LTALK",
    115: "ECONET",
    116: "IPFILTER",
    117: "PFLOG",
    118: "CISCO_IOS",
    119: "IEEE802_11_PRISM",
    120: "IEEE802_11_AIRONET",
    122: "IP_OVER_FC",
    123: "SUNATM",
    127: "IEEE802_11_RADIOTAP",
    128: "TZSP",
    129: "ARCNET_LINUX",
    138: "APPLE_IP_OVER_IEEE1394",
    139: "MTP2_WITH_PHDR",
    140: "MTP2",
    141: "MTP3",
    142: "SCCP",
    143: "DOCSIS",
    144: "LINUX_IRDA",
    **{147 + i: f"USER{i}" for i in range(16)},
    163: "IEEE802_11_AVS",
    165: "BACNET_MS_TP",
    166: "PPP_PPPD",
    169: "GPRS_LLC",
    170: "GPF_T",
    171: "GPF_F",
    177: "LINUX_LAPD",
    182: "MFR",
    187: "BLUETOOTH_HCI_H4",
    189: "USB_LINUX",
    192: "PPI",
    195: "IEEE802_15_4_WITHFCS",
    196: "SITA",
    197: "ERF",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    202: "AX25_KISS",
    203: "LAPD",
    204: "PPP_WITH_DIR",
    205: "C_HDLC_WITH_DIR",
    206: "FRELAY_WITH_DIR",
    207: "LAPB_WITH_DIR",
    209: "IPMB_LINUX",
    210: "FLEXRAY",
    212: "LIN",
    215: "IEEE802_15_4_NONASK_PHY",
    220: "USB_LINUX_MMAPPED",
    224: "FC_2",
    225: "FC_2_WITH_FRAME_DELIMS",
    226: "IPNET",
    227: "CAN_SOCKETCAN",
    228: "IPV4",
    229: "IPV6",
    230: "IEEE802_15_4_NOFCS",
    231: "DBUS",
    235: "DVB_CI",
    236: "MUX27010",
    237: "STANAG_5066_D_PDU",
    239: "NFLOG",
    240: "NETANALYZER",
    241: "NETANALYZER_TRANSPARENT",
    242: "IPOIB",
    243: "MPEG_2_TS",
    244: "NG40",
    245: "NFC_LLCP",
    247: "INFINIBAND",
    248: "SCTP",
    249: "USBPCAP",
    250: "RTAC_SERIAL",
    251: "BLUETOOTH_LE_LL",
    252: "WIRESHARK_UPPER_PDU",
    253: "NETLINK",
    254: "BLUETOOTH_LINUX_MONITOR",
    255: "BLUETOOTH_BREDR_BB",
    256: "BLUETOOTH_LE_LL_WITH_PHDR",
    257: "PROFIBUS_DL",
    258: "PKTAP",
    259: "EPON",
    260: "IPMI_HPM_2",
    261: "ZWAVE_R1_R2",
    262: "ZWAVE_R3",
    263: "WATTSTOPPER_DLM",
    264: "ISO_14443",
    265: "RDS",
    266: "USB_DARWIN",
    268: "SDLC",
    270: "LORATAP",
    271: "VSOCK",
    272: "NORDIC_BLE",
    273: "DOCSIS31_XRA31",
    274: "ETHERNET_MPACKET",
    275: "DISPLAYPORT_AUX",
    276: "LINUX_SLL2",
    277: "SERCOS_MONITOR",
    278: "OPENVIZSLA",
    279: "EBHSCR",
    280: "VPP_DISPATCH",
    281: "DSA_TAG_BRCM",
    282: "DSA_TAG_BRCM_PREPEND",
    283: "IEEE802_15_4_TAP",
    284: "DSA_TAG_DSA",
    285: "DSA_TAG_EDSA",
    286: "ELEE",
    287: "Z_WAVE_SERIAL",
    288: "USB_2_0",
    289: "ATSC_ALP",
    290: "ETW",
    291: "NETANALYZER_NG",
    292: "ZBOSS_NCP",
    293: "USB_2_0_LOW_SPEED",
    294: "USB_2_0_FULL_SPEED",
    295: "USB_2_0_HIGH_SPEED",
    296: "AUERSWALD_LOG",
    297: "ZWAVE_TAP",
    298: "SILABS_DEBUG_CHANNEL",
    299: "FIRA_UCI",
    300: "MDB",
    301: "DECT_NR",
}

# Link types by number, for the walk.
_NULL, _ETHERNET, _RAW, _LOOP, _SLL, _RADIOTAP, _IPV4, _IPV6, _SLL2 = 0, 1, 101, 108, 113, 127, 228, 229, 276
_RAW_BSD: Final = (12, 14)  # DLT_RAW as written by some BSDs into old files
_WALKED: Final = frozenset({_NULL, _ETHERNET, *_RAW_BSD, _RAW, _LOOP, _SLL, _IPV4, _IPV6, _SLL2})

# L3 family codes used inside the walk.
_NONE, _FAM4, _FAM6 = 0, 4, 6

_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_VLAN_TPIDS: Final = (0x8100, 0x88A8, 0x9100)
_MAX_VLAN_TAGS = 4
_AF_INET = 2
_AF_INET6: Final = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS

# IPv6 extension headers by next-header value.
_EXT_LEN8: Final = (0, 43, 60, 135)  # hop-by-hop, routing, destination options, mobility: (len + 1) * 8 bytes
_EXT_FRAG, _EXT_AH, _NO_NEXT = 44, 51, 59
_MAX_EXT_HEADERS = 8  # bounds the work on hostile input; real packets carry far fewer

_TCP = 6
_L4_FIXED: Final[dict[int, int]] = {17: 8, 136: 8, 1: 8, 58: 8, 132: 12}  # UDP, UDP-Lite, ICMP, ICMPv6, SCTP

# Direction codes, in the order of trace.DIRECTIONS.
_SEND, _RECV, _UNKNOWN = 0, 1, 2
_PACKET_OUTGOING = 4  # sll_pkttype; 0..3 are HOST, BROADCAST, MULTICAST, OTHERHOST: all received

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ByteArray = npt.NDArray[np.uint8]
Selection = slice | npt.NDArray[np.intp]


def linktype_name(linktype: int) -> str:
    """``"ETHERNET(1)"``; ``"unknown(N)"`` for a number not in :data:`LINKTYPE_NAMES`."""
    return f"{LINKTYPE_NAMES.get(linktype, 'unknown')}({linktype})"


def link_header_known(linktype: int) -> bool:
    """True for the link types whose headers the walk follows into L3 and L4."""
    return linktype in _WALKED


# --- the reference walk, one packet ----------------------------------------------------------------------


def _u16be(data: bytes, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _family_of_ethertype(ethertype: int) -> int:
    if ethertype == _ETH_IPV4:
        return _FAM4
    if ethertype == _ETH_IPV6:
        return _FAM6
    return _NONE


def _family_of_af(value: int) -> int:
    if value == _AF_INET:
        return _FAM4
    if value in _AF_INET6:
        return _FAM6
    return _NONE


def _link_header(linktype: int, data: bytes) -> tuple[int, int]:
    """``(end of the link header, L3 family)``; the family is ``_NONE`` when the walk stops at L2."""
    cap = len(data)
    if linktype == _ETHERNET:
        if cap < 14:
            return 0, _NONE
        ethertype, end = _u16be(data, 12), 14
        for _ in range(_MAX_VLAN_TAGS):
            if ethertype not in _VLAN_TPIDS:
                break
            if end + 4 > cap:
                return end, _NONE
            ethertype, end = _u16be(data, end + 2), end + 4
        return end, _family_of_ethertype(ethertype)
    if linktype == _SLL:
        return (16, _family_of_ethertype(_u16be(data, 14))) if cap >= 16 else (0, _NONE)
    if linktype == _SLL2:
        return (20, _family_of_ethertype(_u16be(data, 0))) if cap >= 20 else (0, _NONE)
    if linktype == _NULL:
        if cap < 4:
            return 0, _NONE
        family = _family_of_af(int.from_bytes(data[:4], "little"))
        return 4, family if family != _NONE else _family_of_af(int.from_bytes(data[:4], "big"))
    if linktype == _LOOP:
        return (4, _family_of_af(int.from_bytes(data[:4], "big"))) if cap >= 4 else (0, _NONE)
    if linktype == _RAW or linktype in _RAW_BSD:
        version = data[0] >> 4 if cap else 0
        return 0, _FAM4 if version == 4 else _FAM6 if version == 6 else _NONE
    if linktype == _IPV4:
        return 0, _FAM4
    if linktype == _IPV6:
        return 0, _FAM6
    if linktype == _RADIOTAP:
        # it_len covers the radiotap header itself (8 bytes minimum: version, pad, it_len, it_present)
        it_len = data[2] | (data[3] << 8) if cap >= 4 else 0
        return (it_len if 8 <= it_len <= cap else 0), _NONE
    return 0, _NONE


def header_length(linktype: int, data: bytes) -> int:
    """Bytes of L2 + L3 + L4 headers at the start of ``data`` (see the module docstring for the rules).

    The readable reference implementation, one packet at a time; :func:`header_lengths` must agree with it.
    """
    cap = len(data)
    end, family = _link_header(linktype, data)
    if family == _FAM4:
        if end + 20 > cap:
            return end
        ihl = data[end] & 0x0F
        if data[end] >> 4 != 4 or ihl < 5 or end + ihl * 4 > cap:
            return end
        if _u16be(data, end + 6) & 0x1FFF:  # non-first fragment: what follows is not an L4 header
            return end + ihl * 4
        proto, end = data[end + 9], end + ihl * 4
    elif family == _FAM6:
        if end + 40 > cap or data[end] >> 4 != 6:
            return end
        proto, end = data[end + 6], end + 40
        for _ in range(_MAX_EXT_HEADERS):
            if proto in _EXT_LEN8:
                size = (data[end + 1] + 1) * 8 if end + 2 <= cap else cap + 1
            elif proto == _EXT_FRAG:
                size = 8
            elif proto == _EXT_AH:
                size = (data[end + 1] + 2) * 4 if end + 2 <= cap else cap + 1
            else:
                break
            if end + size > cap:
                return end
            if proto == _EXT_FRAG and _u16be(data, end + 2) >> 3:  # non-first fragment
                return end + size
            proto, end = data[end], end + size
    else:
        return end
    if proto == _TCP:
        size = (data[end + 12] >> 4) * 4 if end + 20 <= cap else 0
        return end + size if size >= 20 and end + size <= cap else end
    size = _L4_FIXED.get(proto, 0)  # 0 also covers no-next-header and any extension header left unwalked
    return end + size if size and end + size <= cap else end


def link_direction(linktype: int, data: bytes) -> int:
    """Direction code (0 send, 1 recv, 2 unknown) the link header of one packet states; reference for
    :func:`link_directions`. Only the Linux cooked headers carry one; the packet-type field must be captured."""
    if linktype == _SLL and len(data) >= 2:
        pkttype = _u16be(data, 0)
    elif linktype == _SLL2 and len(data) >= 11:
        pkttype = data[10]
    else:
        return _UNKNOWN
    if pkttype == _PACKET_OUTGOING:
        return _SEND
    return _RECV if pkttype < _PACKET_OUTGOING else _UNKNOWN


# --- the vectorised walk ---------------------------------------------------------------------------------


class _Bytes:
    """Reads bytes at per-packet positions; positions past a packet's end read garbage, so callers mask."""

    def __init__(self, buf: ByteArray) -> None:
        self.buf = buf

    def u8(self, at: IntArray) -> IntArray:
        # mode="clip" keeps a read past the end of buf in bounds; such reads are always masked out
        return self.buf.take(at, mode="clip").astype(np.int64)

    def u16be(self, at: IntArray) -> IntArray:
        hi = self.buf.take(at, mode="clip").astype(np.int64)
        hi <<= 8
        hi |= self.buf.take(at + 1, mode="clip")
        return hi


def _select(mask: BoolArray) -> Selection:
    """The packets where ``mask`` holds, as a cheap full slice when that is all of them."""
    return slice(None) if mask.all() else np.flatnonzero(mask)


def _family_of_ethertypes(ethertype: IntArray, ok: BoolArray) -> IntArray:
    family = np.where(ethertype == _ETH_IPV4, _FAM4, _NONE)
    family[ethertype == _ETH_IPV6] = _FAM6
    family[~ok] = _NONE
    return family


def _family_of_afs(value: IntArray) -> IntArray:
    family = np.where(value == _AF_INET, _FAM4, _NONE)
    family[np.isin(value, _AF_INET6)] = _FAM6
    return family


def _link_headers(
    linktype: int, rd: _Bytes, start: IntArray, cap: IntArray
) -> tuple[IntArray, IntArray] | tuple[int, IntArray]:
    """Vectorised :func:`_link_header` for packets of one link type: ``(end, family)``."""
    n = len(start)
    none = np.zeros(n, dtype=np.int64)
    if linktype == _ETHERNET:
        ok = cap >= 14
        ethertype = rd.u16be(start + 12)
        end = np.where(ok, 14, 0)
        tagged = np.flatnonzero(ok & np.isin(ethertype, _VLAN_TPIDS))
        for _ in range(_MAX_VLAN_TAGS):
            if not len(tagged):
                break
            t_end = end[tagged]
            fits = t_end + 4 <= cap[tagged]
            ok[tagged[~fits]] = False
            tagged, t_end = tagged[fits], t_end[fits]
            next_type = rd.u16be(start[tagged] + t_end + 2)
            ethertype[tagged] = next_type
            end[tagged] = t_end + 4
            tagged = tagged[np.isin(next_type, _VLAN_TPIDS)]
        return end, _family_of_ethertypes(ethertype, ok)
    if linktype == _SLL:
        ok = cap >= 16
        return np.where(ok, 16, 0), _family_of_ethertypes(rd.u16be(start + 14), ok)
    if linktype == _SLL2:
        ok = cap >= 20
        return np.where(ok, 20, 0), _family_of_ethertypes(rd.u16be(start), ok)
    if linktype in (_NULL, _LOOP):
        ok = cap >= 4
        big = rd.u16be(start) << 16 | rd.u16be(start + 2)
        family = _family_of_afs(big)
        if linktype == _NULL:
            little = (
                rd.u8(start) | rd.u8(start + 1) << 8 | rd.u8(start + 2) << 16 | rd.u8(start + 3) << 24
            )  # host byte order of a little-endian capturer
            little_family = _family_of_afs(little)
            family = np.where(little_family != _NONE, little_family, family)
        family[~ok] = _NONE
        return np.where(ok, 4, 0), family
    if linktype == _RAW or linktype in _RAW_BSD:
        version = rd.u8(start) >> 4
        family = np.where(version == 4, _FAM4, _NONE)
        family[version == 6] = _FAM6
        family[cap < 1] = _NONE
        return 0, family
    if linktype in (_IPV4, _IPV6):
        return 0, np.full(n, _FAM4 if linktype == _IPV4 else _FAM6, dtype=np.int64)
    if linktype == _RADIOTAP:
        it_len = rd.u8(start + 2) | rd.u8(start + 3) << 8
        return np.where((cap >= 4) & (it_len >= 8) & (it_len <= cap), it_len, 0), none
    return 0, none


def _ipv6_extension_headers(
    rd: _Bytes, start: IntArray, cap: IntArray, end: IntArray, proto: IntArray, is6: BoolArray
) -> None:
    """Walk the extension headers of the IPv6 packets ``is6`` in place: ``end`` moves past each complete one,
    ``proto`` becomes the next header, or -1 where the walk stops. Each round handles, all at once, the packets
    still in an extension header."""
    walking = np.flatnonzero(is6 & np.isin(proto, (*_EXT_LEN8, _EXT_FRAG, _EXT_AH)))
    for _ in range(_MAX_EXT_HEADERS):
        if not len(walking):
            return
        at, nh = start[walking] + end[walking], proto[walking]
        length_field = rd.u8(at + 1)
        size = np.where(np.isin(nh, _EXT_LEN8), (length_field + 1) * 8, (length_field + 2) * 4)
        size[nh == _EXT_FRAG] = 8
        fits = end[walking] + size <= cap[walking]
        later_fragment = (nh == _EXT_FRAG) & (rd.u16be(at + 2) >> 3 != 0)
        next_header = np.where(fits & ~later_fragment, rd.u8(at), -1)
        end[walking] += np.where(fits, size, 0)
        proto[walking] = next_header
        walking = walking[np.isin(next_header, (*_EXT_LEN8, _EXT_FRAG, _EXT_AH))]


def _packet_ranges(
    caller: str, lt: np.ndarray, data: ByteArray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[IntArray, IntArray]:
    """``(start, cap)`` as int64, after checking that every packet lies inside ``data``."""
    start = np.asarray(starts, dtype=np.int64).reshape(-1)
    cap = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if not (len(lt) == len(start) == len(cap)):
        raise ValueError(f"{caller}: {len(lt)} link types, {len(start)} starts and {len(cap)} lengths")
    if len(start) and ((start < 0).any() or (cap < 0).any() or (start + cap > len(data)).any()):
        raise ValueError(f"{caller}: every packet must lie inside buf")
    return start, cap


def header_lengths(linktypes: np.ndarray, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """:func:`header_length` for many packets at once, vectorised with numpy.

    ``linktypes`` (n,) gives each packet's link type (they may differ); packet ``i`` is
    ``buf[starts[i]:starts[i] + lengths[i]]`` of the uint8 array ``buf`` (packets may sit anywhere in ``buf``,
    with gaps between them, as in a pcap or pcapng chunk). Returns uint16 (n,), equal to :func:`header_length`
    on every packet. Each layer is one set of array operations over all packets; the VLAN-tag and IPv6
    extension-header loops run a bounded number of rounds over the packets still in them.
    """
    lt = np.asarray(linktypes)
    data: ByteArray = np.asarray(buf, dtype=np.uint8).reshape(-1)
    start, cap = _packet_ranges("header_lengths", lt, data, starts, lengths)
    n = len(start)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    if len(data) == 0:
        return np.zeros(n, dtype=np.uint16)
    rd = _Bytes(data)

    # L2, per link type present
    end = np.zeros(n, dtype=np.int64)
    family = np.zeros(n, dtype=np.int64)
    first = int(lt[0])
    if (lt == first).all():
        groups: list[tuple[int, Selection]] = [(first, slice(None))]
    else:
        counts = np.bincount(lt.astype(np.intp))
        groups = [(int(t), np.flatnonzero(lt == t)) for t in np.flatnonzero(counts)]
    for linktype, sel in groups:
        end[sel], family[sel] = _link_headers(linktype, rd, start[sel], cap[sel])

    proto = np.full(n, -1, dtype=np.int64)  # the L4 protocol to walk next; -1 where the walk has stopped

    # L3: IPv4
    is4 = family == _FAM4
    if is4.any():
        sel = _select(is4)
        s_start, s_end, s_cap = start[sel], end[sel], cap[sel]
        at = s_start + s_end
        b0 = rd.u8(at)
        size = (b0 & 0x0F) * 4
        ok = (s_end + 20 <= s_cap) & (b0 >> 4 == 4) & (size >= 20) & (s_end + size <= s_cap)
        first_fragment = rd.u16be(at + 6) & 0x1FFF == 0
        end[sel] = np.where(ok, s_end + size, s_end)
        proto[sel] = np.where(ok & first_fragment, rd.u8(at + 9), -1)

    # L3: IPv6 and its extension headers
    is6 = family == _FAM6
    if is6.any():
        sel = _select(is6)
        s_start, s_end, s_cap = start[sel], end[sel], cap[sel]
        at = s_start + s_end
        ok = (s_end + 40 <= s_cap) & (rd.u8(at) >> 4 == 6)
        end[sel] = np.where(ok, s_end + 40, s_end)
        proto[sel] = np.where(ok, rd.u8(at + 6), -1)
        _ipv6_extension_headers(rd, start, cap, end, proto, is6)

    # L4
    size_of = np.zeros(257, dtype=np.int64)  # index proto + 1, so -1 (stopped) maps to 0
    for p, size4 in _L4_FIXED.items():
        size_of[p + 1] = size4
    size = size_of[proto + 1]
    is_tcp = proto == _TCP
    if is_tcp.any():
        sel = _select(is_tcp)
        tcp_size = (rd.u8(start[sel] + end[sel] + 12) >> 4) * 4
        size[sel] = np.where(tcp_size >= 20, tcp_size, 0)  # data offset < 5 is malformed
    end += np.where((size > 0) & (end + size <= cap), size, 0)
    return end.astype(np.uint16)


def link_directions(linktypes: np.ndarray, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Direction codes (int8: 0 send, 1 recv, 2 unknown) as the link header states them, per packet.

    Packets are given as in :func:`header_lengths`. LINUX_SLL: the packet type (u16 big-endian at offset 0);
    LINUX_SLL2: the packet type (u8 at offset 10). PACKET_OUTGOING (4) is a send, 0-3 (to us, broadcast,
    multicast, to another host) are receives; any other value, any other link type, or a packet too short to
    hold the field is unknown.
    """
    lt = np.asarray(linktypes)
    data: ByteArray = np.asarray(buf, dtype=np.uint8).reshape(-1)
    start, cap = _packet_ranges("link_directions", lt, data, starts, lengths)
    out = np.full(len(start), _UNKNOWN, dtype=np.int8)
    if len(start) == 0 or len(data) == 0:
        return out
    rd = _Bytes(data)
    for linktype, field_end in ((_SLL, 2), (_SLL2, 11)):
        sel = np.flatnonzero((lt == linktype) & (cap >= field_end))
        if not len(sel):
            continue
        pkttype = rd.u16be(start[sel]) if linktype == _SLL else rd.u8(start[sel] + 10)
        code = np.where(pkttype < _PACKET_OUTGOING, _RECV, _UNKNOWN)
        code[pkttype == _PACKET_OUTGOING] = _SEND
        out[sel] = code
    return out
