"""What a report shows, computed once from results directories; the HTML, Markdown and JUnit renderers only format it.

:func:`build_report` reads each run's ``packets.parquet`` once and reduces it to fixed-size summaries: a chart has
at most a few hundred points per strategy however many packets were replayed (quantiles at fixed levels, fixed
histogram bins, fixed windows over the trace), so a report of 10 million packets is as small as one of 3,000.
Tables come from the same summaries.

Statistics (see :mod:`ndis_replay.reports.stats`): percentiles by nearest rank; the interval of the median and of
p99 is a percentile bootstrap over measured rounds when a strategy has at least
:data:`~ndis_replay.reports.stats.MIN_BOOTSTRAP_ROUNDS` of them, otherwise the order-statistic interval over pooled
packets (which assumes independent packets); each interval says which it is. Strategies of one run are compared
with the reference strategy packet by packet (paired, :func:`~ndis_replay.reports.compare.compare_strategies`).

The reference of the NDIS 5 vs NDIS 6 comparison is the first NDIS 5 strategy of the run (``ndis5-reuse``: what
the driver did before the port), else ``alloc`` (the naive NDIS 6 port), else the first strategy.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from ndis_replay import __version__
from ndis_replay.engine.verifier import RULES
from ndis_replay.reports.compare import (
    DEFAULT_THRESHOLD,
    IMPROVED,
    REGRESSED,
    MetricComparison,
    RunComparison,
    compare_runs,
    compare_strategies,
)
from ndis_replay.reports.gate import GateResult, error_findings, gate
from ndis_replay.reports.stats import (
    ALPHA,
    MIN_BOOTSTRAP_ROUNDS,
    NOISE_CV_BOUND,
    OUTLIER_IQR_FACTOR,
    StatisticsError,
    bootstrap_quantiles_over_rounds,
    nearest_rank,
    pair_latencies,
    quantile_interval,
)
from ndis_replay.results import RunResult, StrategyResult

Int64Array = npt.NDArray[np.int64]

#: Packet-size buckets (captured bytes): (low, high inclusive, label). 1518 is the largest untagged Ethernet frame.
SIZE_BUCKETS: Final[tuple[tuple[int, int, str], ...]] = (
    (0, 64, "≤64"),
    (65, 128, "65–128"),
    (129, 256, "129–256"),
    (257, 512, "257–512"),
    (513, 1024, "513–1024"),
    (1025, 1518, "1025–1518"),
    (1519, 2**32, ">1518"),
)
#: Send-call buckets (packets in the call): single-packet sends first, the case the NDIS 6 port made slower.
CALL_BUCKETS: Final[tuple[tuple[int, int, str], ...]] = (
    (1, 1, "1"),
    (2, 4, "2–4"),
    (5, 8, "5–8"),
    (9, 16, "9–16"),
    (17, 64, "17–64"),
    (65, 2**32, ">64"),
)
#: CDF levels (0-1): every half percent, then the tail.
CDF_LEVELS: Final[tuple[float, ...]] = (*(i / 200 for i in range(200)), 0.995, 0.999, 0.9995, 0.9999, 1.0)
#: Histogram bins (log-spaced between the smallest latency and the largest p99.9 of the run; beyond it: counted).
HISTOGRAM_BINS: Final = 60
#: Windows of the trace for "latency over the course of the trace".
TRACE_WINDOWS: Final = 200
#: Bootstrap resamples for the intervals in a report (deterministic: fixed seed).
REPORT_RESAMPLES: Final = 1000
#: Trace fields added in results format 2, for runs of format 1.
_TRACE_DEFAULTS: Final[dict[str, Any]] = {"interfaces": [], "comments": [], "comment_count": 0, "measured": None}
#: Findings listed per strategy in a report (all are in run.json; the count is always shown).
FINDINGS_SHOWN: Final = 50


# --- the model ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """A confidence interval of a latency quantile: ``method`` is ``bootstrap over N rounds`` or ``order statistic
    (packets assumed independent)``."""

    low: float
    high: float
    method: str


@dataclass(slots=True)
class StrategyView:
    """One strategy of a run as the report shows it (latencies in ns)."""

    name: str
    base: str
    ndis_version: int
    status: str
    failure: str | None
    params: dict[str, Any]
    timed: bool
    samples: int = 0
    uncompleted: int = 0
    rounds: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None
    p50_interval: Interval | None = None
    p99_interval: Interval | None = None
    packets_per_s: float | None = None
    outliers: int = 0
    #: coefficient of variation of the per-round medians (None with one round)
    round_cv: float | None = None
    noisy: bool = False
    per_packet: dict[str, float] = field(default_factory=dict)
    modelled_ns_per_packet: float | None = None
    errors: int = 0
    warnings: int = 0
    finding_counts: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    wire: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    peak_outstanding: dict[str, int] = field(default_factory=dict)
    #: how the timed rounds were measured: "native, runs of 32 calls", "python, per call"; "" when not timed
    measured: str = ""

    @property
    def label(self) -> str:
        """Name and NDIS version, as charts show it."""
        return f"{self.name} (NDIS {self.ndis_version})"


@dataclass(frozen=True, slots=True)
class Ratio:
    """A strategy against the run's reference on the same packets (same rounds, interleaved).

    ``p50_ratio`` and ``p99_ratio`` are ratios of the two strategies' percentiles (points). ``packet_ratio`` is
    the median of the per-packet ratios ``latency(strategy) / latency(reference)`` with its order-statistic
    interval ``packet_interval``: "on the same packet, this strategy takes ×r the time". It is above 1 exactly
    when the paired median difference is above 0, so it agrees with the sign test behind ``verdict``
    (:func:`~ndis_replay.reports.compare.compare_strategies`: threshold on the p50 change **and** significance).
    """

    strategy: str
    reference: str
    p50_ratio: float
    p99_ratio: float | None
    packet_ratio: float
    packet_interval: tuple[float, float] | None
    verdict: str
    comparison: MetricComparison


@dataclass(frozen=True, slots=True)
class BucketRow:
    """Latency of one strategy's packets in one bucket (size or send-call size): p50 and p99 per packet, and for
    send calls the median time per packet of the call (call latency ÷ packets in it)."""

    strategy: str
    bucket: str
    packets: int
    p50: float
    p99: float
    per_packet_p50: float | None = None


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: x and y values (already reduced to a fixed number of points)."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(slots=True)
class RunView:
    """One run as the report shows it."""

    label: str
    run: RunResult
    strategies: list[StrategyView]
    reference: str | None
    ratios: list[Ratio]
    size_rows: list[BucketRow]
    call_rows: list[BucketRow]
    cdf: list[Series]
    histogram_edges: tuple[float, ...]
    histogram: list[Series]
    histogram_overflow: dict[str, int]
    over_trace: list[Series]
    counters: list[str]
    measured: dict[str, Any] | None
    comparison: RunComparison | None
    gate: GateResult
    notes: list[str]

    @property
    def command(self) -> str:
        """The command line that reproduces the run (shell-quoted)."""
        return shlex.join(self.run.command) if self.run.command else ""

    @property
    def trace(self) -> dict[str, Any]:
        """run.json's trace record, with the fields results format 1 lacked filled in as absent."""
        return {**_TRACE_DEFAULTS, **self.run.trace}

    def strategy(self, name: str) -> StrategyView:
        """The view of strategy ``name`` (KeyError if absent)."""
        for s in self.strategies:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The first thing a report says: ``ok`` (no error finding, no failed strategy, no regression), a one-line
    ``headline``, the ``reasons`` it failed, and ``warnings`` that do not fail it (noisy rounds, …)."""

    ok: bool
    headline: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    highlights: tuple[str, ...]


@dataclass(slots=True)
class Report:
    """Everything a renderer needs."""

    title: str
    created: str
    tool_version: str
    runs: list[RunView]
    verdict: Verdict
    threshold: float
    alpha: float

    @property
    def exit_ok(self) -> bool:
        """The gate of every run passes."""
        return all(r.gate.ok for r in self.runs)


# --- helpers -----------------------------------------------------------------------------------------------------


def _nearest(sorted_values: Int64Array, q: float) -> float:
    """The nearest-rank ``q`` quantile of an ascending array."""
    n = sorted_values.size
    return float(sorted_values[min(max(math.ceil(q * n), 1), n) - 1])


def _nearest_unsorted(values: npt.NDArray[Any], q: float) -> float:
    """The nearest-rank ``q`` quantile of an unsorted array, by selection (O(n)) rather than a sort."""
    k = nearest_rank(values.size, q) - 1
    return float(np.partition(values, k)[k])


def fmt_ns(value: float | None) -> str:
    """A latency for people: ``850 ns``, ``2.31 µs``, ``1.20 ms``; ``—`` for none."""
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) < 1_000:
        return f"{value:,.0f} ns"
    if abs(value) < 1_000_000:
        return f"{value / 1e3:,.2f} µs"
    return f"{value / 1e6:,.2f} ms"


def _fmt_rate(rate: dict[str, Any] | None) -> str:
    pps = (rate or {}).get("packets_per_s")
    if pps is None:
        return "—"
    return f"{pps:,.0f} packets/s ({(rate or {}).get('mbit_per_s') or 0:,.2f} Mbit/s)"


def pace_notes(run: RunResult) -> list[str]:
    """Under a paced run (not asap): the requested rate, and per timed strategy the achieved rate (median of the
    rounds) and how late calls started (p50, p99, max over every call of every measured round). Files written
    before these were recorded give the requested line with "—" and no strategy lines."""
    if run.check_only or run.pacing == "asap":
        return []
    notes = [f"pacing {run.pacing}: requested {_fmt_rate(run.requested_rate)}"]
    for s in run.strategies:
        pace = s.pace
        if pace:
            late = [fmt_ns(pace.get(f"lateness_{q}_ns")) for q in ("p50", "p99", "max")]
            notes.append(
                f"{s.name}: achieved {_fmt_rate(pace)}; calls started late by p50 {late[0]}, p99 {late[1]}, "
                f"max {late[2]}"
            )
    return notes


def measured_text(engine: str | None, timing: str | None) -> str:
    """``native, runs of 32 calls`` / ``python, per call`` (files without the fields: Python, per call)."""
    timing = timing or "call"
    how = "per call" if timing == "call" else f"runs of {timing.partition(':')[2]} calls"
    return f"{engine or 'python'}, {how}"


def fmt_ratio(value: float | None) -> str:
    """``0.35×``; ``—`` for none."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2f}×"


