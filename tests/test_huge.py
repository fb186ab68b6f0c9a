"""Huge traces at a small scale: a trace without bytes replays synthesized frames as views into one small pattern
(never materialised), its send calls are built a window at a time, and both engines transmit exactly the formula's
bytes (WIRE-BYTES clean). ``bench/huge_bench.py`` runs the same at 10 million packets and reports peak memory."""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner, Result

from ndis_replay import runner
from ndis_replay.cli import cli
from ndis_replay.engine import native
from ndis_replay.engine import replay as replay_module
from ndis_replay.engine.miniports.base import CompletionPolicy
from ndis_replay.engine.miniports.loopback import LoopbackMiniport, LoopbackParams
from ndis_replay.engine.replay import (
    SYNTHETIC_STRIDE,
    ReplayInput,
    StrategyReplayer,
    compare_wire,
    synthetic_pattern,
)
from ndis_replay.engine.strategies import get_strategy
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcap import write_pcap
from ndis_replay.results import PERCENTILES, load
from ndis_replay.trace import Trace

SAMPLES = Path(__file__).resolve().parent.parent / "sample_traces"
PACKETS = 200_000
#: captured lengths cycled through (a simple IMIX, less the FCS), bytes
SIZES = (60, 590, 60, 1514, 60, 590, 60)


def _frames(count: int) -> Iterator[tuple[int, bytes]]:
    """Ethernet/IPv4/UDP frames of the IMIX lengths, 1 µs apart (their bytes are left out on import)."""
    eth = bytes.fromhex("0050569e2c4100155d0a0a0a0800")
    for i in range(count):
        size = SIZES[i % len(SIZES)]
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, size - 14, i & 0xFFFF, 0, 64, 17, 0, b"\x0a\x01\x00\x01", b"\xac\x10\x00\x01"
        )
        udp = struct.pack("!HHHH", 5000, 5201, size - 34, 0)
        yield 1_000_000_000 + i * 1000, eth + ip + udp + bytes(size - 42)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    path = tmp_path_factory.mktemp("huge") / "imix.pcap"
    write_pcap(path, _frames(PACKETS))
    return open_trace(path, keep_data=False)


def _head(trace: Trace, packets: int) -> Trace:
    return trace.replace(trace.frame.head(packets))


def expected(inp: ReplayInput, i: int) -> bytes:
    """The formula: byte j of the packet with trace index k is (k · SYNTHETIC_STRIDE + j) mod 256."""
    k = int(inp.index[i])
    return bytes((k * SYNTHETIC_STRIDE + j) & 0xFF for j in range(int(inp.sizes[i])))


@pytest.mark.parametrize("batching", ["none", "8"], ids=["one-packet-calls", "calls-of-8"])
def test_synthetic_frames_are_views_into_a_small_pattern(tmp_path: Path, trace: Trace, batching: str) -> None:
    inp = ReplayInput.write(trace.with_batching(batching), tmp_path)
    assert inp.packets == PACKETS
    # the whole input's bytes: the pattern (256 + the largest frame), not 200k frames back to back (~70 MB)
    assert (tmp_path / "frames.bin").stat().st_size == 256 + 1514 == len(inp.data)
    assert bytes(inp.data) == synthetic_pattern(1514)
    assert sorted(set(inp.sizes.tolist())) == sorted(set(SIZES))
    for i in [0, 1, 2, 3, 4, 5, 6, 7, 12_345, 99_999, PACKETS - 1]:
        assert bytes(inp.frame(i)) == expected(inp, i), i
    calls = inp.send_calls()
    assert [bytes(f) for f in calls[len(calls) - 1].frames] == [
        expected(inp, i) for i in range(int(inp.call_start[-2]), PACKETS)
    ]


