"""The results directory: round trip, atomic writes (nothing left on failure or Ctrl-C), version refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ndis_replay.cli import describe
from ndis_replay.errors import ExitCode, OutputExists, OutputUnwritable, ResultsError, ResultsVersionError
from ndis_replay.results import (
    PACKET_SCHEMA,
    PACKETS_PARQUET,
    PERCENTILES,
    RESULTS_FORMAT_VERSION,
    RUN_JSON,
    LatencyTally,
    RunResult,
    StrategyResult,
    latency_summary,
    load,
    save,
)


def strategy(name: str = "reuse", **changes: Any) -> StrategyResult:
    values: dict[str, Any] = {
        "name": name,
        "base": name,
        "cls": "ndis_replay.engine.strategies.reuse:ReuseStrategy",
        "ndis_version": 6,
        "params": {"pool_depth": 0, "header": "whole"},
        "status": "ok",
        "failure": None,
        "timed": True,
        "summary": latency_summary([np.array([100, 200, 300])], [np.array([50])], [np.array([40])], [1000], 3),
        "counters": {"per_packet": {"mdl_allocs": 1.0}, "rounds": [{"mdl_allocs": 3}], "checked_pass": {}},
        "modelled_ns_per_packet": None,
        "peak_outstanding": {"nbl": 1},
        "memory": {"modelled_peak_bytes": 1024, "worker_peak_rss_bytes": 50_000_000},
        "findings": [],
        "finding_counts": {},
        "errors": 0,
        "warnings": 0,
        "wire": {"packets": 3, "ok": True},
        "timer": {"median_ns": 90, "min_ns": 80, "samples": 100},
    }
    values.update(changes)
    return StrategyResult(**values)


def result(*strategies: StrategyResult) -> RunResult:
    packets = pl.DataFrame(
        {
            "strategy": ["reuse"] * 3,
            "round": [0, 0, 0],
            "index": [0, 1, 2],
            "batch": [0, 1, 2],
            "size": [60, 60, 1514],
            "latency_ns": [100, 200, 300],
            "build_ns": [50, 50, 50],
            "send_ns": [40, 40, 40],
        },
        schema=PACKET_SCHEMA,
    )
    return RunResult(
        tool={"name": "ndis-replay", "version": "0.1.0"},
        command=["ndis-replay", "run", "t.pcap", "-s", "reuse"],
        created="2026-01-01T00:00:00+00:00",
        host={"hostname": "h", "cpu_count": 2},
        trace={"path": "t.pcap", "sha256": "ab", "packets": 3, "replayed": 3, "calls": 3, "format": "pcap"},
        miniport={"name": "loopback", "params": {}, "completion": "sync"},
        batching="none",
        rounds=1,
        warmup=0,
        pacing="asap",
        check_only=False,
        cost_profile=None,
        timer_overhead_ns=90,
        measurement_overhead=None,
        strategies=list(strategies) or [strategy()],
        packets=packets,
    )


def test_round_trip(tmp_path: Path) -> None:
    original = result(strategy(), strategy("alloc", status="findings", errors=2, finding_counts={"X": 2}))
    target = save(original, tmp_path / "res")
    doc = json.loads((target / RUN_JSON).read_text())
    assert doc["format_version"] == RESULTS_FORMAT_VERSION == 2
    back = load(target)
    assert back == original  # every run.json field (packets are compared below)
    assert back.packets is not None and original.packets is not None
    assert back.packets.equals(original.packets)
    assert back.errors == 2 and not back.ok and back.strategy("alloc").finding_counts == {"X": 2}
    assert load(target, packets=False).packets is None


def test_no_leftovers_next_to_the_results(tmp_path: Path) -> None:
    save(result(), tmp_path / "res")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == [PACKETS_PARQUET, RUN_JSON]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError, RuntimeError])
def test_failure_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    def explode(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        Path(str(args[0])).write_bytes(b"PAR1 half a file")
        raise failure("disk gone")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    expected: type[BaseException] = OutputUnwritable if failure is OSError else failure
    with pytest.raises(expected):
        save(result(), tmp_path / "res")
    assert list(tmp_path.iterdir()) == []


def test_failure_while_replacing_keeps_the_old_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save(result(), tmp_path / "res")
    before = (target / RUN_JSON).read_text()

    def explode(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(KeyboardInterrupt):
        save(result(strategy("other")), target, force=True)
    assert (target / RUN_JSON).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    target = save(result(), tmp_path / "res")
    with pytest.raises(OutputExists):
        save(result(strategy("other")), target)
    save(result(strategy("other")), target, force=True)
    assert load(target).strategies[0].name == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_unknown_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    target = save(result(), tmp_path / "res")
    doc = json.loads((target / RUN_JSON).read_text())
    doc["format_version"] = 99
    (target / RUN_JSON).write_text(json.dumps(doc))
    with pytest.raises(ResultsVersionError) as info:
        load(target)
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert describe(info.value) == f"{target}: results format version 99; this ndis-replay reads versions 1 and 2"


@pytest.mark.parametrize(
    "content,fragment",
    [(None, "no run.json"), ("{not json", "cannot be read"), ("[1]", "not a JSON object")],
    ids=["missing", "garbage", "array"],
)
def test_unreadable_results_directory(tmp_path: Path, content: str | None, fragment: str) -> None:
    if content is not None:
        (tmp_path / RUN_JSON).write_text(content)
    with pytest.raises(ResultsError) as info:
        load(tmp_path)
    assert fragment in describe(info.value) and info.value.exit_code == ExitCode.BAD_INPUT


def test_missing_fields_are_named(tmp_path: Path) -> None:
    target = save(result(), tmp_path / "res")
    doc = json.loads((target / RUN_JSON).read_text())
    del doc["host"]
    (target / RUN_JSON).write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match="lacks host"):
        load(target)


_ROUND = arrays(np.int64, st.integers(0, 200), elements=st.integers(-1, 10**12) | st.integers(-1, 50))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ROUND, min_size=1, max_size=6), st.floats(0, 1) | st.sampled_from(list(PERCENTILES.values())))
def test_the_tally_gives_what_the_pooled_array_gives(rounds: list[np.ndarray[Any, Any]], q: float) -> None:
    """Quantiles (nearest rank, numpy's own rounding of the rank), median, min, max, mean and count of the pooled
    non-negative values, with rounds merged one at a time (a huge run keeps only the tally)."""
    tally = LatencyTally()
    for latency in rounds:
        tally.append(latency)
    pooled = np.concatenate(rounds)
    pooled = pooled[pooled >= 0]
    assert len(tally) == len(rounds) and tally.samples == pooled.size
    assert tally.values.tolist() == sorted(set(pooled.tolist()))
    if pooled.size:
        assert tally.quantile(q) == np.quantile(pooled, q, method="inverted_cdf")
        assert tally.median() == np.median(pooled)
        assert tally.mean() == pytest.approx(float(np.mean(pooled)), rel=1e-12)


def test_latency_summary() -> None:
    s = latency_summary(
        [np.array([1, 2, 3, 4, -1]), np.array([5, 6, 7, 8, 9])],
        [np.array([10, 30])],
        [np.array([5])],
        [2_000_000_000, 1_000_000_000],
        5,
    )
    assert s["samples"] == 9  # -1: never completed, left out
    assert s["p50_ns"] == 5.0 and s["max_ns"] == 9 and s["min_ns"] == 1
    assert s["packets_per_s"] == pytest.approx(5 / 1.5)
    assert s["build_p50_ns"] == 20.0 and s["send_p50_ns"] == 5.0
