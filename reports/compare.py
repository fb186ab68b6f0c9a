"""Compare strategies: two strategies inside one run, or every strategy of a run against a baseline run.

A difference is called ``regressed`` or ``improved`` only when **both** hold: the relative change of the metric
exceeds the threshold, **and** the significance test finds a difference in the same direction. Otherwise it is
``unchanged`` — a large change the data cannot support (few packets, noisy rounds) is not a verdict.

Which test decides, and why:

- **Run vs baseline run** (unpaired: separate processes, different moments). When both runs have at least
  :data:`~ndis_replay.reports.stats.MIN_BOOTSTRAP_ROUNDS` measured rounds, a two-sample percentile bootstrap over
  *rounds* of the ratio ``metric(new) / metric(base)`` (test ``bootstrap-rounds``): rounds, not packets, are the
  independent units (the packets of one round share the machine's state), so the interval is honest when the
  machine drifts, and it speaks about the metric itself (a p99 verdict is about p99, not about the median).
  Significant when that interval of the relative change excludes 0 **and** the exact Mann-Whitney test on the
  metric's per-round values agrees (p < alpha, reported as ``p_value``; test ``bootstrap+mw-rounds``): a
  percentile bootstrap over 5-10 rounds under-covers, and on a machine that switches speed between rounds
  (seen here: rounds of one run at 2.4 µs and 4.5 µs) it alone called A/A runs different.
  With fewer rounds, Mann-Whitney U on the pooled per-packet values (test ``mann-whitney``), which assumes
  independent packets and tests a shift of the whole distribution; that is the best the data allow, and the noise
  flags say when the rounds disagree.
- **Strategy vs strategy inside one run** (paired: the same trace, the same rounds, interleaved on one host).
  The per-packet differences joined on (round, index) (test ``sign-test``): the median difference with its
  order-statistic interval, significant when that interval excludes 0. It asks "is the new strategy slower on
  the same packet", for every latency metric (a tail metric's threshold is still applied to the tail metric).
- ``packets_per_s`` has one value per round (packets / round duration), so it never has a per-packet test: the
  round bootstrap with enough rounds, Mann-Whitney on the per-round values otherwise (which, with a handful of
  rounds, is rarely significant: conservative by design). Higher is better for it; lower is better for the rest.

Point values are computed here from ``packets.parquet`` (percentiles by nearest rank, see
:mod:`ndis_replay.reports.stats`), as ``run.json``'s summary is since results format 2 (a format-1 summary
interpolated: it can differ by less than the gap between two adjacent measured latencies).

The point values (``base``, ``new``, hence ``change``) are the metric over the pooled packets of every measured
round, on the round path too. The median over rounds of the per-round metric, robust in principle to one
disturbed round, was measured and not kept: on real replays on this 2-core VM (bench/stats_bench.py: 300 A/A
trials — two workers of one run split into two runs —, 300 injected slowdowns of 12-15%, 336 A/A pairs of separate
invocations; p50 and p99 at the 5% threshold) it moved the false regressions by at most one (in-run A/A p50 16 →
15 of 300, p99 20 → 20; separate invocations p50 65 → 65, p99 58 → 58 of 336) and the detected slowdowns by
none (p50 179 → 179, p99 93 → 93 of 300). A disturbance here is rarely one round: a worker stays ~1.7× slower
for several rounds, and a median of 5-7 rounds moves with it as the pooled percentile does, while one slow round
of seven moves the pooled p50 only to about the 58th percentile of the others (1-2% here).

Refusals (:class:`RunMismatch`, exit 3, bad input: the command line is well formed, the two directories are not
comparable): a different trace (sha256), a different host (``hostname``, ``cpu_model``, ``cpu_count``; the
differing fields are named), a strategy measured differently on the two sides (engine or ``--timing``: a native
reading by runs and a Python one per call differ by 30× for the same code), or no strategy in common.
Strategies present on one side only are listed in :attr:`RunComparison.only_base` /
:attr:`RunComparison.only_new`, and the common ones are compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from ndis_replay.errors import ConfigError, ResultsError, RunMismatch
from ndis_replay.reports.stats import (
    ALPHA,
    MIN_BOOTSTRAP_ROUNDS,
    FloatArray,
    bootstrap_change_over_rounds,
    mann_whitney,
    pair_latencies,
    paired_difference,
    round_latencies,
    round_noise,
)
from ndis_replay.results import RunResult, StrategyResult, load

#: Metrics a comparison can use: name → the quantile (0-1), or None for ``mean`` and ``packets_per_s``.
METRICS: Final[dict[str, float | None]] = {
    "p50": 0.5,
    "p90": 0.9,
    "p99": 0.99,
    "p999": 0.999,
    "mean": None,
    "packets_per_s": None,
}
#: Metrics where a higher value is better (every latency metric is better lower).
HIGHER_IS_BETTER: Final = frozenset({"packets_per_s"})
#: Host record fields that must match for two runs to be comparable.
HOST_FIELDS: Final = ("hostname", "cpu_model", "cpu_count")
#: Default regression threshold (relative change), the one CI uses.
DEFAULT_THRESHOLD: Final = 0.05
#: Bootstrap resamples of the across-run ratio: enough for a 95% percentile interval, cheap on 10⁴-10⁵ packets.
RESAMPLES: Final = 1000

REGRESSED: Final = "regressed"
IMPROVED: Final = "improved"
UNCHANGED: Final = "unchanged"


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """One metric of one strategy pair: ``base`` and ``new`` values (ns, or packets/s), ``change`` the relative
    change ``(new − base) / base``, ``interval`` its confidence interval (None when the test gives none),
    ``p_value`` (None for the bootstrap), ``test`` the one that decided significance, ``significant`` (in the
    direction of ``change``), ``noisy_base`` / ``noisy_new`` from :func:`~ndis_replay.reports.stats.round_noise`
    (None with fewer than two rounds), ``threshold`` and the ``verdict``."""

    strategy: str
    base_strategy: str
    new_strategy: str
    metric: str
    base: float
    new: float
    change: float
    interval: tuple[float, float] | None
    p_value: float | None
    test: str
    significant: bool
    noisy_base: bool | None
    noisy_new: bool | None
    threshold: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "strategy": self.strategy,
            "base_strategy": self.base_strategy,
            "new_strategy": self.new_strategy,
            "metric": self.metric,
            "base": self.base,
            "new": self.new,
            "change": self.change,
            "interval": list(self.interval) if self.interval is not None else None,
            "p_value": self.p_value,
            "test": self.test,
            "significant": self.significant,
            "noisy_base": self.noisy_base,
            "noisy_new": self.noisy_new,
            "threshold": self.threshold,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class RunComparison:
    """A run against a baseline: the ``comparisons`` of the strategies both ran, and the strategies only one ran
    (``only_base``, ``only_new``) or that were not timed on a side (``untimed``)."""

    base_label: str
    new_label: str
    comparisons: tuple[MetricComparison, ...]
    only_base: tuple[str, ...]
    only_new: tuple[str, ...]
    untimed: tuple[str, ...]

    @property
    def regressions(self) -> tuple[MetricComparison, ...]:
        """The comparisons called ``regressed``."""
        return tuple(c for c in self.comparisons if c.verdict == REGRESSED)


# --- parsing -------------------------------------------------------------------------------------------------


def parse_threshold(text: str, what: str = "--fail-on-regression") -> float:
    """A relative threshold from ``"5%"`` or ``"0.05"``; a bare number must be a fraction below 1 (``"5"`` is
    ambiguous). Raises :class:`~ndis_replay.errors.ConfigError` for anything else."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise ConfigError(what, text, "not a percentage (write 5% or 0.05)") from None
    if percent:
        value /= 100
    elif value >= 1:
        raise ConfigError(what, text, "a bare number is a fraction and must be below 1 (write 5% or 0.05)")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(what, text, "must be a positive percentage")
    return value


