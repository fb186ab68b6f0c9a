"""The TAP-backed miniport: every gathered frame goes to a Linux TAP (or TUN) device, and is read back on the far side.

What it is: the loopback miniport (same send handlers, same completion policies: sync, deferred, batched:N,
delay:D, FIFO) whose wire is a device. Each NET_BUFFER's frame is gathered from its MDL chain (as DMA would) and
written to ``/dev/net/tun`` with one ``write`` per frame; an Ethernet trace (link type 1) goes through TAP mode
(``IFF_TAP | IFF_NO_PI``), a raw-IP trace (101, 12, 14) through TUN mode (``IFF_TUN | IFF_NO_PI``); other link
types are refused before any worker starts (:class:`~ndis_replay.errors.UnsupportedLinkType`, exit 3).

Isolation: by default the run creates a network namespace of its own (:mod:`ndis_replay.engine.miniports.netns`,
:meth:`TapMiniport.prepare_run` in the parent), each worker creates its device inside it (``ndr<pid>x<n>``), with
IPv6 disabled and no address (the kernel then originates nothing on it), and the run removes the namespace at the
end. ``device=NAME`` (``--tap-device``) writes to an existing device of the user's instead, in the current
namespace, changing nothing on it.

Proof of delivery: an ``AF_PACKET`` socket bound to the device (inside the namespace) is the far side. A frame
written to a TAP fd is received by the interface (an *incoming* frame, never PACKET_OUTGOING: frames the kernel
itself sends out of the device are skipped), and the TUN driver hands it to the packet socket inside the
``write`` call. :class:`FarSide` checks every frame it reads against the trace's bytes (not against what was
written, so a strategy that transmits stale bytes is caught here too) and counts delivered, dropped, corrupted,
reordered and unexpected frames; the socket's own drop counter (PACKET_STATISTICS) is added.

Where the reader runs: in the worker's own thread, not in a reader thread. Delivery is synchronous, so what was
written is already queued on the socket; the miniport reads it when half the window of frames in flight is
reached, *after* the completions of the call that crossed it (sync: at the end of the send handler; other
policies: at the end of ``poll``), and again at the end of the round (:meth:`TapMiniport.delivery`, outside the
timed window). A packet's latency thus never includes reading; the round's wall time does. The window
(``window`` frames, and half the socket's receive buffer in estimated kernel bytes) is the back-pressure: a write
that would exceed it reads first, so the socket queue, which drops silently when full, is never overrun. A reader
thread would contend for the GIL at every ``write`` (which releases it) and add scheduler noise to every packet.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ndis_replay.engine.miniports import netns
from ndis_replay.engine.miniports.base import CompletionPolicy, MiniportInfo, MiniportParams, WireSink
from ndis_replay.engine.miniports.loopback import LoopbackMiniport, LoopbackParams
from ndis_replay.engine.verifier import ERROR, Finding
from ndis_replay.errors import ConfigError, MiniportUnavailable, UnsupportedLinkType

if TYPE_CHECKING:
    import numpy

    from ndis_replay.engine.ndis import Ndis, NdisPacket, NetBufferList
    from ndis_replay.engine.replay import ReplayInput

TUN_PATH = "/dev/net/tun"
# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
# linux/if_packet.h, linux/if_ether.h
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
#: struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUXDATA = struct.Struct("IIIHHHH")
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_8021Q = 0x8100
SO_RCVBUFFORCE = 33
IFNAMSIZ = 16

#: link types carried through TAP (Ethernet) and through TUN (raw IP: LINKTYPE_RAW and the two DLT_RAW values)
ETHERNET_LINKTYPES = frozenset({1})
RAW_LINKTYPES = frozenset({12, 14, 101})
#: WIRE-DELIVERY findings kept per pass (all are counted)
MAX_DELIVERY_FINDINGS = 100
#: how far ahead of the oldest unseen frame an arriving frame is looked for (reordering), frames
LOOKAHEAD = 64
#: kernel bytes a queued frame costs beyond its length (sk_buff and shared info), a generous estimate
SKB_OVERHEAD = 1024
#: how long the end of a pass waits for frames still missing, seconds (delivery is synchronous: normally 0)
SETTLE_S = 0.2
#: the delivery counts, in the order run.json and the CLI show them
DELIVERY_FIELDS = ("frames", "delivered", "dropped", "corrupted", "reordered", "unexpected", "refused", "socket_drops")
#: the counts that make a finding when not zero
PROBLEM_FIELDS = ("dropped", "corrupted", "reordered", "unexpected", "refused", "socket_drops")


@dataclass(frozen=True)
class TapParams(LoopbackParams):
    """Parameters of the tap miniport (the loopback's, plus the device's)."""

    mtu: int = field(
        default=65535,
        metadata={
            "help": "MTU (bytes, link header included) declared to the stack; a TUN/TAP write takes at most 65535"
        },
    )
    device: str = field(
        default="",
        metadata={
            "help": "an existing TAP/TUN device to write to (--tap-device), used as it is; empty: a device of the "
            "run's own, inside a private network namespace"
        },
    )
    window: int = field(
        default=256, metadata={"help": "frames written and not yet read back on the far side, at most (back-pressure)"}
    )
    rcvbuf: int = field(
        default=32 << 20, metadata={"help": "receive buffer of the far side's packet socket, bytes (SO_RCVBUFFORCE)"}
    )
    namespace: str = field(default="", metadata={"help": "set by the run: its private network namespace"})
    mode: str = field(default="tap", metadata={"help": "set by the run from the trace's link type: tap or tun"})

    def validate(self) -> None:
        """The loopback's checks; window ≥ 1; rcvbuf ≥ 64 KiB; a device name of at most 15 characters."""
        super().validate()
        if self.mtu > 65535:
            raise ConfigError("mtu", self.mtu, "a TUN/TAP device takes frames of at most 65535 bytes")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError("window", self.window, "must be a whole number of frames ≥ 1")
        if isinstance(self.rcvbuf, bool) or not isinstance(self.rcvbuf, int) or self.rcvbuf < 65536:
            raise ConfigError("rcvbuf", self.rcvbuf, "must be a whole number of bytes ≥ 65536")
        if not isinstance(self.device, str) or len(self.device.encode()) >= IFNAMSIZ or "/" in self.device:
            raise ConfigError("--tap-device", self.device, "not a network device name (at most 15 characters)")
        if self.mode not in ("tap", "tun"):
            raise ConfigError("mode", self.mode, "must be tap or tun", ("tap", "tun"))


