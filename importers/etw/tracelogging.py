"""TraceLogging self-describing events: decode (and encode, for tests and samples) provider, event and fields.

A TraceLogging event carries its own schema (ETW_FORMAT.md §6). ETW moves it into two extended data items of
the EVENT_HEADER record:

* ``EXT_PROV_TRAITS`` (0x0C): ``u16 size`` (the whole blob, this field included), the NUL-terminated UTF-8
  provider name, then trait chunks (``u16 size, u8 type, data``; type 1 = provider group GUID), ignored here.
* ``EXT_EVENT_SCHEMA_TL`` (0x0B): ``u16 size`` (the whole blob), the event tags (one to four bytes; bit 0x80 of
  a byte = another follows), the NUL-terminated UTF-8 event name, then per field: the NUL-terminated name,
  ``u8 InType`` (bits 0-4 the type; bits 5-6 0x20 constant-count array, 0x40 variable-count array, 0x60 custom;
  bit 0x80 an OutType byte follows), ``[u8 OutType]`` (bits 0-6 the type; bit 0x80 field tags follow),
  ``[tags]``, ``[u16 count]`` for a constant-count array (or the size of a custom schema, then that schema).

The UserData holds the field values back to back, unaligned: fixed-size scalars as is, NUL-terminated ANSI
(bytes) and Unicode (UTF-16LE) strings, counted strings and binaries as ``u16 byte count`` + bytes, a
variable-count array as ``u16 count`` + the elements. Pointer fields (InType 16, TDH_INTYPE_POINTER) are 4 or
8 bytes by the EVENT_HEADER's 32/64-bit flag; TraceLogging's own ``TraceLoggingPointer`` is HEXINT64/HEXINT32.
Struct fields (InType 24) and custom-schema fields are refused per event (:class:`TraceLoggingError`).

Layout sources: TraceLoggingProvider.h (Windows SDK), PerfView's TraceLogging parser and .NET EventSource's
``Statics`` (the InType flag values), checked against the real sonde sample (ETW_FORMAT.md §9).
"""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ndis_replay.importers.etw.events import EXT_EVENT_SCHEMA_TL, EXT_PROV_TRAITS

#: InType codes (TlgIn_t / TDH_INTYPE).
IN_NULL = 0
IN_UNICODESTRING = 1
IN_ANSISTRING = 2
IN_INT8 = 3
IN_UINT8 = 4
IN_INT16 = 5
IN_UINT16 = 6
IN_INT32 = 7
IN_UINT32 = 8
IN_INT64 = 9
IN_UINT64 = 10
IN_FLOAT = 11
IN_DOUBLE = 12
IN_BOOL32 = 13
IN_BINARY = 14
IN_GUID = 15
IN_POINTER = 16
IN_FILETIME = 17
IN_SYSTEMTIME = 18
IN_SID = 19
IN_HEXINT32 = 20
IN_HEXINT64 = 21
IN_COUNTEDSTRING = 22
IN_COUNTEDANSISTRING = 23
IN_STRUCT = 24
IN_COUNTEDBINARY = 25

IN_TYPE_MASK = 0x1F
IN_COUNT_MASK = 0x60
IN_CONSTANT_COUNT = 0x20
IN_VARIABLE_COUNT = 0x40
IN_CUSTOM = 0x60
IN_CHAIN = 0x80
OUT_TYPE_MASK = 0x7F
OUT_CHAIN = 0x80

#: OutType written with 8-bit strings, as the sonde sample (a Rust tracelogging crate) does: TDH_OUTTYPE_UTF8.
OUT_UTF8 = 35

#: Type names accepted by :func:`encode_tracelogging` (a ``[]`` suffix makes a variable-count array).
TYPE_CODES: dict[str, int] = {
    "unicodestring": IN_UNICODESTRING,
    "ansistring": IN_ANSISTRING,
    "int8": IN_INT8,
    "uint8": IN_UINT8,
    "int16": IN_INT16,
    "uint16": IN_UINT16,
    "int32": IN_INT32,
    "uint32": IN_UINT32,
    "int64": IN_INT64,
    "uint64": IN_UINT64,
    "float": IN_FLOAT,
    "double": IN_DOUBLE,
    "bool32": IN_BOOL32,
    "binary": IN_BINARY,
    "guid": IN_GUID,
    "pointer": IN_POINTER,
    "filetime": IN_FILETIME,
    "systemtime": IN_SYSTEMTIME,
    "hexint32": IN_HEXINT32,
    "hexint64": IN_HEXINT64,
    "countedstring": IN_COUNTEDSTRING,
    "countedansistring": IN_COUNTEDANSISTRING,
    "countedbinary": IN_COUNTEDBINARY,
}
TYPE_NAMES: dict[int, str] = {v: k for k, v in TYPE_CODES.items()}