def check_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """``metrics`` as a tuple of known metric names (ConfigError otherwise)."""
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        if name not in METRICS:
            raise ConfigError("metric", name, "unknown metric", tuple(METRICS))
    if not names:
        raise ConfigError("metric", "", "no metric given", tuple(METRICS))
    return tuple(dict.fromkeys(names))


# --- per-metric data -----------------------------------------------------------------------------------------


def _stat(metric: str) -> Callable[[FloatArray], float]:
    q = METRICS[metric]
    if q is not None:
        return lambda arr: float(np.quantile(arr, q, method="inverted_cdf"))
    if metric == "mean":
        return lambda arr: float(arr.mean())
    # packets_per_s: the median of the per-round rates, as the summary takes the median round
    return lambda arr: float(np.median(arr))


def _rounds(result: RunResult, s: StrategyResult, metric: str, label: str) -> list[FloatArray]:
    """Per measured round: the latencies (ns) of the strategy's completed packets, or for ``packets_per_s`` the
    one rate of that round."""
    if metric == "packets_per_s":
        packets = (s.summary or {}).get("packets") or result.trace.get("replayed", 0)
        spans = [t["end_ns"] - t["start_ns"] for t in s.round_times]
        return [np.array([packets / (span / 1e9)], dtype=np.float64) for span in spans if span > 0]
    if result.packets is None:
        raise ResultsError(label, "packets.parquet not loaded")
    rounds = round_latencies(result.packets, s.name)
    return [r.astype(np.float64) for r in rounds.rounds]


