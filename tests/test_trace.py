"""The canonical Trace: Parquet round trip, validation of the invariants, atomic writes; batching rules."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ndis_replay.batching import assign_batches, parse_batching, parse_duration_ns
from ndis_replay.errors import ConfigError, OutputExists, TraceFileError
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng
from ndis_replay.trace import InvalidTrace, Trace

T0 = 1_700_000_000_000_000_000


@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    # interface 0: four sends with gaps 1us, 30us, 5us; one receive; then interface 1
    packets = [
        (0, T0, b"a" * 60, 60, "send"),
        (0, T0 + 1_000, b"b" * 60, 60, "send"),
        (0, T0 + 2_000, b"r" * 60, 60, "recv"),
        (0, T0 + 31_000, b"c" * 60, 60, "unknown"),
        (0, T0 + 36_000, b"d" * 60, 60, "send"),
        (1, T0 + 37_000, b"e" * 60, 60, "send"),
        (1, T0 + 38_000, b"f" * 60, 60, "send"),
    ]
    path = tmp_path / "t.pcapng"
    write_pcapng(path, packets, interfaces=[WriterInterface(), WriterInterface()])
    return open_trace(path)


def test_parquet_round_trip_keeps_frame_and_metadata(tmp_path: Path, trace: Trace) -> None:
    out = tmp_path / "t.parquet"
    trace.save(out)
    back = Trace.load(out)
    assert back.frame.equals(trace.frame)
    assert back.meta == trace.meta
    assert list(tmp_path.glob(".*tmp")) == []


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path, trace: Trace) -> None:
    out = tmp_path / "t.parquet"
    out.write_text("precious")
    with pytest.raises(OutputExists):
        trace.save(out)
    assert out.read_text() == "precious"
    trace.save(out, overwrite=True)
    assert Trace.load(out).frame.height == len(trace)


def test_failed_write_leaves_nothing(tmp_path: Path, trace: Trace, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(Exception, match="No space left"):
        trace.save(tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == [tmp_path / "t.pcapng"]


@pytest.mark.parametrize(
    "content,error",
    [(b"not parquet at all", InvalidTrace), (None, TraceFileError)],
    ids=["garbage", "missing"],
)
def test_load_refuses_what_is_not_a_trace(tmp_path: Path, content: bytes | None, error: type[Exception]) -> None:
    path = tmp_path / "x.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error):
        Trace.load(path)


def test_load_refuses_a_foreign_parquet(tmp_path: Path) -> None:
    path = tmp_path / "foreign.parquet"
    pl.DataFrame({"a": [1, 2]}).write_parquet(path)
    with pytest.raises(InvalidTrace, match="not a trace written by ndis-replay"):
        Trace.load(path)


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda f: f.drop("wire_len"), "missing columns"),
        (lambda f: f.with_columns(pl.col("cap_len").cast(pl.Int64)), "expected UInt32"),
        (lambda f: f.with_columns(pl.lit(1, pl.UInt32).alias("index")), "strictly increasing"),
        (lambda f: f.with_columns((pl.col("cap_len") + 1).alias("cap_len")), "length of data"),
        (lambda f: f.with_columns(pl.lit(9999, pl.UInt16).alias("header_len")), "header_len exceeds"),
        (lambda f: f.with_columns(pl.lit(0, pl.UInt32).alias("batch")), "batch must be set exactly"),
        (lambda f: f.with_columns(pl.lit(7, pl.UInt16).alias("interface")), "not in the interface table"),
        (lambda f: f.with_columns(pl.lit(1, pl.Int8).alias("extra")), "unknown column"),
    ],
    ids=["missing", "dtype", "index", "cap_len", "header_len", "batch", "interface", "extra"],
)
def test_validation_catches_broken_invariants(trace: Trace, mutate: object, reason: str) -> None:
    broken = Trace(mutate(trace.frame), trace.meta)  # type: ignore[operator]
    with pytest.raises(InvalidTrace, match=reason):
        broken.validate()


# --- batching ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule,expected",
    [
        ("none", [0, 1, None, 2, 3, 4, 5]),
        ("1", [0, 1, None, 2, 3, 4, 5]),
        ("2", [0, 0, None, 1, 1, 2, 2]),  # a call never spans two interfaces
        ("3", [0, 0, None, 0, 1, 2, 2]),
        ("gap=1us", [0, 0, None, 1, 2, 3, 3]),  # the received packet does not break or join calls
        ("gap=5us", [0, 0, None, 1, 1, 2, 2]),
        ("gap=1s", [0, 0, None, 0, 0, 1, 1]),
        ("auto", [0, 0, None, 1, 1, 2, 2]),  # no source call ids: gap=20us
    ],
)
def test_batching_rules(trace: Trace, rule: str, expected: list[int | None]) -> None:
    assert assign_batches(trace.frame, parse_batching(rule)).to_list() == expected
    rebatched = trace.with_batching(rule).validate()
    assert rebatched.meta.batching == str(parse_batching(rule))


def test_gap_rule_starts_a_call_at_a_missing_timestamp(trace: Trace) -> None:
    frame = trace.frame.with_columns(pl.when(pl.col("index") == 1).then(None).otherwise(pl.col("ts_ns")).alias("ts_ns"))
    assert assign_batches(frame, parse_batching("gap=1s")).to_list() == [0, 1, None, 2, 2, 3, 3]


@pytest.mark.parametrize("text", ["", "0", "-3", "gap=", "gap=20", "gap=20 parsecs", "fixed", "auto=1"])
def test_bad_batching_rules_name_the_choices(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_batching(text)
    assert info.value.choices


@pytest.mark.parametrize(
    "text,ns",
    [("100ns", 100), ("20us", 20_000), ("20µs", 20_000), ("1.5ms", 1_500_000), ("2s", 2_000_000_000)],
)
def test_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert str(parse_batching(f"gap={text}")) == f"gap={text}".replace("µs", "us").replace("1.5ms", "1500us")


def test_empty_trace_batches_to_nothing(trace: Trace) -> None:
    empty = trace.frame.head(0)
    assert assign_batches(empty, parse_batching("gap=1us")).to_list() == []
