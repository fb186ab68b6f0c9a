"""Upper bounds on the length fields of capture files, checked before anything is allocated for them.

Every length a reader takes from a file (a pcap record's caplen, a pcapng block's total length, an ETL buffer's
BufferSize, a tracerpt CSV line) says how many bytes to gather before the thing can be parsed. A damaged or
hostile file can claim gigabytes there; the readers compare each such field with the limit below first and
refuse the file with :class:`~ndis_replay.errors.LimitExceeded` (exit 3, one line naming the field and the
limit) instead of reading, buffering or decompressing that much.

The limits, with their defaults:

``record`` (256 KiB)
    A pcap record's caplen, a pcapng Enhanced/obsolete Packet Block's caplen and a Simple Packet Block's original
    length: Wireshark's standard maximum (WTAP_MAX_PACKET_SIZE_STANDARD). Link types whose records are
    legitimately larger (D-Bus, USBPcap, EBHSCR) keep Wireshark's larger bound for them when that is higher.
``block`` (64 MiB)
    A pcapng block's total length, the Section Header Block's included (Wireshark's limit is 16 MiB for most
    blocks). Option lengths are 16-bit and are checked against their block, so they need no limit of their own.
``buffer`` (64 MiB)
    An ETL buffer's BufferSize and Offset, and so the size an LZXPRESS-compressed buffer may decompress to
    (ETW buffers are at most 16 MiB). Event sizes and extended-item sizes are 16-bit and are checked against
    their buffer and record.
``line`` (1 MiB)
    A line of a tracerpt CSV export, and one CSV field (a quoted field may span lines), in characters.

They are changed with the environment variable ``NDIS_REPLAY_LIMITS``: comma-separated ``name=size`` pairs,
sizes in bytes or with a binary suffix (``KiB``, ``MiB``, ``GiB``), e.g. ``NDIS_REPLAY_LIMITS="record=1MiB,
block=256MiB"``. The variable is read once, on first use; a bad value is a :class:`~ndis_replay.errors.ConfigError`
(exit 2). An environment variable rather than a command-line option because the limits belong to every command
that reads a trace (``inspect``, ``import``, ``run``, ``verify``) and to library use of
:func:`~ndis_replay.importers.open_trace`, and are changed rarely, for one unusual file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace

from ndis_replay.errors import ConfigError

#: The environment variable that adjusts the limits.
ENV_VAR = "NDIS_REPLAY_LIMITS"

#: No limit may be set above this, in bytes: readers view their buffers with 32-bit offsets (Arrow's binary views,
#: numpy strides), so a single record, block or buffer must stay well under 2 GiB.
MAX_SETTABLE = 1 << 30

_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")


@dataclass(frozen=True)
class Limits:
    """The limits in force, in bytes (``line``: characters). See the module docstring for what each bounds."""

    record: int = 256 << 10
    block: int = 64 << 20
    buffer: int = 64 << 20
    line: int = 1 << 20


#: The defaults, as documented above.
DEFAULTS = Limits()
_current: Limits | None = None


def parse_size(text: str) -> int:
    """``"64MiB"`` → 67108864: a byte count with an optional binary suffix; ValueError otherwise."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (a number of bytes, optionally with KiB, MiB or GiB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_size(n: int) -> str:
    """A byte count as the largest binary unit that divides it exactly (``67108864`` → ``"64 MiB"``)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,} bytes"


def parse_limits(text: str, base: Limits = DEFAULTS) -> Limits:
    """``base`` with the ``name=size`` pairs of ``text`` applied; :class:`ConfigError` for a bad pair."""
    names = tuple(f.name for f in fields(Limits))
    changes: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in names:
            raise ConfigError(ENV_VAR, text, f"{item.strip()!r} is not NAME=SIZE with a known NAME", names)
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise ConfigError(ENV_VAR, text, f"{name}: {exc}") from None
        if not 1 <= size <= MAX_SETTABLE:
            raise ConfigError(ENV_VAR, text, f"{name} must be between 1 byte and {format_size(MAX_SETTABLE)}")
        changes[name] = size
    return replace(base, **changes)


def current() -> Limits:
    """The limits in force: the defaults adjusted by ``NDIS_REPLAY_LIMITS`` (read on the first call)."""
    global _current
    if _current is None:
        _current = parse_limits(os.environ.get(ENV_VAR, ""))
    return _current


def reset() -> None:
    """Forget the limits read so far: the next :func:`current` reads ``NDIS_REPLAY_LIMITS`` again (for tests)."""
    global _current
    _current = None