def choose_reference(strategies: Sequence[StrategyView]) -> str | None:
    """The NDIS 5 vs NDIS 6 reference: the first timed NDIS 5 strategy, else ``alloc``, else the first timed one."""
    timed = [s for s in strategies if s.timed and s.samples]
    for s in timed:
        if s.ndis_version == 5:
            return s.name
    for s in timed:
        if s.base == "alloc":
            return s.name
    return timed[0].name if timed else None


def _intervals(rounds: list[Int64Array], pooled: Int64Array) -> tuple[Interval | None, Interval | None]:
    """Intervals of the median and p99 (see the module docstring for which kind)."""
    if len(rounds) >= MIN_BOOTSTRAP_ROUNDS:
        boot = bootstrap_quantiles_over_rounds(rounds, (0.5, 0.99), resamples=REPORT_RESAMPLES)
        method = f"bootstrap over {len(rounds)} rounds"
        return tuple(  # type: ignore[return-value]
            Interval(boot[q].low, boot[q].high, method) for q in (0.5, 0.99)
        )
    out: list[Interval | None] = []
    for q in (0.5, 0.99):
        try:
            qi = quantile_interval(pooled, q, presorted=True)
        except StatisticsError:  # too few packets for this quantile's interval
            out.append(None)
            continue
        out.append(Interval(qi.low, qi.high, "order statistic (packets assumed independent)"))
    return out[0], out[1]