#: struct formats of the fixed-size scalar in-types (pointer: by the header flag).
_SCALAR_FORMATS: dict[int, str] = {
    IN_INT8: "b",
    IN_UINT8: "B",
    IN_INT16: "h",
    IN_UINT16: "H",
    IN_INT32: "i",
    IN_UINT32: "I",
    IN_INT64: "q",
    IN_UINT64: "Q",
    IN_FLOAT: "f",
    IN_DOUBLE: "d",
    IN_BOOL32: "I",
    IN_FILETIME: "Q",
    IN_HEXINT32: "I",
    IN_HEXINT64: "Q",
}


class TraceLoggingError(ValueError):
    """A TraceLogging schema or payload this decoder cannot read; ``reason`` is a short, countable phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TlField:
    """One field of an event schema. ``count`` is the constant element count of a constant-count array."""

    name: str
    in_type: int
    out_type: int = 0
    tags: int = 0
    array: str | None = None  # None, "constant" or "variable"
    count: int = 0


@dataclass(frozen=True)
class TlSchema:
    """An event's TraceLogging schema: its name, tags and fields in payload order."""

    name: str
    tags: int
    fields: tuple[TlField, ...]


@dataclass(frozen=True)
class TlEvent:
    """A decoded TraceLogging event: provider name (``""`` without PROV_TRAITS), event name, fields in order."""

    provider: str
    name: str
    fields: dict[str, Any]


# --- metadata ----------------------------------------------------------------------------------------------


