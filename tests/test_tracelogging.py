"""TraceLogging codec: encode/decode round trips per in-type, hand-made schemas, refusals, the real sonde sample."""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ndis_replay.importers.etw.container import EtlReader
from ndis_replay.importers.etw.driver import tracelogging_provider_guid
from ndis_replay.importers.etw.events import EXT_EVENT_SCHEMA_TL, EXT_PROV_TRAITS, EventBatch
from ndis_replay.importers.etw.tracelogging import (
    TraceLoggingDecoder,
    TraceLoggingError,
    decode_tracelogging,
    encode_tracelogging,
    parse_event_schema,
    parse_provider_traits,
)
from ndis_replay.importers.source import open_source
from tests.conftest import CORPUS

SONDE = CORPUS / "etw" / "generic-etl-sonde" / "test.etl"

CASES: list[tuple[str, str, Any]] = [
    ("int8", "int8", -128),
    ("uint8", "uint8", 255),
    ("int16", "int16", -32768),
    ("uint16", "uint16", 65535),
    ("int32", "int32", -(2**31)),
    ("uint32", "uint32", 2**32 - 1),
    ("int64", "int64", -(2**63)),
    ("uint64", "uint64", 2**64 - 1),
    ("float", "float", 1.5),
    ("double", "double", -2.25e-300),
    ("bool32-true", "bool32", True),
    ("bool32-false", "bool32", False),
    ("pointer", "pointer", 0xFFFF_A001_2345_6780),
    ("ansistring", "ansistring", "send ok — ü"),
    ("ansistring-empty", "ansistring", ""),
    ("unicodestring", "unicodestring", "Ethernet 2 \u20ac"),
    ("unicodestring-empty", "unicodestring", ""),
    ("countedstring", "countedstring", "NBL chain"),
    ("countedansistring", "countedansistring", "counted"),
    ("binary", "binary", bytes(range(40))),
    ("countedbinary", "countedbinary", b"\x00\xff\x00"),
    ("guid", "guid", uuid.UUID("4d4f80d9-c8bd-4d73-bb5b-19c90402c5ac")),
    ("filetime", "filetime", 133_625_243_160_000_000),
    ("systemtime", "systemtime", datetime.datetime(2026, 3, 27, 3, 57, 13, 336000, tzinfo=datetime.UTC)),
    ("hexint32", "hexint32", 0xDEADBEEF),
    ("hexint64", "hexint64", 0xFFFF_8000_0000_1000),
    ("uint32-array", "uint32[]", [1, 2, 3, 2**32 - 1]),
    ("empty-array", "uint16[]", []),
    ("ansistring-array", "ansistring[]", ["a", "", "bc"]),
    ("pointer-array", "pointer[]", [1, 2**63]),
]