@dataclass(frozen=True, slots=True)
class _Packets:
    """One strategy's completed packets, sorted by latency (every quantile below is a lookup): latency (ns), size
    (bytes), index in the trace, packets in the send call."""

    latency: Int64Array
    size: Int64Array
    index: Int64Array
    call_size: Int64Array


def _rounds_of_sorted(pooled: Int64Array, round_of: Int64Array) -> list[Int64Array]:
    """Latencies per measured round, each ascending, from the pooled ascending latencies and each one's round: a
    boolean selection keeps the order, so no round is sorted again (a sort of a million values costs ~35 ms)."""
    labels = np.unique(round_of)
    if labels.size == 1:
        return [pooled]
    return [pooled[round_of == label] for label in labels]


def _strategy_view(
    s: StrategyResult, frame: pl.DataFrame | None, calls: Int64Array | None
) -> tuple[StrategyView, _Packets | None]:
    view = StrategyView(
        name=s.name,
        base=s.base,
        ndis_version=s.ndis_version,
        status=s.status,
        failure=s.failure,
        params=dict(s.params),
        timed=s.timed and s.summary is not None,
        measured=measured_text(s.engine, s.timing) if s.timed else "",
        per_packet=dict(s.counters.get("per_packet", {})),
        modelled_ns_per_packet=s.modelled_ns_per_packet,
        errors=s.errors,
        warnings=s.warnings,
        finding_counts=dict(s.finding_counts),
        findings=list(s.findings),
        wire=dict(s.wire),
        memory=dict(s.memory),
        peak_outstanding=dict(s.peak_outstanding),
    )
    if s.summary is not None:
        view.packets_per_s = s.summary.get("packets_per_s")
    if frame is None or frame.height == 0:
        return view, None
    latency = frame.get_column("latency_ns").cast(pl.Int64).to_numpy()
    completed = latency >= 0
    view.uncompleted = int(completed.size - completed.sum())
    if not completed.any():
        return view, None

    def column(name: str) -> Int64Array:
        return frame.get_column(name).cast(pl.Int64).to_numpy()[completed]

    latency = latency[completed]
    order = np.argsort(latency, kind="stable")
    pooled = latency[order]
    rounds = _rounds_of_sorted(pooled, column("round")[order])
    batch = column("batch")[order]
    call_size = calls[np.minimum(batch, calls.size - 1)] if calls is not None else np.ones_like(batch)
    packets = _Packets(pooled, column("size")[order], column("index")[order], call_size)
    view.samples = int(pooled.size)
    view.rounds = len(rounds)
    view.p50, view.p90 = _nearest(pooled, 0.5), _nearest(pooled, 0.9)
    view.p99, view.p999 = _nearest(pooled, 0.99), _nearest(pooled, 0.999)
    view.max, view.mean = float(pooled[-1]), float(pooled.mean())
    view.p50_interval, view.p99_interval = _intervals(rounds, pooled)
    q1, q3 = _nearest(pooled, 0.25), _nearest(pooled, 0.75)
    low, high = q1 - OUTLIER_IQR_FACTOR * (q3 - q1), q3 + OUTLIER_IQR_FACTOR * (q3 - q1)
    view.outliers = int(np.searchsorted(pooled, low, "left") + pooled.size - np.searchsorted(pooled, high, "right"))
    if len(rounds) >= 2:
        medians = np.array([_nearest(r, 0.5) for r in rounds])
        mean = float(medians.mean())
        view.round_cv = float(medians.std(ddof=1) / mean) if mean > 0 else None
        view.noisy = view.round_cv is not None and view.round_cv > NOISE_CV_BOUND
    return view, packets


