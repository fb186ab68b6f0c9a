"""JUnit XML for CI test panels: one test suite per run, one test case per verifier rule and strategy, per
in-run strategy comparison and per baseline comparison.

Which cases fail: a verifier rule with error findings, a failed strategy, transmitted bytes that differ from the
trace, and a baseline comparison called ``regressed`` — exactly what makes the gate exit 1. In-run comparisons
against the reference strategy never fail (a strategy slower than ``ndis5-reuse`` is what the report is for, not a
defect); their figures are in the case's output. XML is written by junitparser; characters XML 1.0 cannot hold
(control characters from a trace) are replaced, everything else is escaped by the XML writer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from junitparser import Failure, JUnitXml, TestCase, TestSuite

from ndis_replay.reports.data import RULE_DESCRIPTIONS, Report, RunView, fmt_ns, fmt_ratio

_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: object) -> str:
    """``text`` with the characters XML 1.0 forbids replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(text))


def _case(name: str, classname: str, seconds: float = 0.0) -> TestCase:
    return TestCase(xml_text(name), classname=xml_text(classname), time=round(seconds, 6))


def _fail(case: TestCase, message: str, kind: str, details: str = "") -> None:
    failure = Failure(xml_text(message), xml_text(kind))
    if details:
        failure.text = xml_text(details)
    case.result = [failure]


def _suite(rv: RunView) -> TestSuite:
    stem = Path(str(rv.trace.get("path", "trace"))).name
    suite = TestSuite(xml_text(f"ndis-replay {stem}"))
    base = f"ndis-replay.{stem}"
    for s in rv.strategies:
        classname = f"{base}.verifier.{s.name}"
        status = _case("status", classname)
        if s.status == "failed":
            _fail(status, f"{s.name} failed ({s.failure})", "failed")
        suite.add_testcase(status)
        if s.wire:
            wire = _case("wire", classname)
            if s.wire.get("ok") is False:
                _fail(wire, "transmitted bytes differ from the trace", "wire", repr(s.wire))
            suite.add_testcase(wire)
        for rule, description in RULE_DESCRIPTIONS.items():
            case = _case(rule, classname)
            kept = [f for f in s.findings if f.get("rule") == rule]
            count = s.finding_counts.get(rule, 0)
            if count and any(f.get("severity") == "error" for f in kept):
                first = kept[0]
                details = "\n".join(
                    f"packet {f.get('packet_index')}: {f.get('descriptor')}: {f.get('message')}" for f in kept[:20]
                )
                _fail(case, f"{count} × {rule} ({description}), first at packet {first.get('packet_index')}", rule,
                      details)  # fmt: skip
            elif count:
                case.system_out = xml_text(f"{count} warning(s) of {rule}")
            suite.add_testcase(case)
    for r in rv.ratios:
        case = _case(f"{r.strategy} vs {r.reference} p50", f"{base}.strategies")
        ci = (
            f" (95% CI {fmt_ratio(r.packet_interval[0])}–{fmt_ratio(r.packet_interval[1])})"
            if r.packet_interval
            else ""
        )
        case.system_out = xml_text(
            f"{r.strategy} takes {fmt_ratio(r.packet_ratio)} the time of {r.reference} per packet{ci}; "
            f"p50 {fmt_ns(r.comparison.new)} vs {fmt_ns(r.comparison.base)}; verdict {r.verdict}"
        )
        suite.add_testcase(case)
    if rv.comparison is not None:
        for c in rv.comparison.comparisons:
            case = _case(f"{c.strategy} {c.metric}", f"{base}.baseline")
            text = (
                f"{c.metric}: baseline {c.base:.6g}, this run {c.new:.6g}, change {c.change:+.1%}, "
                f"test {c.test}, p {c.p_value}, threshold {c.threshold:.1%}, verdict {c.verdict}"
            )
            if c.verdict == "regressed":
                _fail(case, f"{c.strategy} {c.metric} regressed {c.change:+.1%}", "regressed", text)
            else:
                case.system_out = xml_text(text)
            suite.add_testcase(case)
    suite.add_property("trace", xml_text(rv.trace.get("path", "")))
    suite.add_property("sha256", xml_text(rv.trace.get("sha256", "")))
    suite.add_property("command", xml_text(rv.command))
    suite.add_property("host", xml_text(rv.run.host.get("hostname", "")))
    return suite


def render_junit(report: Report) -> str:
    """The report as JUnit XML text."""
    xml = JUnitXml("ndis-replay")
    for rv in report.runs:
        xml.add_testsuite(_suite(rv))
    text = xml.tostring()  # type: ignore[no-untyped-call]
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


__all__ = ["render_junit", "xml_text"]
