"""Latency statistics for reports and the regression gate: percentiles, confidence intervals, paired and unpaired
comparisons, outliers and a noise warning.

All latencies are in nanoseconds. The tests themselves come from scipy (Mann-Whitney U and the bootstrap from
:mod:`scipy.stats`; the binomial distribution behind the order-statistic intervals and the sign test from
:mod:`scipy.special`, the functions ``scipy.stats.binom`` is made of: importing ``scipy.stats`` takes most of a
second, which a report of one run does not need to pay; tests hold both paths equal); this module chooses them,
validates the input and packages the results as frozen dataclasses.

Choices, and why:

- **Percentiles** use numpy's ``"inverted_cdf"`` method (nearest rank: the smallest observed value ``x`` with
  ``F_n(x) ≥ q``). A reported p99 is then a latency that was actually measured, integer nanoseconds stay
  integers, and the point estimate is one of the order statistics the interval is built from, so it always
  lies inside its own interval. (``results.latency_summary``, the summary in ``run.json``, uses the same definition.)
- **Confidence intervals of a quantile** come in two kinds. :func:`quantile_interval` is the exact,
  distribution-free order-statistic interval over pooled packets; it assumes packets are independent.
  :func:`bootstrap_over_rounds` resamples whole measured rounds, the units that *are* independent when the
  machine drifts between rounds (frequency, caches, interrupts are shared by every packet of a round).
  Reports use the bootstrap over rounds when the run has at least :data:`MIN_BOOTSTRAP_ROUNDS` measured
  rounds, and the order-statistic interval otherwise (labelled as assuming independent packets).
- **Paired differences** (two strategies replaying the same trace): the median of the per-packet differences
  with its order-statistic interval, and the sign test (:func:`scipy.stats.binomtest`). Not Hodges-Lehmann /
  Wilcoxon signed-rank: those assume the differences are symmetric about their centre, and latency
  differences are skewed (a slow path hits some packets only), so the pseudo-median they estimate is not the
  median difference.
- **Unpaired samples**: Mann-Whitney U (:func:`scipy.stats.mannwhitneyu`) with the common-language effect
  size ``P(new > base)`` (ties count half), the rank-biserial correlation ``2·CL − 1``, and the relative
  difference of the medians.
- **Outliers**: counted beyond Tukey's far-out fences ``Q1 − 3·IQR`` and ``Q3 + 3·IQR``; never dropped.
- **Noise**: the coefficient of variation (sample standard deviation / mean) of the per-round medians; above
  :data:`NOISE_CV_BOUND` the rounds disagree too much for a 5-10% difference to mean anything.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import special

from ndis_replay.errors import InputError

#: numpy percentile method used everywhere in this module (nearest rank, see the module docstring).
PERCENTILE_METHOD: Final = "inverted_cdf"
#: Quantiles in a :class:`LatencySummary`: field name → quantile (0-1). Fractions, not percentiles: numpy divides a
#: percentile by 100, and 99.9 / 100 lands just above 0.999, which moves p99.9 of 1,000 values to the maximum.
SUMMARY_QUANTILES: Final[dict[str, float]] = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
#: Default significance level (two-sided) of every interval and test here.
ALPHA: Final = 0.05
#: Fewest measured rounds for which reports use :func:`bootstrap_over_rounds`; with fewer, a resample of rounds
#: has too few distinct outcomes (R^R at most, many of them equal) for its percentiles to mean anything.
MIN_BOOTSTRAP_ROUNDS: Final = 5
#: Tukey's "far out" multiplier: a value beyond Q3 + 3·IQR (or below Q1 − 3·IQR) is counted as an outlier.
OUTLIER_IQR_FACTOR: Final = 3.0
#: Coefficient of variation of the per-round medians above which a strategy's rounds are flagged ``noisy``
#: (10%: twice the 5% regression threshold CI uses, so a noisy run cannot support a 5% verdict).
NOISE_CV_BOUND: Final = 0.10

#: What the functions accept as a sample: a 1-D numpy array, a sequence of numbers or a polars Series.
Sample = npt.ArrayLike | pl.Series
FloatArray = npt.NDArray[np.float64]


# --- errors ----------------------------------------------------------------------------------------------------


class StatisticsError(InputError, ValueError):
    """Data a statistic cannot be computed from. ``what`` names the argument, ``reason`` is a short fact
    (``"empty"``, ``"not finite"``, ``"negative"``, ``"too few"``, ``"out of range"``, ``"not 1-D"``,
    ``"length mismatch"``, ``"zero mean"``), ``value`` the offending value or count."""

    def __init__(self, what: str, reason: str, value: object = None) -> None:
        super().__init__(what, reason, value)
        self.what = what
        self.reason = reason
        self.value = value


class EmptySample(StatisticsError):
    """A sample (or the list of rounds) named ``what`` holds no values."""

    def __init__(self, what: str) -> None:
        super().__init__(what, "empty", 0)


class TooFewSamples(StatisticsError):
    """``what`` holds ``n`` values but the statistic needs at least ``needed`` (``purpose`` says which one)."""

    def __init__(self, what: str, n: int, needed: int, purpose: str) -> None:
        super().__init__(what, "too few", n)
        self.args = (what, n, needed, purpose)
        self.n = n
        self.needed = needed
        self.purpose = purpose


# --- result types ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles (:data:`PERCENTILE_METHOD`), extremes and mean of a latency sample, in ns; ``n`` values."""

    n: int
    p50: float
    p90: float
    p99: float
    p999: float
    min: float
    max: float
    mean: float


