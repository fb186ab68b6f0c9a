"""Make the project's sample traces: small, deterministic captures of hand-built Ethernet frames.

Three traces, each written as a nanosecond pcap (no direction) and a nanosecond pcapng whose Enhanced Packet
Blocks carry ``epb_flags`` (outbound = ``send``, inbound = ``recv``), as seen from the capturing host
("Ethernet0"):

``bulk_tcp``
    one TCP connection pushing full-size (1514-byte) segments out in back-to-back bursts, delayed ACKs coming
    back; handshake and FIN;
``request_response``
    the host as an HTTP/1.1 server: small requests in, responses of 1-20 segments out, over four IPv4 and IPv6
    connections (some 802.1Q-tagged), plus DNS lookups of its own over UDP;
``small_packets``
    a fixed-rate (1 kHz) UDP telemetry stream of 60-128-byte frames, all sent: the single-packet case.

Two ETW samples, made with the package's own ETL writer:

``request_response.etl``
    the first 400 ``request_response`` frames as ``netsh trace start capture=yes`` logs them (NDIS-PacketCapture event
    1001, direction in the SendPath/ReceivePath keywords, QPC at 10 MHz so times fall to 100 ns): sends logged
    on CPU 0, receives on CPU 1 (per-CPU buffers, so file order is not time order), every frame at the layer
    directly above the miniport (IfIndex 12) and every sent frame once more at a filter layer above it
    (LowerIfIndex 18), as a real trace shows each frame once per layer;
``driver_sends.etl``, ``driver_sends.csv``, ``driver_sends.toml``
    a driver's own TraceLogging send/complete events (``MiniportSendNetBufferLists`` with NBL pointer, length
    and send-call id; ``NdisMSendNetBufferListsComplete`` with the NBL pointer) for the first 1,000
    ``small_packets`` frames sent in calls of 1-4 NBLs from a pool of 64 NBLs, completed 4-60 µs later; the
    same events as a ``tracerpt -of CSV`` export; and the event map that reads both.

Every frame is correct on the wire: IPv4 header checksums, TCP/UDP checksums over the pseudo-header, sequence
and acknowledgement numbers that follow the byte stream, received frames padded to the 60-byte Ethernet
minimum (sent ones are captured before the NIC pads them). A fixed seed and a fixed base time make every run
byte-identical. Only the standard library and this package's writers are used (``make samples`` runs it with
the runtime dependencies alone).

Run ``python sample_traces/make_samples.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# mypy cannot follow setuptools' editable-install finder for the remapped package (see tests/test_static.py),
# so from this script's folder ndis_replay is untyped; unused-ignore keeps it quiet where mypy does find it.
from ndis_replay.importers.pcap import write_pcap  # type: ignore[import-not-found, unused-ignore]
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng  # type: ignore[import-not-found, unused-ignore]

SEED = 20240312
#: 2024-03-12 09:00:00 UTC, in ns since the Unix epoch: every trace starts here.
BASE_NS = 1_710_234_000 * 1_000_000_000

#: Sizes chosen to keep all six files together under ~4 MB (the repository carries them). Full-size frames
#: dominate: each costs ~1.5 kB in the pcap and again in the pcapng.
BULK_SEGMENTS = 480
REQUESTS = 300
DNS_LOOKUPS = 24
TELEMETRY_PACKETS = 3000

ETH_IPV4, ETH_IPV6, ETH_VLAN = 0x0800, 0x86DD, 0x8100
PROTO_TCP, PROTO_UDP = 6, 17
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
ETH_MIN = 60  # minimum Ethernet frame without the FCS, in bytes
#: Time one byte takes on 1 Gb/s Ethernet, in ns; a frame also costs 20 bytes of preamble and inter-frame gap.
NS_PER_BYTE = 8
WIRE_OVERHEAD = 20

HOST_MAC = bytes.fromhex("00155d0a0a0a")  # the capturing host (Hyper-V OUI)
PEER_MAC = bytes.fromhex("0050569e2c41")  # its next hop: a switch-routed peer (VMware OUI)

Packet = tuple[int, bool, bytes]  # (ts_ns, outbound, frame)


# --- checksums and headers ------------------------------------------------------------------------------------


def ones_sum(data: bytes) -> int:
    """Ones'-complement sum of the 16-bit big-endian words of ``data`` (RFC 1071), modulo 0xFFFF.

    2**16 ≡ 1 (mod 0xFFFF), so the whole buffer read as one big-endian integer is congruent to the sum of its
    words, end-around carries included. Sums of pieces add up as long as each piece starts at an even offset.
    """
    if len(data) % 2:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF


def checksum(*parts: bytes) -> int:
    """The Internet checksum of the concatenated ``parts`` (each but the last of even length)."""
    total = sum(ones_sum(p) for p in parts) % 0xFFFF
    # mod 0xFFFF yields 0 where ones'-complement addition of non-zero data yields 0xFFFF ("negative zero")
    return ~(total or 0xFFFF) & 0xFFFF


def ipv4_header(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int, ttl: int) -> bytes:
    """A 20-byte IPv4 header (DF set, no options) with its header checksum."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def ipv6_header(src: bytes, dst: bytes, next_header: int, payload_len: int, hop_limit: int, flow: int) -> bytes:
    """A 40-byte IPv6 header (traffic class 0)."""
    return struct.pack("!IHBB16s16s", (6 << 28) | (flow & 0xFFFFF), payload_len, next_header, hop_limit, src, dst)


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The IPv4 (RFC 793) or IPv6 (RFC 8200 §8.1) pseudo-header of the TCP/UDP checksum."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def tcp_segment(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes = b"",
    options: bytes = b"",
) -> bytes:
    """A TCP header (plus ``options``, a multiple of 4 bytes) and payload, with the checksum filled in."""
    offset = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset << 4, flags, window, 0, 0)
    hdr += options
    csum = checksum(pseudo_header(src, dst, PROTO_TCP, len(hdr) + len(payload)), hdr, payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header and payload with the checksum filled in (a computed 0 is sent as 0xFFFF, RFC 768)."""
    length = 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo_header(src, dst, PROTO_UDP, length), hdr, payload) or 0xFFFF
    return hdr[:6] + struct.pack("!H", csum) + payload


def syn_options(mss: int, wscale: int) -> bytes:
    """MSS, NOP, window scale, NOP, NOP, SACK permitted: 12 bytes, as Windows and Linux send them."""
    return struct.pack("!BBH", 2, 4, mss) + b"\x01" + struct.pack("!BBB", 3, 3, wscale) + b"\x01\x01\x04\x02"


@dataclass
class Link:
    """Both ends of a conversation as seen by the capturing host: addresses, VLAN tag, IP ident counters."""

    host_ip: bytes
    peer_ip: bytes
    vlan: int | None = None  # 802.1Q VLAN id carried on this conversation's frames
    flow_label: int = 0  # IPv6 flow label, both directions
    host_ttl: int = 128  # Windows default
    peer_ttl: int = 64  # Linux default
    host_ident: int = 0
    peer_ident: int = 0

    @property
    def v6(self) -> bool:
        return len(self.host_ip) == 16

    def frame(self, outbound: bool, proto: int, l4: bytes) -> bytes:
        """An Ethernet frame carrying ``l4`` in IPv4/IPv6 from host to peer (``outbound``) or back."""
        src, dst = (self.host_ip, self.peer_ip) if outbound else (self.peer_ip, self.host_ip)
        if self.v6:
            ip = ipv6_header(src, dst, proto, len(l4), self.host_ttl if outbound else self.peer_ttl, self.flow_label)
            ethertype = ETH_IPV6
        else:
            if outbound:
                self.host_ident += 1
                ident = self.host_ident
            else:
                self.peer_ident += 1
                ident = self.peer_ident
            ip = ipv4_header(src, dst, proto, len(l4), ident, self.host_ttl if outbound else self.peer_ttl)
            ethertype = ETH_IPV4
        macs = PEER_MAC + HOST_MAC if not outbound else HOST_MAC + PEER_MAC
        if self.vlan is None:
            l2 = macs + struct.pack("!H", ethertype)
        else:
            l2 = macs + struct.pack("!HHH", ETH_VLAN, self.vlan, ethertype)  # priority 0, DEI 0
        frame = l2 + ip + l4
        if not outbound and len(frame) < ETH_MIN:
            frame += b"\x00" * (ETH_MIN - len(frame))  # the sender's NIC padded it; the capture sees the padding
        return frame


@dataclass
class TcpConn:
    """One TCP connection; ``host_next`` / ``peer_next`` are the next sequence numbers of each side."""

    link: Link
    host_port: int
    peer_port: int
    host_next: int
    peer_next: int
    host_window: int = 1026  # × 2**8 (window scale 8): Windows' usual ~256 KiB
    peer_window: int = 2053  # × 2**7 (window scale 7): Linux's usual ~256 KiB

    @property
    def mss(self) -> int:
        """Largest payload of a 1514-byte frame: 1460 over IPv4, 1440 over IPv6."""
        return 1440 if self.link.v6 else 1460

    def out(self, flags: int, payload: bytes = b"", options: bytes = b"", ack: int | None = None) -> bytes:
        """A segment from the host; advances ``host_next`` by the payload (and SYN/FIN)."""
        link = self.link
        seg = tcp_segment(
            link.host_ip,
            link.peer_ip,
            self.host_port,
            self.peer_port,
            self.host_next,
            self.peer_next if ack is None else ack,
            flags,
            self.host_window,
            payload,
            options,
        )
        self.host_next += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return link.frame(True, PROTO_TCP, seg)

    def inb(self, flags: int, payload: bytes = b"", options: bytes = b"", ack: int | None = None) -> bytes:
        """A segment from the peer; ``ack`` defaults to everything the host has sent so far."""
        link = self.link
        seg = tcp_segment(
            link.peer_ip,
            link.host_ip,
            self.peer_port,
            self.host_port,
            self.peer_next,
            self.host_next if ack is None else ack,
            flags,
            self.peer_window,
            payload,
            options,
        )
        self.peer_next += len(payload) + (1 if flags & (SYN | FIN) else 0)
        return link.frame(False, PROTO_TCP, seg)


def frame_gap_ns(frame_len: int, rng: random.Random) -> int:
    """Gap between back-to-back frames on 1 Gb/s: serialization of the frame plus a little host jitter."""
    return (frame_len + 4 + WIRE_OVERHEAD) * NS_PER_BYTE + rng.randint(0, 1_500)  # +4: the FCS


# --- the traces -----------------------------------------------------------------------------------------------


def bulk_tcp(rng: random.Random) -> list[Packet]:
    """The host uploads over one IPv4 connection: bursts of full-size segments, a delayed ACK every two."""
    link = Link(bytes([192, 168, 10, 10]), bytes([192, 168, 10, 80]), host_ident=rng.randrange(1 << 16))
    link.peer_ident = rng.randrange(1 << 16)
    conn = TcpConn(link, 51234, 445, rng.randrange(1 << 32), rng.randrange(1 << 32))
    rtt = 180_000  # LAN round trip seen from the host, in ns
    t = BASE_NS
    pkts: list[Packet] = []
    pkts.append((t, True, conn.out(SYN, options=syn_options(1460, 8), ack=0)))
    t += rtt + rng.randint(0, 20_000)
    pkts.append((t, False, conn.inb(SYN | ACK, options=syn_options(1460, 7))))
    t += rng.randint(8_000, 15_000)
    pkts.append((t, True, conn.out(ACK)))
    t += rng.randint(20_000, 60_000)
    sent = 0
    unacked = 0
    last_ack_at = 0
    while sent < BULK_SEGMENTS:
        # a burst: what the congestion window allows at once, sent back to back (gaps of ~12.5 µs, below the
        # 20 µs default gap of batching); now and then the stack pauses a little inside a burst
        burst = min(rng.choice((2, 4, 6, 8, 10, 16, 24, 32)), BULK_SEGMENTS - sent)
        for i in range(burst):
            sent += 1
            last = i == burst - 1
            frame = conn.out(ACK | (PSH if last else 0), rng.randbytes(conn.mss))
            pkts.append((t, True, frame))
            unacked += 1
            if unacked == 2 or sent == BULK_SEGMENTS:
                # the receiver ACKs every second segment; the ACK reaches the host one RTT later
                ack_at = max(t + rtt + rng.randint(-15_000, 25_000), last_ack_at + 1_000)
                pkts.append((ack_at, False, conn.inb(ACK, ack=conn.host_next)))
                last_ack_at = ack_at
                unacked = 0
            t += frame_gap_ns(len(frame), rng)
            if rng.random() < 0.08:
                t += rng.randint(15_000, 60_000)  # a scheduling hiccup inside the burst
        t += rng.randint(60_000, 400_000)  # waiting for ACKs to open the window
    t = max(t, last_ack_at + 5_000)
    pkts.append((t, True, conn.out(FIN | ACK)))
    t += rtt + rng.randint(0, 20_000)
    pkts.append((t, False, conn.inb(FIN | ACK)))
    t += rng.randint(8_000, 15_000)
    pkts.append((t, True, conn.out(ACK)))
    return pkts


def http_request(rng: random.Random, size: int, host: str) -> bytes:
    """An HTTP/1.1 request of exactly ``size`` bytes (a cookie pads it; ``size`` must leave room for it)."""
    item = rng.randrange(1, 100_000)
    method = "POST" if rng.random() < 0.2 else "GET"
    head = f"{method} /api/items/{item} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nCookie: sid="
    tail = "\r\n\r\n"
    pad = size - len(head) - len(tail)
    alphabet = "0123456789abcdef"
    return (head + "".join(rng.choice(alphabet) for _ in range(max(pad, 8))) + tail).encode()


def http_response(rng: random.Random, total: int) -> bytes:
    """An HTTP/1.1 200 response of exactly ``total`` bytes, header included (``total`` ≥ ~100)."""
    body_len = total
    for _ in range(3):  # the header's length depends on the digits of Content-Length
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n"
        ).encode()
        body_len = total - len(head)
    return head + rng.randbytes(body_len)


def response_segments(rng: random.Random) -> int:
    """Segments in one response: mostly one, a tail up to twenty (small API answers, a few downloads)."""
    return rng.choices((1, 2, 3, 4, 6, 8, 12, 16, 20), weights=(70, 11, 6, 4, 3, 2, 2, 1, 1), k=1)[0]


def dns_name(rng: random.Random) -> str:
    return f"{rng.choice(('db', 'cache', 'auth', 'queue', 'blob'))}{rng.randrange(1, 40)}.svc.example.internal"


def dns_query(ident: int, name: str, qtype: int) -> bytes:
    """A recursive DNS query (RFC 1035) for ``name``."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def dns_answer(query: bytes, qtype: int, rdata: bytes) -> bytes:
    """The answer to ``query``: its question and one record, the name compressed to a pointer at offset 12."""
    ident = struct.unpack_from("!H", query)[0]
    question = query[12:]
    record = struct.pack("!HHHIH", 0xC00C, qtype, 1, 300, len(rdata)) + rdata
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + record


def request_response(rng: random.Random) -> list[Packet]:
    """The host serves HTTP on port 80 to four connections (two IPv4, two IPv6; two of them 802.1Q-tagged)."""
    host4, host6 = bytes([192, 168, 10, 10]), bytes.fromhex("20010db8000a00000000000000000010")
    links = [
        Link(host4, bytes([192, 168, 10, 21])),  # client A, two connections (two ports)
        Link(host4, bytes([192, 168, 20, 35]), vlan=20),  # client B through a tagged trunk
        Link(host6, bytes.fromhex("20010db8000a00000000000000000021"), flow_label=0x3A5C1),
        Link(host6, bytes.fromhex("20010db8001400000000000000000044"), vlan=20, flow_label=0x0B7E2),
    ]
    for link in links:
        link.host_ident, link.peer_ident = rng.randrange(1 << 16), rng.randrange(1 << 16)
    conns = [
        TcpConn(links[0], 80, 50412, rng.randrange(1 << 32), rng.randrange(1 << 32)),
        TcpConn(links[0], 80, 50413, rng.randrange(1 << 32), rng.randrange(1 << 32)),
        TcpConn(links[1], 80, 61022, rng.randrange(1 << 32), rng.randrange(1 << 32)),
        TcpConn(links[2], 80, 50600, rng.randrange(1 << 32), rng.randrange(1 << 32)),
        TcpConn(links[3], 80, 51234, rng.randrange(1 << 32), rng.randrange(1 << 32)),
    ]
    weights = (30, 20, 20, 18, 12)  # share of the requests per connection
    rtt = 120_000  # ns
    pkts: list[Packet] = []
    t = BASE_NS
    for conn in conns:  # the clients connect: SYN in, SYN-ACK out, ACK in
        mss_peer = conn.mss
        pkts.append((t, False, conn.inb(SYN, options=syn_options(mss_peer, 7), ack=0)))
        t += rng.randint(20_000, 40_000)
        pkts.append((t, True, conn.out(SYN | ACK, options=syn_options(conn.mss, 8))))
        t += rtt + rng.randint(0, 20_000)
        pkts.append((t, False, conn.inb(ACK)))
        t += rng.randint(100_000, 900_000)
    dns = Link(host4, bytes([192, 168, 10, 1]), host_ident=rng.randrange(1 << 16), peer_ident=rng.randrange(1 << 16))
    dns_at = set(rng.sample(range(REQUESTS), DNS_LOOKUPS))
    for i in range(REQUESTS):
        if i in dns_at:  # the server resolves a backend: query out, answer in ~0.3-2 ms later
            name, qtype = dns_name(rng), rng.choice((1, 1, 1, 28))
            query = dns_query(rng.randrange(1 << 16), name, qtype)
            rdata = rng.randbytes(4) if qtype == 1 else bytes.fromhex("20010db8") + rng.randbytes(12)
            sport = rng.randrange(49152, 65536)
            pkts.append((t, True, dns.frame(True, PROTO_UDP, udp_datagram(dns.host_ip, dns.peer_ip, sport, 53, query))))
            t += rng.randint(300_000, 2_000_000)
            answer = dns_answer(query, qtype, rdata)
            pkts.append(
                (t, False, dns.frame(False, PROTO_UDP, udp_datagram(dns.peer_ip, dns.host_ip, 53, sport, answer)))
            )
            t += rng.randint(20_000, 200_000)
        conn = rng.choices(conns, weights=weights, k=1)[0]
        request = http_request(rng, rng.randint(100, 400), "app.example.internal")
        pkts.append((t, False, conn.inb(PSH | ACK, request)))
        t += rng.randint(30_000, 400_000)  # the server thinks
        segments = response_segments(rng)
        response = http_response(rng, (segments - 1) * conn.mss + rng.randint(120, conn.mss))
        for k in range(segments):
            piece = response[k * conn.mss : (k + 1) * conn.mss]
            last = k == segments - 1
            frame = conn.out(ACK | (PSH if last else 0), piece)
            pkts.append((t, True, frame))
            if (k + 1) % 2 == 0 and not last:  # delayed ACK every second segment
                pkts.append((t + rtt + rng.randint(-10_000, 20_000), False, conn.inb(ACK, ack=conn.host_next)))
            t += frame_gap_ns(len(frame), rng)
        # the rest of the response is acknowledged by the client's next request (or its FIN)
        t += rtt + rng.randint(200_000, 3_000_000)  # the client digests the answer, then asks again
    for conn in conns:  # the clients close: FIN in, FIN-ACK out, ACK in
        pkts.append((t, False, conn.inb(FIN | ACK)))
        t += rng.randint(20_000, 60_000)
        pkts.append((t, True, conn.out(FIN | ACK)))
        t += rtt + rng.randint(0, 20_000)
        pkts.append((t, False, conn.inb(ACK)))
        t += rng.randint(50_000, 300_000)
    return pkts


def small_packets(rng: random.Random) -> list[Packet]:
    """A 1 kHz UDP telemetry stream to a collector: 60-128-byte frames, every one a separate send."""
    link = Link(bytes([192, 168, 10, 10]), bytes([192, 168, 10, 50]), host_ident=rng.randrange(1 << 16))
    period = 1_000_000  # ns: a fixed 1 kHz rate
    header = struct.Struct("!IIQ")  # stream id, sequence number, sample time in ns
    pkts: list[Packet] = []
    for seq in range(TELEMETRY_PACKETS):
        # frame = 14 Ethernet + 20 IPv4 + 8 UDP + 16 record header + samples: 60-128 bytes; most records are
        # short (a few counters), every tenth carries a full set of samples
        samples = rng.randint(58, 70) if seq % 10 == 0 else rng.randint(2, 40)
        payload = header.pack(0x7E1E, seq, BASE_NS + seq * period) + rng.randbytes(samples)
        # timer jitter of the sending thread: a few µs late, never early
        t = BASE_NS + seq * period + rng.randint(0, 4_000)
        pkts.append(
            (t, True, link.frame(True, PROTO_UDP, udp_datagram(link.host_ip, link.peer_ip, 40123, 9000, payload)))
        )
    return pkts


TRACES: dict[str, Callable[[random.Random], list[Packet]]] = {
    "bulk_tcp": bulk_tcp,
    "request_response": request_response,
    "small_packets": small_packets,
}


# --- writing --------------------------------------------------------------------------------------------------


@dataclass
class Written:
    """What one output file holds, for the summary line."""

    path: Path
    packets: int
    sent: int
    received: int
    min_len: int
    max_len: int
    size: int = 0
    sha256: str = ""
    extra: dict[str, int] = field(default_factory=dict)


def write_trace(name: str, pkts: Sequence[Packet], out: Path) -> list[Written]:
    """Write ``pkts`` (sorted by time) as ``name.pcap`` and ``name.pcapng`` in ``out``."""
    ordered = sorted(pkts, key=lambda p: p[0])  # stable: equal times keep the order they were made in
    sizes = [len(frame) for _, _, frame in ordered]
    sent = sum(1 for _, outbound, _ in ordered if outbound)
    results = []
    pcap = out / f"{name}.pcap"
    write_pcap(pcap, ((ts, frame) for ts, _, frame in ordered), nanosecond=True)
    pcapng = out / f"{name}.pcapng"
    write_pcapng(
        pcapng,
        ((0, ts, frame, len(frame), "send" if outbound else "recv") for ts, outbound, frame in ordered),
        interfaces=[WriterInterface(linktype=1, name="Ethernet0", description="sample trace: " + name)],
    )
    for path in (pcap, pcapng):
        data = path.read_bytes()
        w = Written(path, len(ordered), sent, len(ordered) - sent, min(sizes), max(sizes))
        w.size, w.sha256 = len(data), hashlib.sha256(data).hexdigest()
        results.append(w)
    return results


# --- ETW samples ----------------------------------------------------------------------------------------------

#: IfIndexes of the netsh sample: the miniport, and a filter driver (LWF) above it.
NETSH_MINIPORT = 12
NETSH_FILTER = 18
#: Packets of the ETW samples (the first ones of request_response and small_packets): they keep the files small.
NETSH_PACKETS = 400
DRIVER_PACKETS = 1000
#: NBLs in the sample driver's pool (pointers are reused once completed) and where they live.
DRIVER_NBLS = 64
DRIVER_NBL_BASE = 0xFFFF_C08A_1F20_0000
DRIVER_NBL_STRIDE = 0x1A0  # the x64 NET_BUFFER_LIST size rounded up, as a lookaside list would lay them out


def write_netsh_etl(pkts: Sequence[Packet], path: Path) -> Written:
    """``pkts`` as a netsh NDIS-PacketCapture trace (see the module docstring)."""
    from ndis_replay.importers.etw.ndiscap import (  # type: ignore[import-not-found, unused-ignore]
        EVENT_FRAGMENT,
        KW_DEFAULT,
        KW_RECV,
        KW_SEND,
        NDIS_PROVIDER,
        encode_1001,
    )
    from ndis_replay.importers.etw.writer import EtlWriter  # type: ignore[import-not-found, unused-ignore]

    ordered = sorted(pkts, key=lambda p: p[0])
    with EtlWriter(path, start_ns=BASE_NS - 1_000_000, cpus=2, logger_name="NetTrace") as writer:
        for ts, outbound, frame in ordered:
            tick = ts - ts % 100  # QPC at 10 MHz
            keyword = KW_DEFAULT | (KW_SEND if outbound else KW_RECV)
            layers = (NETSH_MINIPORT, NETSH_FILTER) if outbound else (NETSH_MINIPORT,)
            for lower in layers:
                writer.add_event(
                    cpu=0 if outbound else 1,
                    ts_ns=tick,
                    provider=NDIS_PROVIDER,
                    event_id=EVENT_FRAGMENT,
                    keyword=keyword,
                    pid=4,
                    tid=0x1F4 if outbound else 0x2C8,
                    user_data=encode_1001(NETSH_MINIPORT, lower, frame),
                )
    data = path.read_bytes()
    sizes = [len(f) for _, _, f in ordered]
    sent = sum(1 for _, outbound, _ in ordered if outbound)
    w = Written(path, len(ordered), sent, len(ordered) - sent, min(sizes), max(sizes))
    w.size, w.sha256 = len(data), hashlib.sha256(data).hexdigest()
    return w


def driver_events(
    pkts: Sequence[Packet], rng: random.Random
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
    """Sends ``(ts, nbl, length, call)`` and completes ``(ts, nbl)`` of a driver sending ``pkts``' frames."""
    sends: list[tuple[int, int, int, int]] = []
    completes: list[tuple[int, int]] = []
    free = [DRIVER_NBL_BASE + i * DRIVER_NBL_STRIDE for i in range(DRIVER_NBLS)]
    pending: list[tuple[int, int]] = []  # (complete ts, nbl), by time
    frames = [f for _, outbound, f in sorted(pkts, key=lambda p: p[0]) if outbound]
    ts = BASE_NS
    call = 0
    i = 0
    while i < len(frames):
        size = min(rng.choice((1, 1, 1, 1, 2, 3, 4)), len(frames) - i)
        for position in range(size):
            now = ts + position * 300  # the NBLs of one call are logged 300 ns apart
            pending.sort()
            while pending and (pending[0][0] <= now or not free):
                done_ts, nbl = pending.pop(0)
                completes.append((done_ts, nbl))
                free.append(nbl)
                now = max(now, done_ts + 100)  # a send that waited for a free NBL goes after its completion
            nbl = free.pop(0)
            sends.append((now, nbl, len(frames[i + position]), call))
            latency = 4_000 + int(rng.lognormvariate(9.0, 0.6))  # ns: ~4 µs floor, a tail to ~60 µs
            pending.append((now + min(latency, 60_000) - (now + latency) % 100, nbl))
        call += 1
        i += size
        ts += rng.randrange(40_000, 400_000, 100)
    completes.extend(sorted(pending))
    return sends, completes


def write_driver_samples(pkts: Sequence[Packet], out: Path, rng: random.Random) -> list[Path]:
    """``driver_sends.etl``, ``driver_sends.csv`` and ``driver_sends.toml`` (see the module docstring)."""
    from ndis_replay.importers.etw.driver import (  # type: ignore[import-not-found, unused-ignore]
        DEFAULT_EVENT_MAP,
        driver_csv_text,
        write_driver_etl,
    )

    sends, completes = driver_events(pkts, rng)
    etl, csv, toml = out / "driver_sends.etl", out / "driver_sends.csv", out / "driver_sends.toml"
    write_driver_etl(etl, sends, completes, cpus=2, start_ns=BASE_NS - 1_000_000)
    csv.write_text(driver_csv_text(sends, completes), encoding="utf-8", newline="")
    toml.write_text(DEFAULT_EVENT_MAP, encoding="utf-8")
    return [etl, csv, toml]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder for the .pcap and .pcapng files (default: the folder of this script, sample_traces/)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    made: dict[str, list[Packet]] = {}
    written: list[Written] = []
    for name, make in TRACES.items():
        rng = random.Random(f"{SEED}:{name}")  # one stream per trace: changing one leaves the others alone
        made[name] = make(rng)
        written.extend(write_trace(name, made[name], out))
    # the first NETSH_PACKETS frames: each sent frame is logged twice, and the repository carries the files
    netsh = sorted(made["request_response"], key=lambda p: p[0])[:NETSH_PACKETS]
    written.append(write_netsh_etl(netsh, out / "request_response.etl"))
    for w in written:
        total += w.size
        print(
            f"{w.path.name:26} {w.packets:6,} packets ({w.sent:,} send, {w.received:,} recv), "
            f"frames {w.min_len}-{w.max_len} B, {w.size:>9,} bytes, sha256 {w.sha256}"
        )
    telemetry = sorted(made["small_packets"], key=lambda p: p[0])[:DRIVER_PACKETS]
    for path in write_driver_samples(telemetry, out, random.Random(f"{SEED}:driver")):
        data = path.read_bytes()
        total += len(data)
        print(f"{path.name:26} {len(data):>9,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    print(f"{'total':26} {total:,} bytes in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
