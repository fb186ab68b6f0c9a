"""reports/stats.py: percentiles against numpy, the quantile intervals' coverage on data with known quantiles, the
paired and unpaired comparisons on A/A data and on an injected 10% slowdown, outliers, the noise flag, bad input.

Repeated-experiment checks use a margin from the binomial distribution: if a procedure's true rate is ``p``,
the count of successes over ``R`` independent repetitions is Binomial(R, p), and the test fails only when the
observed count falls outside that distribution's central 99.9% (or its 0.1% tail for one-sided checks). A correct
procedure therefore fails such a check with probability ≤ 0.001 for a fresh seed; with the fixed seeds below the
outcome is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from ndis_replay.errors import ExitCode, ReplayError
from ndis_replay.reports.stats import (
    MIN_BOOTSTRAP_ROUNDS,
    NOISE_CV_BOUND,
    PERCENTILE_METHOD,
    EmptySample,
    Sample,
    StatisticsError,
    TooFewSamples,
    bootstrap_change_over_rounds,
    bootstrap_over_rounds,
    bootstrap_quantiles_over_rounds,
    count_outliers,
    mann_whitney,
    median_interval,
    p99_interval,
    pair_latencies,
    paired_difference,
    quantile_interval,
    quantile_stat,
    round_latencies,
    round_noise,
    sign_test,
    summarize,
)
from ndis_replay.results import PACKET_SCHEMA

#: Repetitions of each simulated experiment.
REPS = 500
#: Probability that a correct procedure fails one repeated-experiment check (see the module docstring).
FAIL_PROB = 0.001
ALPHA = 0.05
#: Packets per sample: the "realistic" size the acceptance criteria name.
PACKETS = 1000


# --- percentiles -----------------------------------------------------------------------------------------------


def test_summary_of_one_to_thousand_is_nearest_rank() -> None:
    s = summarize(np.arange(1, 1001))
    # p99.9 of 1,000 values is the 999th, not the maximum (np.percentile(…, 99.9) would give the maximum: 99.9 / 100
    # is just above 0.999 in binary floating point)
    assert (s.n, s.p50, s.p90, s.p99, s.p999, s.min, s.max, s.mean) == (1000, 500, 900, 990, 999, 1, 1000, 500.5)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([7], id="one-value"),
        pytest.param([5, 1, 3], id="three-values"),
        pytest.param(np.random.default_rng(1).integers(0, 10**6, 12_345), id="random-ints"),
        pytest.param(np.random.default_rng(2).lognormal(8, 1, 4_321), id="lognormal"),
        pytest.param(pl.Series("latency_ns", [3, 3, 3, 9, 1], dtype=pl.Int64), id="polars-series-with-ties"),
    ],
)
def test_summary_matches_numpy(values: Sample) -> None:
    arr = np.asarray(values, dtype=np.float64)
    s = summarize(values)
    expected = np.quantile(arr, [0.5, 0.9, 0.99, 0.999], method=PERCENTILE_METHOD)
    assert [s.p50, s.p90, s.p99, s.p999] == expected.tolist()
    assert (s.min, s.max, s.mean, s.n) == (arr.min(), arr.max(), pytest.approx(arr.mean()), arr.size)
    # nearest rank: every percentile is a measured value
    assert {s.p50, s.p90, s.p99, s.p999} <= set(arr.tolist())


# --- quantile intervals: coverage on known distributions --------------------------------------------------------

DISTRIBUTIONS: dict[str, tuple[Callable[[np.random.Generator, int], np.ndarray], Callable[[float], float]]] = {
    # (sampler, true quantile function)
    "exponential": (lambda rng, n: rng.exponential(1.0, n), lambda q: -math.log1p(-q)),
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 1.0, n), lambda q: math.exp(float(sps.norm.ppf(q)))),
}


@pytest.mark.parametrize("q", [0.5, 0.99], ids=["median", "p99"])
@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=str)
def test_quantile_interval_coverage(dist: str, q: float) -> None:
    sampler, quantile = DISTRIBUTIONS[dist]
    truth = quantile(q)
    rng = np.random.default_rng([len(dist), int(q * 100)])
    hits = 0
    coverages = set()
    for _ in range(REPS):
        iv = quantile_interval(sampler(rng, PACKETS), q, alpha=ALPHA)
        assert iv.low <= iv.estimate <= iv.high
        hits += iv.low <= truth <= iv.high
        coverages.add(round(iv.coverage, 12))
    # n is fixed, so every repetition has the same ranks and the same exact coverage, at least nominal
    (coverage,) = coverages
    assert coverage >= 1 - ALPHA
    # hits ~ Binomial(REPS, coverage) for continuous data: both sides checked, so the interval is neither too
    # narrow (under-covers) nor needlessly wide
    low = sps.binom.ppf(FAIL_PROB / 2, REPS, coverage)
    high = sps.binom.isf(FAIL_PROB / 2, REPS, coverage)
    assert low <= hits <= high, (hits, low, high, coverage)
    # and never below nominal minus the binomial margin
    assert hits >= sps.binom.ppf(FAIL_PROB, REPS, 1 - ALPHA)


@pytest.mark.parametrize(
    ("n", "q", "lower", "upper"),
    [
        # textbook values: n = 10, median, 95%: ranks 2 and 9 (coverage 0.9785)
        pytest.param(10, 0.5, 2, 9, id="n10-median"),
        # the smallest n for p99 at 95% has the maximum as upper bound
        pytest.param(368, 0.99, 360, 368, id="n368-p99"),
    ],
)
def test_quantile_interval_ranks(n: int, q: float, lower: int, upper: int) -> None:
    iv = quantile_interval(np.arange(1, n + 1), q)
    assert (iv.lower_rank, iv.upper_rank, iv.low, iv.high) == (lower, upper, lower, upper)
    binom = sps.binom(n, q)
    assert iv.coverage == pytest.approx(binom.cdf(upper - 1) - binom.cdf(lower - 1))
    assert iv.coverage >= 0.95


def _scipy_ranks(n: int, q: float) -> tuple[int, int]:
    """The equal-tailed ranks as scipy.stats.binom gives them (the definition the fast path must equal)."""
    binom = sps.binom(n, q)
    k_low = int(binom.ppf(ALPHA / 2))
    if binom.cdf(k_low) > ALPHA / 2:
        k_low -= 1
    k_high = int(binom.ppf(1 - ALPHA / 2))
    while binom.cdf(k_high) < 1 - ALPHA / 2:
        k_high += 1
    return k_low + 1, k_high + 1


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 0.999], ids=lambda q: f"q{q:g}")
@pytest.mark.parametrize("n", [10, 37, 368, 1_000, 4_321, 100_000, 1_000_000, 6_000_000], ids=lambda n: f"n{n}")
def test_order_statistic_ranks_equal_scipy_stats_binom(n: int, q: float) -> None:
    lower, upper = _scipy_ranks(n, q)
    if lower < 1 or upper > n:
        with pytest.raises(TooFewSamples):
            quantile_interval(np.arange(n), q, presorted=True)
        return
    iv = quantile_interval(np.arange(n), q, presorted=True)
    assert (iv.lower_rank, iv.upper_rank) == (lower, upper)


@pytest.mark.parametrize("presorted", [True, False], ids=["presorted", "selection"])
def test_quantile_interval_by_selection_equals_by_sort(presorted: bool) -> None:
    values = np.random.default_rng(5).lognormal(0.0, 1.0, 20_001)
    iv = quantile_interval(np.sort(values) if presorted else values, 0.9, presorted=presorted)
    ordered = np.sort(values)
    assert (iv.low, iv.high) == (ordered[iv.lower_rank - 1], ordered[iv.upper_rank - 1])
    assert iv.estimate == float(np.quantile(values, 0.9, method="inverted_cdf"))


@pytest.mark.parametrize(
    ("positive", "untied"), [(0, 1), (1, 1), (3, 10), (5, 10), (7, 8), (480, 1000), (530, 1000), (0, 5000)]
)
def test_sign_test_equals_scipy_binomtest(positive: int, untied: int) -> None:
    assert sign_test(positive, untied) == pytest.approx(sps.binomtest(positive, untied, 0.5).pvalue, rel=1e-9)


def test_median_and_p99_helpers() -> None:
    values = np.random.default_rng(3).exponential(1.0, 2000)
    assert median_interval(values) == quantile_interval(values, 0.5)
    assert p99_interval(values) == quantile_interval(values, 0.99)


# --- bootstrap over rounds -------------------------------------------------------------------------------------


def test_bootstrap_over_rounds_widens_with_drift() -> None:
    """Rounds that drift (a per-round offset) make the round bootstrap wider than the pooled-packet interval."""
    rng = np.random.default_rng(4)
    offsets = rng.normal(0.0, 200.0, 8)
    rounds = [1000.0 + off + rng.exponential(100.0, 500) for off in offsets]
    boot = bootstrap_over_rounds(rounds, quantile_stat(0.5), resamples=400, seed=7)
    pooled = median_interval(np.concatenate(rounds))
    assert boot.low <= boot.estimate <= boot.high
    assert boot.estimate == pooled.estimate
    assert boot.high - boot.low > 3 * (pooled.high - pooled.low)
    assert (boot.rounds, boot.resamples, boot.alpha) == (8, 400, ALPHA)
    assert len(rounds) >= MIN_BOOTSTRAP_ROUNDS
    # deterministic for a seed
    assert bootstrap_over_rounds(rounds, quantile_stat(0.5), resamples=400, seed=7) == boot


def test_bootstrap_identical_rounds_collapse() -> None:
    rounds = [np.arange(100.0)] * 5
    boot = bootstrap_over_rounds(rounds, quantile_stat(0.99), resamples=50)
    assert boot.low == boot.estimate == boot.high == 98.0


# --- paired and unpaired comparisons: A/A and an injected 10% slowdown ------------------------------------------


def _paired_trace(rng: np.random.Generator, slowdown: float) -> tuple[np.ndarray, np.ndarray]:
    """Two strategies on the same packets: a per-packet cost (packet size, path) shared by both, times
    independent per-send noise; ``new`` does ``slowdown`` more work per packet."""
    cost = rng.lognormal(np.log(2000.0), 0.5, PACKETS)
    base = np.rint(cost * rng.lognormal(0.0, 0.3, PACKETS))
    new = np.rint(cost * (1 + slowdown) * rng.lognormal(0.0, 0.3, PACKETS))
    return base, new


def _unpaired_runs(rng: np.random.Generator, slowdown: float) -> tuple[np.ndarray, np.ndarray]:
    """Two separate runs: independent samples of a lognormal latency (σ 0.5 in log space)."""
    base = np.rint(rng.lognormal(np.log(2000.0), 0.5, PACKETS))
    new = np.rint(rng.lognormal(np.log(2000.0 * (1 + slowdown)), 0.5, PACKETS))
    return base, new


def _paired_verdict(base: np.ndarray, new: np.ndarray) -> tuple[bool, float]:
    r = paired_difference(base, new, alpha=ALPHA)
    return r.significant, r.median


def _unpaired_verdict(base: np.ndarray, new: np.ndarray) -> tuple[bool, float]:
    r = mann_whitney(base, new, alpha=ALPHA)
    return r.significant, r.rank_biserial


COMPARISONS = {
    "paired": (_paired_trace, _paired_verdict),
    "unpaired": (_unpaired_runs, _unpaired_verdict),
}


@pytest.mark.parametrize("kind", COMPARISONS, ids=str)
def test_aa_false_difference_rate(kind: str) -> None:
    make, verdict = COMPARISONS[kind]
    rng = np.random.default_rng(11)
    different = sum(verdict(*make(rng, 0.0))[0] for _ in range(REPS))
    # a level-0.05 test: false "different" ~ Binomial(REPS, ≤ 0.05); above its 99.9% point means miscalibrated
    assert different <= sps.binom.isf(FAIL_PROB, REPS, ALPHA), different


@pytest.mark.parametrize("kind", COMPARISONS, ids=str)
def test_ten_percent_slowdown_detected(kind: str) -> None:
    make, verdict = COMPARISONS[kind]
    rng = np.random.default_rng(12)
    detected = 0
    for _ in range(REPS):
        significant, direction = verdict(*make(rng, 0.10))
        detected += significant and direction > 0  # found, and found slower, not faster
    assert detected >= 0.95 * REPS, detected


def test_paired_difference_fields() -> None:
    base = np.array([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000], dtype=float)
    new = base + np.array([10, 20, 30, 40, 50, 60, 70, 0, 0, -10])
    r = paired_difference(base, new)
    assert (r.n, r.positive, r.negative, r.ties) == (10, 7, 1, 2)
    assert r.median == 20  # nearest-rank median of the sorted differences -10, 0, 0, 10, 20, 30, …
    assert r.relative == pytest.approx(20 / 500)
    assert r.p_value == pytest.approx(sps.binomtest(7, 8).pvalue)
    assert (r.interval.low, r.interval.high) == (0, 60) and not r.significant


def test_mann_whitney_effect_sizes() -> None:
    base, new = [1, 2, 3, 4], [3, 5, 6, 7]
    r = mann_whitney(base, new)
    # pairs with new > base: 3>1,3>2 (2) + 3 per 5, 6, 7 ×4 (12) = 14, plus the tie 3=3 as ½ → 14.5 of 16
    assert r.u == 14.5
    assert r.common_language == pytest.approx(14.5 / 16)
    assert r.rank_biserial == pytest.approx(2 * 14.5 / 16 - 1)
    assert (r.median_base, r.median_new, r.relative_median) == (2, 5, 1.5)
    assert r.p_value == pytest.approx(sps.mannwhitneyu(new, base).pvalue)


# --- outliers and noise ----------------------------------------------------------------------------------------


def test_outliers_counted_never_dropped() -> None:
    # quartiles 10 and 20 (IQR 10) → fences −20 and 50; 50 and −20 sit on the fences and are not outliers
    values = [10.0] * 50 + [20.0] * 50 + [50, 51, 1000, -21, -20]
    out = count_outliers(values)
    assert (out.q1, out.q3, out.low_fence, out.high_fence) == (10, 20, -20, 50)
    assert (out.below, out.above, out.total, out.n) == (1, 2, 3, 105)
    assert out.fraction == pytest.approx(3 / 105)
    assert summarize([v for v in values if v >= 0]).max == 1000  # the summary keeps them


@pytest.mark.parametrize(
    ("factor", "below", "above"),
    [
        pytest.param(3.0, 0, 1, id="far-out"),
        pytest.param(1.5, 0, 2, id="tukey-inner"),
        pytest.param(0.0, 1, 3, id="zero-iqr-factor"),
    ],
)
def test_outlier_factor(factor: float, below: int, above: int) -> None:
    # 20 values: Q1 (5th) 10, Q3 (15th) 30 → IQR 20; fences 10 − 20·factor and 30 + 20·factor
    values = [0.0] + [10.0] * 5 + [20.0] * 5 + [30.0] * 6 + [40.0, 70.0, 100.0]
    out = count_outliers(values, factor=factor)
    assert (out.q1, out.q3) == (10, 30)
    assert (out.below, out.above) == (below, above)


@pytest.mark.parametrize(
    ("medians", "cv", "noisy"),
    [
        pytest.param([100, 100, 100], 0.0, False, id="steady"),
        pytest.param([95, 105], math.sqrt(50) / 100, False, id="cv-7pct"),
        pytest.param([70, 100, 130], 0.30, True, id="cv-30pct"),
    ],
)
def test_noise_flag(medians: list[float], cv: float, noisy: bool) -> None:
    rounds = [np.array([m - 5, m, m + 5]) for m in medians]  # per-round median = m
    check = round_noise(rounds)
    assert check.medians == tuple(float(m) for m in medians)
    assert check.cv == pytest.approx(cv, abs=1e-12)
    assert (check.noisy, check.bound, check.rounds) == (noisy, NOISE_CV_BOUND, len(medians))


# --- packets.parquet helpers -----------------------------------------------------------------------------------


def _packets(rows: list[tuple[str, int, int, int]]) -> pl.DataFrame:
    """Rows of (strategy, round, index, latency_ns); the other columns zero."""
    zeros = {"batch": 1, "size": 60, "build_ns": 0, "send_ns": 0}
    return pl.DataFrame(
        [{"strategy": s, "round": r, "index": i, "latency_ns": lat, **zeros} for s, r, i, lat in rows],
        schema=PACKET_SCHEMA,
    )


def test_round_latencies_and_pairing() -> None:
    packets = _packets(
        [
            ("alloc", 1, 0, 100),
            ("alloc", 1, 1, -1),  # never completed
            ("alloc", 2, 0, 110),
            ("alloc", 2, 1, 120),
            ("reuse", 2, 1, 90),
            ("reuse", 2, 0, 80),
            ("reuse", 1, 0, 70),
            ("reuse", 1, 1, 60),
        ]
    )
    rl = round_latencies(packets, "alloc")
    assert rl.round_numbers == (1, 2) and rl.uncompleted == 1
    assert [r.tolist() for r in rl.rounds] == [[100], [110, 120]] and rl.pooled().tolist() == [100, 110, 120]
    paired = pair_latencies(packets, "alloc", "reuse")
    # (1,0) (2,0) (2,1) pair up; alloc's (1,1) never completed, so reuse's (1,1) has no partner
    assert paired.base.tolist() == [100, 110, 120] and paired.new.tolist() == [70, 80, 90]
    assert paired.unmatched == 2
    same = pair_latencies(packets, "reuse", "reuse")
    assert same.base.tolist() == same.new.tolist() == [70, 60, 80, 90]


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "what", "reason"),
    [
        pytest.param(lambda: summarize([]), EmptySample, "latencies", "empty", id="summary-empty"),
        pytest.param(lambda: summarize([1, math.nan]), StatisticsError, "latencies", "not finite", id="summary-nan"),
        pytest.param(lambda: summarize([[1, 2]]), StatisticsError, "latencies", "not 1-D", id="summary-2d"),
        pytest.param(lambda: summarize([5, -1]), StatisticsError, "latencies", "negative", id="summary-negative"),
        pytest.param(lambda: median_interval([]), EmptySample, "values", "empty", id="interval-empty"),
        pytest.param(lambda: p99_interval(range(367)), TooFewSamples, "values", "too few", id="p99-367-values"),
        pytest.param(lambda: quantile_interval([1, 2], 1.0), StatisticsError, "q", "out of range", id="q-one"),
        pytest.param(lambda: median_interval([1], alpha=0), StatisticsError, "alpha", "out of range", id="alpha-0"),
        pytest.param(lambda: paired_difference([1, 2], [1]), StatisticsError, "new", "length mismatch", id="pairs"),
        pytest.param(lambda: mann_whitney([1, 2], []), EmptySample, "new", "empty", id="mwu-empty"),
        pytest.param(lambda: count_outliers([]), EmptySample, "values", "empty", id="outliers-empty"),
        pytest.param(lambda: round_noise([[1, 2]]), TooFewSamples, "per_round_values", "too few", id="one-round"),
        pytest.param(lambda: round_noise([[0], [0]]), StatisticsError, "per_round_values", "zero mean", id="cv-0"),
        pytest.param(lambda: round_noise([[1], []]), EmptySample, "round 1", "empty", id="empty-round"),
        pytest.param(
            lambda: bootstrap_over_rounds([], quantile_stat(0.5)),
            EmptySample,
            "per_round_values",
            "empty",
            id="bootstrap-no-rounds",
        ),
        pytest.param(
            lambda: bootstrap_over_rounds([[1.0]], quantile_stat(0.5)),
            TooFewSamples,
            "per_round_values",
            "too few",
            id="bootstrap-one-round",
        ),
        pytest.param(
            lambda: round_latencies(_packets([("alloc", 1, 0, 5)]), "reuse"),
            EmptySample,
            "strategy reuse",
            "empty",
            id="unknown-strategy",
        ),
        pytest.param(
            lambda: pair_latencies(_packets([("alloc", 1, 0, 5), ("reuse", 1, 1, 5)]), "alloc", "reuse"),
            EmptySample,
            "pairs alloc/reuse",
            "empty",
            id="nothing-pairs",
        ),
    ],
)
def test_bad_input(call: Callable[[], object], error: type[StatisticsError], what: str, reason: str) -> None:
    with pytest.raises(error) as info:
        call()
    err = info.value
    assert (err.what, err.reason) == (what, reason)
    # a ValueError for library callers, a ReplayError (bad input, exit 3) for the CLI
    assert isinstance(err, ValueError)
    assert isinstance(info.value, ReplayError)
    assert info.value.exit_code is ExitCode.BAD_INPUT


def test_too_few_carries_the_needed_count() -> None:
    with pytest.raises(TooFewSamples) as info:
        p99_interval(np.arange(100))
    assert (info.value.n, info.value.needed) == (100, 368)
    assert p99_interval(np.arange(368)).upper_rank == 368


@pytest.mark.parametrize("rounds", [2, 5, 9], ids=lambda n: f"{n}-rounds")
def test_fast_round_bootstrap_equals_scipy(rounds: int) -> None:
    # the count-based bootstrap of quantiles resamples rounds exactly as scipy's does: same seed, same interval
    rng = np.random.default_rng(rounds)
    per_round = [np.rint(rng.lognormal(np.log(2000 * (1 + 0.03 * i)), 0.4, 700)) for i in range(rounds)]
    fast = bootstrap_quantiles_over_rounds(per_round, (0.5, 0.99), resamples=400, seed=3)
    for q in (0.5, 0.99):
        slow = bootstrap_over_rounds(per_round, quantile_stat(q), resamples=400, seed=3)
        assert fast[q] == slow


@pytest.mark.parametrize("q", [0.5, 0.99, None], ids=["p50", "p99", "mean"])
def test_two_sample_round_bootstrap_is_exact(q: float | None) -> None:
    # the count-based two-sample bootstrap equals resampling the rounds and pooling them by hand (same draws)
    rng = np.random.default_rng(5)
    base = [np.rint(rng.lognormal(np.log(2000), 0.4, 500)) for _ in range(5)]
    new = [np.rint(rng.lognormal(np.log(2200), 0.4, 400)) for _ in range(6)]
    fast = bootstrap_change_over_rounds(base, new, q, resamples=300, seed=9)
    draws = np.random.default_rng(9)
    picks_b = draws.integers(0, 5, size=(300, 5))
    picks_n = draws.integers(0, 6, size=(300, 6))

    def stat(arr: np.ndarray) -> float:
        return float(arr.mean()) if q is None else float(np.quantile(arr, q, method="inverted_cdf"))

    changes = [
        stat(np.concatenate([new[i] for i in pn])) / stat(np.concatenate([base[i] for i in pb])) - 1
        for pb, pn in zip(picks_b, picks_n, strict=True)
    ]
    low, high = np.quantile(changes, [ALPHA / 2, 1 - ALPHA / 2])
    assert fast.low == pytest.approx(low, rel=1e-12) and fast.high == pytest.approx(high, rel=1e-12)
    assert fast.estimate == pytest.approx(stat(np.concatenate(new)) / stat(np.concatenate(base)) - 1, rel=1e-12)
    assert fast.low < 0.1 < fast.high  # a 10% shift, inside its own interval