@dataclass(frozen=True, slots=True)
class QuantileInterval:
    """A distribution-free confidence interval ``[low, high]`` for the ``q`` quantile (0-1).

    ``low`` and ``high`` are the order statistics of ranks ``lower_rank`` and ``upper_rank`` (1-based) of ``n``
    values; ``coverage`` is the exact binomial coverage of that pair for a continuous distribution (≥ 1 − alpha;
    ties in the data only raise it). ``estimate`` is the sample quantile (:data:`PERCENTILE_METHOD`).
    """

    q: float
    estimate: float
    low: float
    high: float
    alpha: float
    coverage: float
    n: int
    lower_rank: int
    upper_rank: int


@dataclass(frozen=True, slots=True)
class BootstrapInterval:
    """A percentile-bootstrap interval ``[low, high]`` (level 1 − alpha) of a statistic over resampled rounds.

    ``estimate`` is the statistic of all ``rounds`` pooled; ``resamples`` the number of bootstrap resamples.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    rounds: int
    resamples: int


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """Per-packet differences ``new − base`` (ns) of two strategies that replayed the same packets.

    ``median`` is the median difference and ``interval`` its order-statistic interval; ``relative`` is
    ``median / median(base)``. ``positive`` / ``negative`` / ``ties`` count the pairs where new was slower /
    faster / equal; ``p_value`` is the two-sided sign test on ``positive`` vs ``negative`` (ties left out, the
    usual sign-test convention). ``significant`` is true when the interval excludes 0 — the decision that matches
    the interval shown; the sign test can disagree with it only at the boundary (it is not equal-tailed).
    """

    n: int
    median: float
    relative: float
    interval: QuantileInterval
    positive: int
    negative: int
    ties: int
    p_value: float
    significant: bool


@dataclass(frozen=True, slots=True)
class UnpairedComparison:
    """Mann-Whitney U of ``new`` against ``base`` (two-sided), with effect sizes.

    ``u`` is the U statistic of ``new``; ``common_language`` is ``P(new > base) + ½·P(new = base)`` (0.5: no
    tendency), ``rank_biserial`` ``2·common_language − 1`` (−1 … 1, positive: new slower); ``relative_median``
    is ``(median(new) − median(base)) / median(base)``. ``significant`` is ``p_value < alpha``.
    """

    n_base: int
    n_new: int
    u: float
    p_value: float
    alpha: float
    significant: bool
    common_language: float
    rank_biserial: float
    median_base: float
    median_new: float
    relative_median: float


@dataclass(frozen=True, slots=True)
class OutlierCount:
    """Values outside Tukey's fences ``[low_fence, high_fence]`` (Q1 − k·IQR, Q3 + k·IQR); counted, not removed."""

    n: int
    q1: float
    q3: float
    factor: float
    low_fence: float
    high_fence: float
    below: int
    above: int

    @property
    def total(self) -> int:
        """Outliers on both sides."""
        return self.below + self.above

    @property
    def fraction(self) -> float:
        """Share of the values that are outliers (0-1)."""
        return self.total / self.n


