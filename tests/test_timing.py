"""Timing by runs of calls (``--timing``): parsing, when it applies, how a run is shared out, both engines, the CLI.

The figures themselves are the benchmark's (bench/replay_bench.py); here only what must hold whatever the machine:
a run's packets share exactly its measured time, no stage split is claimed, counts do not change, and a rule that
cannot apply is refused before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ndis_replay.cli import cli
from ndis_replay.engine import native
from ndis_replay.engine.miniports import CompletionPolicy, get_miniport
from ndis_replay.engine.replay import (
    ASAP,
    DEFAULT_RUN_CALLS,
    LoopBaseline,
    ReplayInput,
    StrategyReplayer,
    Timing,
    parse_pacing,
    parse_timing,
    spread_runs,
)
from ndis_replay.engine.strategies import get_strategy
from ndis_replay.errors import ConfigError, ExitCode
from ndis_replay.importers import open_trace
from tests.conftest import SAMPLES

SYNC = CompletionPolicy.parse("sync")
DEFERRED = CompletionPolicy.parse("deferred")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", Timing("auto")),
        ("call", Timing("call")),
        ("runs", Timing("runs", DEFAULT_RUN_CALLS)),
        ("runs:1", Timing("runs", 1)),
        (" RUNS:64 ", Timing("runs", 64)),
        ("runs:1000000", Timing("runs", 1_000_000)),
    ],
    ids=["auto", "call", "runs", "runs-1", "case-and-spaces", "largest"],
)
def test_timing_rules_parse(text: str, expected: Timing) -> None:
    assert parse_timing(text) == expected
    assert parse_timing(str(expected)) == expected  # what run.json records reads back


@pytest.mark.parametrize("text", ["", "runs:0", "runs:-4", "runs:1000001", "runs:x", "runs:8.5", "per-packet"])
def test_bad_timing_rules_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_timing(text)


@pytest.mark.parametrize(
    ("rule", "engine", "completion", "pace", "expected"),
    [
        ("auto", "native", "sync", "asap", DEFAULT_RUN_CALLS),
        ("auto", "python", "sync", "asap", 1),
        ("auto", "native", "deferred", "asap", 1),
        ("auto", "native", "sync", "pps=1000", 1),
        ("call", "native", "sync", "asap", 1),
        ("runs:8", "python", "sync", "asap", 8),
        ("runs:8", "native", "sync", "asap", 8),
    ],
    ids=["auto-native", "auto-python", "auto-deferred", "auto-paced", "call", "runs-python", "runs-native"],
)
def test_calls_per_reading(rule: str, engine: str, completion: str, pace: str, expected: int) -> None:
    policy = CompletionPolicy.parse(completion)
    assert parse_timing(rule).run_calls(engine, policy, parse_pacing(pace)) == expected


@pytest.mark.parametrize(
    ("completion", "pace"), [("deferred", "asap"), ("batched:4", "asap"), ("sync", "original")], ids=str
)
def test_runs_refuse_what_they_cannot_time(completion: str, pace: str) -> None:
    with pytest.raises(ConfigError, match="needs --completion sync"):
        Timing("runs", 8).run_calls("native", CompletionPolicy.parse(completion), parse_pacing(pace))


def test_spread_runs_shares_each_run_by_packets() -> None:
    # five calls of 1, 2, 1, 3, 1 packets; runs of two calls: [0, 1] 100 → 130 ns (3 packets), [2, 3] 130 → 210 ns
    # (4 packets), [4] 210 → 215 ns (a short last run)
    call_start = np.array([0, 1, 3, 4, 7, 8])
    t0 = np.array([100, 999, 130, 999, 210])
    t1 = np.zeros(5, dtype=np.int64)
    t2 = np.array([1, 130, 1, 210, 215])
    complete = np.zeros(8, dtype=np.int64)
    spread_runs(t0, t1, t2, complete, call_start, 2)
    assert t0.tolist() == [100, 110, 130, 150, 210]
    assert t2.tolist() == [110, 130, 150, 210, 215]
    assert (t1 == t0).all()
    assert complete.tolist() == [110, 130, 130, 150, 210, 210, 210, 215]
    latency = complete - t0[np.repeat(np.arange(5), np.diff(call_start))]
    assert latency.tolist() == [10, 20, 20, 20, 60, 60, 60, 5]  # a call's packets complete together, at its end


def test_spread_runs_leaves_a_run_without_readings() -> None:
    """The round stopped inside the second run: its readings are missing, so nothing there is invented."""
    call_start = np.arange(5)
    t0 = np.array([100, 0, 0, 0])
    t2 = np.array([1, 140, 1, 0])
    complete = np.array([0, 0, 0, -1])
    spread_runs(t0, np.zeros(4, dtype=np.int64), t2, complete, call_start, 2)
    assert t0.tolist() == [100, 120, 0, 0]
    assert complete.tolist() == [120, 140, 0, -1]


def test_spread_runs_of_one_call_change_nothing() -> None:
    t0, t1, t2 = np.array([5, 9]), np.array([6, 10]), np.array([7, 12])
    complete = np.array([7, 12])
    spread_runs(t0, t1, t2, complete, np.arange(3), 1)
    assert (t0.tolist(), t1.tolist(), t2.tolist(), complete.tolist()) == ([5, 9], [6, 10], [7, 12], [7, 12])


def _input(batching: str = "8") -> ReplayInput:
    return ReplayInput.from_trace(open_trace(SAMPLES / "bulk_tcp.pcapng").with_batching(batching))


def _check_runs(outcome: object, inp: ReplayInput) -> None:
    """Every packet completed; build is not claimed; a call's latency is its share of the run (its send time)."""
    latency = outcome.latency_ns  # type: ignore[attr-defined]
    assert outcome.error is None  # type: ignore[attr-defined]
    assert (latency >= 0).all()
    assert (outcome.build_ns == 0).all()  # type: ignore[attr-defined]
    call_of = inp.call_of_packet()
    per_call = np.bincount(call_of, weights=latency, minlength=inp.calls) / np.diff(inp.call_start)
    send = outcome.send_ns  # type: ignore[attr-defined]
    assert np.allclose(per_call, send)  # a call's packets complete together at the end of its share