def _cstring(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    nul = data.find(b"\0", pos, end)
    if nul < 0:
        raise TraceLoggingError(f"{what} is not NUL-terminated")
    return data[pos:nul].decode("utf-8", errors="replace"), nul + 1


def _tags(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A tag chain: up to 4 bytes of 7 bits each, most significant first (28 tag bits)."""
    tags, shift = 0, 21
    while True:
        if pos >= end:
            raise TraceLoggingError("tag chain runs past the schema")
        b = data[pos]
        pos += 1
        if shift >= 0:
            tags |= (b & 0x7F) << shift
        shift -= 7
        if not b & 0x80:
            return tags, pos


def _blob_size(data: bytes, minimum: int, what: str) -> int:
    """The u16 size that starts a TraceLogging metadata blob, checked against the blob and ``minimum``."""
    if len(data) < minimum:
        raise TraceLoggingError(f"{what} shorter than {minimum} bytes")
    (size,) = struct.unpack_from("<H", data, 0)
    if size < minimum or size > len(data):
        raise TraceLoggingError(f"{what} size {size} outside {minimum}..{len(data)}")
    return int(size)


def parse_provider_traits(data: bytes) -> str:
    """The provider name from a PROV_TRAITS blob."""
    size = _blob_size(data, 3, "provider traits")
    name, _ = _cstring(data, 2, size, "provider name")
    return name


def parse_event_schema(data: bytes) -> TlSchema:
    """An EVENT_SCHEMA_TL blob as a :class:`TlSchema`; :class:`TraceLoggingError` when it is malformed."""
    size = _blob_size(data, 4, "event schema")
    tags, pos = _tags(data, 2, size)
    name, pos = _cstring(data, pos, size, "event name")
    fields: list[TlField] = []
    while pos < size:
        fname, pos = _cstring(data, pos, size, "field name")
        if pos >= size:
            raise TraceLoggingError(f"field {fname!r} has no InType")
        raw_in = data[pos]
        pos += 1
        out_type = ftags = 0
        if raw_in & IN_CHAIN:
            if pos >= size:
                raise TraceLoggingError(f"field {fname!r} has no OutType")
            raw_out = data[pos]
            pos += 1
            out_type = raw_out & OUT_TYPE_MASK
            if raw_out & OUT_CHAIN:
                ftags, pos = _tags(data, pos, size)
        in_type = raw_in & IN_TYPE_MASK
        flags = raw_in & IN_COUNT_MASK
        array: str | None = None
        count = 0
        if flags & IN_CONSTANT_COUNT:  # constant count and custom both carry a u16 in the metadata
            if pos + 2 > size:
                raise TraceLoggingError(f"field {fname!r} count runs past the schema")
            (count,) = struct.unpack_from("<H", data, pos)
            pos += 2
            if flags == IN_CUSTOM:
                raise TraceLoggingError("custom-schema field")
            array = "constant"
        elif flags == IN_VARIABLE_COUNT:
            array = "variable"
        if in_type == IN_STRUCT:
            raise TraceLoggingError("struct field")
        fields.append(TlField(fname, in_type, out_type, ftags, array, count))
    return TlSchema(name, tags, tuple(fields))


# --- payload -----------------------------------------------------------------------------------------------

_Decoder = Callable[[bytes, int], tuple[Any, int]]


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise TraceLoggingError(f"{what} runs past the user data")


def _scalar(fmt: str, convert: Callable[[Any], Any] | None = None) -> _Decoder:
    st = struct.Struct("<" + fmt)
    size = st.size

    def decode(data: bytes, pos: int) -> tuple[Any, int]:
        _need(data, pos, size, "a value")
        (v,) = st.unpack_from(data, pos)
        return (convert(v) if convert else v), pos + size

    return decode


def _ansi(data: bytes, pos: int) -> tuple[Any, int]:
    nul = data.find(b"\0", pos)
    if nul < 0:
        raise TraceLoggingError("an ANSI string runs past the user data")
    return data[pos:nul].decode("utf-8", errors="replace"), nul + 1


def _unicode(data: bytes, pos: int) -> tuple[Any, int]:
    end = pos
    while True:  # UTF-16 code units: the terminator is a 2-byte-aligned (relative to pos) zero unit
        nul = data.find(b"\0\0", end)
        if nul < 0:
            raise TraceLoggingError("a Unicode string runs past the user data")
        if (nul - pos) % 2 == 0:
            return data[pos:nul].decode("utf-16-le", errors="replace"), nul + 2
        end = nul + 1


def _counted(kind: str) -> _Decoder:
    def decode(data: bytes, pos: int) -> tuple[Any, int]:
        _need(data, pos, 2, "a length prefix")
        (n,) = struct.unpack_from("<H", data, pos)
        _need(data, pos + 2, n, "a counted value")
        raw = data[pos + 2 : pos + 2 + n]
        if kind == "utf16":
            return raw.decode("utf-16-le", errors="replace"), pos + 2 + n
        if kind == "utf8":
            return raw.decode("utf-8", errors="replace"), pos + 2 + n
        return raw, pos + 2 + n

    return decode


def _guid(data: bytes, pos: int) -> tuple[Any, int]:
    _need(data, pos, 16, "a GUID")
    return uuid.UUID(bytes_le=data[pos : pos + 16]), pos + 16


def _systemtime(data: bytes, pos: int) -> tuple[Any, int]:
    _need(data, pos, 16, "a SYSTEMTIME")
    y, mo, _dow, d, h, mi, s, ms = struct.unpack_from("<8H", data, pos)
    try:
        value = datetime.datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=datetime.UTC)
    except ValueError as exc:
        raise TraceLoggingError(f"a SYSTEMTIME is not a date ({exc})") from None
    return value, pos + 16


def _sid(data: bytes, pos: int) -> tuple[Any, int]:
    _need(data, pos, 8, "a SID")
    revision, subs = data[pos], data[pos + 1]
    size = 8 + 4 * subs
    _need(data, pos, size, "a SID")
    authority = int.from_bytes(data[pos + 2 : pos + 8], "big")
    parts = struct.unpack_from(f"<{subs}I", data, pos + 8)
    return "-".join(["S", str(revision), str(authority), *map(str, parts)]), pos + size


def _element_decoder(in_type: int, pointer_size: int) -> _Decoder:
    if in_type == IN_POINTER:
        return _scalar("I" if pointer_size == 4 else "Q")
    if in_type == IN_BOOL32:
        return _scalar("I", bool)
    fmt = _SCALAR_FORMATS.get(in_type)
    if fmt is not None:
        return _scalar(fmt)
    simple: dict[int, _Decoder] = {
        IN_ANSISTRING: _ansi,
        IN_UNICODESTRING: _unicode,
        IN_COUNTEDSTRING: _counted("utf16"),
        IN_COUNTEDANSISTRING: _counted("utf8"),
        IN_BINARY: _counted("bytes"),
        IN_COUNTEDBINARY: _counted("bytes"),
        IN_GUID: _guid,
        IN_SYSTEMTIME: _systemtime,
        IN_SID: _sid,
    }
    decoder = simple.get(in_type)
    if decoder is None:
        raise TraceLoggingError(f"in-type {in_type}")
    return decoder


def _field_decoder(f: TlField, pointer_size: int) -> _Decoder:
    element = _element_decoder(f.in_type, pointer_size)
    if f.array is None:
        return element

    def decode(data: bytes, pos: int) -> tuple[Any, int]:
        if f.array == "variable":
            _need(data, pos, 2, "an array count")
            (n,) = struct.unpack_from("<H", data, pos)
            pos += 2
        else:
            n = f.count
        values = []
        for _ in range(n):  # n ≤ 65535 and each element consumes ≥ 1 byte or raises: bounded
            v, pos = element(data, pos)
            values.append(v)
        return values, pos

    return decode


class CompiledSchema:
    """A schema turned into a payload decoder: :meth:`decode` maps UserData to ``{field: value}``."""

    def __init__(self, schema: TlSchema, pointer_size: int) -> None:
        self.schema = schema
        self.names = tuple(f.name for f in schema.fields)
        self._pointer_format = "I" if pointer_size == 4 else "Q"
        self._decoders = tuple(_field_decoder(f, pointer_size) for f in schema.fields)
        fmts = [
            ("I" if pointer_size == 4 else "Q") if f.in_type == IN_POINTER else _SCALAR_FORMATS.get(f.in_type)
            for f in schema.fields
        ]
        plain = all(f.array is None and f.in_type != IN_BOOL32 for f in schema.fields)
        # all fields fixed-size numbers: one struct.unpack_from for the whole payload
        self._fixed = struct.Struct("<" + "".join(x or "" for x in fmts)) if plain and all(fmts) else None

    def fixed_int_field(self, index: int) -> tuple[int, str] | None:
        """``(byte offset, struct format)`` of field ``index`` when it is an integer scalar at the same offset
        in every payload (every field before it fixed-size), for gathering it from many events at once."""
        offset = 0
        for i, f in enumerate(self.schema.fields):
            fmt = self._pointer_format if f.in_type == IN_POINTER else _SCALAR_FORMATS.get(f.in_type)
            if fmt is None or f.array is not None:
                return None
            if i == index:
                return (offset, fmt) if fmt not in ("f", "d") and f.in_type != IN_BOOL32 else None
            offset += struct.calcsize("<" + fmt)
        return None

    def decode(self, user_data: bytes) -> dict[str, Any]:
        """The field values of one event; :class:`TraceLoggingError` when the payload is too short."""
        if self._fixed is not None:
            if len(user_data) < self._fixed.size:
                raise TraceLoggingError("a value runs past the user data")
            return dict(zip(self.names, self._fixed.unpack_from(user_data), strict=True))
        out: dict[str, Any] = {}
        pos = 0
        for name, decoder in zip(self.names, self._decoders, strict=True):
            out[name], pos = decoder(user_data, pos)
        return out


class TraceLoggingDecoder:
    """Decodes TraceLogging events, caching each distinct schema (events of one kind share theirs)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, int], tuple[str, CompiledSchema]] = {}

    def schema(self, extended: Sequence[tuple[int, bytes]], pointer_size: int = 8) -> tuple[str, CompiledSchema] | None:
        """``(provider name, compiled schema)`` of an event from its extended items; None when it has no
        EVENT_SCHEMA_TL item (not a TraceLogging event); :class:`TraceLoggingError` when the schema is bad."""
        meta = traits = None
        for ext_type, data in extended:
            if ext_type == EXT_EVENT_SCHEMA_TL:
                meta = data
            elif ext_type == EXT_PROV_TRAITS:
                traits = data
        if meta is None:
            return None
        key = (meta + b"\0\xff" + (traits or b""), pointer_size)
        hit = self._cache.get(key)
        if hit is None:
            provider = parse_provider_traits(traits) if traits is not None else ""
            hit = (provider, CompiledSchema(parse_event_schema(meta), pointer_size))
            self._cache[key] = hit
        return hit

    def decode(self, extended: Sequence[tuple[int, bytes]], user_data: bytes, pointer_size: int = 8) -> TlEvent | None:
        """The decoded event, None when it is not a TraceLogging event."""
        found = self.schema(extended, pointer_size)
        if found is None:
            return None
        provider, compiled = found
        return TlEvent(provider, compiled.schema.name, compiled.decode(user_data))


