"""The regression gate: a run passes when no comparison regressed and the new run has no error finding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ndis_replay.errors import ExitCode
from ndis_replay.reports.compare import REGRESSED, MetricComparison
from ndis_replay.results import RunResult


@dataclass(frozen=True, slots=True)
class GateResult:
    """``ok`` when ``regressions`` and ``findings`` (error findings of the new run, each with its ``strategy``)
    are both empty; ``failed`` names strategies of the new run that failed (also a finding)."""

    ok: bool
    regressions: tuple[MetricComparison, ...]
    findings: tuple[Mapping[str, Any], ...]

    @property
    def exit_code(self) -> ExitCode:
        """:attr:`ExitCode.OK` or :attr:`ExitCode.FINDINGS`."""
        return ExitCode.OK if self.ok else ExitCode.FINDINGS


def error_findings(run: RunResult) -> list[dict[str, Any]]:
    """The run's findings of severity ``error``, each with the ``strategy`` it belongs to. A strategy whose
    status is not ``ok`` but whose kept findings hold no error (a failure, or findings beyond those kept)
    contributes one record of rule ``STATUS`` so it cannot pass the gate silently."""
    out: list[dict[str, Any]] = []
    for s in run.strategies:
        errors = [{**f, "strategy": s.name} for f in s.findings if f.get("severity") == "error"]
        if not errors and s.status != "ok":
            errors = [{"strategy": s.name, "rule": "STATUS", "severity": "error", "status": s.status,
                       "failure": s.failure, "packet_index": -1}]  # fmt: skip
        out.extend(errors)
    return out


def gate(comparisons: Iterable[MetricComparison], findings: Sequence[Mapping[str, Any]]) -> GateResult:
    """Pass or fail: fails on any ``regressed`` comparison or any finding of severity ``error`` (findings of the
    new run, for example :func:`error_findings`; warnings do not fail the gate)."""
    regressions = tuple(c for c in comparisons if c.verdict == REGRESSED)
    errors = tuple(f for f in findings if f.get("severity") == "error")
    return GateResult(ok=not regressions and not errors, regressions=regressions, findings=errors)


__all__ = ["GateResult", "error_findings", "gate"]