def _noisy(rounds: Sequence[FloatArray]) -> bool | None:
    if len(rounds) < 2:
        return None
    return round_noise(rounds).noisy


def _verdict(metric: str, change: float, direction: int, threshold: float) -> str:
    """``direction``: +1 / −1 when the test found new higher / lower, 0 when it found nothing."""
    if direction == 0 or not math.isfinite(change) or abs(change) <= threshold:
        return UNCHANGED
    if (1 if change > 0 else -1) != direction:  # the test and the point estimate disagree: no verdict
        return UNCHANGED
    worse = change < 0 if metric in HIGHER_IS_BETTER else change > 0
    return REGRESSED if worse else IMPROVED


def _relative(base: float, new: float) -> float:
    return (new - base) / base if base > 0 else math.nan


def _unpaired(
    metric: str, base_rounds: list[FloatArray], new_rounds: list[FloatArray], alpha: float
) -> tuple[tuple[float, float] | None, float | None, str, int]:
    """Interval of the relative change, p-value, test name and direction for two separate samples."""
    stat = _stat(metric)
    if len(base_rounds) >= MIN_BOOTSTRAP_ROUNDS and len(new_rounds) >= MIN_BOOTSTRAP_ROUNDS:
        # count-based (exact, and fast for millions of packets); packets_per_s has one value per round, whose
        # median over the drawn rounds is the same statistic
        q = METRICS[metric] if metric != "packets_per_s" else 0.5
        boot = bootstrap_change_over_rounds(base_rounds, new_rounds, q, alpha=alpha, resamples=RESAMPLES, seed=0)
        low, high = boot.low, boot.high
        # the percentile bootstrap over only 5-10 rounds under-covers (few distinct resamples), so the decision
        # also needs the exact Mann-Whitney test on the per-round values of the metric: rounds are the
        # independent units, and a machine that switches speed between rounds cannot pass both
        per_round = mann_whitney([stat(r) for r in base_rounds], [stat(r) for r in new_rounds], alpha=alpha)
        agree = per_round.significant and (low > 0 or high < 0)
        direction = (1 if low > 0 else -1) if agree else 0
        return (low, high), per_round.p_value, "bootstrap+mw-rounds", direction
    base_all, new_all = np.concatenate(base_rounds), np.concatenate(new_rounds)
    mw = mann_whitney(base_all, new_all, alpha=alpha)
    direction = (1 if mw.rank_biserial > 0 else -1 if mw.rank_biserial < 0 else 0) if mw.significant else 0
    return None, mw.p_value, "mann-whitney", direction


def _compare_metric(
    label: str,
    metric: str,
    base_run: RunResult,
    base_s: StrategyResult,
    new_run: RunResult,
    new_s: StrategyResult,
    threshold: float,
    alpha: float,
    paired: bool,
) -> MetricComparison:
    stat = _stat(metric)
    base_rounds = _rounds(base_run, base_s, metric, "base")
    new_rounds = _rounds(new_run, new_s, metric, "new")
    base_value = stat(np.concatenate(base_rounds))
    new_value = stat(np.concatenate(new_rounds))
    change = _relative(base_value, new_value)
    if paired and metric != "packets_per_s" and new_run.packets is not None:
        pairs = pair_latencies(new_run.packets, base_s.name, new_s.name)
        diff = paired_difference(pairs.base, pairs.new, alpha=alpha)
        median_base = float(np.median(pairs.base))
        interval = (diff.interval.low / median_base, diff.interval.high / median_base) if median_base > 0 else None
        direction = (1 if diff.median > 0 else -1 if diff.median < 0 else 0) if diff.significant else 0
        p_value: float | None = diff.p_value
        test = "sign-test"
    else:
        interval, p_value, test, direction = _unpaired(metric, base_rounds, new_rounds, alpha)
    return MetricComparison(
        strategy=label,
        base_strategy=base_s.name,
        new_strategy=new_s.name,
        metric=metric,
        base=base_value,
        new=new_value,
        change=change,
        interval=interval,
        p_value=p_value,
        test=test,
        significant=direction != 0,
        noisy_base=_noisy(base_rounds),
        noisy_new=_noisy(new_rounds),
        threshold=threshold,
        verdict=_verdict(metric, change, direction, threshold),
    )


def _timed(s: StrategyResult) -> bool:
    return s.timed and s.summary is not None and bool(s.round_times)


