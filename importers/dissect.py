"""The tshark path: any capture Wireshark reads, and each packet's highest protocol, through pyshark.

:func:`read_with_tshark` turns a snoop, ERF, Network Monitor, … file (and pcap/pcapng too) into the same canonical
:class:`~ndis_replay.trace.Trace` the fast reader makes; :func:`add_protocols` adds a ``protocol`` column (the
last element of tshark's ``frame.protocols``) to any trace whose source file tshark can read.

How tshark's view becomes the canonical one
-------------------------------------------
* **Bytes and lengths.** ``frame_raw`` (``tshark -x``) is the captured bytes, ``frame.len`` the wire length.
* **Timestamps** are ``frame.time_epoch`` parsed as a decimal string into integer nanoseconds, never through a
  float (a float holds only ~16 significant digits, too few for ns since 1970). A record without a timestamp
  (a pcapng Simple Packet Block) has none in tshark either; its ``ts_ns`` is null, as with the fast reader.
* **Direction** is the pcapng ``epb_flags`` direction (``frame.packet_flags_direction``: 1 inbound, 2
  outbound) when the source has it, else unknown; the builder then reads LINUX_SLL/SLL2 packet types as the
  fast reader does.
* **Interfaces.** ``capinfos -t -I -M`` (same Debian package as tshark) gives the file type and the interface
  table (name, description, snapshot length, timestamp resolution, Wireshark encapsulation). tshark 4.0 numbers
  pcapng interfaces per section; they are renumbered across sections like the fast reader does, by counting
  Interface Description Blocks per section. Should one interface carry packets of two encapsulations (formats
  with per-packet encapsulation), the second gets an interface id of its own, with a warning.
* **Link types.** tshark reports Wireshark's internal encapsulation (``WTAP_ENCAP_*``, ``frame.encap_type``),
  not a LINKTYPE. :data:`WTAP_TO_LINKTYPE` maps it back, built from Wireshark's own table
  (``wiretap/pcap-common.c``: ``pcap_to_wtap_map`` and ``wtap_wtap_encap_to_pcap_encap``) and checked against
  the installed tshark 4.0.17 one LINKTYPE at a time. Where several LINKTYPEs share one encapsulation
  (RAW 101/12/14, PPP 9/50, C_HDLC 104/112, …) the first of Wireshark's table is reported — the value Wireshark
  itself writes. An encapsulation with no LINKTYPE (NetMon 802.11, nettl, Logcat, …), or one whose pcap
  pseudo-header Wireshark strips from the bytes (SunATM, ERF, PPP_WITH_DIR, …: the bytes are then not in that
  LINKTYPE's format), gets :data:`LINKTYPE_UNMAPPED` and a warning naming the encapsulation; its
  ``header_len`` is 0.

* **Records that are not packets** (pcapng Custom Blocks, which tshark shows as frames without an
  encapsulation) are skipped, as the fast reader skips them; ``index`` numbers the packets alone. A timestamp
  beyond the i64 nanosecond range (years 1677-2262) is left null with a ``timestamp-out-of-range`` warning.

Refusals and damage: a file tshark reads only as a document (MP4, JSON, JPEG, …: Wireshark's file-format
dissectors take even a 4-byte text file for MP4), or of which it reads no packet at all, is
:class:`TsharkCannotRead` (a :class:`~ndis_replay.errors.TraceFormatError`) with tshark's own message as one
line. When tshark stops on damage after some packets, those are kept with a ``damaged`` warning — tshark does not
say at which byte the damage starts, so the warning's offset is empty and its detail names where the last good
record starts — and with ``strict`` that is a TraceFormatError instead.

pyshark runs tshark (``-T json -x``), owns its event loop and subprocess, and splits the output into packets;
this module replaces only pyshark's per-packet object model with a plain reading of the JSON, because
pyshark's ``Packet`` needs a timestamp (it fails on Simple Packet Blocks) and costs more than all the rest. It
also keeps every stderr line and learns tshark's exit status instead of pyshark's crash exception. That uses
pyshark internals (``_setup_tshark_output_parser``, ``_cleanup_subprocess``, ``_handle_process_stderr_forever``,
``_get_tshark_version``, ``_packets_from_tshark_sync``, ``_eof_reached``), checked with pyshark 0.6: the tests of
this module exercise each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import shutil
import struct
import subprocess
import warnings
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import polars as pl

from ndis_replay.errors import ToolFailed, ToolMissing, TraceFileError, TraceFormatError
from ndis_replay.importers.builder import RECV, SEND, UNKNOWN, PacketChunk, TraceBuilder
from ndis_replay.importers.source import open_source
from ndis_replay.trace import InterfaceInfo, Trace, TraceWarning

__all__ = [
    "LINKTYPE_UNMAPPED",
    "TSHARK_PACKAGE",
    "WTAP_TO_LINKTYPE",
    "CapinfosInterface",
    "CaptureInfo",
    "TsharkCannotRead",
    "TsharkFrame",
    "TsharkRun",
    "add_protocols",
    "capture_info",
    "epoch_ns",
    "file_sha256",
    "linktype_of_encap",
    "read_with_tshark",
    "tshark_message",
]

#: The Debian/Ubuntu package that provides tshark (and capinfos, through its dependency wireshark-common).
TSHARK_PACKAGE: Final = "tshark"

#: Link type given to packets whose Wireshark encapsulation has no LINKTYPE_* equivalent. 65535 is not an
#: assigned LINKTYPE (the registry ends near 300), so it cannot be mistaken for a real one.
LINKTYPE_UNMAPPED: Final = 0xFFFF

# --- Wireshark encapsulation → LINKTYPE ---------------------------------------------------------------------

#: ``(LINKTYPE, WTAP_ENCAP)`` pairs in the order of Wireshark's ``pcap_to_wtap_map`` (wiretap/pcap-common.c) as
#: built for Linux — the platform-independent entries first, then the DLT values that differ by OS. Verified
#: against the installed tshark 4.0.17 by reading a one-packet pcap of every LINKTYPE 0-301.
_PCAP_TO_WTAP: Final[tuple[tuple[int, int], ...]] = (
    (0, 15), (1, 1), (2, 184), (3, 148), (6, 2), (7, 8), (8, 3), (9, 4), (10, 6), (32, 69), (50, 4),
    (51, 139), (99, 61), (100, 10), (101, 7), (104, 28), (105, 20), (106, 11), (107, 26), (108, 174),
    (109, 38), (112, 28), (113, 25), (114, 30), (117, 39), (118, 29), (119, 21), (121, 32), (122, 18),
    (123, 13), (127, 23), (128, 37), (129, 9), (130, 81), (131, 82), (133, 87), (135, 68), (136, 151),
    (137, 67), (138, 62), (139, 75), (140, 42), (141, 43), (142, 101), (143, 33), (144, 44),
    (147, 45), (148, 46), (149, 47), (150, 48), (151, 49), (152, 50), (153, 51), (154, 52), (155, 53),
    (156, 54), (157, 55), (158, 56), (159, 57), (160, 58), (161, 59), (162, 60),
    (163, 24), (165, 63), (167, 76), (169, 66), (170, 178), (171, 179), (172, 77), (173, 78), (177, 88),
    (178, 83), (179, 84), (180, 85), (181, 86), (183, 91), (184, 181), (186, 92), (187, 41), (188, 93),
    (189, 95), (190, 109), (192, 97), (195, 104), (196, 100), (197, 98), (199, 103), (200, 197), (201, 99),
    (202, 147), (203, 131), (204, 19), (209, 112), (210, 106), (211, 108), (212, 107), (213, 111), (214, 105),
    (215, 113), (220, 115), (224, 121), (225, 122), (226, 124), (227, 125), (228, 129), (229, 130), (230, 127),
    (231, 146), (235, 132), (236, 133), (237, 157), (239, 141), (240, 135), (241, 136), (242, 180), (243, 138),
    (245, 140), (248, 149), (249, 152), (250, 153), (251, 154), (252, 155), (253, 158), (254, 159), (255, 160),
    (256, 161), (258, 171), (259, 172), (260, 173), (264, 177), (266, 182), (268, 36), (270, 183), (271, 185),
    (272, 186), (273, 199), (274, 198), (275, 200), (276, 210), (279, 204), (280, 205), (283, 206), (287, 211),
    (288, 208), (290, 212), (292, 214), (293, 215), (294, 216), (295, 217),
    # DLT values that mean different things on different OSes (Linux reading): RAW, ENC, ATM, CLIP
    (11, 10), (12, 7), (13, 38), (14, 7), (16, 11), (18, 11), (19, 11),
)  # fmt: skip

#: Encapsulations ``wtap_wtap_encap_to_pcap_encap`` maps before consulting the table: FDDI (5), FDDI
#: bit-swapped (6) and nettl FDDI (73) to FDDI; Frame Relay with direction (27) to FRELAY; 802.11 with radio
#: information in a pseudo-header (22) to plain IEEE802_11 (the radio information is not in the bytes).
_WTAP_SPECIAL: Final[dict[int, int]] = {5: 10, 6: 10, 73: 10, 27: 107, 22: 105}

#: Encapsulations whose pcap form starts with a pseudo-header that Wireshark moves out of the packet bytes
#: (the bytes tshark shows are shorter than the record by its length): SunATM (13), PPP_WITH_DIR (19), IrDA
#: (44), MTP2_WITH_PHDR (75), LINUX_LAPD (88), ERF (98), BLUETOOTH_HCI_H4_WITH_PHDR (99), SITA (100),
#: I2C_LINUX (112), NFC_LLCP (140), BLUETOOTH_LINUX_MONITOR (159). Their bytes are in no LINKTYPE's format.
_PSEUDO_HEADER_STRIPPED: Final = frozenset({13, 19, 44, 75, 88, 98, 99, 100, 112, 140, 159})


#: Encapsulations Wireshark uses to show a whole file that is not a packet capture (its file-format dissectors:
#: ASN.1 BER, TNEF, JPEG, other MIME types, JSON, Ruby marshal, RFC 7468 PEM, MP4). tshark "reads" such files
#: — and a 4-byte text file as MP4 — but they hold no packets: they are refused as not a capture.
_FILE_ENCAPS: Final[dict[int, str]] = {
    90: "ASN.1 BER",
    114: "TNEF",
    123: "JPEG",
    134: "MIME",
    175: "JSON",
    201: "Ruby marshal",
    202: "RFC 7468",
    209: "MP4",
}


def _wtap_to_linktype() -> dict[int, int]:
    table: dict[int, int] = dict(_WTAP_SPECIAL)
    for linktype, encap in _PCAP_TO_WTAP:
        table.setdefault(encap, linktype)  # the first entry of Wireshark's table wins, as when it writes pcap
    for encap in _PSEUDO_HEADER_STRIPPED:
        del table[encap]
    return table


#: Wireshark encapsulation (``frame.encap_type``) → LINKTYPE_* of the bytes tshark shows.
WTAP_TO_LINKTYPE: Final[dict[int, int]] = _wtap_to_linktype()


def linktype_of_encap(encap: int) -> int | None:
    """The LINKTYPE_* of a Wireshark encapsulation's bytes, or None when no LINKTYPE describes them."""
    return WTAP_TO_LINKTYPE.get(encap)