@pytest.mark.parametrize("pointer_size", [4, 8], ids=["ptr32", "ptr64"])
@pytest.mark.parametrize(("type_name", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_round_trip_each_in_type(type_name: str, value: Any, pointer_size: int) -> None:
    if pointer_size == 4 and type_name.startswith("pointer"):
        value = [v & 0xFFFFFFFF for v in value] if isinstance(value, list) else value & 0xFFFFFFFF
    # a field before and after: the value must consume exactly its own bytes
    fields = [("Before", "uint16", 0x1234), ("Value", type_name, value), ("After", "uint32", 0xCAFEF00D)]
    extended, user_data = encode_tracelogging("MyDriver", "Ev", fields, pointer_size=pointer_size)
    event = decode_tracelogging(extended, user_data, pointer_size)
    assert event is not None
    assert event.provider == "MyDriver"
    assert event.name == "Ev"
    assert event.fields == {"Before": 0x1234, "Value": value, "After": 0xCAFEF00D}
    assert list(event.fields) == ["Before", "Value", "After"]


def test_pointer_width_follows_the_header_flag() -> None:
    extended, user_data = encode_tracelogging("P", "E", [("Nbl", "pointer", 0x11223344)], pointer_size=4)
    assert len(user_data) == 4
    event = decode_tracelogging(extended, user_data, 4)
    assert event is not None and event.fields == {"Nbl": 0x11223344}
    with pytest.raises(TraceLoggingError, match="past the user data"):
        decode_tracelogging(extended, user_data, 8)  # read as 64-bit, the payload is too short


def test_tags_and_names_survive_encoding() -> None:
    extended, _ = encode_tracelogging("Prov", "Name with spaces", [("f", "uint8", 1)], tags=0x0ABCDEF)
    schema = parse_event_schema(dict(extended)[EXT_EVENT_SCHEMA_TL])
    assert schema.name == "Name with spaces"
    assert schema.tags == 0x0ABCDEF
    assert parse_provider_traits(dict(extended)[EXT_PROV_TRAITS]) == "Prov"


def _schema(body: bytes) -> bytes:
    return struct.pack("<H", len(body) + 2) + body


def test_hand_made_schema_with_out_types_field_tags_and_constant_count() -> None:
    body = (
        b"\x80\x01"  # event tags: two bytes (chain bit on the first)
        + b"Ev\0"
        + b"a\0"
        + bytes([0x80 | 8, 0x80 | 20, 0x81, 0x02])  # uint32, OutType HEX with a chain of 2 tag bytes
        + b"b\0"
        + bytes([0x20 | 6])  # uint16 constant-count array…
        + struct.pack("<H", 3)  # …of 3 elements (count in the metadata)
        + b"c\0"
        + bytes([0x40 | 4])  # uint8 variable-count array (count in the payload)
    )
    traits = struct.pack("<H", 2 + 4 + 4) + b"Drv\0" + struct.pack("<HB", 4, 1) + b"\x00"  # one trait chunk
    extended = [(EXT_PROV_TRAITS, traits), (EXT_EVENT_SCHEMA_TL, _schema(body))]
    payload = struct.pack("<I3HH2B", 7, 1, 2, 3, 2, 9, 8)
    event = decode_tracelogging(extended, payload)
    assert event is not None
    assert (event.provider, event.name) == ("Drv", "Ev")
    assert event.fields == {"a": 7, "b": [1, 2, 3], "c": [9, 8]}


REFUSALS = [
    ("struct", _schema(b"\0Ev\0s\0" + bytes([0x80 | 24, 2])), b""),
    ("custom", _schema(b"\0Ev\0x\0" + bytes([0x60 | 14]) + struct.pack("<H", 2) + b"ab"), b""),
    ("unknown-in-type", _schema(b"\0Ev\0x\0" + bytes([26])), b"\0" * 8),
    ("unterminated-name", _schema(b"\0Ev"), b""),
    ("size-beyond-blob", struct.pack("<H", 200) + b"\0Ev\0", b""),
    ("missing-in-type", _schema(b"\0Ev\0x\0"), b""),
    ("short-payload", _schema(b"\0Ev\0x\0" + bytes([10])), b"\0" * 7),
    ("unterminated-string", _schema(b"\0Ev\0x\0" + bytes([2])), b"abc"),
    ("counted-past-end", _schema(b"\0Ev\0x\0" + bytes([23])), struct.pack("<H", 10) + b"abc"),
    ("bad-systemtime", _schema(b"\0Ev\0x\0" + bytes([18])), struct.pack("<8H", 2026, 13, 0, 1, 0, 0, 0, 0)),
]


@pytest.mark.parametrize(("schema", "payload"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_schemas_and_payloads(schema: bytes, payload: bytes) -> None:
    with pytest.raises(TraceLoggingError):
        decode_tracelogging([(EXT_EVENT_SCHEMA_TL, schema)], payload)


def test_not_tracelogging_without_schema_item() -> None:
    assert decode_tracelogging([(EXT_PROV_TRAITS, b"\x05\0ab\0")], b"") is None
    assert decode_tracelogging([], b"") is None


def test_decoder_caches_one_schema_per_event_kind() -> None:
    dec = TraceLoggingDecoder()
    ext, ud1 = encode_tracelogging("P", "E", [("x", "uint32", 1)])
    _, ud2 = encode_tracelogging("P", "E", [("x", "uint32", 2)])
    first, second = dec.schema(ext), dec.schema(ext)
    assert first is second  # compiled once
    e1, e2 = dec.decode(ext, ud1), dec.decode(ext, ud2)
    assert e1 is not None and e2 is not None
    assert (e1.fields, e2.fields) == ({"x": 1}, {"x": 2})


# --- the real sample ---------------------------------------------------------------------------------------


def _sonde_batches() -> Iterator[EventBatch]:
    if not SONDE.is_file():
        pytest.fail(f"the ETW corpus is missing at {SONDE}")
    source = open_source(SONDE)
    try:
        yield from EtlReader(source).batches()
    finally:
        source.close()


def _sonde_events() -> list[tuple[uuid.UUID, Any, bytes]]:
    dec = TraceLoggingDecoder()
    out = []
    for batch in _sonde_batches():
        for i in range(len(batch)):
            event = dec.decode(batch.extended_items(i), batch.user_data(i), batch.pointer_size(i))
            out.append((batch.provider(i), event, batch.user_data(i)))
    return out


def _systemtime(raw_hex: str) -> datetime.datetime:
    y, mo, _, d, h, mi, s, ms = struct.unpack("<8H", bytes.fromhex(raw_hex))
    return datetime.datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=datetime.UTC)


def test_sonde_sample_decodes() -> None:
    events = _sonde_events()
    assert len(events) == 9
    assert all(e is not None for _, e, _ in events)
    assert {e.provider for _, e, _ in events} == {"sonde-gateway"}
    # the provider GUID is the one TraceLogging derives from the name
    assert {g for g, _, _ in events} == {tracelogging_provider_guid("sonde-gateway")}
    names = [e.name for _, e, _ in events]
    assert names[0] == "event crates\\sonde-gateway\\src\\modem.rs:583"
    assert sorted(set(names)) == [
        "event crates\\sonde-gateway\\src\\engine.rs:581",
        "event crates\\sonde-gateway\\src\\engine.rs:586",
        "event crates\\sonde-gateway\\src\\engine.rs:707",
        "event crates\\sonde-gateway\\src\\modem.rs:583",
    ]
    # the second event in file order: fields time/message/node_id/seq, values read off its UserData bytes
    _, session, raw = events[1]
    assert list(session.fields) == ["time", "message", "node_id", "seq"]
    assert raw.hex().startswith("ea07030000001b00030039001600ac01")  # SYSTEMTIME 2026-03-27 03:57:22.428
    assert session.fields["time"] == _systemtime("ea07030000001b00030039001600ac01")
    assert session.fields["message"] == "session created"  # u16 15 + the bytes
    assert session.fields["node_id"] == "sensor--1"
    assert session.fields["seq"] == int.from_bytes(bytes.fromhex("7d4a990f143fbd08"), "little")
    wake = events[2][1]
    assert wake.fields["battery_mv"] == 3300 and wake.fields["seq"] == session.fields["seq"]
    assert events[3][1].fields["command_type"] == "Nop"
    first = events[0][1]
    assert first.fields["message"] == "modem health poll failed"
    assert first.fields["error"].startswith("transport I/O error: write modem frame")


def test_encoder_writes_the_bytes_of_the_real_sample() -> None:
    _, session, raw = _sonde_events()[1]
    fields = [
        ("time", "systemtime", session.fields["time"]),
        ("message", "countedansistring", "session created"),
        ("node_id", "countedansistring", "sensor--1"),
        ("seq", "uint64", session.fields["seq"]),
    ]
    extended, user_data = encode_tracelogging("sonde-gateway", session.name, fields)
    # all bytes equal but SYSTEMTIME.wDayOfWeek: the sample's writer leaves it 0, the encoder fills it in (Friday)
    assert user_data[4:6] == b"\x05\x00" and raw[4:6] == b"\x00\x00"
    assert user_data[:4] + user_data[6:] == raw[:4] + raw[6:]
    assert dict(extended)[EXT_PROV_TRAITS] == b"\x10\x00sonde-gateway\x00"  # as in the file