def decode_tracelogging(
    extended: Sequence[tuple[int, bytes]], user_data: bytes, pointer_size: int = 8
) -> TlEvent | None:
    """Decode one event (no caching; use :class:`TraceLoggingDecoder` for many)."""
    return TraceLoggingDecoder().decode(extended, user_data, pointer_size)


# --- encoding ----------------------------------------------------------------------------------------------


def _encode_tags(tags: int) -> bytes:
    if not 0 <= tags < 1 << 28:
        raise ValueError("tags are 28 bits")
    chunks = [(tags >> s) & 0x7F for s in (21, 14, 7, 0)]
    while len(chunks) > 1 and chunks[-1] == 0:
        chunks.pop()
    return bytes([c | 0x80 for c in chunks[:-1]] + [chunks[-1]])


def _encode_value(in_type: int, value: Any, pointer_size: int) -> bytes:
    if in_type == IN_POINTER:
        return struct.pack("<I" if pointer_size == 4 else "<Q", value)
    if in_type == IN_BOOL32:
        return struct.pack("<I", 1 if value else 0)
    fmt = _SCALAR_FORMATS.get(in_type)
    if fmt is not None:
        return struct.pack("<" + fmt, value)
    if in_type == IN_ANSISTRING:
        return str(value).encode("utf-8") + b"\0"
    if in_type == IN_UNICODESTRING:
        return str(value).encode("utf-16-le") + b"\0\0"
    if in_type in (IN_COUNTEDSTRING, IN_COUNTEDANSISTRING, IN_BINARY, IN_COUNTEDBINARY):
        if in_type == IN_COUNTEDSTRING:
            raw = str(value).encode("utf-16-le")
        elif in_type == IN_COUNTEDANSISTRING:
            raw = str(value).encode("utf-8")
        else:
            raw = bytes(value)
        if len(raw) > 0xFFFF:
            raise ValueError("a counted value holds at most 65535 bytes")
        return struct.pack("<H", len(raw)) + raw
    if in_type == IN_GUID:
        return uuid.UUID(str(value)).bytes_le
    if in_type == IN_SYSTEMTIME:
        t: datetime.datetime = value
        return struct.pack(
            "<8H", t.year, t.month, t.isoweekday() % 7, t.day, t.hour, t.minute, t.second, t.microsecond // 1000
        )
    raise ValueError(f"cannot encode in-type {in_type}")