@dataclass(frozen=True, slots=True)
class NoiseCheck:
    """Agreement of the measured rounds: ``cv`` of the per-round ``medians`` (ns) against ``bound``."""

    rounds: int
    medians: tuple[float, ...]
    cv: float
    bound: float
    noisy: bool


@dataclass(frozen=True, slots=True)
class RoundLatencies:
    """One strategy's latencies from ``packets.parquet``: one array per measured round (ascending ``round``
    numbers in ``round_numbers``), packets never completed (latency −1) counted in ``uncompleted``."""

    strategy: str
    round_numbers: tuple[int, ...]
    rounds: tuple[npt.NDArray[np.int64], ...]
    uncompleted: int

    def pooled(self) -> npt.NDArray[np.int64]:
        """Every round's latencies in one array."""
        return np.concatenate(self.rounds) if self.rounds else np.empty(0, dtype=np.int64)


# --- validation ------------------------------------------------------------------------------------------------


def _sample(values: Sample, what: str, *, nonnegative: bool = False) -> FloatArray:
    """``values`` as a 1-D float64 array; raises for empty, not 1-D, not finite (or negative when asked)."""
    arr = np.asarray(values.to_numpy() if isinstance(values, pl.Series) else values, dtype=np.float64)
    if arr.ndim != 1:
        raise StatisticsError(what, "not 1-D", arr.ndim)
    if arr.size == 0:
        raise EmptySample(what)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise StatisticsError(what, "not finite", bad)
    if nonnegative:
        negative = int(np.count_nonzero(arr < 0))
        if negative:
            # latency −1 marks a packet never completed: callers filter those (and count them) first
            raise StatisticsError(what, "negative", negative)
    return arr


def _alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise StatisticsError("alpha", "out of range", alpha)
    return float(alpha)


def _quantile(arr: FloatArray, q: float) -> float:
    return float(np.quantile(arr, q, method=PERCENTILE_METHOD))


# --- summaries -------------------------------------------------------------------------------------------------


def summarize(latencies: Sample) -> LatencySummary:
    """p50, p90, p99, p99.9, min, max and mean of ``latencies`` (ns, ≥ 0), percentiles by nearest rank."""
    arr = _sample(latencies, "latencies", nonnegative=True)
    qs = np.quantile(arr, list(SUMMARY_QUANTILES.values()), method=PERCENTILE_METHOD)
    values = dict(zip(SUMMARY_QUANTILES, (float(v) for v in qs), strict=True))
    return LatencySummary(
        n=int(arr.size),
        min=float(arr.min()),
        max=float(arr.max()),
        mean=float(arr.mean()),
        **values,
    )


def quantile_interval(
    values: Sample, q: float, *, alpha: float = ALPHA, what: str = "values", presorted: bool = False
) -> QuantileInterval:
    """The exact distribution-free interval for the ``q`` quantile (0 < q < 1) by order statistics.

    With ``K ~ Binomial(n, q)`` the number of values below the true quantile ξ, ``P(x_(l) ≤ ξ ≤ x_(u)) ≥
    P(l ≤ K ≤ u − 1)``. The ranks are chosen equal-tailed from :data:`scipy.stats.binom`: ``l`` the largest
    rank with ``P(K ≤ l − 1) ≤ alpha/2``, ``u`` the smallest with ``P(K ≥ u) ≤ alpha/2``; the exact coverage is
    returned. Assumes the values are independent draws (see :func:`bootstrap_over_rounds` for when they are
    not). Raises :class:`TooFewSamples` when ``n`` is too small for such ranks to exist (p99 at alpha 0.05
    needs 368 values). ``presorted``: the caller promises ``values`` are ascending (saves a sort of millions of
    values when one sorted array serves several intervals).
    """
    alpha = _alpha(alpha)
    if not 0.0 < q < 1.0:
        raise StatisticsError("q", "out of range", q)
    arr = _sample(values, what)
    n = int(arr.size)
    lower_rank, upper_rank, coverage = _order_statistic_ranks(n, q, alpha)
    if lower_rank < 1 or upper_rank > n:
        raise TooFewSamples(what, n, _min_n_for_interval(q, alpha), f"{q:g} quantile interval")
    estimate_rank = nearest_rank(n, q)
    if not presorted:
        # three order statistics, not a full sort: a selection is O(n) (millions of paired differences per ratio)
        arr = np.partition(arr, sorted({lower_rank - 1, estimate_rank - 1, upper_rank - 1}))
    return QuantileInterval(
        q=float(q),
        estimate=float(arr[estimate_rank - 1]),
        low=float(arr[lower_rank - 1]),
        high=float(arr[upper_rank - 1]),
        alpha=alpha,
        coverage=coverage,
        n=n,
        lower_rank=lower_rank,
        upper_rank=upper_rank,
    )