@pytest.mark.parametrize("batching", ["none", "8"])
def test_python_engine_times_by_runs(batching: str) -> None:
    inp = _input(batching)
    cls = get_strategy("reuse")
    replayer = StrategyReplayer(inp, lambda: cls(cls.Params()), get_miniport("loopback"), SYNC, run_calls=5)
    for number in range(2):
        _check_runs(replayer.timed_round(number, False), inp)
    assert replayer.close_timed() is not None


def test_python_floor_times_by_runs() -> None:
    inp = _input("none")
    outcome = LoopBaseline(inp, ASAP, 16).timed_round(0, False)
    _check_runs(outcome, inp)


needs_core = pytest.mark.skipif(not native.available(), reason="the native core is not built")


@needs_core
@pytest.mark.parametrize("strategy", native.NATIVE_STRATEGIES)
def test_native_engine_times_by_runs(strategy: str) -> None:
    inp = _input("none")
    cls = get_strategy(strategy)
    replayer = native.NativeReplayer(inp, strategy, cls.Params(), SYNC, run_calls=DEFAULT_RUN_CALLS)
    by_call = native.NativeReplayer(inp, strategy, cls.Params(), SYNC)
    for number in range(2):
        runs = replayer.timed_round(number, False)
        _check_runs(runs, inp)
        assert runs.counts == by_call.timed_round(number, False).counts  # the reading moved, not the work
    replayer.close_timed()
    by_call.close_timed()


@needs_core
def test_native_floor_times_by_runs() -> None:
    inp = _input("8")
    _check_runs(native.NativeBaseline(inp, 3).timed_round(0, False), inp)


def _run(tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, object]]:
    out = tmp_path / "r"
    trace = str(SAMPLES / "request_response.pcapng")
    args = ["run", trace, "-s", "reuse", "-s", "alloc", "--rounds", "1", "--warmup", "0", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, *extra])
    data = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    return result.exit_code, result.output, data


@pytest.mark.parametrize(
    ("extra", "timing"),
    [
        ((), "runs:32" if native.available() else "call"),
        (("--timing", "call"), "call"),
        (("--timing", "runs:4", "--engine", "python"), "runs:4"),
        (("--engine", "python"), "call"),
    ],
    ids=["auto", "call", "runs-python", "auto-python"],
)
def test_run_records_how_it_was_timed(tmp_path: Path, extra: tuple[str, ...], timing: str) -> None:
    code, output, data = _run(tmp_path, *extra)
    assert code == 0, output
    strategies = data["strategies"]
    assert isinstance(strategies, list)
    assert {s["timing"] for s in strategies} == {timing}
    overhead = data["measurement_overhead"]
    assert isinstance(overhead, dict) and overhead["timing"] == timing
    assert ("by runs of" in output) == timing.startswith("runs")


@pytest.mark.parametrize(
    "extra",
    [("--timing", "runs:8", "--completion", "deferred"), ("--timing", "runs", "--pace", "pps=1000"), ("--timing", "x")],
    ids=["runs-deferred", "runs-paced", "unknown"],
)
def test_timing_that_cannot_apply_is_one_line_and_exit_2(tmp_path: Path, extra: tuple[str, ...]) -> None:
    code, output, data = _run(tmp_path, *extra)
    assert code == ExitCode.USAGE
    assert output.count("\n") == 1 and "timing" in output
    assert not (tmp_path / "r").exists() and not data