def encode_tracelogging(
    provider_name: str,
    event_name: str,
    fields: Sequence[tuple[str, str, object]],
    *,
    pointer_size: int = 8,
    tags: int = 0,
) -> tuple[list[tuple[int, bytes]], bytes]:
    """A TraceLogging event as ``(extended items, user data)``, for an EVENT_HEADER writer.

    ``fields`` are ``(name, type, value)`` with ``type`` a key of :data:`TYPE_CODES`, or such a key with a
    ``[]`` suffix for a variable-count array (``value`` a sequence). ``pointer_size`` sizes ``pointer`` fields
    and must match the record's 32/64-bit header flag.
    """
    traits_body = provider_name.encode("utf-8") + b"\0"
    traits = struct.pack("<H", 2 + len(traits_body)) + traits_body
    meta = bytearray(_encode_tags(tags) + event_name.encode("utf-8") + b"\0")
    payload = bytearray()
    for name, type_name, value in fields:
        is_array = type_name.endswith("[]")
        base = type_name[:-2] if is_array else type_name
        if base not in TYPE_CODES:
            raise ValueError(f"unknown TraceLogging type {type_name!r}; known: {', '.join(TYPE_CODES)}")
        in_type = TYPE_CODES[base]
        meta += name.encode("utf-8") + b"\0"
        raw_in = in_type | (IN_VARIABLE_COUNT if is_array else 0)
        if in_type in (IN_ANSISTRING, IN_COUNTEDANSISTRING):
            meta += bytes([raw_in | IN_CHAIN, OUT_UTF8])
        else:
            meta += bytes([raw_in])
        if is_array:
            items = list(value)  # type: ignore[call-overload]
            payload += struct.pack("<H", len(items))
            for item in items:
                payload += _encode_value(in_type, item, pointer_size)
        else:
            payload += _encode_value(in_type, value, pointer_size)
    if len(meta) + 2 > 0xFFFF:
        raise ValueError("event schema larger than 65535 bytes")
    schema = struct.pack("<H", len(meta) + 2) + bytes(meta)
    return [(EXT_PROV_TRAITS, traits), (EXT_EVENT_SCHEMA_TL, schema)], bytes(payload)