def nearest_rank(n: int, q: float) -> int:
    """The 1-based nearest rank of the ``q`` quantile among ``n`` values: ``ceil(q·n)``, at least 1 (what numpy's
    ``inverted_cdf`` method picks)."""
    return min(max(math.ceil(q * n), 1), n)


def _binom_cdf(k: float, n: int, q: float) -> float:
    """P(K ≤ k) for K ~ Binomial(n, q) (:func:`scipy.special.bdtr`; 0 below 0)."""
    return float(special.bdtr(k, n, q)) if k >= 0 else 0.0


def _binom_ppf(p: float, n: int, q: float) -> float:
    """A starting point near the Binomial(n, q) ``p`` quantile (``bdtrik``; the mean where it has no answer)."""
    k = float(special.bdtrik(p, n, q))
    return k if math.isfinite(k) else q * n


def _order_statistic_ranks(n: int, q: float, alpha: float) -> tuple[int, int, float]:
    """``(l, u, coverage)`` of :func:`quantile_interval`: equal-tailed ranks from the Binomial(n, q) CDF.

    ``scipy.special`` (the functions behind :data:`scipy.stats.binom`) rather than ``scipy.stats`` itself, whose
    import alone takes most of a second of every report. ``bdtrik`` inverts the CDF over a continuous k; the
    loops settle the integer ranks exactly against ``bdtr``.
    """
    half = alpha / 2
    # l − 1 = the largest k with P(K ≤ k) ≤ alpha/2
    k_low = math.floor(_binom_ppf(half, n, q)) if n else -1
    while k_low >= 0 and _binom_cdf(k_low, n, q) > half:
        k_low -= 1
    while k_low + 1 < n and _binom_cdf(k_low + 1, n, q) <= half:
        k_low += 1
    # u − 1 = the smallest k with P(K ≤ k) ≥ 1 − alpha/2, i.e. P(K ≥ u) ≤ alpha/2
    k_high = max(math.ceil(_binom_ppf(1 - half, n, q)), 0) if n else 0
    while k_high > 0 and _binom_cdf(k_high - 1, n, q) >= 1 - half:
        k_high -= 1
    while k_high < n and _binom_cdf(k_high, n, q) < 1 - half:
        k_high += 1
    lower_rank, upper_rank = k_low + 1, k_high + 1
    coverage = _binom_cdf(upper_rank - 1, n, q) - _binom_cdf(lower_rank - 1, n, q)
    return lower_rank, upper_rank, coverage


def sign_test(positive: int, untied: int) -> float:
    """Two-sided exact sign test: the p-value of ``positive`` successes in ``untied`` trials at probability 1/2.

    Equals :func:`scipy.stats.binomtest`'s two-sided p-value (for p = 1/2 the binomial is symmetric, so doubling
    the smaller tail is its "as likely or less likely" rule), computed from :func:`scipy.special.bdtr` to keep
    ``scipy.stats`` out of the report's imports; 1 when every pair is tied (no evidence either way).
    """
    if untied <= 0:
        return 1.0
    low = float(special.bdtr(positive, untied, 0.5))
    high = float(special.bdtrc(positive - 1, untied, 0.5)) if positive > 0 else 1.0
    return min(1.0, 2.0 * min(low, high))


def _min_n_for_interval(q: float, alpha: float) -> int:
    """Smallest n for which both tails can be ≤ alpha/2: q^n ≤ alpha/2 and (1 − q)^n ≤ alpha/2."""
    tail = math.log(alpha / 2)
    return max(math.ceil(tail / math.log(q)), math.ceil(tail / math.log1p(-q)))


def median_interval(values: Sample, *, alpha: float = ALPHA) -> QuantileInterval:
    """:func:`quantile_interval` of the median."""
    return quantile_interval(values, 0.5, alpha=alpha)


def p99_interval(values: Sample, *, alpha: float = ALPHA) -> QuantileInterval:
    """:func:`quantile_interval` of the 99th percentile (needs at least 368 values at alpha 0.05)."""
    return quantile_interval(values, 0.99, alpha=alpha)