def _method(s: StrategyResult) -> str:
    """How a strategy was measured, "ENGINE TIMING" (files without the fields: Python, per call)."""
    return f"{s.engine or 'python'} {s.timing or 'call'}"


# --- public --------------------------------------------------------------------------------------------------


def compare_strategies(
    run: RunResult,
    base: str,
    new: str,
    *,
    metric: str | Sequence[str] = "p50",
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = ALPHA,
) -> tuple[MetricComparison, ...]:
    """Compare strategy ``new`` with strategy ``base`` inside one run (same trace and host by construction):
    paired per-packet differences for the latency metrics. Raises KeyError for an unknown strategy name."""
    metrics = check_metrics(metric)
    b, n = run.strategy(base), run.strategy(new)
    label = f"{new} vs {base}"
    return tuple(_compare_metric(label, m, run, b, run, n, threshold, alpha, paired=True) for m in metrics)


def _as_run(run: RunResult | str | Path, default: str) -> tuple[RunResult, str]:
    if isinstance(run, RunResult):
        return run, default
    return load(run), str(run)


def check_comparable(base: RunResult, new: RunResult, base_label: str = "base", new_label: str = "new") -> None:
    """Raise :class:`RunMismatch` unless both runs replayed the same trace (sha256) on the same host
    (:data:`HOST_FIELDS`)."""
    if base.trace.get("sha256") != new.trace.get("sha256"):
        raise RunMismatch(
            "trace",
            base_label,
            new_label,
            fields=("sha256",),
            base=base.trace.get("sha256"),
            new=new.trace.get("sha256"),
        )
    differ = [f for f in HOST_FIELDS if base.host.get(f) != new.host.get(f)]
    if differ:
        raise RunMismatch(
            "host",
            base_label,
            new_label,
            fields=differ,
            base={f: base.host.get(f) for f in differ},
            new={f: new.host.get(f) for f in differ},
        )


def compare_runs(
    base: RunResult | str | Path,
    new: RunResult | str | Path,
    *,
    metric: str | Sequence[str] = "p50",
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = ALPHA,
    labels: tuple[str, str] | None = None,
) -> RunComparison:
    """Compare every strategy both runs timed, for each metric in ``metric`` (a name or several).

    ``base`` and ``new`` are results directories or loaded :class:`~ndis_replay.results.RunResult` (with
    packets); ``labels`` name them in the result and in refusals (default: the paths, or "base" / "new"). Raises
    :class:`RunMismatch` for a different trace or host or no common strategy, and the
    results errors of :func:`~ndis_replay.results.load` for an unreadable directory.
    """
    metrics = check_metrics(metric)
    base_run, base_label = _as_run(base, "base")
    new_run, new_label = _as_run(new, "new")
    if labels is not None:
        base_label, new_label = labels
    check_comparable(base_run, new_run, base_label, new_label)
    base_names = [s.name for s in base_run.strategies]
    new_names = [s.name for s in new_run.strategies]
    common = [n for n in new_names if n in base_names]
    if not common:
        raise RunMismatch("strategies", base_label, new_label, base=tuple(base_names), new=tuple(new_names))
    untimed = [n for n in common if not (_timed(base_run.strategy(n)) and _timed(new_run.strategy(n)))]
    measured = {n: (_method(base_run.strategy(n)), _method(new_run.strategy(n))) for n in common if n not in untimed}
    differ = {n: pair for n, pair in measured.items() if pair[0] != pair[1]}
    if differ:
        raise RunMismatch(
            "measurement",
            base_label,
            new_label,
            fields=tuple(differ),
            base={n: pair[0] for n, pair in differ.items()},
            new={n: pair[1] for n, pair in differ.items()},
        )
    comparisons = tuple(
        _compare_metric(
            name, m, base_run, base_run.strategy(name), new_run, new_run.strategy(name), threshold, alpha, paired=False
        )
        for name in common
        if name not in untimed
        for m in metrics
    )
    return RunComparison(
        base_label=base_label,
        new_label=new_label,
        comparisons=comparisons,
        only_base=tuple(n for n in base_names if n not in new_names),
        only_new=tuple(n for n in new_names if n not in base_names),
        untimed=tuple(untimed),
    )


__all__ = [
    "DEFAULT_THRESHOLD",
    "HIGHER_IS_BETTER",
    "HOST_FIELDS",
    "IMPROVED",
    "METRICS",
    "REGRESSED",
    "UNCHANGED",
    "MetricComparison",
    "RunComparison",
    "RunMismatch",
    "check_comparable",
    "check_metrics",
    "compare_runs",
    "compare_strategies",
    "parse_threshold",
]