def _bucket_rows(
    by_strategy: dict[str, _Packets], column: str, buckets: Sequence[tuple[int, int, str]]
) -> list[BucketRow]:
    """p50 and p99 per bucket of ``column`` (``size`` or ``call_size``) and strategy; for send calls also the
    median time per packet of the call. Rows by bucket, then strategy in run order."""
    rows = []
    for low, high, label in buckets:
        for name, p in by_strategy.items():
            key = getattr(p, column)
            mask = (key >= low) & (key <= high)
            latency = p.latency[mask]  # still sorted
            if latency.size == 0:
                continue
            per_packet = None
            if column == "call_size":
                per_packet = _nearest_unsorted(latency / key[mask], 0.5)
            rows.append(
                BucketRow(name, label, int(latency.size), _nearest(latency, 0.5), _nearest(latency, 0.99), per_packet)
            )
    return rows


def _frames_by_strategy(packets: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Each strategy's rows: zero-copy slices when they are contiguous (as the runner writes them)."""
    runs = packets.get_column("strategy").rle()
    names = runs.struct.field("value").to_list()
    if len(set(names)) != len(names):
        return {str(k[0]): v for k, v in packets.partition_by("strategy", as_dict=True).items()}
    out, offset = {}, 0
    for name, length in zip(names, runs.struct.field("len").to_list(), strict=True):
        out[str(name)] = packets.slice(offset, length)
        offset += length
    return out


def _call_sizes(packets: pl.DataFrame) -> Int64Array:
    """Packets per send call, indexed by send-call number. One run has one batching rule, so every strategy and
    round shares the send calls: they are counted once, in the first strategy's first round (uncompleted packets
    included)."""
    first = packets.row(0, named=True)
    one = packets.filter((pl.col("strategy") == first["strategy"]) & (pl.col("round") == first["round"]))
    return np.bincount(one.get_column("batch").to_numpy().astype(np.int64))


def _cdf(name: str, pooled: Int64Array) -> Series:
    n = pooled.size
    ranks = np.clip(np.ceil(np.asarray(CDF_LEVELS) * n).astype(np.int64), 1, n) - 1
    return Series(name, tuple(float(v) for v in pooled[ranks]), CDF_LEVELS)


def _histogram(
    sorted_by_strategy: dict[str, Int64Array],
) -> tuple[tuple[float, ...], list[Series], dict[str, int]]:
    """Log-spaced bins from the smallest latency to the largest p99.9; the share of each strategy's packets per bin
    (%), and how many lie beyond the last bin (counted, not drawn)."""
    if not sorted_by_strategy:
        return (), [], {}
    low = max(1.0, min(float(a[0]) for a in sorted_by_strategy.values()))
    high = max(_nearest(a, 0.999) for a in sorted_by_strategy.values())
    high = max(high, low * 1.01)
    edges = np.geomspace(low, high, HISTOGRAM_BINS + 1)
    series, overflow = [], {}
    for name, arr in sorted_by_strategy.items():
        positions = np.searchsorted(arr, edges, side="left")
        counts = np.diff(positions)
        counts[-1] += int(np.searchsorted(arr, high, side="right") - positions[-1])  # the last bin is closed
        beyond = int(arr.size - np.searchsorted(arr, high, side="right"))
        below = int(positions[0])  # values below 1 ns (zero latency): counted into the first bin
        counts[0] += below
        series.append(Series(name, tuple(float(e) for e in edges[:-1]), tuple(100.0 * counts / arr.size)))
        overflow[name] = beyond
    return tuple(float(e) for e in edges), series, overflow


def _over_trace(by_strategy: dict[str, _Packets], packets: int) -> list[Series]:
    """The median latency per window of the trace (by packet index), pooled over rounds."""
    width = max(1, math.ceil(max(packets, 1) / TRACE_WINDOWS))
    out = []
    for name, p in by_strategy.items():
        window = p.index // width
        order = np.argsort(window, kind="stable")  # stable: each window's latencies stay sorted
        window, latency = window[order], p.latency[order]
        starts = np.flatnonzero(np.r_[True, np.diff(window) > 0])
        ends = np.r_[starts[1:], window.size]
        ranks = starts + np.maximum(np.ceil(0.5 * (ends - starts)).astype(np.int64), 1) - 1
        x = window[starts] * width + width / 2
        out.append(Series(name, tuple(float(v) for v in x), tuple(float(v) for v in latency[ranks])))
    return out


def _ratio(
    run: RunResult, ref: StrategyView, v: StrategyView, frames: dict[str, pl.DataFrame], threshold: float
) -> Ratio:
    # the two strategies' rows only (zero-copy slices): the comparison filters its input several times
    pair_run = dataclasses.replace(run)
    pair_run.packets = pl.concat([frames[ref.name], frames[v.name]], rechunk=False)
    (c,) = compare_strategies(pair_run, ref.name, v.name, metric="p50", threshold=threshold)
    pairs = pair_latencies(pair_run.packets, ref.name, v.name)
    keep = pairs.base > 0  # a zero-latency reference packet has no ratio (the clock did not advance)
    ratios = pairs.new[keep] / pairs.base[keep]
    interval = None
    with contextlib.suppress(StatisticsError):  # too few pairs for an interval
        qi = quantile_interval(ratios, 0.5)
        interval = (qi.low, qi.high)
    return Ratio(
        strategy=v.name,
        reference=ref.name,
        p50_ratio=(v.p50 or 0.0) / ref.p50 if ref.p50 else math.nan,
        p99_ratio=v.p99 / ref.p99 if v.p99 is not None and ref.p99 else None,
        packet_ratio=_nearest_unsorted(ratios, 0.5) if ratios.size else math.nan,
        packet_interval=interval,
        verdict=c.verdict,
        comparison=c,
    )


def _ratios(
    run: RunResult,
    views: list[StrategyView],
    reference: str | None,
    frames: dict[str, pl.DataFrame],
    threshold: float,
    pool: concurrent.futures.Executor,
) -> list[Ratio]:
    if reference is None:
        return []
    ref = next(v for v in views if v.name == reference)
    others = [v for v in views if v.name != reference and v.samples and v.name in frames and ref.p50]
    return list(pool.map(lambda v: _ratio(run, ref, v, frames, threshold), others))


def _view_run(
    label: str, run: RunResult, baseline: RunResult | None, baseline_label: str, threshold: float, alpha: float
) -> RunView:
    packets = run.packets if run.packets is not None else pl.DataFrame()
    notes: list[str] = []
    frames: dict[str, pl.DataFrame] = {}
    calls = None
    if packets.height:
        frames = _frames_by_strategy(packets)
        calls = _call_sizes(packets)
    # per strategy: sorts of millions of values, which numpy runs without the GIL, so the cores share them
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = list(pool.map(lambda s: _strategy_view(s, frames.get(s.name), calls), run.strategies))
        views = [view for view, _ in done]
        by_strategy = {view.name: arrays for view, arrays in done if arrays is not None}
        reference = choose_reference(views)
        ratios = _ratios(run, views, reference, frames, threshold, pool)
    size_rows = _bucket_rows(by_strategy, "size", SIZE_BUCKETS)
    call_rows = _bucket_rows(by_strategy, "call_size", CALL_BUCKETS)
    over = _over_trace(by_strategy, int(run.trace.get("packets") or 0))
    pooled = {name: p.latency for name, p in by_strategy.items()}
    edges, hist, overflow = _histogram(pooled)
    counters = sorted(
        {k for v in views for k, value in v.per_packet.items() if value and k not in ("nbls_sent", "packets_sent")}
    )
    comparison = None
    if baseline is not None:
        comparison = compare_runs(
            baseline, run, metric=["p50", "p99"], threshold=threshold, alpha=alpha, labels=(baseline_label, label)
        )
    findings = error_findings(run)
    result = gate(comparison.comparisons if comparison else (), findings)
    if run.check_only:
        notes.append("checked only (--check-only): nothing was timed")
    notes.extend(pace_notes(run))
    if run.trace.get("synthetic_payload"):
        notes.append(
            "the trace has no packet bytes (a driver send/complete trace, or imported with --no-data): the replayed "
            "frames were synthesized at the recorded lengths"
        )
    return RunView(
        label=label,
        run=run,
        strategies=views,
        reference=reference,
        ratios=ratios,
        size_rows=size_rows,
        call_rows=call_rows,
        cdf=[_cdf(name, arr) for name, arr in pooled.items()],
        histogram_edges=edges,
        histogram=hist,
        histogram_overflow=overflow,
        over_trace=over,
        counters=counters,
        measured=run.trace.get("measured"),
        comparison=comparison,
        gate=result,
        notes=notes,
    )


def _verdict(runs: list[RunView], threshold: float) -> Verdict:
    reasons: list[str] = []
    warnings: list[str] = []
    highlights: list[str] = []
    several = len(runs) > 1
    for rv in runs:
        where = f"{rv.label}: " if several else ""
        for s in rv.strategies:
            if s.status == "failed":
                reasons.append(f"{where}{s.name} failed ({s.failure or 'unknown'})")
            elif s.errors:
                rules = ", ".join(f"{rule} ×{n}" for rule, n in sorted(s.finding_counts.items()))
                reasons.append(f"{where}{s.name}: {s.errors} verifier finding(s) ({rules})")
            elif s.status != "ok":
                reasons.append(f"{where}{s.name}: status {s.status}")
            if s.wire and s.wire.get("ok") is False:
                reasons.append(f"{where}{s.name}: transmitted bytes differ from the trace")
            if s.noisy and s.round_cv is not None:
                warnings.append(
                    f"{where}{s.name}: rounds disagree (CV of round medians {s.round_cv:.0%} > "
                    f"{NOISE_CV_BOUND:.0%}); differences below that are not meaningful"
                )
            if s.uncompleted:
                warnings.append(f"{where}{s.name}: {s.uncompleted} packet(s) never completed")
        if rv.comparison is not None:
            for c in rv.comparison.comparisons:
                if c.verdict == REGRESSED:
                    reasons.append(
                        f"{where}{c.strategy} {c.metric} regressed {c.change:+.1%} against the baseline "
                        f"(threshold {threshold:.0%})"
                    )
                elif c.verdict == IMPROVED:
                    highlights.append(f"{where}{c.strategy} {c.metric} improved {c.change:+.1%} against the baseline")
        for r in rv.ratios:
            ci = r.packet_interval
            highlights.append(
                f"{where}{r.strategy} takes {fmt_ratio(r.packet_ratio)} the time of {r.reference} per packet"
                + (f" (95% CI {fmt_ratio(ci[0])}–{fmt_ratio(ci[1])})" if ci else "")
                + f"; p50 {fmt_ns(r.comparison.new)} vs {fmt_ns(r.comparison.base)}"
            )
    ok = not reasons
    strategies = sum(len(rv.strategies) for rv in runs)
    if ok:
        headline = f"PASS — {strategies} strateg{'y' if strategies == 1 else 'ies'} replayed, no verifier finding"
        if any(rv.comparison is not None for rv in runs):
            headline += ", no regression against the baseline"
    else:
        headline = f"FAIL — {len(reasons)} problem{'s' if len(reasons) > 1 else ''}"
    return Verdict(ok, headline, tuple(reasons), tuple(warnings), tuple(highlights))


# --- public ------------------------------------------------------------------------------------------------------


def build_report(
    runs: Sequence[tuple[str, RunResult]],
    *,
    baseline: tuple[str, RunResult] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = ALPHA,
    title: str | None = None,
) -> Report:
    """The report of ``runs`` (label, loaded run with packets), each compared with ``baseline`` when given (same
    trace and host required: :class:`~ndis_replay.errors.RunMismatch` otherwise)."""
    views = [
        _view_run(label, run, baseline[1] if baseline else None, baseline[0] if baseline else "", threshold, alpha)
        for label, run in runs
    ]
    if title is None:
        traces = ", ".join(dict.fromkeys(str(rv.trace.get("path", "?")).rsplit("/", 1)[-1] for rv in views))
        title = f"ndis-replay report — {traces}"
    return Report(
        title=title,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        runs=views,
        verdict=_verdict(views, threshold),
        threshold=threshold,
        alpha=alpha,
    )


#: Rule names and descriptions, for the findings tables and the JUnit test cases.
RULE_DESCRIPTIONS: Final[dict[str, str]] = {name: rule.what for name, rule in RULES.items() if rule.enforced}

__all__ = [
    "CALL_BUCKETS",
    "CDF_LEVELS",
    "FINDINGS_SHOWN",
    "RULE_DESCRIPTIONS",
    "SIZE_BUCKETS",
    "BucketRow",
    "Interval",
    "Ratio",
    "Report",
    "RunView",
    "Series",
    "StrategyView",
    "Verdict",
    "build_report",
    "choose_reference",
    "fmt_ns",
    "fmt_ratio",
    "measured_text",
    "pace_notes",
]