# --- the device ------------------------------------------------------------------------------------------------


def _tun_fd(name: str, mode: str) -> int:
    """Open /dev/net/tun and attach it to device ``name`` (created if absent), in the calling thread's namespace."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    flags = (IFF_TAP if mode == "tap" else IFF_TUN) | IFF_NO_PI
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def _far_socket(name: str, rcvbuf: int) -> socket.socket:
    """A packet socket bound to ``name`` receiving every protocol, with a large receive buffer."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # without CAP_NET_ADMIN: capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # the kernel takes an 802.1Q tag out of a received frame into metadata: ask for it, to put it back
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((name, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _bring_up(name: str) -> None:
    """Disable IPv6 on the device (no router solicitation, no link-local address) and set it up (pyroute2)."""
    from pyroute2 import IPRoute

    netns.write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")
    netns.write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/addr_gen_mode", "1")
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)
        if not index:
            raise OSError(errno.ENODEV, f"device {name} vanished")
        ipr.link("set", index=index[0], state="up")


class Device:
    """One TUN/TAP file descriptor and the far side's packet socket on the same device."""

    def __init__(self, name: str, fd: int, sock: socket.socket, owned: bool) -> None:
        self.name = name
        self.fd = fd
        self.sock = sock
        #: created by the harness (inside its namespace): gone when ``fd`` closes
        self.owned = owned

    @classmethod
    def create(cls, name: str, namespace: str, mode: str, rcvbuf: int) -> Device:
        """A new device ``name`` inside ``namespace``, IPv6 off, up, with its far-side socket."""
        what = f"a {mode.upper()} device in network namespace {namespace}"
        try:
            with netns.entered(namespace):
                # devices created from now on in this namespace start without IPv6 (no router solicitation)
                netns.write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
                fd = _tun_fd(name, mode)
                try:
                    _bring_up(name)
                    sock = _far_socket(name, rcvbuf)
                except BaseException:
                    os.close(fd)
                    raise
        except OSError as exc:
            raise MiniportUnavailable("tap", what, exc.strerror or str(exc), exc.errno or 0) from exc
        return cls(name, fd, sock, True)

    @classmethod
    def attach(cls, name: str, mode: str, rcvbuf: int) -> Device:
        """The user's existing device ``name`` (current namespace), untouched but for attaching to it."""
        try:
            socket.if_nametoindex(name)
        except OSError as exc:
            raise ConfigError(
                "--tap-device", name, f"no such device; create it first (ip tuntap add dev {name} mode {mode})"
            ) from exc
        try:
            fd = _tun_fd(name, mode)
            try:
                sock = _far_socket(name, rcvbuf)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOENT, errno.ENODEV):
                raise MiniportUnavailable("tap", f"device {name}", exc.strerror or str(exc), exc.errno) from exc
            raise ConfigError(
                "--tap-device", name, f"cannot attach to it as a {mode.upper()} device ({exc.strerror})"
            ) from exc
        return cls(name, fd, sock, False)

    def close(self) -> None:
        """Close the socket and the fd (a harness device disappears with it)."""
        self.sock.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- the far side --------------------------------------------------------------------------------------------------


