"""Statistics, comparisons, the regression gate and the reports.

- :mod:`ndis_replay.reports.stats`: percentiles, confidence intervals, paired and unpaired tests, noise.
- :mod:`ndis_replay.reports.compare`: strategy vs strategy in one run, run vs baseline run, with verdicts
  ``regressed`` / ``improved`` / ``unchanged`` (threshold **and** significance).
- :mod:`ndis_replay.reports.gate`: pass or fail a run for CI (exit 1 on a regression or an error finding).
- :mod:`ndis_replay.reports.data`: what a report shows (:func:`build_report`), reduced to a fixed size.
- renderers: :mod:`~ndis_replay.reports.html` (one self-contained file, charts from
  :mod:`~ndis_replay.reports.charts`), :mod:`~ndis_replay.reports.markdown`, :mod:`~ndis_replay.reports.junit`;
  :func:`write_report` writes the formats asked for, all or nothing. The renderers are imported on use (matplotlib
  takes a second to import), so they are not re-exported here.
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
from ndis_replay.reports.data import Report, build_report
from ndis_replay.reports.gate import GateResult, error_findings, gate
from ndis_replay.reports.output import ReportFiles, write_report

__all__ = [
    "METRICS",
    "GateResult",
    "MetricComparison",
    "Report",
    "ReportFiles",
    "RunComparison",
    "RunMismatch",
    "build_report",
    "compare_runs",
    "compare_strategies",
    "error_findings",
    "gate",
    "parse_threshold",
    "write_report",
]