def quantile_stat(q: float) -> Callable[[FloatArray], float]:
    """A statistic for :func:`bootstrap_over_rounds`: the ``q`` quantile (0-1) by :data:`PERCENTILE_METHOD`."""
    if not 0.0 <= q <= 1.0:
        raise StatisticsError("q", "out of range", q)
    return lambda arr: _quantile(arr, q)


def _bootstrap_rounds(per_round_values: Sequence[Sample], resamples: int) -> list[FloatArray]:
    """The rounds of a bootstrap over rounds, validated: at least two, each non-empty and finite."""
    if resamples < 1:
        raise StatisticsError("resamples", "out of range", resamples)
    if len(per_round_values) == 0:
        raise EmptySample("per_round_values")
    rounds = [_sample(values, f"round {i}") for i, values in enumerate(per_round_values)]
    if len(rounds) < 2:
        raise TooFewSamples("per_round_values", len(rounds), 2, "bootstrap over rounds")
    return rounds


def bootstrap_over_rounds(
    per_round_values: Sequence[Sample],
    stat: Callable[[FloatArray], float],
    *,
    alpha: float = ALPHA,
    resamples: int = 2000,
    seed: int = 0,
) -> BootstrapInterval:
    """A percentile-bootstrap interval of ``stat`` over measured rounds (:func:`scipy.stats.bootstrap`).

    Each resample draws as many rounds as were measured, with replacement, pools their values and applies
    ``stat`` (for example :func:`quantile_stat`). Rounds, not packets, are resampled because the packets of one
    round share the machine's state and are not independent: when the machine drifts between rounds, an
    interval over pooled packets (:func:`quantile_interval`) is too narrow and this one is not. Reports use this
    interval when there are at least :data:`MIN_BOOTSTRAP_ROUNDS` rounds. Deterministic for a given ``seed``;
    the cost is ``resamples`` evaluations of ``stat`` on a pooled sample.
    """
    alpha = _alpha(alpha)
    rounds = _bootstrap_rounds(per_round_values, resamples)

    def pooled_stat(picked: npt.NDArray[Any]) -> float:
        return float(stat(np.concatenate([rounds[int(i)] for i in picked])))

    from scipy import stats as sps  # most of a second to import: only where it is used

    result = sps.bootstrap(
        (np.arange(len(rounds)),),
        pooled_stat,
        n_resamples=resamples,
        vectorized=False,
        confidence_level=1 - alpha,
        method="percentile",
        # random_state (not rng, scipy ≥ 1.15) keeps scipy 1.11 working; a Generator is accepted by both
        random_state=np.random.default_rng(seed),
    )
    return BootstrapInterval(
        estimate=float(stat(np.concatenate(rounds))),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        alpha=alpha,
        rounds=len(rounds),
        resamples=resamples,
    )


