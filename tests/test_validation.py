"""Acceptance of the comparison statistics on real replays (issue 4): an A/A is called ``unchanged``, an injected
slowdown of ~10% of the per-packet time ``regressed``, and neither the threshold nor the significance alone makes
a verdict.

Every trial is ONE run (interleaved rounds: A B C, A B C) of three worker processes: ``reuse``, ``reuse-again``
(the same strategy in a separate process) and ``slow`` (reuse plus a busy loop worth :data:`SLOWDOWN` of reuse's
median per-packet time, calibrated by a first run). The run is split into one-strategy runs renamed ``reuse``,
which :func:`~ndis_replay.reports.compare_runs` compares as it compares a run with a baseline run (unpaired:
bootstrap over rounds + exact Mann-Whitney on the per-round values); the slowdown is also compared inside the run
by :func:`~ndis_replay.reports.compare_strategies` (paired per packet). Separate invocations are not used: on
this shared VM whole runs shift by several percent with the machine's state, a property of the machine that
bench/stats_bench.py measures, not of the statistics. The workers run on one CPU (see the fixture).

Pass criteria: the trials are independent runs, so the count of trials with another verdict than the wanted one
is Binomial(TRIALS, p) for an implementation whose rate of other verdicts is p. Each check allows the count that
such an implementation exceeds with probability ≤ :data:`FALSE_FAILURE` = 10⁻⁴ (:func:`binomial_margin`), with
p above the rate 160 trials of this test measured (:data:`CHECKS`): a false failure of the module (6 checks) has
probability < 10⁻³ by the union bound, < 10⁻⁵ at the measured rates. Sixteen trials cannot establish a 95% rate
(a 95% procedure gets 16 of 16 only 44% of the time); bench/stats_bench.py reports the rates. This test fails an
implementation that is broken: each check sits where one kind of broken implementation lands far beyond the
margin (see :data:`CHECKS`).

No timing is asserted: only verdict counts. ~30 s.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pytest

from tests.conftest import SAMPLES
from tests.replay_helpers import SpinParams, SpinReuse

if TYPE_CHECKING:
    from ndis_replay.reports.compare import MetricComparison
    from ndis_replay.results import RunResult

# Worker processes import this module to unpickle the strategy classes: what only the test process needs (scipy,
# the reports, the runner, the importers) is imported where it is used, so that a worker's start stays cheap.

#: Extra work of the slowed strategy, as a fraction of reuse's median per-packet latency.
SLOWDOWN = 0.10
#: Independent trials (runs), measured rounds per run, packets replayed per round.
TRIALS = 16
ROUNDS = 7
PACKETS = 1000
#: Busy-loop steps of the calibration run (about what 10% takes: ~15 ns a step, reuse ~2.3 µs per packet).
CALIBRATION_SPINS = 15
#: Probability that one check fails for an implementation with the assumed rate (binomial tail).
FALSE_FAILURE = 1e-4
AGAIN = "reuse-again"
SLOW = "slow"


def binomial_margin(trials: int, rate: float, fail_prob: float = FALSE_FAILURE) -> int:
    """The smallest ``k`` with ``P(X > k) ≤ fail_prob`` for X ~ Binomial(trials, rate): a check that fails only
    when a count exceeds ``k`` fails with probability ≤ fail_prob for a procedure whose rate is at most ``rate``."""
    from scipy import stats as sps

    return int(sps.binom(trials, rate).isf(fail_prob))


@dataclass(frozen=True)
class Check:
    """In how many trials the comparison ``kind`` of ``metric`` at ``threshold`` may give another verdict than
    ``wanted``: at most :func:`binomial_margin` of ``rate``, the rate of other verdicts assumed for a correct
    implementation — above what 160 trials of this test measured (``measured``; ten runs of the fixture on this
    VM, fast and slow states alike), so that a drift of the machine does not fail the test."""

    id: str
    kind: str
    metric: str
    threshold: float
    wanted: str
    rate: float
    measured: str


#: What each check catches (the counts are of 160 trials of this test, 120 of bench/stats_bench.py --pin 0
#: --packets 1000 --rounds 7 agree):
#: - a-a-*: false verdicts. p99 at a 1% threshold is where a verdict on the threshold alone (significance ignored)
#:   fails for certain: ~85% of A/A p99 differ by more than 1% (50/60 in the bench), ~2% are significant.
#: - slowdown-*: no verdict, or the wrong direction (0 regressed of 16). The split runs (unpaired, 7 rounds a side)
#:   miss the 10% slowdown often here (24%, the 95% target is not met on this VM; the bench prints the rate): a
#:   worker in a slow state for a few rounds defeats a rank test of 7 rounds against 7. Paired in one run, 7%.
#: - slowdown-p50-in-run-threshold-30pct: a verdict on significance alone (threshold ignored) fails for certain: the
#:   paired test finds the ~10% slowdown in nearly every trial, its change stays below 30%.
CHECKS = (
    Check("a-a-p50", kind="a-a", metric="p50", threshold=0.05, wanted="unchanged", rate=0.10, measured="2/160"),
    Check("a-a-p99", kind="a-a", metric="p99", threshold=0.05, wanted="unchanged", rate=0.10, measured="3/160"),
    Check(
        "a-a-p99-threshold-1pct",
        kind="a-a",
        metric="p99",
        threshold=0.01,
        wanted="unchanged",
        rate=0.10,
        measured="3/160",
    ),
    Check(
        "slowdown-p50-split-runs",
        kind="slowdown-split-runs",
        metric="p50",
        threshold=0.05,
        wanted="regressed",
        rate=0.30,
        measured="38/160",
    ),
    Check(
        "slowdown-p50-in-run",
        kind="slowdown-in-run",
        metric="p50",
        threshold=0.05,
        wanted="regressed",
        rate=0.15,
        measured="11/160",
    ),
    Check(
        "slowdown-p50-in-run-threshold-30pct",
        kind="slowdown-in-run",
        metric="p50",
        threshold=0.30,
        wanted="unchanged",
        rate=0.05,
        measured="0/160",
    ),
)


# --- the trials ------------------------------------------------------------------------------------------------


def only(run: RunResult, name: str) -> RunResult:
    """The run reduced to strategy ``name``, renamed ``reuse`` (two such runs then share a strategy)."""
    assert run.packets is not None
    s = dataclasses.replace(run.strategy(name), name="reuse")
    packets = run.packets.filter(pl.col("strategy") == name).with_columns(pl.lit("reuse").alias("strategy"))
    return dataclasses.replace(run, strategies=[s], packets=packets)


@dataclass
class Trials:
    """The comparison of every trial for each check (by id), the spins per packet, reuse's calibrated p50 and the
    realised slowdown of every trial (median paired difference / median)."""

    spins: int
    p50_ns: float
    found: dict[str, list[MetricComparison]] = field(default_factory=dict)
    realised: list[float] = field(default_factory=list)

    def describe(self, check: Check) -> str:
        found = self.found[check.id]
        rows = [f"{c.verdict} {c.change:+.1%} (p {math.nan if c.p_value is None else c.p_value:.2g})" for c in found]
        realised = ", ".join(f"{r:+.0%}" for r in self.realised)
        return (
            f"{check.id}: {'; '.join(rows)}. Busy loop {self.spins} steps per packet (reuse p50 {self.p50_ns:.0f} ns"
            f"), realised slowdowns {realised}"
        )


def compare(run: RunResult, kind: str, metrics: Sequence[str], threshold: float) -> tuple[MetricComparison, ...]:
    from ndis_replay.reports import compare_runs, compare_strategies

    if kind == "slowdown-in-run":
        return compare_strategies(run, "reuse", SLOW, metric=metrics, threshold=threshold)
    new = only(run, AGAIN if kind == "a-a" else SLOW)
    return compare_runs(only(run, "reuse"), new, metric=metrics, threshold=threshold).comparisons


@pytest.fixture(scope="module")
def trials() -> Trials:
    from ndis_replay.engine.miniports import CompletionPolicy, get_miniport
    from ndis_replay.engine.strategies.reuse import ReuseParams, ReuseStrategy
    from ndis_replay.importers import open_trace
    from ndis_replay.reports.stats import pair_latencies
    from ndis_replay.runner import RunOptions, run_trace
    from ndis_replay.worker import MiniportSpec, StrategySpec

    trace = open_trace(SAMPLES / "small_packets.pcapng", reader="fast")
    trace = trace.replace(trace.frame.head(PACKETS))
    loopback = get_miniport("loopback")
    options = RunOptions(
        miniport=MiniportSpec("loopback", loopback, loopback.Params()),
        completion=CompletionPolicy("sync"),
        rounds=ROUNDS,
        warmup=1,
        check=False,  # the verifier is tested elsewhere; only timing matters here
        baseline=False,
    )
    # the runner times every worker on one CPU (RunOptions.pin, the default): what users run is what is validated
    reuse = StrategySpec("reuse", ReuseStrategy, ReuseParams(), "reuse")
    again = StrategySpec(AGAIN, ReuseStrategy, ReuseParams(), "reuse")

    # calibration, in a run of the same three workers: reuse's p50 (the median of the per-round p50s of reuse and
    # reuse-again) and what CALIBRATION_SPINS steps cost (the median over rounds of the paired per-packet
    # difference): neither a disturbed round nor a worker in a slow state moves a median over rounds
    probe = StrategySpec(SLOW, SpinReuse, SpinParams(spins=CALIBRATION_SPINS), "reuse")
    run = run_trace(trace, [reuse, again, probe], options)
    assert run.packets is not None
    p50s, extras = [], []
    for r in range(ROUNDS):
        in_round = run.packets.filter(pl.col("round") == r)
        for name in ("reuse", AGAIN):
            p50s.append(float(np.median(in_round.filter(pl.col("strategy") == name)["latency_ns"].to_numpy())))
        pairs = pair_latencies(in_round, "reuse", SLOW)
        extras.append(float(np.median(pairs.new - pairs.base)))
    p50, extra = statistics.median(p50s), statistics.median(extras)
    spins = max(1, round(CALIBRATION_SPINS * SLOWDOWN * p50 / extra)) if extra > 0 else CALIBRATION_SPINS
    slow = StrategySpec(SLOW, SpinReuse, SpinParams(spins=spins), "reuse")

    out = Trials(spins=spins, p50_ns=p50)
    calls = {(c.kind, c.threshold) for c in CHECKS}
    for _ in range(TRIALS):
        run = run_trace(trace, [reuse, again, slow], options)
        assert run.packets is not None
        for kind, threshold in sorted(calls):
            checks = [c for c in CHECKS if (c.kind, c.threshold) == (kind, threshold)]
            found = {c.metric: c for c in compare(run, kind, [c.metric for c in checks], threshold)}
            for check in checks:
                out.found.setdefault(check.id, []).append(found[check.metric])
        pairs = pair_latencies(run.packets, "reuse", SLOW)
        out.realised.append(float(np.median(pairs.new - pairs.base) / np.median(pairs.base)))
    return out


@pytest.mark.parametrize("check", [pytest.param(c, id=c.id) for c in CHECKS])
def test_verdicts(trials: Trials, check: Check) -> None:
    from ndis_replay.reports.compare import REGRESSED, UNCHANGED

    assert check.wanted in (REGRESSED, UNCHANGED)
    others = sum(c.verdict != check.wanted for c in trials.found[check.id])
    assert others <= binomial_margin(TRIALS, check.rate), trials.describe(check)
