"""The event map: which of a driver's own events are sends and send-completes, and which fields to read.

A small TOML file written by the user (read with the stdlib ``tomllib``)::

    # optional: keep only the events of one provider (TraceLogging provider name; in a tracerpt CSV the
    # "Event Name" column)
    [source]
    provider = "MyDriver"

    [send]
    event = "MiniportSendNetBufferLists"   # the event name, or a list of names
    nbl = "Nbl"           # the field holding the NBL pointer
    length = "Length"     # the frame length in bytes (becomes wire_len)
    call = "CallId"       # optional: send-call id; NBLs sent in one call share it (batching "auto" uses it)

    [complete]
    event = "SendComplete"
    nbl = "Nbl"

Event names are matched exactly: the TraceLogging event name in an .etl; in a tracerpt CSV the "Type" column,
the "Event Name" column or ``"<Event Name>/<Type>"``. A field is named either by its name or by its 1-based
position among the event's fields, ``"#1"``, ``"#2"``… A tracerpt CSV carries no field names (its "User Data"
columns are the fields in order): there, name fields by position, or list the names of the positions once
with ``fields = ["Nbl", "Length", "CallId"]`` in the section.

Every mistake is one :class:`~ndis_replay.errors.TraceFormatError` naming the map file and the key: an
unknown table or key, a missing one, a wrong type, the same event for send and complete.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ndis_replay.errors import TraceFormatError

_SECTION_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # section: (required keys, optional keys)
    "send": (("event", "nbl", "length"), ("call", "fields")),
    "complete": (("event", "nbl"), ("fields",)),
    "source": ((), ("provider",)),
}


@dataclass(frozen=True)
class FieldRef:
    """A field named by ``name`` or by 1-based ``position`` (exactly one is set)."""

    name: str | None = None
    position: int | None = None

    def __str__(self) -> str:
        return self.name if self.name is not None else f"#{self.position}"

    def index_in(self, names: Sequence[str]) -> int | None:
        """The 0-based index of this field among ``names`` (the event's fields in order); None when absent."""
        if self.position is not None:
            return self.position - 1 if self.position <= len(names) else None
        try:
            return list(names).index(self.name)  # type: ignore[arg-type]
        except ValueError:
            return None

    def pick(self, fields: Mapping[str, Any]) -> tuple[bool, Any]:
        """``(found, value)`` from a decoded event's ordered fields."""
        if self.name is not None:
            return (True, fields[self.name]) if self.name in fields else (False, None)
        if self.position is not None and self.position <= len(fields):
            return True, list(fields.values())[self.position - 1]
        return False, None


@dataclass(frozen=True)
class EventRule:
    """One side of the map: the event names and the fields to read (``length``/``call`` only for sends)."""

    events: tuple[str, ...]
    nbl: FieldRef
    length: FieldRef | None = None
    call: FieldRef | None = None
    #: names of the positional fields (for sources without field names: tracerpt CSV)
    fields: tuple[str, ...] = ()

    def matches(self, *names: str) -> bool:
        """True when any of ``names`` is one of this rule's events."""
        return any(n in self.events for n in names)

    def position(self, ref: FieldRef) -> int | None:
        """The 0-based position of ``ref`` for a source without field names, None when it cannot be known."""
        if ref.position is not None:
            return ref.position - 1
        return ref.index_in(self.fields) if self.fields else None


@dataclass(frozen=True)
class EventMap:
    """A parsed, validated event map."""

    send: EventRule
    complete: EventRule
    provider: str | None = None
    path: str = "<event map>"


def load_event_map(path: str | Path) -> EventMap:
    """Read and validate an event map file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceFormatError(p, "event map: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFormatError(p, f"event map cannot be read ({exc})") from None
    return parse_event_map(text, p)


def parse_event_map(text: str, path: str | Path = "<event map>") -> EventMap:
    """Validate event map TOML ``text``; ``path`` names it in errors."""

    def bad(reason: str) -> TraceFormatError:
        return TraceFormatError(path, f"event map: {reason}")

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise bad(f"not valid TOML ({exc})") from None
    for key, value in raw.items():
        if key not in _SECTION_KEYS:
            raise bad(f"unknown table [{key}]; the tables are [send], [complete] and [source]")
        if not isinstance(value, dict):
            raise bad(f"{key!r} must be a table ([{key}]), not a {_type_name(value)}")
    for section in ("send", "complete"):
        if section not in raw:
            raise bad(f"missing table [{section}]")
    for section, table in raw.items():
        required, optional = _SECTION_KEYS[section]
        for key in table:
            if key not in required and key not in optional:
                known = ", ".join(required + optional)
                raise bad(f"unknown key {key!r} in [{section}]; known keys: {known}")
        for key in required:
            if key not in table:
                raise bad(f"missing key {key!r} in [{section}]")
    send = _rule(raw["send"], "send", bad)
    complete = _rule(raw["complete"], "complete", bad)
    both = set(send.events) & set(complete.events)
    if both:
        raise bad(f"event {sorted(both)[0]!r} is both [send] and [complete] event")
    provider = raw.get("source", {}).get("provider")
    if provider is not None:
        provider = _string(provider, "source", "provider", bad)
    return EventMap(send=send, complete=complete, provider=provider, path=str(path))


def _type_name(value: object) -> str:
    return {str: "string", int: "integer", float: "float", bool: "boolean", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _string(value: object, section: str, key: str, bad: Any) -> str:
    if not isinstance(value, str):
        raise bad(f"[{section}] {key} must be a string, not a {_type_name(value)}")
    if not value.strip():
        raise bad(f"[{section}] {key} is empty")
    return value


def _field(value: object, section: str, key: str, bad: Any) -> FieldRef:
    text = _string(value, section, key, bad)
    if text.startswith("#"):
        digits = text[1:]
        if not digits.isdigit() or int(digits) < 1:
            raise bad(f"[{section}] {key} = {text!r}: a position is '#1', '#2', … (1-based)")
        return FieldRef(position=int(digits))
    return FieldRef(name=text)


def _rule(table: dict[str, Any], section: str, bad: Any) -> EventRule:
    event = table["event"]
    if isinstance(event, list):
        if not event:
            raise bad(f"[{section}] event is an empty list")
        events = tuple(_string(e, section, "event", bad) for e in event)
    else:
        events = (_string(event, section, "event", bad),)
    fields: tuple[str, ...] = ()
    if "fields" in table:
        raw_fields = table["fields"]
        if not isinstance(raw_fields, list):
            raise bad(f"[{section}] fields must be an array of strings, not a {_type_name(raw_fields)}")
        fields = tuple(_string(f, section, "fields", bad) for f in raw_fields)
        if len(set(fields)) != len(fields):
            raise bad(f"[{section}] fields names a field twice")
    refs = {k: _field(table[k], section, k, bad) for k in ("nbl", "length", "call") if k in table}
    for key, ref in refs.items():
        if fields and ref.name is not None and ref.name not in fields:
            raise bad(f"[{section}] {key} = {ref.name!r} is not in its fields list")
    return EventRule(events=events, nbl=refs["nbl"], length=refs.get("length"), call=refs.get("call"), fields=fields)