class FarSide:
    """Reads the frames back from the device's packet socket and checks each one against the trace.

    The writer announces each frame (:meth:`sent`: packet position in replay order, fragment k of n, the bytes
    written); the far side matches arrivals in order against the trace's bytes of the oldest unseen frame. An
    arrival that matches a later one (within :data:`LOOKAHEAD`) sets the skipped ones aside: arriving later they
    count as reordered, never arriving as dropped. An arrival that matches nothing is corrupted (it takes the
    oldest unseen frame's place); one when nothing is unseen is unexpected. Fragments of one packet (a filter cut
    it) are rejoined as :class:`~ndis_replay.engine.replay.CompareWire` does, then compared.
    """

    def __init__(self, sock: socket.socket, window: int, budget: int) -> None:
        self.sock = sock
        self.window = window
        self.half = max(1, window // 2)
        self.budget = budget
        self.inp: ReplayInput | None = None
        self._buf = bytearray(262_144)
        self._view = memoryview(self._buf)
        self.reset()

    def reset(self) -> None:
        """Start a pass or a round: counts zero, nothing unseen, the socket emptied of anything left and its drop
        counter read (and so reset)."""
        self.counts = dict.fromkeys(DELIVERY_FIELDS, 0)
        # (position, k, n, the bytes written or b"" from the native core, their length)
        self.expected: deque[tuple[int, int, int, bytes, int]] = deque()
        self.skipped: list[tuple[int, int, int, bytes, int]] = []
        self.parts: list[bytes] = []
        self.parts_of = (-1, 0)
        self.in_flight_bytes = 0
        self.findings: list[Finding] = []
        self.problems = 0
        while True:
            try:
                self.sock.recv_into(self._buf)
            except BlockingIOError:
                break
        self._socket_drops()

    # --- writer side ---

    def sent(self, position: int, k: int, n: int, frame: bytes) -> None:
        """A frame was written to the device."""
        self.expected.append((position, k, n, frame, len(frame)))
        self.in_flight_bytes += len(frame) + SKB_OVERHEAD
        self.counts["frames"] += 1

    def sent_size(self, position: int, k: int, n: int, size: int) -> None:
        """A frame of ``size`` bytes was written by the native core (its bytes are not kept: arrivals are checked
        against the trace, which :meth:`sent_size` therefore needs)."""
        if self.inp is None:
            raise RuntimeError("tap: the native write path needs the trace (expect() first)")
        self.expected.append((position, k, n, b"", size))
        self.in_flight_bytes += size + SKB_OVERHEAD
        self.counts["frames"] += 1

    def native_log(self, log: bytes, size: int) -> tuple[int, int]:
        """The native core's callback (``Engine.attach_tap``): the frames it wrote since the last call (int64
        position, k, n, bytes written or -errno per frame), then read (``size`` -1) or make room for a frame of
        ``size`` bytes; returns what is still unread (frames, kernel bytes), the core's back-pressure state."""
        records = struct.iter_unpack("qqqq", log)
        for position, k, n, written in records:
            if written >= 0:
                self.sent_size(position, k, n, written)
            else:
                self.refused(position, k, n, OSError(-written, os.strerror(-written)))
        if size >= 0:
            self.make_room(size)
        else:
            self.pump()
        return len(self.expected), self.in_flight_bytes

    def refused(self, position: int, k: int, n: int, exc: OSError) -> None:
        """The device refused a write (EINVAL for a frame shorter than an Ethernet header, say)."""
        self.counts["frames"] += 1
        self.counts["refused"] += 1
        self._add(position, f"the device refused frame {k + 1} of {n}: {exc.strerror or exc}")

    def make_room(self, size: int) -> None:
        """Back-pressure: read until one more frame of ``size`` bytes fits the window (frames still unseen after
        :data:`SETTLE_S` count as dropped)."""
        cost = size + SKB_OVERHEAD
        self.pump()
        if len(self.expected) < self.window and self.in_flight_bytes + cost <= self.budget:
            return
        deadline = time.monotonic() + SETTLE_S
        while len(self.expected) >= self.window or (self.expected and self.in_flight_bytes + cost > self.budget):
            if not self._wait(deadline):
                self._drop(self.expected.popleft())
            self.pump()

    # --- reading ---

    def _wait(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([self.sock], [], [], left)
        return bool(readable)

    def pump(self) -> None:
        """Read and check every frame waiting on the socket (never blocks). An 802.1Q tag the kernel took out of
        a frame (into PACKET_AUXDATA, as it does with every VLAN frame it receives) is put back, as libpcap does."""
        sock, buffers, view = self.sock, [self._buf], self._view
        space = socket.CMSG_SPACE(_AUXDATA.size)
        while True:
            try:
                size, ancillary, _, address = sock.recvmsg_into(buffers, space, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:  # the kernel's own transmissions out of the device
                continue
            got = view[: min(size, len(view))]
            for level, kind, data in ancillary:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
                    status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(data)
                    if status & TP_STATUS_VLAN_VALID:
                        tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                        got = memoryview(bytes(got[:12]) + struct.pack("!HH", tpid, tci) + bytes(got[12:]))
            self._arrived(got)

    def _reference(self, position: int, written: bytes) -> bytes | memoryview:
        """What packet ``position`` should carry: the trace's bytes (what was written, without a trace)."""
        inp = self.inp
        return written if inp is None else inp.frame(position)

    def _pop(self) -> tuple[int, int, int, bytes, int]:
        entry = self.expected.popleft()
        self.in_flight_bytes -= entry[4] + SKB_OVERHEAD
        return entry

    def _arrived(self, got: memoryview) -> None:
        counts = self.counts
        expected = self.expected
        if not expected:
            counts["unexpected"] += 1
            self._add(-1, f"an unexpected frame of {len(got)} bytes arrived (nothing was in flight)")
            return
        position, k, n, written, _ = expected[0]
        if n > 1:
            self._pop()
            self.parts.append(bytes(got))
            self.parts_of = (position, n)
            if k == n - 1:
                self._fragments(position, n)
            return
        if got == self._reference(position, written):
            self._pop()
            counts["delivered"] += 1
            return
        for j in range(1, min(len(expected), LOOKAHEAD)):
            later, _, count, later_written, _ = expected[j]
            if count == 1 and got == self._reference(later, later_written):
                for _ in range(j):
                    self.skipped.append(self._pop())
                self._pop()
                counts["delivered"] += 1
                return
        for i, entry in enumerate(self.skipped):
            if got == self._reference(entry[0], entry[3]):
                del self.skipped[i]
                counts["delivered"] += 1
                counts["reordered"] += 1
                self._add(entry[0], "arrived on the far side after a later frame (reordered)")
                return
        self._pop()
        counts["corrupted"] += 1
        self._differs(position, got)

    def _fragments(self, position: int, n: int) -> None:
        parts, self.parts = self.parts, []
        inp = self.inp
        cut = 0 if inp is None else int(inp.header_len[position])
        joined = parts[0] + b"".join(part[cut:] for part in parts[1:])
        if inp is None or joined == inp.frame(position):
            self.counts["delivered"] += len(parts)
        else:
            self.counts["corrupted"] += len(parts)
            self._differs(position, memoryview(joined))
        if len(parts) < n:
            self.counts["dropped"] += n - len(parts)

    def _differs(self, position: int, got: memoryview) -> None:
        inp = self.inp
        if inp is None:
            self._add(position, f"arrived changed ({len(got)} bytes)")
            return
        want = inp.frame(position)
        common = min(len(got), len(want))
        first = next((i for i in range(common) if got[i] != want[i]), common)
        self._add(
            position,
            f"the far side received {len(got)} bytes, the trace has {len(want)}; first difference at byte {first}",
        )

    def _drop(self, entry: tuple[int, int, int, bytes, int]) -> None:
        self.in_flight_bytes -= entry[4] + SKB_OVERHEAD
        self.counts["dropped"] += 1
        self._add(entry[0], f"frame {entry[1] + 1} of {entry[2]} never arrived on the far side")

    def _add(self, position: int, message: str) -> None:
        self.problems += 1
        if len(self.findings) >= MAX_DELIVERY_FINDINGS:
            return
        index = int(self.inp.index[position]) if self.inp is not None and position >= 0 else position
        descriptor = f"packet {index}" if position >= 0 else "wire"
        self.findings.append(Finding("WIRE-DELIVERY", index, descriptor, message, ERROR))

    def _socket_drops(self) -> int:
        """Frames the kernel dropped on this socket since the last call (PACKET_STATISTICS resets on read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return int(struct.unpack("II", raw)[1])

    def finish(self) -> tuple[dict[str, int], list[Finding]]:
        """End of a pass: read what is left, wait up to :data:`SETTLE_S` for missing frames, count the rest as
        dropped; the counts and the WIRE-DELIVERY findings."""
        self.pump()
        deadline = time.monotonic() + SETTLE_S
        while self.expected and self._wait(deadline):
            self.pump()
        if self.parts:
            self._fragments(*self.parts_of)
        while self.expected:
            entry = self.expected.popleft()
            self._drop(entry)
        for entry in self.skipped:
            self.counts["dropped"] += 1
            self._add(entry[0], f"frame {entry[1] + 1} of {entry[2]} never arrived on the far side")
        self.skipped.clear()
        drops = self._socket_drops()
        if drops:
            self.counts["socket_drops"] += drops
            self._add(-1, f"the far side's socket dropped {drops} frames (receive buffer full)")
        return dict(self.counts), list(self.findings)


class _DeviceWire(WireSink):
    """The miniport's wire: writes each frame to the device (one ``write`` per frame), announces it to the far
    side, and passes the packet on to the round's own sink (the checked pass's comparison, ``--wire``)."""

    def __init__(self, device: Device, far: FarSide, tee: WireSink | None) -> None:
        self.fd = device.fd
        self.far = far
        self.tee = tee
        self.position = 0

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Write one packet's frames."""
        far = self.far
        fd = self.fd
        position = self.position
        self.position = position + 1
        n = len(frames)
        for k, frame in enumerate(frames):
            if len(far.expected) >= far.window or far.in_flight_bytes + len(frame) + SKB_OVERHEAD > far.budget:
                far.make_room(len(frame))
            try:
                os.write(fd, frame)
            except OSError as exc:
                far.refused(position, k, n, exc)
                continue
            far.sent(position, k, n, frame)
        if self.tee is not None:
            self.tee.transmit(frames)


# --- the miniport -------------------------------------------------------------------------------------------------


def _mode_for(linktypes: Sequence[int], trace: str) -> str:
    kinds = set(linktypes)
    if kinds and kinds <= ETHERNET_LINKTYPES:
        return "tap"
    if kinds and kinds <= RAW_LINKTYPES:
        return "tun"
    bad = next((t for t in sorted(kinds) if t not in ETHERNET_LINKTYPES | RAW_LINKTYPES), min(kinds, default=0))
    raise UnsupportedLinkType(
        trace, bad, "the tap miniport (Ethernet goes through TAP, raw IP through TUN; use --miniport loopback)"
    )


class TapMiniport(LoopbackMiniport):
    """A Linux TAP/TUN device as the wire: frames written one ``write`` each, read back and checked on the far side
    (an AF_PACKET socket on the device), inside a private network namespace unless ``device`` names one."""

    name = "tap"
    summary = "writes each frame to a TAP (or TUN) device in a private network namespace and checks its far side"
    Params = TapParams

    _created = 0

    def __init__(self, params: MiniportParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        assert isinstance(p, TapParams)
        self._tp: TapParams = p
        self.device: Device | None = None
        self.far: FarSide | None = None
        self._inp: ReplayInput | None = None

    # --- run scope (in the parent) ---

    @classmethod
    def prepare_run(cls, params: MiniportParams, linktypes: Sequence[int], trace: str) -> MiniportParams:
        """Pick TAP or TUN from the link types; create the run's namespace and prove a device can be made in it
        (or, with ``device``, that the user's device can be attached). Environment problems raise
        :class:`~ndis_replay.errors.MiniportUnavailable` here, before any worker starts."""
        assert isinstance(params, TapParams)
        mode = _mode_for(linktypes, trace)
        if not os.path.exists(TUN_PATH):
            raise MiniportUnavailable("tap", TUN_PATH, os.strerror(errno.ENOENT), errno.ENOENT)
        if params.device:
            probe = Device.attach(params.device, mode, params.rcvbuf)
            probe.close()
            return dataclasses.replace(params, mode=mode, namespace="")
        name = netns.new_name()
        netns.create(name)
        try:
            Device.create("ndrprobe", name, mode, 65536).close()
        except BaseException:
            netns.remove(name)
            raise
        return dataclasses.replace(params, mode=mode, namespace=name)

    @classmethod
    def finish_run(cls, params: MiniportParams) -> None:
        """Remove the run's namespace (its devices went with the workers' file descriptors)."""
        assert isinstance(params, TapParams)
        if params.namespace:
            netns.remove(params.namespace)

    # --- lifecycle (in the worker) ---

    def expect(self, inp: ReplayInput) -> None:
        """The trace's frames: the far side checks every arrival against them."""
        self._inp = inp
        if self.far is not None:
            self.far.inp = inp

    def open(self, ndis: Ndis, completion: CompletionPolicy) -> MiniportInfo:
        """MiniportInitializeEx: make (or attach) the device and its far side, then register the send handlers."""
        self.open_device()
        return super().open(ndis, completion)

    def open_device(self) -> Device:
        """Make (or attach) the device and its far side (:attr:`device`, :attr:`far`); the native core's tap
        path writes to this device's fd and hands its frames to this far side."""
        p = self._tp
        if p.device:
            device = Device.attach(p.device, p.mode, p.rcvbuf)
        else:
            if not p.namespace:
                raise MiniportUnavailable("tap", "the run's network namespace", "prepare_run() was not called")
            TapMiniport._created += 1
            name = f"ndr{os.getpid()}x{TapMiniport._created}"[: IFNAMSIZ - 1]
            device = Device.create(name, p.namespace, p.mode, p.rcvbuf)
        self.device = device
        # getsockopt reports twice what was set (the kernel's bookkeeping share): half of that is usable
        rcvbuf = device.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        self.far = FarSide(device.sock, p.window, max(rcvbuf // 2, 65536 + SKB_OVERHEAD))
        self.far.inp = self._inp
        return device

    def begin(self, complete_ns: numpy.ndarray[Any, Any] | None, wire: WireSink | None) -> None:
        """Start a round: the far side starts counting; the device becomes the wire (``wire`` still receives
        every packet)."""
        if self.device is None or self.far is None:
            raise RuntimeError("tap: open() first")
        self.far.reset()
        super().begin(complete_ns, _DeviceWire(self.device, self.far, wire))

    def close(self) -> None:
        """MiniportHaltEx: complete what is pending, then close the device (a harness device disappears)."""
        super().close()
        self.close_device()

    def close_device(self) -> None:
        """Close the device (a harness device disappears with its fd)."""
        if self.device is not None:
            self.device.close()
            self.device = None

    def delivery(self) -> tuple[dict[str, int], list[Finding]] | None:
        """What the far side received since :meth:`begin`, checked against the trace."""
        if self.far is None:
            return None
        return self.far.finish()

    # --- reading between calls, never inside a packet's latency ---

    def _send_sync(self, chain: NetBufferList) -> None:
        super()._send_sync(chain)
        far = self.far
        if far is not None and len(far.expected) >= far.half:
            far.pump()

    def _send_packets_sync(self, packets: list[NdisPacket]) -> None:
        super()._send_packets_sync(packets)
        far = self.far
        if far is not None and len(far.expected) >= far.half:
            far.pump()

    def poll(self) -> None:
        """The loopback's DPC, then read the far side if half the window is in flight."""
        super().poll()
        far = self.far
        if far is not None and len(far.expected) >= far.half:
            far.pump()


__all__ = [
    "DELIVERY_FIELDS",
    "PROBLEM_FIELDS",
    "Device",
    "FarSide",
    "TapMiniport",
    "TapParams",
]
