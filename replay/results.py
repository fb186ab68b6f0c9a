"""The results of a run: a directory holding ``run.json`` and ``packets.parquet``, written atomically.

``run.json`` (schema version :data:`RESULTS_FORMAT_VERSION`, key ``format_version``) holds everything but the
per-packet rows: the tool version and command line, when and where the run happened (host record), which trace
(path, sha256, packet counts, format), miniport and completion policy, batching rule, rounds, warm-up and pacing,
the timer calibration and the harness's own measured overhead, and per strategy its parameters (all of them,
resolved), summary statistics, operation counts per packet and per round, peak outstanding descriptors, memory,
verifier findings and the wire check. ``packets.parquet`` has one row per packet per measured round per strategy
(:data:`PACKET_SCHEMA`, plus ``modelled_ns`` when a cost profile was given).

A results directory is written into a temporary sibling directory, then renamed into place: on any failure (or
Ctrl-C) nothing is left behind, and an existing directory is replaced only when asked (``force``).
:func:`load` reads one back and refuses a format version it does not know.

Format version history (also in the README):

1 — first version (issue 3).
2 — ``trace`` gains ``interfaces`` (id, linktype, name, description), ``comments`` (the capture's comments, at most
1,000) with ``comment_count``, and ``measured`` (the driver's own latency when the trace has completions, else
null), and the summary's percentiles are nearest rank (version 1 interpolated linearly), as everywhere in the reports
(issue 4). Version 1 directories are still read: the report treats the missing fields as absent. Later, still
version 2 (optional fields, absent from older files and read as None): ``requested_rate`` and each strategy's
``pace`` (achieved rate and lateness, issue 6); each strategy's ``engine`` and ``timing`` and the measurement
overhead's ``engine`` and ``timing``, and ``measurement_overheads`` (a floor per way of measuring, issue 7).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ndis_replay.atomic import Replaced, atomic_output
from ndis_replay.errors import OutputExists, ResultsError, ResultsVersionError

#: Version of the results directory format (run.json + packets.parquet). History in the module docstring.
RESULTS_FORMAT_VERSION = 2
#: Versions :func:`load` reads.
SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2)
RUN_JSON = "run.json"
PACKETS_PARQUET = "packets.parquet"

#: Columns of packets.parquet (``modelled_ns``, Float64, is added when a cost profile was given).
PACKET_SCHEMA: dict[str, pl.DataType] = {
    "strategy": pl.String(),
    "round": pl.UInt16(),
    "index": pl.UInt32(),
    "batch": pl.UInt32(),
    "size": pl.UInt32(),
    "latency_ns": pl.Int64(),
    "build_ns": pl.Int64(),
    "send_ns": pl.Int64(),
}
MODELLED_COLUMN = "modelled_ns"

#: Latency quantiles in the summary: key → quantile (0-1), nearest rank as in the reports (a reported p99 is a
#: latency that was measured). Fractions, not percentiles: 99.9 / 100 lands just above 0.999 in floating point.
PERCENTILES: dict[str, float] = {"p50_ns": 0.5, "p90_ns": 0.9, "p99_ns": 0.99, "p999_ns": 0.999}
#: Descriptor kinds whose peak outstanding count is reported.
PEAK_KINDS = ("nbl", "nb", "mdl", "ctx", "packet", "buffer", "data")


# --- statistics ------------------------------------------------------------------------------------------------


class LatencyTally:
    """The measured rounds' times (latencies, or build and send times) pooled as distinct values and their counts: the
    summary's nearest-rank percentiles, median, min, max and mean come out exactly as from the pooled array, in
    memory that does not grow with rounds (a round of 10 M packets is 80 MB as an array; its distinct ns values are
    hundreds to thousands: 571 over 5 rounds of 1 M packets of alloc, native). Negative values (a packet never
    completed) are left out. ``append`` a round's array; ``len`` is the number of rounds."""

    def __init__(self, rounds: Sequence[np.ndarray[Any, Any]] = ()) -> None:
        self.values = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self.rounds = 0
        for latency in rounds:
            self.append(latency)

    def append(self, latency: np.ndarray[Any, Any]) -> None:
        """Add one round's per-packet latencies (ns)."""
        self.rounds += 1
        new, counts = np.unique(np.asarray(latency, dtype=np.int64), return_counts=True)
        keep = new >= 0
        values = np.concatenate([self.values, new[keep]])
        counts = np.concatenate([self.counts, counts[keep].astype(np.int64)])
        order = np.argsort(values, kind="stable")
        values, counts = values[order], counts[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.empty(0, np.intp)
        self.values = values[starts]
        self.counts = np.add.reduceat(counts, starts) if len(starts) else counts

    def __len__(self) -> int:
        return self.rounds

    @property
    def samples(self) -> int:
        """How many latencies were pooled."""
        return int(self.counts.sum())

    def quantile(self, q: float) -> int:
        """The nearest-rank quantile: ``np.quantile(pooled, q, method="inverted_cdf")``, its index computed the
        same way (so the same float rounding picks the same rank)."""
        n = self.samples
        index = n * q - 1
        below = math.floor(index)
        rank = below if index - below == 0 else below + 1
        return self._at(min(max(rank, 0), n - 1))

    def _at(self, rank: int) -> int:
        return int(self.values[int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))])

    def median(self) -> float:
        """The pooled median as ``np.median`` gives it (the mean of the two middle values of an even count)."""
        n = self.samples
        return float(self._at(n // 2)) if n % 2 else (self._at(n // 2 - 1) + self._at(n // 2)) / 2

    def mean(self) -> float:
        """The pooled mean, from the exact integer sum."""
        total = sum(int(v) * int(c) for v, c in zip(self.values.tolist(), self.counts.tolist(), strict=True))
        return total / self.samples


def latency_summary(
    latencies: LatencyTally | Sequence[np.ndarray[Any, Any]],
    builds: LatencyTally | Sequence[np.ndarray[Any, Any]],
    sends: LatencyTally | Sequence[np.ndarray[Any, Any]],
    walls_ns: Sequence[int],
    packets: int,
) -> dict[str, Any]:
    """Summary statistics over the measured rounds, pooled: latency percentiles (nearest rank), max and mean (ns;
    packets never completed, latency −1, are left out), packets per second at the median round duration, median
    build and send time per send call (ns)."""
    tally = latencies if isinstance(latencies, LatencyTally) else LatencyTally(latencies)
    out: dict[str, Any] = {"packets": packets, "rounds": len(tally), "samples": tally.samples}
    if tally.samples:
        for key, q in PERCENTILES.items():
            out[key] = float(tally.quantile(q))
        out["max_ns"] = int(tally.values[-1])
        out["min_ns"] = int(tally.values[0])
        out["mean_ns"] = tally.mean()
    else:
        out.update(dict.fromkeys((*PERCENTILES, "max_ns", "min_ns", "mean_ns")))
    wall = float(np.median(walls_ns)) if len(walls_ns) else 0.0
    out["round_seconds"] = wall / 1e9
    out["packets_per_s"] = packets / (wall / 1e9) if wall > 0 else None
    build = builds if isinstance(builds, LatencyTally) else LatencyTally(builds)
    send = sends if isinstance(sends, LatencyTally) else LatencyTally(sends)
    out["build_p50_ns"] = build.median() if build.samples else None
    out["send_p50_ns"] = send.median() if send.samples else None
    return out


#: What the achieved rate is measured over (recorded with it in run.json).
PACE_SPAN = "first call's scheduled start (asap: actual start) to last call's start; packets of every call but the last"


def lateness(lag_ns: np.ndarray[Any, Any]) -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max of how late calls started against their schedule, ns."""
    if not lag_ns.size:
        return {"lateness_p50_ns": None, "lateness_p99_ns": None, "lateness_max_ns": None}
    return {
        "lateness_p50_ns": float(np.quantile(lag_ns, 0.5, method="inverted_cdf")),
        "lateness_p99_ns": float(np.quantile(lag_ns, 0.99, method="inverted_cdf")),
        "lateness_max_ns": float(lag_ns.max()),
    }


def pace_summary(rounds: Sequence[dict[str, Any]], lags: Sequence[np.ndarray[Any, Any]]) -> dict[str, Any]:
    """The achieved rate and the lateness over the measured rounds: ``rounds`` holds each round's
    {"round", "packets_per_s", "mbit_per_s", lateness…}; the run's rate is the median of the rounds', its lateness
    the percentiles of every call of every paced round pooled (``lags``: one array per round; empty under asap)."""

    def median(key: str) -> float | None:
        values = [r[key] for r in rounds if r.get(key) is not None]
        return float(np.median(values)) if values else None

    pooled = np.concatenate(lags) if lags else np.empty(0, dtype=np.int64)
    return {
        "span": PACE_SPAN,
        "packets_per_s": median("packets_per_s"),
        "mbit_per_s": median("mbit_per_s"),
        **lateness(pooled),
        "rounds": [dict(r) for r in rounds],
    }


def per_packet(totals: dict[str, int], packets: int) -> dict[str, float]:
    """Counts divided by packets."""
    return {name: (value / packets if packets else 0.0) for name, value in totals.items()}


# --- the data model --------------------------------------------------------------------------------------------


@dataclass
class StrategyResult:
    """One strategy's part of ``run.json``.

    ``status``: ``ok`` (no error finding), ``findings`` (error findings, but it ran through and was timed) or
    ``failed`` (``failure`` says how: ``bugcheck``, ``exception``, ``worker-died`` in the checked pass, or
    ``timed-exception``/``not-completed`` in a timed round; it was not timed further).
    """

    name: str
    base: str
    #: ``module:QualifiedName`` of the class
    cls: str
    ndis_version: int
    params: dict[str, Any]
    status: str
    failure: str | None
    timed: bool
    #: latency_summary() of the measured rounds; None when not timed
    summary: dict[str, Any] | None
    #: {"per_packet": counts per packet over the measured rounds, "rounds": counts of each measured round,
    #: "checked_pass": counts of the checked pass's send calls}
    counters: dict[str, Any]
    #: modelled ns per packet (cost profile × counts per packet); None without a profile
    modelled_ns_per_packet: float | None
    peak_outstanding: dict[str, int]
    #: {"modelled_peak_bytes": descriptor and data memory of the model, "worker_peak_rss_bytes": the process's}
    memory: dict[str, int | None]
    findings: list[dict[str, Any]]
    #: findings per rule, including those not kept
    finding_counts: dict[str, int]
    errors: int
    warnings: int
    wire: dict[str, Any]
    #: this worker's timer calibration {"median_ns", "min_ns", "samples"}
    timer: dict[str, int]
    #: the strategy's own counts (Strategy.stats)
    stats: dict[str, int] = field(default_factory=dict)
    check_seconds: float = 0.0
    #: each measured round's {"round", "start_ns", "end_ns"} (perf_counter_ns: one clock for every process of the
    #: host, so the interleaving of strategies is visible)
    round_times: list[dict[str, int]] = field(default_factory=list)
    #: :func:`pace_summary` of the measured rounds: achieved rate and, when paced, lateness; None when not timed
    #: (and in files written before it existed)
    pace: dict[str, Any] | None = None
    #: device-backed miniports (tap): the far side's frame counts over the checked pass and every round — frames,
    #: delivered, dropped, corrupted, reordered, unexpected, refused, socket_drops, passes, problems; None (or
    #: absent in older files) for an in-process miniport. Optional: added within format version 2 (issue 6)
    delivery: dict[str, int] | None = None
    #: what ran the timed rounds: "native" (the compiled core) or "python"; None when not timed (and in files
    #: written before it existed: those ran Python). Optional: added within format version 2 (issue 7)
    engine: str | None = None
    #: how the timed rounds read the clock: "call" (per send call) or "runs:N" (once per N calls, each packet its
    #: run's mean); None when not timed and in files written before it existed (those timed per call).
    #: Optional: added within format version 2 (issue 7)
    timing: str | None = None


@dataclass
class RunResult:
    """A run: ``run.json``'s content (the dataclass fields) and the per-packet rows (``packets``)."""

    tool: dict[str, str]
    command: list[str]
    #: ISO 8601, UTC
    created: str
    host: dict[str, Any]
    #: path, source, sha256, size, format, packets, replayed, received, calls, linktypes
    trace: dict[str, Any]
    #: name, params, completion, backfill, mtu
    miniport: dict[str, Any]
    batching: str
    rounds: int
    warmup: int
    pacing: str
    check_only: bool
    #: {"name", "source", "ns"} of the cost profile, or None
    cost_profile: dict[str, Any] | None
    #: median of the workers' back-to-back perf_counter_ns pairs, ns
    timer_overhead_ns: int | None
    #: latency_summary() of the no-op strategy over the same loop: the harness's own cost per packet; None if
    #: not measured
    measurement_overhead: dict[str, Any] | None
    strategies: list[StrategyResult]
    #: the rate the pacing asks for, {"packets_per_s", "mbit_per_s", "span_s"} over the scheduled span; None for
    #: asap, a schedule of no length, and files written before it existed
    requested_rate: dict[str, float | None] | None = None
    #: when the strategies were measured in more than one way (engine, timing: a plugin strategy in Python beside
    #: native built-ins), the floor of each, first the one in ``measurement_overhead``; None otherwise and in files
    #: written before it existed. Optional: added within format version 2 (issue 7)
    measurement_overheads: list[dict[str, Any]] | None = None
    format_version: int = RESULTS_FORMAT_VERSION
    packets: pl.DataFrame | None = field(default=None, repr=False, compare=False)
    #: a huge run's per-packet rows, spilled to part files round by round instead of held as ``packets`` (which is
    #: then None): :func:`save` merges them into packets.parquet with polars' streaming sink
    packets_spilled: pl.LazyFrame | None = field(default=None, repr=False, compare=False)

    @property
    def errors(self) -> int:
        """Error findings over every strategy."""
        return sum(s.errors for s in self.strategies)

    @property
    def ok(self) -> bool:
        """No error finding and no failed strategy."""
        return all(s.status == "ok" for s in self.strategies)

    def strategy(self, name: str) -> StrategyResult:
        """The result of the strategy named ``name`` (KeyError if absent)."""
        for s in self.strategies:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """``run.json``'s document."""
        doc: dict[str, Any] = {"format_version": self.format_version}
        for f in dataclasses.fields(self):
            if f.name in ("packets", "packets_spilled", "format_version"):
                continue
            value = getattr(self, f.name)
            doc[f.name] = [dataclasses.asdict(s) for s in value] if f.name == "strategies" else value
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str | Path = "run.json") -> RunResult:
        """Rebuild from ``run.json``'s document (version checked by the caller). Every field is checked against its
        declared type (a hand-edited or damaged file is refused with the field named, not half-read)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"packets", "packets_spilled"}
        strategy_names = {f.name for f in dataclasses.fields(StrategyResult)}
        # a field with a default was added after the format version: older files lack it and it takes the default
        required = {f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING}
        missing = sorted(n for n in names & required if n not in doc)
        if missing:
            raise ResultsError(source, f"run.json lacks {', '.join(missing)}")
        hints = typing.get_type_hints(cls)
        for name in sorted((names & doc.keys()) - {"strategies", "format_version"}):
            _check_type(doc[name], hints[name], name, source)
        if not isinstance(doc["strategies"], list):
            raise ResultsError(source, "run.json field strategies is not a list")
        strategy_hints = typing.get_type_hints(StrategyResult)
        strategies = []
        for i, record in enumerate(doc["strategies"]):
            if not isinstance(record, dict):
                raise ResultsError(source, f"run.json field strategies[{i}] is not an object")
            for name in sorted(strategy_names & record.keys()):
                _check_type(record[name], strategy_hints[name], f"strategies[{i}].{name}", source)
            try:
                strategies.append(StrategyResult(**{k: v for k, v in record.items() if k in strategy_names}))
            except TypeError as exc:
                raise ResultsError(source, f"run.json has an unreadable strategy record ({exc})") from exc
        values = {k: doc[k] for k in names if k in doc and k != "strategies"}
        return cls(strategies=strategies, **values)


def _check_type(value: object, hint: Any, where: str, source: str | Path) -> None:
    """Raise ResultsError unless ``value`` (from JSON) fits ``hint`` (the outer type and, for lists and dicts,
    the element types; ``Any`` accepts anything)."""
    if _fits(value, hint):
        return
    raise ResultsError(source, f"run.json field {where} is {type(value).__name__}, not {_hint_name(hint)}")


def _fits(value: object, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    return isinstance(value, origin or hint)


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _json_default(value: object) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(result: RunResult) -> str:
    """``run.json``'s text."""
    return json.dumps(result.to_dict(), indent=2, default=_json_default, allow_nan=False) + "\n"


def empty_packets(modelled: bool = False) -> pl.DataFrame:
    """A zero-row packets frame with the schema."""
    schema = dict(PACKET_SCHEMA)
    if modelled:
        schema[MODELLED_COLUMN] = pl.Float64()
    return pl.DataFrame(schema=schema)


# --- save and load ----------------------------------------------------------------------------------------------


def save(result: RunResult, target: str | Path, *, force: bool = False, keep_old: list[Replaced] | None = None) -> Path:
    """Write ``result`` as a results directory at ``target``, atomically.

    Everything is written into a temporary sibling directory, flushed to the disk and renamed into place at the end
    (:func:`ndis_replay.atomic.atomic_output`); on any failure or interruption the temporary directory is removed and
    ``target`` is untouched. An existing ``target`` (checked first, and again at the rename) raises
    :class:`OutputExists` unless ``force``, which swaps the new directory in and only then removes the old one (or,
    with ``keep_old``, keeps it aside and appends it there, for the caller to drop or restore). A full disk, a
    read-only folder, … raise :class:`~ndis_replay.errors.OutputUnwritable`.
    """
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not force:
        raise OutputExists(target)
    with atomic_output(target, directory=True, replace=force, keep_old=keep_old) as tmp:
        (tmp / RUN_JSON).write_text(dumps(result), encoding="utf-8")
        packets = result.packets
        if result.packets_spilled is not None and packets is None:
            result.packets_spilled.sink_parquet(tmp / PACKETS_PARQUET, statistics=True)  # streamed, part by part
        else:
            if packets is None:
                packets = empty_packets(result.cost_profile is not None)
            packets.write_parquet(tmp / PACKETS_PARQUET, statistics=True)
    return target


def load(folder: str | Path, *, packets: bool = True) -> RunResult:
    """Read a results directory; ``packets=False`` skips ``packets.parquet``.

    Raises :class:`ResultsError` when ``folder`` is not a readable results directory and
    :class:`ResultsVersionError` when it was written in a format version this ndis-replay does not read.
    """
    folder = Path(folder)
    run_json = folder / RUN_JSON
    if not run_json.is_file():
        raise ResultsError(folder, "not a results directory (no run.json)")
    try:
        doc = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(folder, f"run.json cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict):
        raise ResultsError(folder, "run.json is not a JSON object")
    version = doc.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ResultsVersionError(folder, version, SUPPORTED_VERSIONS)
    result = RunResult.from_dict(doc, folder)
    if packets:
        path = folder / PACKETS_PARQUET
        if not path.is_file():
            raise ResultsError(folder, f"{PACKETS_PARQUET} is missing")
        try:
            result.packets = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ResultsError(folder, f"{PACKETS_PARQUET} cannot be read ({type(exc).__name__})") from exc
    return result


__all__ = [
    "MODELLED_COLUMN",
    "PACE_SPAN",
    "PACKETS_PARQUET",
    "PACKET_SCHEMA",
    "PERCENTILES",
    "RESULTS_FORMAT_VERSION",
    "RUN_JSON",
    "SUPPORTED_VERSIONS",
    "LatencyTally",
    "RunResult",
    "StrategyResult",
    "latency_summary",
    "lateness",
    "load",
    "pace_summary",
    "per_packet",
    "save",
]
