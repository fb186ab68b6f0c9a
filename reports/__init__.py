"""Statistics, comparisons and the regression gate (the HTML/Markdown/JUnit renderers follow, issue 4).

- :mod:`ndis_replay.reports.stats`: percentiles, confidence intervals, paired and unpaired tests, noise.
- :mod:`ndis_replay.reports.compare`: strategy vs strategy in one run, run vs baseline run, with verdicts
  ``regressed`` / ``improved`` / ``unchanged`` (threshold **and** significance).
- :mod:`ndis_replay.reports.gate`: pass or fail a run for CI (exit 1 on a regression or an error finding).
"""

from __future__ import annotations

from ndis_replay.reports.compare import (
    METRICS,
    MetricComparison,
    RunComparison,
    RunMismatch,
    compare_runs,
    compare_strategies,
    parse_threshold,
)
from ndis_replay.reports.gate import GateResult, error_findings, gate

__all__ = [
    "METRICS",
    "GateResult",
    "MetricComparison",
    "RunComparison",
    "RunMismatch",
    "compare_runs",
    "compare_strategies",
    "error_findings",
    "gate",
    "parse_threshold",
]
