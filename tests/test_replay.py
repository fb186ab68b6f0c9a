"""The replay loop in process: the input arrays, the checked pass, timed rounds, pacing, the harness floor.

No timing assertions: only shapes, orderings and what was found.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ndis_replay.engine.miniports import CompletionPolicy, ListWire, get_miniport
from ndis_replay.engine.ndis.counters import CostProfile
from ndis_replay.engine.replay import (
    SYNTHETIC_STRIDE,
    LoopBaseline,
    Pacing,
    ReplayInput,
    StrategyReplayer,
    calibrate_timer,
    compare_wire,
    parse_pacing,
)
from ndis_replay.engine.strategies import Strategy, get_strategy
from ndis_replay.errors import ConfigError, NothingToReplay
from ndis_replay.importers import open_trace
from ndis_replay.trace import Trace
from tests.replay_helpers import (
    AffinityParams,
    AffinityProbe,
    FailsWhenTimed,
    RaisesInBuild,
    ReusesInFlight,
    StaleDataOffset,
    write_capture,
    write_empty,
    write_receive_only,
)

LOOPBACK = get_miniport("loopback")


@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    return open_trace(write_capture(tmp_path / "c.pcapng"))


@pytest.fixture
def inp(trace: Trace) -> ReplayInput:
    return ReplayInput.from_trace(trace)


def replayer(
    inp: ReplayInput, strategy: type[Strategy] | Callable[[], Strategy], completion: str = "sync", **kw: object
) -> StrategyReplayer:
    return StrategyReplayer(inp, strategy, LOOPBACK, CompletionPolicy.parse(completion), **kw)  # type: ignore[arg-type]


# --- input -------------------------------------------------------------------------------------------------------


def test_input_holds_the_sent_packets_grouped_by_batch(tmp_path: Path) -> None:
    trace = open_trace(write_capture(tmp_path / "c.pcapng"), batching="4")
    inp = ReplayInput.from_trace(trace)
    sent = trace.frame.filter(pl.col("direction") != "recv")
    assert inp.packets == sent.height == 18
    assert inp.index.tolist() == sent["index"].to_list()
    assert inp.calls == 5 and inp.call_start.tolist() == [0, 4, 8, 12, 16, 18]
    assert inp.max_call == 4 and inp.max_frame == 1514
    for i, frame in enumerate(sent["data"].to_list()):
        assert bytes(inp.frame(i)) == frame
    calls = inp.send_calls()
    assert [c.call for c in calls] == [0, 1, 2, 3, 4]
    assert calls[1].indices == tuple(sent["index"].to_list()[4:8])
    assert calls[1].header_lens == tuple(sent["header_len"].to_list()[4:8])
    assert all(f.readonly for c in calls for f in c.frames)


def test_input_save_and_map_round_trip(tmp_path: Path, inp: ReplayInput) -> None:
    inp.save(tmp_path)
    back = ReplayInput.load(tmp_path)
    for name in ("index", "batch", "call_start", "header_len", "frame_offset", "ts_ns"):
        assert np.array_equal(getattr(back, name), getattr(inp, name)), name
    assert bytes(back.data) == bytes(inp.data)
    assert back.data.readonly


@pytest.mark.parametrize(
    "make,error,received",
    [(write_receive_only, NothingToReplay, 5), (write_empty, NothingToReplay, 0)],
    ids=["receive-only", "empty"],
)
def test_input_refuses_traces_with_nothing_to_send(
    tmp_path: Path, make: Callable[[Path], Path], error: type[Exception], received: int
) -> None:
    trace = open_trace(make(tmp_path / "t.pcapng"))
    with pytest.raises(error) as info:
        ReplayInput.from_trace(trace, "t.pcapng")
    assert isinstance(info.value, NothingToReplay) and info.value.received == received


def test_a_trace_without_bytes_replays_synthesized_frames(tmp_path: Path) -> None:
    full = ReplayInput.from_trace(open_trace(write_capture(tmp_path / "c.pcapng")))
    bare = ReplayInput.from_trace(open_trace(tmp_path / "c.pcapng", keep_data=False))
    # the same calls, sizes and headers; the bytes are the pattern, different for every packet
    for name in ("index", "batch", "call_start", "header_len", "frame_offset", "ts_ns"):
        assert np.array_equal(getattr(bare, name), getattr(full, name)), name
    frames = [bytes(bare.frame(i)) for i in range(bare.packets)]
    for i, frame in enumerate(frames):
        seed = int(bare.index[i]) * SYNTHETIC_STRIDE
        assert frame == bytes((seed + j) & 0xFF for j in range(len(frame)))
    assert len({f[:4] for f in frames}) > 1
    # a strategy that sends a stale frame is still caught on the wire
    outcome = replayer(bare, StaleDataOffset).check(ListWire())
    assert "WIRE-BYTES" in {f.rule for f in outcome.findings}
    # written a slice at a time, the same bytes
    (tmp_path / "in").mkdir()
    written = ReplayInput.write(open_trace(tmp_path / "c.pcapng", keep_data=False), tmp_path / "in")
    assert bytes(written.data) == bytes(bare.data)


# --- pacing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [("asap", "asap"), ("original", "original"), ("x2", "x2"), ("x0.5", "x0.5"), ("pps=1000", "pps=1000")],
)
def test_pacing_parses(text: str, expected: str) -> None:
    assert str(parse_pacing(text)) == expected


@pytest.mark.parametrize("text", ["fast", "x0", "x-1", "pps=0", "pps=abc", "xinf"])
def test_pacing_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pacing(text)
    assert "asap" in info.value.choices


def test_pacing_offsets(inp: ReplayInput) -> None:
    assert Pacing("asap").offsets(inp) is None
    original = parse_pacing("original").offsets(inp)
    assert original is not None
    first = inp.ts_ns[inp.call_start[:-1]]
    assert original.tolist() == (first - first[0]).tolist()
    double = parse_pacing("x2").offsets(inp)
    assert double is not None and double.tolist() == ((first - first[0]) // 2).tolist()
    pps = parse_pacing("pps=1000").offsets(inp)
    assert pps is not None and pps.tolist() == [k * 1_000_000 for k in range(inp.calls)]


# --- checked pass ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("completion", ["sync", "deferred", "batched:3", "delay:1us"])
def test_builtin_reuse_passes_the_check_and_transmits_the_trace(inp: ReplayInput, completion: str) -> None:
    outcome = replayer(inp, get_strategy("reuse"), completion).check()
    assert outcome.failure is None and outcome.findings == [] and outcome.errors == 0
    assert outcome.wire == {
        "packets": 18,
        "transmitted": 18,
        "matched": 18,
        "mismatched": 0,
        "missing": 0,
        "extra": 0,
        "ok": True,
    }
    assert outcome.counts["nbl_allocs"] == 0  # reuse: nothing allocated per packet
    assert outcome.counts["nbls_sent"] == outcome.counts["nbls_completed"] == 18
    assert outcome.miniport_info["name"] == "loopback"


def test_seeded_bug_is_found_with_rule_and_packet_index(inp: ReplayInput) -> None:
    outcome = replayer(inp, StaleDataOffset).check()
    assert outcome.failure is None  # it ran through: findings, not a crash
    first = int(inp.index[0])
    rules = {(f.rule, f.packet_index) for f in outcome.findings}
    assert ("REUSE-CONSISTENCY", first) in rules
    assert ("WIRE-BYTES", first) in rules
    assert outcome.finding_counts["WIRE-BYTES"] == inp.packets
    assert outcome.wire["mismatched"] == inp.packets and not outcome.wire["ok"]


def test_exception_in_strategy_code_is_a_finding(inp: ReplayInput) -> None:
    r = replayer(inp, RaisesInBuild)
    outcome = r.check()
    assert outcome.failure == "exception" and r.failed
    (finding,) = outcome.findings
    assert finding.rule == "STRATEGY-EXCEPTION" and finding.packet_index == int(inp.index[2])
    assert "seeded failure" in finding.message and "replay_helpers.py" in finding.message
    assert outcome.wire["ok"] is None


def test_bug_check_stops_the_pass_and_is_reported(inp: ReplayInput) -> None:
    outcome = replayer(inp, ReusesInFlight, "batched:4").check()
    assert outcome.failure == "bugcheck"
    assert "OWN-AFTER-SEND" in outcome.finding_counts and "LIST-LINKAGE" in outcome.finding_counts
    assert outcome.errors >= 3


def test_wire_sink_gets_every_packet(inp: ReplayInput) -> None:
    sink = ListWire()
    replayer(inp, get_strategy("alloc")).check(sink)
    assert [f[0] for f in sink.packets] == [bytes(inp.frame(i)) for i in range(inp.packets)]


def test_compare_wire_reports_mismatch_missing_and_extra(inp: ReplayInput) -> None:
    frames = [bytes(inp.frame(i)) for i in range(inp.packets)]
    damaged = list(frames)
    damaged[3] = damaged[3][:10] + b"\xff" + damaged[3][11:]
    summary, findings, count = compare_wire(inp, damaged[:-2])
    assert (summary["mismatched"], summary["missing"], summary["extra"], count) == (1, 2, 0, 3)
    assert findings[0].packet_index == int(inp.index[3]) and "first difference at byte 10" in findings[0].message
    assert [f.message for f in findings[1:]] == ["never transmitted"] * 2
    summary, findings, count = compare_wire(inp, [*frames, b"x"])
    assert summary["extra"] == 1 and count == 1 and findings[0].packet_index == -1


def test_cost_profile_gives_a_modelled_cost_per_packet(inp: ReplayInput) -> None:
    profile = CostProfile({"mdl_allocs": 100.0, "mdl_frees": 50.0}, name="test")
    outcome = replayer(inp, get_strategy("reuse"), cost_profile=profile).check()
    assert outcome.packet_cost_ns is not None
    assert outcome.packet_cost_ns.tolist() == [150.0] * inp.packets  # one MDL allocated and freed per packet


# --- timed rounds -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("completion", ["sync", "deferred", "batched:4"])
def test_timed_rounds_fill_every_array(tmp_path: Path, completion: str) -> None:
    inp = ReplayInput.from_trace(open_trace(write_capture(tmp_path / "c.pcapng"), batching="2"))
    r = replayer(inp, get_strategy("alloc"), completion)
    for number in range(3):
        outcome = r.timed_round(number, warmup=number == 0)
        assert outcome.error is None
        assert outcome.latency_ns.shape == (inp.packets,) and (outcome.latency_ns > 0).all()
        assert outcome.build_ns.shape == outcome.send_ns.shape == (inp.calls,)
        assert (outcome.build_ns > 0).all() and (outcome.send_ns > 0).all()
        assert outcome.counts["nbls_sent"] == outcome.counts["nbls_completed"] == inp.packets
        assert outcome.end_ns > outcome.start_ns
    assert r.close_timed() is not None


def test_timed_round_counts_match_the_checked_pass(inp: ReplayInput) -> None:
    r = replayer(inp, get_strategy("ndis5-alloc"))
    checked = r.check()
    timed = r.timed_round(0, False)
    assert timed.counts == checked.counts


def test_gc_is_off_while_measuring_and_back_on_after(inp: ReplayInput, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    reuse = get_strategy("reuse")

    class Spy(reuse):  # type: ignore[misc, valid-type]
        def build(self, call: object) -> object:
            seen.append(gc.isenabled())
            return super().build(call)

    assert gc.isenabled()
    r = replayer(inp, Spy)
    r.timed_round(0, False)
    assert seen and not any(seen) and gc.isenabled()


def test_gc_is_back_on_after_a_failing_round(inp: ReplayInput) -> None:
    r = replayer(inp, FailsWhenTimed)
    assert r.check().failure is None
    outcome = r.timed_round(0, False)
    assert gc.isenabled()
    assert outcome.error is not None and outcome.error.rule == "STRATEGY-EXCEPTION"
    assert outcome.error.packet_index == int(inp.index[3]) and r.failed
    assert (outcome.latency_ns[3:] == -1).all()


def test_gc_stays_off_when_it_was_off(inp: ReplayInput) -> None:
    gc.disable()
    try:
        replayer(inp, get_strategy("reuse")).timed_round(0, False)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_paced_round_measures_from_the_schedule(inp: ReplayInput) -> None:
    r = replayer(inp, get_strategy("reuse"), pacing=parse_pacing("pps=200000"))
    outcome = r.timed_round(0, False)
    assert outcome.error is None and outcome.lag_ns is not None
    assert (outcome.lag_ns >= 0).all()  # no call started before its time
    assert (outcome.latency_ns > 0).all()


def test_loop_baseline_and_timer_calibration(inp: ReplayInput) -> None:
    outcome = LoopBaseline(inp).timed_round(0, False)
    assert (outcome.latency_ns >= 0).all() and outcome.latency_ns.shape == (inp.packets,)
    timer = calibrate_timer(1000)
    assert timer.samples == 1000 and 0 < timer.min_ns <= timer.median_ns


# --- the runner: where timed rounds run ---------------------------------------------------------------------------


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one usable CPU: nothing to pin to")
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "unpinned"])
def test_timed_rounds_run_on_one_cpu_unless_told_not_to(tmp_path: Path, trace: Trace, pin: bool) -> None:
    from ndis_replay.runner import RunOptions, run_trace
    from ndis_replay.worker import MiniportSpec, StrategySpec

    probes = [tmp_path / f"probe-{i}.txt" for i in range(2)]
    specs = [
        StrategySpec(f"probe-{i}", AffinityProbe, AffinityParams(path=str(probe)), "reuse")
        for i, probe in enumerate(probes)
    ]
    options = RunOptions(miniport=MiniportSpec("loopback", LOOPBACK, LOOPBACK.Params()), rounds=1, warmup=0, pin=pin)
    run = run_trace(trace, specs, options)
    allowed = sorted(os.sched_getaffinity(0))
    seen = [probe.read_text().split() for probe in probes]
    if pin:
        assert run.host["timed_cpu"] == allowed[-1]
        assert seen == [[str(allowed[-1])]] * 2
    else:
        assert run.host["timed_cpu"] is None
        assert seen == [[str(c) for c in allowed]] * 2
