"""The soak benchmark's core (bench/soak_bench.py): a short real soak on the loopback miniport yields well-formed
samples and a flat verdict; a strategy seeded with a leak is caught; the verdict logic on synthetic series flags
growth and tolerates noise. The bench's figures themselves are measured by running it (make bench-soak), not here.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from types import ModuleType
from typing import Any

import pytest

from ndis_replay.engine import native
from ndis_replay.engine.ndis import NetBufferList
from ndis_replay.engine.ndis.counters import KINDS
from ndis_replay.engine.replay import ReplayInput
from ndis_replay.engine.strategies.alloc import AllocStrategy
from ndis_replay.engine.strategies.base import StrategyParams
from ndis_replay.importers import open_trace
from tests.conftest import REPO, SAMPLES


def _load_bench() -> ModuleType:
    """bench/soak_bench.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("soak_bench", REPO / "bench" / "soak_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak_bench = _load_bench()
MiB = 1 << 20


@pytest.fixture(scope="module")
def inp() -> ReplayInput:
    return ReplayInput.from_trace(open_trace(SAMPLES / "request_response.pcapng"))


@pytest.fixture(scope="module")
def short() -> ReplayInput:
    """32 packets: a round stays far shorter than a sampling interval even in Python on a loaded machine (the
    whole trace took longer than one, and skipped marks left fewer samples than a verdict needs)."""
    trace = open_trace(SAMPLES / "request_response.pcapng")
    return ReplayInput.from_trace(trace.replace(trace.frame.head(32)))


class LeaksEveryFiftieth(AllocStrategy):
    """``alloc`` that keeps every 50th completed NBL instead of freeing it (a seeded leak in the send-complete
    path: outstanding NBLs, NBs and MDLs grow round after round)."""

    name = "test-leaks"

    def __init__(self, params: StrategyParams | None = None) -> None:
        super().__init__(params)
        self.kept: list[NetBufferList] = []
        self.completed = 0

    def _release(self, nbl: NetBufferList) -> None:
        self.completed += 1
        if self.completed % 50 == 0:
            self.kept.append(nbl)
            return
        super()._release(nbl)


@pytest.mark.parametrize(
    "engine",
    ["python", pytest.param("native", marks=pytest.mark.skipif(not native.available(), reason="core not built"))],
)
def test_a_short_loopback_soak_is_sampled_and_flat(short: ReplayInput, engine: str) -> None:
    inp = short
    combination = soak_bench.Combination("reuse", "loopback", engine)
    result = soak_bench.soak(inp, combination, seconds=2.0, samples=12)
    assert result.error is None
    assert result.rounds >= 2 and result.packets == result.rounds * inp.packets
    samples = result.samples
    # one after the first round, then one per mark crossed (a slow round may skip a mark)
    assert soak_bench.MIN_SAMPLES <= len(samples) <= 12 + 2
    assert samples[0].rounds == 1
    assert [s.rounds for s in samples] == sorted({s.rounds for s in samples})
    assert [s.t_s for s in samples] == sorted(s.t_s for s in samples)
    assert samples[-1].rounds == result.rounds and samples[-1].packets == result.packets
    for s in samples:
        assert set(s.outstanding) == set(KINDS)
        assert s.rss_bytes > 10 * MiB and s.fds > 3
        assert s.delivered is None and s.lost is None  # loopback: no far side
        assert "pool_size" in s.stats  # reuse reports its pool
    assert result.state_changes == 0
    verdict = soak_bench.judge(samples, result.state_changes, result.error)
    assert verdict.descriptors_ok and verdict.fds_ok and verdict.delivery_ok
    # the RSS part is judged too; a 2-second run on a shared machine is expected to be flat, as the full one
    assert verdict.flat, verdict.reasons
    # round trip through the worker's plain data
    assert soak_bench.SoakResult.from_dict(result.as_dict()) == result


def test_a_run_whose_rounds_outlast_the_marks_goes_on_until_it_can_be_judged(short: ReplayInput) -> None:
    # 12 marks in 1 ms: every round skips marks, so the time alone would leave a sample or two
    result = soak_bench.soak(short, soak_bench.Combination("reuse", "loopback", "python"), seconds=0.001, samples=12)
    assert result.error is None
    assert soak_bench.MIN_SAMPLES <= len(result.samples) <= 12 + 2
    assert result.seconds >= 0.001
    assert "samples" not in " ".join(soak_bench.judge(result.samples).reasons)


def test_a_seeded_descriptor_leak_is_not_flat(inp: ReplayInput) -> None:
    combination = soak_bench.Combination("test-leaks", "loopback", "python")
    result = soak_bench.soak(inp, combination, seconds=1.0, samples=10, strategy_cls=LeaksEveryFiftieth)
    assert result.error is None and result.rounds >= 2
    assert result.state_changes > 0
    first, last = result.samples[0], result.samples[-1]
    assert last.outstanding["nbl"] > first.outstanding["nbl"] > 0
    verdict = soak_bench.judge(result.samples, result.state_changes, result.error)
    assert not verdict.flat and not verdict.descriptors_ok
    assert "descriptors change between rounds" in verdict.reasons


# --- the verdict on synthetic series ------------------------------------------------------------------------------


def _series(
    rss: list[float], *, fds: list[int] | None = None, nbl: list[int] | None = None, lost: int | None = None
) -> list[Any]:
    """Samples one second apart with the given RSS (and optionally fds, outstanding NBLs, tap loss)."""
    n = len(rss)
    fds = fds or [12] * n
    nbl = nbl or [4] * n
    return [
        soak_bench.Sample(
            t_s=float(i),
            rounds=i + 1,
            packets=(i + 1) * 100,
            rss_bytes=int(value),
            fds=fds[i],
            outstanding={kind: (nbl[i] if kind == "nbl" else 0) for kind in KINDS},
            mem_bytes=4096,
            sys_held=4,
            delivered=None if lost is None else (i + 1) * 100,
            lost=lost,
        )
        for i, value in enumerate(rss)
    ]


BASE = 80 * MiB
NOISE = random.Random(8)  # seeded: the same "noise" every run


@pytest.mark.parametrize(
    ("rss", "flat"),
    [
        pytest.param([BASE] * 20, True, id="constant"),
        pytest.param([BASE + NOISE.uniform(-768, 768) * 1024 for _ in range(40)], True, id="noisy-flat"),
        pytest.param([BASE + (2 * MiB if i == 12 else 0) for i in range(20)], True, id="one-spike-mid-run"),
        # rises 3 MiB over the first 4 samples (the warm-up: not judged), then constant
        pytest.param([BASE + min(i, 4) * 0.75 * MiB for i in range(20)], True, id="grows-in-warmup-only"),
        pytest.param([BASE + i * 128 * 1024 for i in range(20)], False, id="linear-growth"),
        pytest.param(
            [BASE + i * 96 * 1024 + NOISE.uniform(-512, 512) * 1024 for i in range(40)], False, id="noisy-growth"
        ),
        pytest.param([BASE + (3 * MiB if i >= 12 else 0) for i in range(20)], False, id="step-after-warmup"),
        pytest.param([30 * MiB + i * 60 * 1024 for i in range(20)], False, id="under-1mib-but-over-2pct"),
    ],
)
def test_rss_verdict(rss: list[float], flat: bool) -> None:
    verdict = soak_bench.judge(_series(rss))
    assert verdict.rss_ok is flat, (verdict.rss_rise_bytes / MiB, verdict.reasons)
    assert verdict.flat is flat
    if not flat:
        assert verdict.rss_slope_per_hour > 0 and any("RSS rises" in r for r in verdict.reasons)


@pytest.mark.parametrize(
    ("kwargs", "part", "reason"),
    [
        pytest.param({"fds": [12] * 15 + [13] * 5}, "fds_ok", "fds 12→13", id="fd-leak"),
        pytest.param({"nbl": [4] * 19 + [5]}, "descriptors_ok", "descriptors change between rounds", id="nbl-leak"),
        pytest.param({"lost": 3}, "delivery_ok", "3 frames lost", id="tap-loss"),
    ],
)
def test_other_parts_of_the_verdict(kwargs: dict[str, object], part: str, reason: str) -> None:
    verdict = soak_bench.judge(_series([BASE] * 20, **kwargs))  # type: ignore[arg-type]
    assert verdict.rss_ok and not getattr(verdict, part) and not verdict.flat
    assert reason in verdict.reasons


def test_changes_between_samples_errors_and_short_runs_are_not_flat() -> None:
    assert not soak_bench.judge(_series([BASE] * 20), state_changes=1).flat
    errored = soak_bench.judge(_series([BASE] * 20), error="round 3: STRATEGY-EXCEPTION: boom")
    assert not errored.flat and "error" in errored.reasons
    short = soak_bench.judge(_series([BASE] * 5))
    assert not short.flat and not short.rss_ok
    assert soak_bench.judge(_series([BASE] * 20, lost=0)).flat  # tap with nothing lost