def bootstrap_quantiles_over_rounds(
    per_round_values: Sequence[Sample],
    qs: Sequence[float],
    *,
    alpha: float = ALPHA,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[float, BootstrapInterval]:
    """:func:`bootstrap_over_rounds` of the ``qs`` quantiles (0-1, nearest rank) at once, fast enough for
    millions of packets.

    The same percentile bootstrap (each resample draws as many rounds as were measured, with replacement, and
    takes the quantile of their values pooled), computed from counts instead of copies: every round becomes its
    cumulative counts over the distinct latencies of the run, a resample's pooled counts are a weighted sum of
    those, and its quantile is found in them. Exact (no binning); the cost grows with the number of distinct
    values, not with the number of packets. The resampled round indexes come from ``seed`` as in
    :func:`bootstrap_over_rounds`, so the intervals are deterministic.
    """
    alpha = _alpha(alpha)
    _check_quantiles(qs)
    rounds = _bootstrap_rounds(per_round_values, resamples)
    picks = np.random.default_rng(seed).integers(0, len(rounds), size=(resamples, len(rounds)))
    draws = _quantile_draws(rounds, qs, picks)
    everything = np.sort(np.concatenate(rounds))
    out: dict[float, BootstrapInterval] = {}
    for q, values in draws.items():
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        out[q] = BootstrapInterval(
            estimate=float(everything[max(math.ceil(q * everything.size), 1) - 1]),
            low=float(low),
            high=float(high),
            alpha=alpha,
            rounds=len(rounds),
            resamples=resamples,
        )
    return out


def _check_quantiles(qs: Sequence[float]) -> None:
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise StatisticsError("q", "out of range", q)


def _weights(picks: npt.NDArray[np.int64], n_rounds: int) -> FloatArray:
    """How many times each round was drawn, per resample (resamples × rounds)."""
    weights = np.zeros((picks.shape[0], n_rounds))
    np.add.at(weights, (np.repeat(np.arange(picks.shape[0]), picks.shape[1]), picks.ravel()), 1.0)
    return weights


def _quantile_draws(
    rounds: Sequence[FloatArray], qs: Sequence[float], picks: npt.NDArray[np.int64]
) -> dict[float, FloatArray]:
    """The nearest-rank ``qs`` quantiles of each resample's pooled rounds (``picks``: resamples × drawn round
    indexes), computed from cumulative counts over the distinct values (see :func:`bootstrap_quantiles_over_rounds`)."""
    distinct, inverse = np.unique(np.concatenate(rounds), return_inverse=True)
    bounds = np.cumsum([0, *(r.size for r in rounds)])
    cumulative = np.stack(
        [np.cumsum(np.bincount(inverse[lo:hi], minlength=distinct.size)) for lo, hi in itertools.pairwise(bounds)]
    ).astype(np.float64)  # rounds × distinct; float64 for the matrix product (exact below 2^53 packets)
    weights = _weights(picks, len(rounds))
    draws: dict[float, list[float]] = {float(q): [] for q in qs}
    chunk = max(1, 2_000_000 // max(distinct.size, 1))  # resamples per step: ~16 MB of pooled counts at a time
    for start in range(0, weights.shape[0], chunk):
        pooled = weights[start : start + chunk] @ cumulative  # resamples × distinct cumulative counts
        totals = pooled[:, -1]
        for q in draws:
            rank = np.maximum(np.ceil(q * totals), 1.0)  # nearest rank: the smallest x with F(x) ≥ q
            index = (pooled < rank[:, None]).sum(axis=1)
            draws[q].extend(distinct[np.minimum(index, distinct.size - 1)].tolist())
    return {q: np.asarray(v, dtype=np.float64) for q, v in draws.items()}


def _mean_draws(rounds: Sequence[FloatArray], picks: npt.NDArray[np.int64]) -> FloatArray:
    """The mean of each resample's pooled rounds, from per-round sums and counts."""
    weights = _weights(picks, len(rounds))
    sums = np.array([r.sum() for r in rounds])
    counts = np.array([r.size for r in rounds], dtype=np.float64)
    return np.asarray((weights @ sums) / (weights @ counts), dtype=np.float64)


def bootstrap_change_over_rounds(
    base_rounds: Sequence[Sample],
    new_rounds: Sequence[Sample],
    q: float | None,
    *,
    alpha: float = ALPHA,
    resamples: int = 1000,
    seed: int = 0,
) -> BootstrapInterval:
    """A two-sample percentile bootstrap over rounds of the relative change ``stat(new) / stat(base) − 1``, where
    ``stat`` is the nearest-rank ``q`` quantile of the pooled rounds, or their mean when ``q`` is None.

    Each resample draws, independently, as many base rounds as were measured and as many new rounds (with
    replacement); computed from counts (quantiles) or per-round sums (mean), so millions of packets cost no more
    than thousands. ``estimate`` is the change between the full samples. Deterministic for a given ``seed``.
    """
    alpha = _alpha(alpha)
    if q is not None:
        _check_quantiles((q,))
    base = _bootstrap_rounds(base_rounds, resamples)
    new = _bootstrap_rounds(new_rounds, resamples)
    rng = np.random.default_rng(seed)
    picks_base = rng.integers(0, len(base), size=(resamples, len(base)))
    picks_new = rng.integers(0, len(new), size=(resamples, len(new)))
    if q is None:
        b, n = _mean_draws(base, picks_base), _mean_draws(new, picks_new)
        point_b, point_n = float(np.concatenate(base).mean()), float(np.concatenate(new).mean())
    else:
        b, n = _quantile_draws(base, (q,), picks_base)[q], _quantile_draws(new, (q,), picks_new)[q]
        point_b = float(np.quantile(np.concatenate(base), q, method=PERCENTILE_METHOD))
        point_n = float(np.quantile(np.concatenate(new), q, method=PERCENTILE_METHOD))
    with np.errstate(divide="ignore", invalid="ignore"):
        change = n / b - 1.0
    change = change[np.isfinite(change)]
    if change.size == 0:
        raise StatisticsError("base", "zero statistic", 0.0)
    low, high = np.quantile(change, [alpha / 2, 1 - alpha / 2])
    return BootstrapInterval(
        estimate=point_n / point_b - 1.0 if point_b > 0 else math.nan,
        low=float(low),
        high=float(high),
        alpha=alpha,
        rounds=len(base) + len(new),
        resamples=resamples,
    )


# --- comparisons -----------------------------------------------------------------------------------------------


def paired_difference(base: Sample, new: Sample, *, alpha: float = ALPHA) -> PairedDifference:
    """Compare two strategies packet by packet: ``base[i]`` and ``new[i]`` are the same packet (same round and
    index, see :func:`pair_latencies`). Median of ``new − base`` with its order-statistic interval and the sign
    test; see the module docstring for why not Hodges-Lehmann."""
    alpha = _alpha(alpha)
    a = _sample(base, "base", nonnegative=True)
    b = _sample(new, "new", nonnegative=True)
    if a.size != b.size:
        raise StatisticsError("new", "length mismatch", (int(a.size), int(b.size)))
    diff = b - a
    interval = quantile_interval(diff, 0.5, alpha=alpha, what="pairs")
    positive = int(np.count_nonzero(diff > 0))
    negative = int(np.count_nonzero(diff < 0))
    untied = positive + negative
    # all pairs tied: no evidence either way
    p_value = sign_test(positive, untied)
    base_median = _quantile(a, 0.5)
    return PairedDifference(
        n=int(diff.size),
        median=interval.estimate,
        relative=interval.estimate / base_median if base_median > 0 else math.nan,
        interval=interval,
        positive=positive,
        negative=negative,
        ties=int(diff.size) - untied,
        p_value=p_value,
        significant=not interval.low <= 0.0 <= interval.high,
    )


def mann_whitney(base: Sample, new: Sample, *, alpha: float = ALPHA) -> UnpairedComparison:
    """Two-sided Mann-Whitney U test of ``new`` against ``base`` (unpaired: separate runs, different packets),
    with the common-language effect size, the rank-biserial correlation and the relative difference of medians.

    scipy picks the exact U distribution for small samples without ties and the normal approximation (with
    continuity and tie correction) otherwise.
    """
    alpha = _alpha(alpha)
    a = _sample(base, "base", nonnegative=True)
    b = _sample(new, "new", nonnegative=True)
    from scipy import stats as sps  # most of a second to import: only where it is used

    result = sps.mannwhitneyu(b, a, alternative="two-sided")
    u = float(result.statistic)
    # U of the first argument counts pairs (new, base) with new > base, ties counting half
    common_language = u / (a.size * b.size)
    median_base, median_new = _quantile(a, 0.5), _quantile(b, 0.5)
    p_value = float(result.pvalue)
    return UnpairedComparison(
        n_base=int(a.size),
        n_new=int(b.size),
        u=u,
        p_value=p_value,
        alpha=alpha,
        significant=p_value < alpha,
        common_language=common_language,
        rank_biserial=2 * common_language - 1,
        median_base=median_base,
        median_new=median_new,
        relative_median=(median_new - median_base) / median_base if median_base > 0 else math.nan,
    )


# --- outliers and noise ----------------------------------------------------------------------------------------


def count_outliers(values: Sample, *, factor: float = OUTLIER_IQR_FACTOR) -> OutlierCount:
    """Count values beyond Tukey's fences Q1 − factor·IQR and Q3 + factor·IQR (quartiles by nearest rank)."""
    if not factor >= 0:
        raise StatisticsError("factor", "out of range", factor)
    arr = _sample(values, "values")
    q1, q3 = _quantile(arr, 0.25), _quantile(arr, 0.75)
    low, high = q1 - factor * (q3 - q1), q3 + factor * (q3 - q1)
    return OutlierCount(
        n=int(arr.size),
        q1=q1,
        q3=q3,
        factor=float(factor),
        low_fence=low,
        high_fence=high,
        below=int(np.count_nonzero(arr < low)),
        above=int(np.count_nonzero(arr > high)),
    )


def round_noise(per_round_values: Sequence[Sample], *, bound: float = NOISE_CV_BOUND) -> NoiseCheck:
    """Coefficient of variation (sample standard deviation, ddof 1, over the mean) of the per-round medians;
    ``noisy`` when it exceeds ``bound`` (default :data:`NOISE_CV_BOUND`, 10%). Needs two rounds."""
    if not bound > 0:
        raise StatisticsError("bound", "out of range", bound)
    if len(per_round_values) == 0:
        raise EmptySample("per_round_values")
    if len(per_round_values) < 2:
        raise TooFewSamples("per_round_values", len(per_round_values), 2, "coefficient of variation")
    medians = np.array([_quantile(_sample(v, f"round {i}"), 0.5) for i, v in enumerate(per_round_values)])
    mean = float(medians.mean())
    if mean <= 0:
        raise StatisticsError("per_round_values", "zero mean", mean)
    cv = float(medians.std(ddof=1) / mean)
    return NoiseCheck(
        rounds=int(medians.size),
        medians=tuple(float(m) for m in medians),
        cv=cv,
        bound=float(bound),
        noisy=cv > bound,
    )


# --- from packets.parquet --------------------------------------------------------------------------------------


def round_latencies(packets: pl.DataFrame, strategy: str) -> RoundLatencies:
    """One strategy's ``latency_ns`` per measured round from a ``packets.parquet`` table; packets never completed
    (latency < 0) are left out and counted. Raises :class:`EmptySample` when the strategy has no rows."""
    rows = packets.filter(pl.col("strategy") == strategy)
    if rows.height == 0:
        raise EmptySample(f"strategy {strategy}")
    uncompleted = int(rows.select((pl.col("latency_ns") < 0).sum()).item())
    done = rows.filter(pl.col("latency_ns") >= 0)
    numbers = tuple(int(r) for r in sorted(done.get_column("round").unique().to_list()))
    arrays = tuple(
        done.filter(pl.col("round") == r).get_column("latency_ns").cast(pl.Int64).to_numpy() for r in numbers
    )
    return RoundLatencies(strategy=strategy, round_numbers=numbers, rounds=arrays, uncompleted=uncompleted)


@dataclass(frozen=True, slots=True)
class PairedLatencies:
    """Latencies of two strategies joined on (round, index): ``base[i]`` and ``new[i]`` are the same packet.
    ``unmatched`` counts packets of either strategy without a completed partner (left out)."""

    base: npt.NDArray[np.int64]
    new: npt.NDArray[np.int64]
    unmatched: int


def pair_latencies(packets: pl.DataFrame, base: str, new: str) -> PairedLatencies:
    """Join two strategies' completed packets of a ``packets.parquet`` table on (round, index) for
    :func:`paired_difference`. Raises :class:`EmptySample` when no packet pairs up."""
    keys = ["round", "index"]

    def side(name: str) -> pl.DataFrame:
        rows = packets.filter(pl.col("strategy") == name).select(*keys, "latency_ns")
        return rows.rename({"latency_ns": name})

    a, b = side(base), side(new)
    new_col = new if new != base else f"{new}_new"
    if a.height == b.height and a.select(keys).equals(b.select(keys)):
        # strategies of one run replay the same packets in the same order: aligned already, no join needed
        x = a.get_column(base).cast(pl.Int64).to_numpy()
        y = b.get_column(new).cast(pl.Int64).to_numpy()
        keep = (x >= 0) & (y >= 0)
        order = np.lexsort((a.get_column("index").to_numpy(), a.get_column("round").to_numpy()))
        if not np.all(order[1:] > order[:-1]):  # not in (round, index) order: put it in that order
            x, y, keep = x[order], y[order], keep[order]
        if not keep.any():
            raise EmptySample(f"pairs {base}/{new}")
        return PairedLatencies(base=x[keep], new=y[keep], unmatched=2 * int(keep.size - keep.sum()))
    joined = a.join(b, on=keys, how="inner", suffix="_new")
    joined = joined.filter((pl.col(base) >= 0) & (pl.col(new_col) >= 0)).sort(keys)
    if joined.height == 0:
        raise EmptySample(f"pairs {base}/{new}")
    return PairedLatencies(
        base=joined.get_column(base).cast(pl.Int64).to_numpy(),
        new=joined.get_column(new_col).cast(pl.Int64).to_numpy(),
        unmatched=a.height + b.height - 2 * joined.height,
    )