@pytest.mark.parametrize("window", [1, 1000, 4096], ids=["window-1", "window-1000", "window-4096"])
def test_send_calls_built_a_window_at_a_time_are_the_same_calls(trace: Trace, window: int) -> None:
    inp = ReplayInput.from_trace(_head(trace.with_batching("8"), 20_000))
    whole = inp.send_calls(window=inp.calls)
    windowed = inp.send_calls(window=window)
    assert len(windowed) == len(whole) == inp.calls
    assert list(windowed) == list(whole)  # iteration: every window in turn
    for k in [inp.calls - 1, 0, 1234, 1233, inp.calls // 2]:  # random access, backwards too
        assert windowed[k] == whole[k]
    assert windowed[-1] == whole[inp.calls - 1]
    with pytest.raises(IndexError):
        windowed[inp.calls]


def test_old_input_folder_without_frame_starts_loads(tmp_path: Path, trace: Trace) -> None:
    inp = ReplayInput.from_trace(_head(trace, 1000))
    inp.save(tmp_path)
    (tmp_path / "frame_start.npy").unlink()
    # frames back to back, as folders were written before frames became views
    (tmp_path / "frames.bin").write_bytes(b"".join(bytes(inp.frame(i)) for i in range(inp.packets)))
    back = ReplayInput.load(tmp_path)
    assert np.array_equal(back.frame_start, inp.frame_offset[:-1])
    assert all(bytes(back.frame(i)) == bytes(inp.frame(i)) for i in range(inp.packets))


@pytest.mark.parametrize(
    ("batching", "packets"), [("none", 50_000), ("8", PACKETS)], ids=["one-packet-calls-50k", "calls-of-8-200k"]
)
def test_python_checked_pass_transmits_the_formula(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trace: Trace, batching: str, packets: int
) -> None:
    # a window far smaller than the trace: the checked pass and the timed round walk the calls window by window
    monkeypatch.setattr(replay_module, "CALL_WINDOW", 4096)
    inp = ReplayInput.write(_head(trace, packets).with_batching(batching), tmp_path)
    cls = get_strategy("reuse")
    replayer = StrategyReplayer(
        inp, lambda: cls(cls.Params()), lambda: LoopbackMiniport(LoopbackParams()), CompletionPolicy("sync")
    )
    assert replayer.calls.window == 4096 < len(replayer.calls)
    outcome = replayer.check()
    assert outcome.failure is None and outcome.findings == []
    assert outcome.wire == {
        "packets": packets,
        "transmitted": packets,
        "matched": packets,
        "mismatched": 0,
        "missing": 0,
        "extra": 0,
        "ok": True,
    }
    timed = replayer.timed_round(0, False)
    assert timed.error is None and (timed.latency_ns >= 0).all()
    replayer.close_timed()


@pytest.mark.skipif(not native.available(), reason="the native core is not built")
@pytest.mark.parametrize("strategy", ["reuse", "alloc", "copy", "clone", "ndis5-reuse"])
def test_native_core_transmits_the_formula(tmp_path: Path, trace: Trace, strategy: str) -> None:
    inp = ReplayInput.write(trace.with_batching("8"), tmp_path)
    compiled = native.NativeReplayer(inp, strategy, get_strategy(strategy).Params(), CompletionPolicy("sync"))
    outcome = compiled.timed_round(0, False, capture=True)
    assert outcome.error is None and (outcome.latency_ns >= 0).all()
    assert compiled.wire is not None
    frames = [
        p[0] if len(p) == 1 else p[0] + b"".join(f[int(h) :] for f in p[1:])
        for p, h in zip(compiled.wire.packets, inp.header_len, strict=True)
    ]
    summary, findings, count = compare_wire(inp, frames)
    assert (summary["ok"], summary["matched"], count, findings) == (True, PACKETS, 0, [])
    compiled.close_timed()


@pytest.mark.skipif(not native.available(), reason="the native core is not built")
def test_native_core_refuses_a_frame_beyond_its_data(trace: Trace) -> None:
    inp = ReplayInput.from_trace(_head(trace, 100))
    starts = inp.frame_start.copy()
    starts[7] = len(inp.data) - int(inp.sizes[7]) + 1  # one byte past the pattern's end
    with pytest.raises(ValueError, match=r"frame 7 .* lies beyond"):
        native.core().Engine(
            native.core().STRATEGY_REUSE,
            (0, 0, 0, 1, 1),
            native.core().COMPLETION_SYNC,
            0,
            0,
            False,
            inp.data,
            inp.frame_offset,
            inp.header_len,
            inp.index,
            inp.call_start,
            1,
            starts,
        )


def _cli_run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_big_run_spills_its_packet_rows_round_by_round(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str
) -> None:
    if engine == "native" and not native.available():
        pytest.skip("the native core is not built")
    sample = SAMPLES / "small_packets.pcapng"
    common = ["-s", "reuse", "-s", "alloc", "--rounds", "3", "--warmup", "1", "--engine", engine]
    held = _cli_run("run", sample, *common, "--out", tmp_path / "held")
    assert held.exit_code == 0, held.output
    monkeypatch.setattr(runner, "PACKETS_IN_MEMORY", 10)  # any run is "huge" now
    monkeypatch.setattr(runner, "SPILL_SLICE", 7)  # and each round's rows are written in several part files
    parts: list[Path] = []
    write_part = runner._spill_round

    def recorded(*args: Any) -> None:  # the real writer, noting which part files it was given
        parts.append(args[-1])
        write_part(*args)

    monkeypatch.setattr(runner, "_spill_round", recorded)
    spilled = _cli_run("run", sample, *common, "--out", tmp_path / "spilled")
    assert spilled.exit_code == 0, spilled.output
    # each measured round, as it ran
    assert [p.name for p in parts] == [f"{t:04d}-{r:06d}" for r in range(3) for t in range(2)]
    gc.collect()
    assert not parts[0].parent.exists()  # the part files went with the result
    a = load(tmp_path / "held").packets
    b = load(tmp_path / "spilled").packets
    assert a is not None and b is not None
    assert b.schema == a.schema and b.height == a.height == 2 * 3 * int(a["index"].n_unique())
    same = ["strategy", "round", "index", "batch", "size"]
    assert b.select(same).equals(a.select(same))  # the same rows in the same order; only the timings differ
    assert (b["latency_ns"] >= 0).all()
    # the summary, pooled round by round as the rounds came (the rows were gone by the end), is the saved rows'
    for result in load(tmp_path / "spilled").strategies:
        assert result.summary is not None
        rows = b.filter(pl.col("strategy") == result.name)
        latency = rows["latency_ns"].to_numpy()
        assert result.summary["samples"] == len(latency) and result.summary["rounds"] == 3
        for key, q in PERCENTILES.items():
            assert result.summary[key] == np.quantile(latency, q, method="inverted_cdf")
        assert (result.summary["min_ns"], result.summary["max_ns"]) == (latency.min(), latency.max())
        assert result.summary["mean_ns"] == pytest.approx(latency.mean(), rel=1e-12)
        if result.summary["send_p50_ns"] is not None:  # timed per call (batching none: a call is a packet)
            assert result.summary["send_p50_ns"] == np.median(rows["send_ns"].to_numpy())


def test_the_floor_keeps_no_per_packet_arrays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The no-op floor has no rows in packets.parquet: its rounds' arrays are dropped as they arrive (they were
    kept to the end, 24 bytes per packet per round: 1.2 GB at 10 M packets and 5 rounds), the strategies' kept."""
    seen: dict[str, list[Any]] = {}
    make_result = runner._result

    def recorded(*args: Any, **kwargs: Any) -> Any:
        tracks, floors = args[4], args[5]
        seen["tracks"], seen["floors"] = list(tracks), list(floors)
        return make_result(*args, **kwargs)

    monkeypatch.setattr(runner, "_result", recorded)
    done = _cli_run("run", SAMPLES / "small_packets.pcapng", "-s", "reuse", "--rounds", "2", "--out", tmp_path / "r")
    assert done.exit_code == 0, done.output
    (floor,) = seen["floors"]
    assert len(floor.rounds) == 2 and len(floor.latencies) == 2 and floor.latencies.samples == 2 * 3000
    assert all(r.latency_ns.size == r.build_ns.size == r.send_ns.size == 0 for r in floor.rounds)
    (track,) = seen["tracks"]
    assert [r.latency_ns.size for r in track.rounds] == [3000, 3000]


def test_a_spilled_runs_report_has_its_per_packet_charts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The rows of a spilled run are on disk only: `run --report` reads them back from the saved directory, so the
    report has every per-packet chart, as `ndis-replay report DIR` would (not only the operation counts)."""
    monkeypatch.setattr(runner, "PACKETS_IN_MEMORY", 10)
    html = tmp_path / "r.html"
    done = _cli_run("run", SAMPLES / "small_packets.pcapng", "-s", "reuse", "-s", "alloc", "--rounds", "2",
                    "--out", tmp_path / "r", "--report", html)  # fmt: skip
    assert done.exit_code == 0, done.output
    charts = html.read_text(encoding="utf-8")
    for name in ("cdf", "histogram", "latency-by-size", "op-counts"):
        assert f'data-chart="{name}"' in charts, name
