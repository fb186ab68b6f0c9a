"""Batching rules: how a trace's packets are grouped into send calls (one NBL chain per call).

Rules (DESIGN.md, Batching):

``none``
    one packet per call — the single-packet case where the ported driver got slower;
``N``
    fixed groups of N consecutive packets;
``gap=DURATION``
    consecutive packets at most DURATION apart share a call (``gap=20us``);
``auto``
    the source's own send-call ids where a driver trace has them, else ``gap=20us``.

Only replayed packets (direction ``send`` or ``unknown``) get a call; received packets have a null ``batch``.
A call never spans two interfaces, because one send call goes to one miniport. A packet without a timestamp
(pcapng Simple Packet Block) starts a new call under ``gap``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from ndis_replay.errors import ConfigError

#: ``auto``'s fallback gap when the source has no send-call ids, in ns.
AUTO_GAP_NS = 20_000

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)\s*$")

BATCHING_CHOICES = ("none", "N (e.g. 8)", "gap=DURATION (e.g. gap=20us)", "auto")


def parse_duration_ns(text: str, what: str = "duration") -> int:
    """``"20us"`` → 20000. Units: ns, us (µs), ms, s; a unit is required."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(what, text, "not a duration", ("100ns", "20us", "1.5ms", "2s"))
    value = float(m.group(1)) * _UNITS_NS[m.group(2)]
    return round(value)


def format_duration_ns(ns: int) -> str:
    """The shortest exact spelling of a duration: 20000 → ``20us``."""
    for unit in ("s", "ms", "us"):
        scale = _UNITS_NS[unit]
        if ns and ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


@dataclass(frozen=True)
class BatchingRule:
    """A parsed batching rule; ``str()`` gives its canonical spelling."""

    kind: str  # "none" | "fixed" | "gap" | "auto"
    size: int = 1
    gap_ns: int = 0

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(self.size)
        if self.kind == "gap":
            return f"gap={format_duration_ns(self.gap_ns)}"
        return self.kind


def parse_batching(text: str) -> BatchingRule:
    """Parse ``none``, ``N``, ``gap=DURATION`` or ``auto``."""
    t = text.strip().lower()
    if t == "none":
        return BatchingRule("none")
    if t == "auto":
        return BatchingRule("auto", gap_ns=AUTO_GAP_NS)
    if t.isdigit():
        n = int(t)
        if n < 1:
            raise ConfigError("batching", text, "a fixed batch size must be at least 1", BATCHING_CHOICES)
        return BatchingRule("none") if n == 1 else BatchingRule("fixed", size=n)
    if t.startswith("gap="):
        gap = parse_duration_ns(t[4:], "batching gap")
        return BatchingRule("gap", gap_ns=gap)
    raise ConfigError("batching", text, "unknown batching rule", BATCHING_CHOICES)


def assign_batches(frame: pl.DataFrame, rule: BatchingRule) -> pl.Series:
    """The ``batch`` column for ``frame`` under ``rule``: call ids 0, 1, … in packet order; null for receives."""
    n = frame.height
    replayed = (frame["direction"] != "recv").to_numpy()
    m = int(replayed.sum())
    batch = np.zeros(n, dtype=np.uint32)
    if m:
        iface = frame["interface"].to_numpy()[replayed]
        breaks = np.ones(m, dtype=bool)
        if rule.kind == "fixed":
            iface_change = np.ones(m, dtype=bool)
            iface_change[1:] = iface[1:] != iface[:-1]
            run_start = np.flatnonzero(iface_change)
            run_id = np.cumsum(iface_change) - 1
            pos = np.arange(m) - run_start[run_id]
            breaks = iface_change | (pos % rule.size == 0)
        elif rule.kind == "auto" and "send_call" in frame.columns:
            # the driver's own send-call ids (a driver send/complete trace): a call is a run of one id
            call = frame["send_call"].filter(pl.Series(replayed))
            call_null = call.is_null().to_numpy()
            ids_seen = call.fill_null(0).to_numpy()
            breaks[1:] = (iface[1:] != iface[:-1]) | (ids_seen[1:] != ids_seen[:-1]) | call_null[1:] | call_null[:-1]
        elif rule.kind in ("gap", "auto"):
            ts_series = frame["ts_ns"].filter(pl.Series(replayed))
            ts_null = ts_series.is_null().to_numpy()
            ts = ts_series.fill_null(0).to_numpy()
            breaks[1:] = (iface[1:] != iface[:-1]) | (np.abs(np.diff(ts)) > rule.gap_ns) | ts_null[1:] | ts_null[:-1]
        ids = np.cumsum(breaks, dtype=np.int64) - 1
        batch[replayed] = ids.astype(np.uint32)
    series = pl.Series("batch", batch, dtype=pl.UInt32)
    return pl.select(pl.when(pl.Series(replayed)).then(series).otherwise(None).alias("batch")).to_series()


def count_calls(frame: pl.DataFrame, rule: BatchingRule) -> tuple[int, float]:
    """(number of send calls, mean packets per call) under ``rule``."""
    batches = assign_batches(frame, rule).drop_nulls()
    if batches.is_empty():
        return 0, 0.0
    calls = int(batches.max()) + 1  # type: ignore[arg-type]
    return calls, batches.len() / calls
