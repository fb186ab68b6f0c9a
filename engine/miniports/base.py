"""The miniport ABC, its declaration (:class:`MiniportInfo`), completion policies and wire sinks.

A miniport is the bottom of the modelled stack: it registers MiniportSendNetBufferLists (NDIS 6) and
MiniportSendPackets (NDIS 5) with the :class:`~ndis_replay.engine.ndis.Ndis` at :meth:`Miniport.open`, transmits
what it is handed (gathering each NET_BUFFER's bytes from its MDL chain, from DataOffset for DataLength, as DMA
would) and completes per its :class:`CompletionPolicy`. The replay loop drives it (contract: /tmp/spec/contract.md)::

    info = miniport.open(ndis, CompletionPolicy.parse("batched:8"))
    miniport.begin(complete_ns, wire)   # per round: where completion times and transmitted bytes go
    ... strategy.submit(...); miniport.poll() ...
    miniport.drain()                    # end of the round: complete everything still pending
    miniport.close()
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from ndis_replay.errors import ConfigError

if TYPE_CHECKING:
    import numpy

    from ndis_replay.engine.ndis import Ndis
    from ndis_replay.engine.replay import ReplayInput
    from ndis_replay.engine.verifier import Finding

#: what ``--completion`` accepts (ConfigError lists these)
COMPLETION_CHOICES = ("sync", "deferred", "batched:N (e.g. batched:8)", "delay:DURATION (e.g. delay:50us)")


@dataclass(frozen=True)
class MiniportInfo:
    """What a miniport declares at open(): its name, the data backfill it wants in front of each frame (bytes;
    strategies that own data buffers reserve it so lower drivers can retreat without allocating, NDIS_MODEL.md
    §2.4), its MTU (largest frame it transmits, bytes, link header included; a fragmenting filter cuts above it)
    and the completion policy text, e.g. ``"batched:8"``."""

    name: str
    backfill: int
    mtu: int
    completion: str


@dataclass(frozen=True)
class CompletionPolicy:
    """When the miniport completes what it was sent (NdisMSendNetBufferListsComplete / NdisMSendComplete).

    * ``sync``: inside MiniportSendNetBufferLists / MiniportSendPackets, before the send call returns;
    * ``deferred``: on the next :meth:`Miniport.poll` (the miniport's DPC), one completion call per send call;
    * ``batched:N``: on :meth:`Miniport.poll`, in chains of exactly N NBLs (N packets) once N are pending; the
      rest on :meth:`Miniport.drain`;
    * ``delay:DURATION``: on :meth:`Miniport.poll`, each send call once DURATION has passed since it was sent
      (``time.perf_counter_ns``); the rest on drain.

    Completion is FIFO under every policy (submission order), so the k-th packet completed is the k-th sent.
    """

    kind: str
    #: batched: NBLs per completion chain
    count: int = 0
    #: delay: nanoseconds between send and completion
    delay_ns: int = 0

    @classmethod
    def parse(cls, text: str) -> CompletionPolicy:
        """``"sync"``, ``"deferred"``, ``"batched:8"``, ``"delay:50us"`` → a policy; ConfigError otherwise."""
        from ndis_replay.batching import parse_duration_ns

        spec = text.strip()
        if spec in ("sync", "deferred"):
            return cls(spec)
        kind, sep, arg = spec.partition(":")
        if sep and kind == "batched":
            if arg.isdigit() and int(arg) >= 1:
                return cls("batched", count=int(arg))
            raise ConfigError("completion", text, "batched needs a whole number of packets ≥ 1", COMPLETION_CHOICES)
        if sep and kind == "delay":
            try:
                delay = parse_duration_ns(arg, "completion")
            except ConfigError as error:
                raise ConfigError("completion", text, "not a duration", COMPLETION_CHOICES) from error
            return cls("delay", delay_ns=delay)
        raise ConfigError("completion", text, "unknown completion policy", COMPLETION_CHOICES)

    def __str__(self) -> str:
        if self.kind == "batched":
            return f"batched:{self.count}"
        if self.kind == "delay":
            from ndis_replay.batching import format_duration_ns

            return f"delay:{format_duration_ns(self.delay_ns)}"
        return self.kind

    def max_in_flight(self, max_call: int) -> int | None:
        """Most packets the miniport can hold uncompleted when the loop polls after every send call: ``max_call``
        for sync and deferred, ``N - 1 + max_call`` for batched:N, None (timing-dependent, unbounded a priori)
        for delay — strategies then fall back as their docstrings say."""
        if self.kind in ("sync", "deferred"):
            return max_call
        if self.kind == "batched":
            return self.count - 1 + max_call
        return None


class WireSink(ABC):
    """Receives what the miniport transmitted: one call per packet (NBL / NDIS_PACKET) in transmit order, with
    one frame per NET_BUFFER (more than one only when a filter fragmented the packet)."""

    @abstractmethod
    def transmit(self, frames: Sequence[bytes]) -> None:
        """The frames of one packet, as gathered from the MDL chains."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Flush and release (a file sink closes its file)."""


class ListWire(WireSink):
    """Keeps every packet's frames in memory (the checked pass compares them with the trace)."""

    def __init__(self) -> None:
        self.packets: list[tuple[bytes, ...]] = []

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Keep the frames of one packet."""
        self.packets.append(tuple(frames))

    def reassembled(self, header_lens: Sequence[int] | None = None) -> list[bytes]:
        """One byte string per packet: a single frame as is; fragments (each carrying a copy of the packet's
        ``header_len`` header bytes, as the ``clone`` strategy builds them) rejoined as the first fragment
        followed by the rest of each later fragment. Without ``header_lens`` fragments are concatenated."""
        out: list[bytes] = []
        for position, frames in enumerate(self.packets):
            if len(frames) == 1:
                out.append(frames[0])
                continue
            cut = 0 if header_lens is None else header_lens[position]
            out.append(frames[0] + b"".join(frame[cut:] for frame in frames[1:]) if frames else b"")
        return out


class PcapWire(WireSink):
    """Writes every transmitted frame to a pcap file as it goes (``--wire out.pcap``), in the format of
    :func:`ndis_replay.importers.pcap.write_pcap` (nanosecond timestamps = time.time_ns() at transmit)."""

    def __init__(self, path: str, linktype: int = 1, snaplen: int = 262_144) -> None:
        import struct

        self.path = path
        self.snaplen = snaplen
        self._record = struct.Struct("<IIII")
        #: the first OSError writing the file, as (errno, strerror): the file is incomplete and writing stopped. A
        #: full disk is the output's problem, not the strategy's: recorded here for the run to report, never raised
        #: into the checked pass (where it would count as the strategy failing)
        self.error: tuple[int, str] | None = None
        self.count = 0
        self._file: BinaryIO | None = None
        try:
            self._file = open(path, "wb")  # noqa: SIM115 - kept open across transmit() calls, closed in close()
        except OSError as exc:
            self.error = (exc.errno or 0, exc.strerror or str(exc))
        # the header write_pcap writes: ns-resolution magic, version 2.4, snaplen, linktype
        self._write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype))

    def _write(self, data: bytes) -> None:
        if self.error is not None or self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as exc:
            self.error = (exc.errno or 0, exc.strerror or str(exc))

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Append one record per frame."""
        import time

        now = time.time_ns()
        sec, frac = divmod(now, 1_000_000_000)
        for frame in frames:
            data = frame[: self.snaplen]
            self._write(self._record.pack(sec, frac, len(data), len(frame)))
            self._write(data)
            self.count += 1

    def close(self) -> None:
        """Close the file (a failure to flush the last bytes is recorded in :attr:`error`, not raised)."""
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:
                if self.error is None:
                    self.error = (exc.errno or 0, exc.strerror or str(exc))


@dataclass(frozen=True)
class MiniportParams:
    """Base of a miniport's parameters (frozen dataclass, fields with ``metadata["help"]``)."""

    def validate(self) -> None:
        """Raise ConfigError on an invalid value (subclasses extend)."""

    def as_dict(self) -> dict[str, Any]:
        """The parameter values (for run.json)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class Miniport(ABC):
    """A modelled miniport adapter. ``name`` is the registry key; ``Params`` its parameter dataclass.

    Extension point for device-backed miniports (the planned ``tap``): subclass, register both send handlers in
    :meth:`open`, hand each gathered frame to the device in the send handler and complete per the policy; raise an
    :class:`~ndis_replay.errors.EnvironmentProblem` subclass from :meth:`open` when the device cannot be had.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Params: ClassVar[type[MiniportParams]] = MiniportParams

    def __init__(self, params: MiniportParams | None = None) -> None:
        if params is None:
            params = self.Params()
        params.validate()
        self.params = params

    @abstractmethod
    def open(self, ndis: Ndis, completion: CompletionPolicy) -> MiniportInfo:
        """Register the send handlers with ``ndis`` (MiniportInitializeEx) and declare backfill, MTU, policy."""

    @abstractmethod
    def begin(self, complete_ns: numpy.ndarray[Any, Any] | None, wire: WireSink | None) -> None:
        """Start a round: ``complete_ns`` (int64, one slot per packet in replay order) receives
        ``time.perf_counter_ns()`` right after the completion call of the k-th completed packet returns (None: do not
        time); ``wire`` receives the transmitted bytes (None: gather nothing)."""

    @abstractmethod
    def poll(self) -> None:
        """Run due deferred completions, as a DPC would (as the miniport)."""

    @abstractmethod
    def drain(self) -> None:
        """Complete everything still pending (end of a round)."""

    @abstractmethod
    def close(self) -> None:
        """MiniportHaltEx: nothing may be pending."""

    # --- device-backed miniports (optional hooks; the in-process loopback uses none) ----------------------------

    @classmethod
    def prepare_run(cls, params: MiniportParams, linktypes: Sequence[int], trace: str) -> MiniportParams:
        """Run-scoped setup, called once in the parent before any worker starts (``tap``: creates the private
        network namespace and proves a device can be made in it). Returns the parameters the workers get (they
        name what was set up); :meth:`finish_run` receives them. ``linktypes`` are those of the replayed packets,
        ``trace`` names the trace in errors."""
        return params

    @classmethod  # noqa: B027 - optional hook, nothing to undo by default
    def finish_run(cls, params: MiniportParams) -> None:
        """Undo :meth:`prepare_run`, in the parent, after every worker has ended — also on error, Ctrl-C and
        SIGTERM."""

    def expect(self, inp: ReplayInput) -> None:  # noqa: B027 - optional hook
        """The replayed packets, before :meth:`begin`: a miniport that reads its frames back on the far side of a
        device checks them against these."""

    def delivery(self) -> tuple[dict[str, int], list[Finding]] | None:
        """After :meth:`drain`: what the far side of the device received since :meth:`begin`, checked against
        the trace — counts (frames, delivered, dropped, corrupted, reordered, unexpected, …) and WIRE-DELIVERY
        findings. None for a miniport without a far side."""
        return None


__all__ = [
    "COMPLETION_CHOICES",
    "CompletionPolicy",
    "ListWire",
    "Miniport",
    "MiniportInfo",
    "MiniportParams",
    "PcapWire",
    "WireSink",
]