@functools.lru_cache(maxsize=4)
def _encap_names(tshark: str) -> dict[int, str]:
    """Wireshark's descriptions of its encapsulations, from the installed tshark (only asked when needed)."""
    try:
        done = subprocess.run([tshark, "-G", "values"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for line in done.stdout.splitlines():
        if line.startswith("V\tframe.encap_type\t"):
            parts = line.split("\t")
            if len(parts) >= 4 and parts[2].lstrip("-").isdigit():
                names[int(parts[2])] = parts[3]
    return names


# --- timestamps ---------------------------------------------------------------------------------------------

_EPOCH = re.compile(r"(-?)(\d+)(?:\.(\d{1,9}))?")


def epoch_ns(text: str) -> int:
    """Nanoseconds since the epoch from tshark's ``frame.time_epoch`` (``"1084443427.311224000"``), exactly.

    The string is read as a decimal: seconds and at most 9 fractional digits, an optional leading minus for
    times before 1970 (tshark 4.0 prints ``"-0.500000000"``). Anything else raises ValueError.
    """
    m = _EPOCH.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a tshark epoch time: {text!r}")
    sign, whole, frac = m.groups()
    ns = int(whole) * 1_000_000_000 + int((frac or "").ljust(9, "0"))
    return -ns if sign else ns


# --- one packet as tshark reports it ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TsharkFrame:
    """One packet as tshark reports it, before any conversion to the canonical trace."""

    #: ``frame.number`` - 1: tshark's record number, which also counts records that are not packets
    record: int
    #: ``frame.time_epoch`` as printed (None when the record has no timestamp)
    time_epoch: str | None
    #: ``frame.len``, ``frame.cap_len``
    wire_len: int
    cap_len: int
    #: ``frame.interface_id`` (per section in pcapng), ``frame.section_number`` (1-based; None if not given)
    interface_id: int
    section: int | None
    #: ``frame.encap_type``: Wireshark's WTAP_ENCAP_* value; None for a record that is not a packet (a pcapng
    #: Custom Block, a systemd journal entry, …: tshark shows those as frames too)
    encap: int | None
    #: ``frame.packet_flags_direction`` (0 unknown, 1 inbound, 2 outbound); None when the source has no flags
    flags_direction: int | None
    #: ``frame.interface_name``, ``frame.interface_description`` ("" when not given)
    interface_name: str
    interface_description: str
    #: ``frame.file_off``: where the record starts in the (decompressed) file, when tshark says
    file_offset: int | None
    #: ``frame.protocols`` (e.g. ``"eth:ethertype:ip:tcp"``), when dissecting
    protocols: str | None
    #: captured bytes (``frame_raw``); empty when the run did not ask for them
    data: bytes
    #: other protocol layers asked for by name (``extra_layers``), as tshark's JSON gives them
    layers: dict[str, Any] = field(default_factory=dict)

    @property
    def is_packet(self) -> bool:
        """False for the records tshark shows as frames that are not packets (pcapng Custom Blocks, …)."""
        return self.encap is not None

    @property
    def highest_protocol(self) -> str | None:
        """The last element of ``frame.protocols`` (``"http"`` for ``"eth:ethertype:ip:tcp:http"``)."""
        if not self.protocols:
            return None
        return self.protocols.rsplit(":", 1)[-1] or None


def _one(value: Any) -> Any:
    """tshark --no-duplicate-keys turns a repeated key into a list; the first occurrence is the frame's own."""
    return value[0] if isinstance(value, list) and value and isinstance(value[0], list | dict) else value


def _frame_from_json(doc: Any, raw: bool, extra_layers: Sequence[str]) -> TsharkFrame:
    layers = doc["_source"]["layers"]
    frame = _one(layers["frame"])
    iface_tree = frame.get("frame.interface_id_tree") or {}
    flags = (frame.get("frame.packet_flags_tree") or {}).get("frame.packet_flags_direction")
    data = b""
    if raw:
        frame_raw = _one(layers.get("frame_raw"))
        if frame_raw and isinstance(frame_raw[0], str):
            data = bytes.fromhex(frame_raw[0])
    section = frame.get("frame.section_number")
    file_off = frame.get("frame.file_off")
    encap = frame.get("frame.encap_type")
    return TsharkFrame(
        record=int(frame["frame.number"]) - 1,
        time_epoch=frame.get("frame.time_epoch"),
        wire_len=int(frame["frame.len"]),
        cap_len=int(frame["frame.cap_len"]),
        interface_id=int(frame.get("frame.interface_id", 0)),
        section=None if section is None else int(section),
        encap=None if encap is None else int(encap),
        flags_direction=None if flags is None else int(flags, 0),
        interface_name=iface_tree.get("frame.interface_name", ""),
        interface_description=iface_tree.get("frame.interface_description", ""),
        file_offset=None if file_off is None else int(file_off),
        protocols=frame.get("frame.protocols"),
        data=data,
        layers={name: layers[name] for name in extra_layers if name in layers},
    )


# --- running tshark through pyshark -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _tshark_version(tshark: str) -> Any:
    """pyshark asks ``tshark -v`` (0.2 s) for every capture; once per program is enough."""
    from pyshark.tshark.tshark import get_tshark_version

    return get_tshark_version(tshark)


def _capture_class() -> type[Any]:
    """pyshark's FileCapture with its per-packet object model replaced by :class:`TsharkFrame` (imported late:
    pyshark is only needed on this path)."""
    import pyshark
    from pyshark.tshark.output_parser.tshark_json import TsharkJsonParser

    class FrameParser(TsharkJsonParser):  # type: ignore[misc]
        def __init__(self, version: Any, raw: bool, extra_layers: Sequence[str]) -> None:
            super().__init__(version)
            self.raw = raw
            self.extra_layers = tuple(extra_layers)

        def _parse_single_packet(self, packet: bytes) -> TsharkFrame:
            try:
                return _frame_from_json(json.loads(packet), self.raw, self.extra_layers)
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                raise ToolFailed("tshark", f"unexpected JSON output ({type(exc).__name__}: {exc})") from exc

    class FrameCapture(pyshark.FileCapture):  # type: ignore[misc]
        """Collects every stderr line, and on cleanup waits for a tshark that reached the end of its output
        (to learn its exit status) instead of killing it; a run stopped early is killed."""

        def __init__(self, path: Path, tshark: str, params: list[str], raw: bool, extra: Sequence[str]) -> None:
            self.stderr_lines: list[str] = []
            self.returncode: int | None = None
            self._stopped = False
            self._raw = raw
            self._extra = tuple(extra)
            self._tshark = tshark
            super().__init__(
                str(path),
                keep_packets=False,
                use_json=True,
                include_raw=raw,
                tshark_path=tshark,
                custom_parameters=params,
            )

        def _get_tshark_version(self) -> Any:
            return _tshark_version(self._tshark)

        def _setup_tshark_output_parser(self) -> Any:
            return FrameParser(self._get_tshark_version(), self._raw, self._extra)

        async def _handle_process_stderr_forever(self, stderr: Any) -> None:
            while line := await stderr.readline():
                self.stderr_lines.append(line.decode("utf-8", "replace").rstrip())

        async def _cleanup_subprocess(self, process: Any) -> None:
            if process.returncode is None:
                if self._eof_reached:
                    try:  # tshark closed its output: it is exiting, and its status says whether it failed
                        await asyncio.wait_for(process.wait(), 30)
                    except TimeoutError:
                        self._stopped = True
                else:
                    self._stopped = True  # left early (an exception, or the caller stopped iterating)
                if self._stopped:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            if not self._stopped:  # a status of ours (a kill) says nothing about the file
                self.returncode = process.returncode

    return FrameCapture


_ROOT_WARNING = re.compile(r'^Running as user ".*" and group ".*"\. This could be dangerous\.$')


class TsharkRun:
    """One tshark pass over a capture; iterate for :class:`TsharkFrame`\\ s, use as a context manager.

    ``raw`` asks for the packet bytes (``-x``), ``dissect`` for ``frame.protocols`` (without it the IP layers
    are not dissected at all, which is faster), ``extra_layers`` keeps those protocol layers in
    :attr:`TsharkFrame.layers`. After the iteration, :attr:`failure` is tshark's error message (one line) when it
    stopped on an error, else None. Closing — also on an exception, and when the iteration is left early —
    ends tshark and pyshark's stderr task.
    """

    def __init__(
        self, path: str | Path, *, raw: bool = True, dissect: bool = False, extra_layers: Sequence[str] = ()
    ) -> None:
        tshark = shutil.which("tshark")
        if tshark is None:
            raise ToolMissing("tshark", TSHARK_PACKAGE, "reading captures through Wireshark (--reader tshark)")
        self.path = Path(path)
        self.tshark = tshark
        # -J: print only the frame layer's fields (and the asked-for layers); frame.file_off for damage reports
        params = ["-J", " ".join(("frame", *extra_layers)), "-o", "frame.show_file_off:TRUE"]
        if not dissect:
            params += ["--disable-protocol", "ip", "--disable-protocol", "ipv6"]  # ~25% faster, frame unchanged
        # pyshark installs a SafeChildWatcher attached to its own event loop for the whole process and leaves it
        # there once that loop is closed: any later asyncio subprocess (playwright's driver, for one) then fails
        # with "get_child_watcher() is not activated". The watcher in place before is put back by close().
        self._watcher = _current_child_watcher()
        self._capture = _capture_class()(self.path, tshark, params, raw, extra_layers)
        self._iter: Generator[TsharkFrame, None, None] | None = None
        self._closed = False

    def __iter__(self) -> Iterator[TsharkFrame]:
        if self._iter is None:
            self._iter = self._capture._packets_from_tshark_sync()  # the generator FileCapture.__iter__ returns
        return self._iter

    def __enter__(self) -> TsharkRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End tshark (if still running) and pyshark's tasks; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._iter is not None:
                self._iter.close()  # runs pyshark's own cleanup, which ends a tshark still running
        finally:
            try:
                self._capture.close()
            finally:
                _restore_child_watcher(self._watcher)

    @property
    def returncode(self) -> int | None:
        """tshark's exit status once it ended on its own (None when it was stopped early or is running)."""
        rc: int | None = self._capture.returncode
        return rc

    @property
    def failure(self) -> str | None:
        """tshark's error message as one line when it exited with an error, else None."""
        rc = self.returncode
        if rc is None or rc == 0:
            return None
        if rc < 0:
            return f"tshark was killed by signal {-rc}"
        return tshark_message(self._capture.stderr_lines, self.path) or f"tshark exited with status {rc}"


def tshark_message(lines: Sequence[str], path: str | Path) -> str:
    """tshark's error message as one line: its last ``tshark: …`` line and any lines after it (the detail in
    parentheses), joined; the warning about running as root is dropped, and the quoted file name is left out
    (the path is printed in front of every message anyway)."""
    kept = [ln.strip() for ln in lines if ln.strip() and not _ROOT_WARNING.match(ln.strip())]
    if not kept:
        return ""
    starts = [i for i, ln in enumerate(kept) if ln.startswith("tshark: ")]
    message = " ".join(kept[starts[-1] :] if starts else kept[-1:])
    return message.replace(f' "{path}"', "")


# --- capinfos: file type and interfaces ---------------------------------------------------------------------


@dataclass(frozen=True)
class CapinfosInterface:
    """One interface as ``capinfos -I -M`` lists it (globally numbered, in file order)."""

    name: str = ""
    description: str = ""
    #: Wireshark encapsulation number and its description (``"Ethernet"``), from ``Encapsulation = …``
    encap: int | None = None
    encap_name: str = ""
    snaplen: int = 0
    ticks_per_second: int = 0


@dataclass(frozen=True)
class CaptureInfo:
    """What capinfos says about a file (partial when capinfos failed half way)."""

    file_type: str | None
    interfaces: tuple[CapinfosInterface, ...]


_ENCAP_LINE = re.compile(r"(?P<name>.*) \((?P<num>-?\d+) - (?P<short>[^)]*)\)")


def capture_info(path: str | Path) -> CaptureInfo | None:
    """``capinfos -t -I -M``: the file type (``"pcapng"``, ``"snoop"``, …) and the interface table; None when
    capinfos is not installed. It reads the file at C speed, a small cost next to tshark's JSON."""
    capinfos = shutil.which("capinfos")
    if capinfos is None:
        return None
    try:
        done = subprocess.run([capinfos, "-t", "-I", "-M", str(path)], capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    file_type: str | None = None
    found: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("File type:"):
            # "pcapng (zstd compressed)": the compression is a field of its own (TraceMeta.compression)
            file_type = re.sub(r" \(\w+ compressed\)$", "", line.split(":", 1)[1].strip()) or None
        elif m := re.match(r"Interface #(\d+) info:", line):
            number = int(m.group(1))
            # capinfos 4.0 repeats the whole list under each "Section n:"; the first listing is kept
            current = None if number in found else found.setdefault(number, {})
        elif line.startswith(" ") and " = " in line:
            if current is not None:
                key, value = line.strip().split(" = ", 1)
                current[key] = value
        else:
            current = None
    interfaces = []
    for i in range(len(found)):
        fields = found.get(i, {})
        encap = encap_name = None
        if m := _ENCAP_LINE.fullmatch(fields.get("Encapsulation", "")):
            encap, encap_name = int(m.group("num")), f"{m.group('name')} ({m.group('short')})"
        interfaces.append(
            CapinfosInterface(
                name=fields.get("Name", ""),
                description=fields.get("Description", ""),
                encap=encap,
                encap_name=encap_name or "",
                snaplen=_int(fields.get("Capture length")),
                ticks_per_second=_int(fields.get("Time ticks per second")),
            )
        )
    return CaptureInfo(file_type, tuple(interfaces))


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _pcapng_interfaces_per_section(path: Path) -> list[int] | None:
    """Interface Description Blocks per pcapng section, from a walk over the block headers only (decompressing
    as needed); None if the file does not walk as pcapng. Needed because tshark numbers interfaces per section."""
    counts: list[int] = []
    source = open_source(path)
    try:
        endian = "<"
        while header := source.read(12):
            if len(header) < 12:
                break
            (btype,) = struct.unpack_from(endian + "I", header)
            if btype == 0x0A0D0D0A:  # Section Header Block: its byte-order magic sets the order of what follows
                bom = header[8:12]
                endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
                if not endian:
                    return counts or None
                counts.append(0)
            elif not counts:
                return None
            elif btype == 1:
                counts[-1] += 1
            (blen,) = struct.unpack_from(endian + "I", header, 4)
            if blen < 12 or blen % 4:
                break
            skipped = source.read(blen - 12)
            if len(skipped) < blen - 12:
                break
    except Exception:  # a damaged stream ends the walk; what was counted stands
        pass
    finally:
        source.close()
    return counts or None


class _Interfaces:
    """Turns tshark's (section, interface id, encapsulation) into the trace's interface ids and table."""

    def __init__(self, builder: TraceBuilder, path: Path, info: CaptureInfo | None, tshark: str) -> None:
        self.builder = builder
        self.path = path
        self.tshark = tshark
        self.listed = info.interfaces if info is not None else ()
        self.is_pcapng = info is not None and info.file_type == "pcapng"
        self.section_base: list[int] | None = None  # first global id of each section, walked when needed
        self.numbering_warned = False
        self.ids: dict[tuple[int, int], int] = {}  # (global id, encap) → trace interface id
        self.used: dict[int, int] = {}  # trace interface id → encap
        self.split_warned: set[int] = set()
        for gid, listed in enumerate(self.listed):
            if listed.encap is not None:
                self._register(gid, gid, listed.encap, listed, section=None)

    def trace_id(self, frame: TsharkFrame, encap: int) -> int:
        gid = self._global_id(frame)
        key = (gid, encap)
        tid = self.ids.get(key)
        if tid is not None:
            return tid
        listed = self.listed[gid] if gid < len(self.listed) else None
        tid = gid
        if tid in self.used:  # this interface already carries another encapsulation: give this one its own id
            tid = max(self.used) + 1
            if gid not in self.split_warned:
                self.split_warned.add(gid)
                self.builder.warn(
                    "interface-split",
                    f"interface {gid} carries packets of several Wireshark encapsulations; "
                    f"each after the first gets an interface id of its own (first: {tid})",
                    record=frame.record,
                )
        section = None if frame.section is None else frame.section - 1
        self._register(tid, gid, encap, listed, section, frame)
        return tid

    def _global_id(self, frame: TsharkFrame) -> int:
        if frame.section is None or frame.section <= 1:
            return frame.interface_id
        base = self._section_bases()
        if frame.section - 1 < len(base):
            return frame.interface_id + base[frame.section - 1]
        if not self.numbering_warned:
            self.numbering_warned = True
            self.builder.warn(
                "interface-numbering",
                "interfaces of later pcapng sections could not be renumbered across sections; "
                "their ids are tshark's per-section ids",
                record=frame.record,
            )
        return frame.interface_id

    def _section_bases(self) -> list[int]:
        """First global interface id of each pcapng section (walked once, only for multi-section files)."""
        if self.section_base is None:
            counts = _pcapng_interfaces_per_section(self.path) if self.is_pcapng else None
            bases = [0]
            for n in counts or ():
                bases.append(bases[-1] + n)
            self.section_base = bases[:-1] if counts else [0]  # the last sum is the total, not a section start
        return self.section_base

    def _register(
        self,
        tid: int,
        gid: int,
        encap: int,
        listed: CapinfosInterface | None,
        section: int | None,
        frame: TsharkFrame | None = None,
    ) -> None:
        linktype = linktype_of_encap(encap)
        if linktype is None:
            name = listed.encap_name if listed is not None and listed.encap == encap else ""
            name = name or _encap_names(self.tshark).get(encap, "")
            if encap in _PSEUDO_HEADER_STRIPPED:
                why = "Wireshark moves its pseudo-header out of the packet bytes, so they are in no LINKTYPE's format"
            elif encap == 0:  # WTAP_ENCAP_UNKNOWN
                why = "Wireshark does not know the link type the file declares"
            else:
                why = "it has no LINKTYPE equivalent"
            self.builder.warn(
                "unmapped-encapsulation",
                f"interface {tid}: Wireshark encapsulation {encap} ({name or 'unnamed'}): {why}; "
                f"link type {LINKTYPE_UNMAPPED} stands in, and header_len is 0",
            )
            linktype = LINKTYPE_UNMAPPED
        if section is None:
            section = self._section_of(gid)
        ticks = listed.ticks_per_second if listed is not None else 0
        self.builder.add_interface(
            InterfaceInfo(
                id=tid,
                linktype=linktype,
                name=(listed.name if listed is not None else "") or (frame.interface_name if frame else ""),
                description=(listed.description if listed is not None else "")
                or (frame.interface_description if frame else ""),
                snaplen=listed.snaplen if listed is not None else 0,
                section=section,
                ts_resolution=str(Fraction(10**9, ticks)) if ticks > 0 else "",
            )
        )
        self.ids[(gid, encap)] = tid
        self.used[tid] = encap

    def _section_of(self, gid: int) -> int:
        if not self.is_pcapng or len(self.listed) <= 1:
            return 0
        return max(0, sum(1 for b in self._section_bases()[1:] if b <= gid))


# --- public entry points ------------------------------------------------------------------------------------


class TsharkCannotRead(TraceFormatError):
    """tshark could not read a single packet of the file (not a capture it knows, or damaged from the start)."""


#: Packets handed to the builder at a time (bounds the Python objects alive at once).
_CHUNK = 4096
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_DIRECTION_OF_FLAGS: Final = {1: RECV, 2: SEND}  # epb_flags bits 0-1: 01 inbound, 10 outbound


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _current_child_watcher() -> asyncio.AbstractChildWatcher:
    with warnings.catch_warnings():  # the child-watcher API is deprecated from Python 3.12 on
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_child_watcher()


def _restore_child_watcher(watcher: asyncio.AbstractChildWatcher) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if asyncio.get_child_watcher() is not watcher:
            asyncio.set_child_watcher(watcher)


def read_with_tshark(
    path: str | Path, *, strict: bool = False, keep_data: bool = True, batching: str = "none", dissect: bool = False
) -> Trace:
    """Read any capture Wireshark reads into a validated :class:`Trace` (``reader="tshark"``).

    ``dissect`` also fills the ``protocol`` column in the same pass. ``strict`` makes damage after some good
    packets an error instead of a ``damaged`` warning. See the module docstring for how tshark's fields become
    the canonical columns.

    Speed: tshark writing JSON and Python parsing it cost about 0.2-0.3 ms per packet, so this path reads roughly
    3,500-5,000 packets/s (measured on 2 cores, with or without ``dissect``), plus ~0.5 s to start tshark and
    capinfos — two to three orders of magnitude slower than the fast reader. Use it for formats the fast reader
    does not know.

    Raises :class:`~ndis_replay.errors.ToolMissing` without tshark, :class:`TsharkCannotRead` when tshark reads
    no packet, :class:`~ndis_replay.errors.TraceFileError` when the file cannot be opened.
    """
    p = Path(path)
    if shutil.which("tshark") is None:
        raise ToolMissing("tshark", TSHARK_PACKAGE, "reading captures through Wireshark (--reader tshark)")
    source = open_source(p)  # refuses a missing file or a directory the same way the fast reader does
    compression = source.compression
    size = source.size
    source.close()
    info = capture_info(p)
    builder = TraceBuilder(p, strict=strict, keep_data=keep_data)
    interfaces = _Interfaces(builder, p, info, shutil.which("tshark") or "tshark")
    protocols: list[str | None] = []
    count = skipped = 0
    last: TsharkFrame | None = None
    cols: tuple[list[int], list[int], list[int], list[int], list[int], list[bytes], list[bool]] = (
        [], [], [], [], [], [], []
    )  # fmt: skip
    with TsharkRun(p, raw=True, dissect=dissect) as run:
        for frame in run:
            if frame.encap is None:
                skipped += 1  # not a packet; the fast reader skips these blocks too
                continue
            if frame.encap in _FILE_ENCAPS:
                raise TsharkCannotRead(
                    p, f"tshark reads it only as a {_FILE_ENCAPS[frame.encap]} file, not as a packet capture"
                )
            record, ts, iface, direction, wire, data, missing = cols
            record.append(count)  # packets in file order, as the fast reader numbers its records
            stamp = None if frame.time_epoch is None else _epoch_or_fail(frame.time_epoch)
            if stamp is not None and not _INT64_MIN <= stamp <= _INT64_MAX:
                builder.warn(
                    "timestamp-out-of-range",
                    "timestamps beyond the range of ns since 1970 in 64 bits (years 1677-2262) are left empty",
                    record=count,
                )
                stamp = None
            ts.append(0 if stamp is None else stamp)
            missing.append(stamp is None)
            iface.append(interfaces.trace_id(frame, frame.encap))
            direction.append(_DIRECTION_OF_FLAGS.get(frame.flags_direction or 0, UNKNOWN))
            wire.append(frame.wire_len)
            data.append(frame.data)
            if dissect:
                protocols.append(frame.highest_protocol)
            count += 1
            last = frame
            if len(record) >= _CHUNK:
                _flush(builder, cols)
        _flush(builder, cols)
    failure = run.failure
    if failure is not None:
        if count == 0:
            raise TsharkCannotRead(p, failure)
        where = f" (the last good record starts at byte {last.file_offset})" if last and last.file_offset else ""
        builder.salvage(
            f"{failure}; tshark stopped after {count} packets{where}",
            offset=None,
            record=count,
        )
    version = _tshark_version(run.tshark)
    return builder.build(
        sha256=file_sha256(p),
        size=size,
        fmt=(info.file_type if info is not None and info.file_type else "tshark"),
        compression=compression,
        reader="tshark",
        batching=batching,
        details={"tshark": str(version), **({"non_packet_records": skipped} if skipped else {})},
        extra_columns={"protocol": pl.Series("protocol", protocols, dtype=pl.String)} if dissect else None,
    )


def _epoch_or_fail(text: str) -> int:
    try:
        return epoch_ns(text)
    except ValueError as exc:
        raise ToolFailed("tshark", str(exc)) from exc


def _flush(
    builder: TraceBuilder,
    cols: tuple[list[int], list[int], list[int], list[int], list[int], list[bytes], list[bool]],
) -> None:
    record, ts, iface, direction, wire, data, missing = cols
    if not record:
        return
    builder.add(
        PacketChunk.from_packets(record, ts, iface, direction, wire, data, ts_missing=missing if any(missing) else None)
    )
    for column in cols:
        column.clear()


def add_protocols(trace: Trace) -> Trace:
    """The trace with a ``protocol`` column: each packet's highest protocol as tshark dissects its source file.

    Matching: tshark's packets are numbered in file order (records that are not packets skipped), as both
    readers number theirs in the ``index`` column, and a tshark packet labels the row with its number only if
    their captured and wire lengths agree too — a label is attached only where the packet is provably the same.
    Positional alignment alone would shift every label after a record one side skipped. Rows without a
    provable match keep a null protocol; whenever tshark's packet count differs from the trace's or some row
    is left without a label, a ``protocol-mismatch`` warning gives both counts (this happens when tshark stops
    on damage the fast reader salvaged around, for a trace filtered after import, or for link types whose
    pseudo-header Wireshark moves out of the bytes). When tshark cannot read the file at all the column is all
    null, with a ``dissect-failed`` warning giving tshark's message. A source file that changed since the
    import (its sha256 differs) is refused with :class:`~ndis_replay.errors.TraceFormatError`.
    """
    path = Path(trace.meta.source)
    if shutil.which("tshark") is None:
        raise ToolMissing("tshark", TSHARK_PACKAGE, "--dissect (each packet's highest protocol)")
    if not path.is_file():
        raise TraceFileError(path, "no such file (the trace's source is needed for --dissect)")
    if trace.meta.sha256 and file_sha256(path) != trace.meta.sha256:
        raise TraceFormatError(path, "changed since the trace was imported (its sha256 differs); cannot dissect it")
    by_record: dict[int, tuple[int, int, str | None]] = {}
    with TsharkRun(path, raw=False, dissect=True) as run:
        for frame in run:
            if frame.is_packet:
                by_record[len(by_record)] = (frame.cap_len, frame.wire_len, frame.highest_protocol)
    failure = run.failure
    rows = trace.frame
    labels: list[str | None] = []
    unmatched = 0
    for index, cap_len, wire_len in zip(
        rows["index"].to_list(), rows["cap_len"].to_list(), rows["wire_len"].to_list(), strict=True
    ):
        hit = by_record.get(index)
        if hit is not None and hit[0] == cap_len and hit[1] == wire_len:
            labels.append(hit[2])
        else:
            labels.append(None)
            unmatched += 1
    warnings = list(trace.meta.warnings)
    if failure is not None and not by_record:
        warnings.append(TraceWarning("dissect-failed", f"tshark could not dissect the file: {failure}"))
    elif unmatched or len(by_record) != len(trace):
        stopped = f"; tshark stopped: {failure}" if failure else ""
        warnings.append(
            TraceWarning(
                "protocol-mismatch",
                f"tshark dissected {len(by_record)} packets, the trace has {len(trace)}; {unmatched} rows match no "
                f"tshark packet by position and lengths and have no protocol{stopped}",
                count=max(unmatched, 1),
            )
        )
    column = pl.Series("protocol", labels, dtype=pl.String)
    return trace.replace(rows.with_columns(column), warnings=tuple(warnings)).validate()
