"""The Markdown summary: for CI step summaries (``$GITHUB_STEP_SUMMARY``) and pull-request comments.

GitHub renders Markdown with some raw HTML allowed, so text from a trace or a run is escaped twice over: HTML's
``& < >`` become entities (no tag can open) and Markdown's punctuation is backslash-escaped (no link, image,
emphasis or table cell can be forged); line breaks become spaces. The command line goes in a fenced block whose
fence is longer than any run of backticks inside it, where nothing is interpreted.
"""

from __future__ import annotations

import re
from typing import Final

from ndis_replay.reports.data import FINDINGS_SHOWN, Report, RunView, fmt_ns, fmt_ratio

#: Characters that can start Markdown syntax inside a line (links and images need ``[``, emphasis ``*`` and ``_``,
#: tables ``|``, code `````, strikethrough ``~``); ``<`` and ``&`` are turned into entities first.
_MD_SPECIAL: Final = re.compile(r"([\\`*_\[\]|~!])")
_HTML: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
#: Findings listed per strategy in the Markdown (the HTML lists more, run.json keeps them).
MARKDOWN_FINDINGS: Final = 10


def md_escape(text: object) -> str:
    """``text`` as inert Markdown inline text (see the module docstring)."""
    out = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text))
    out = "".join(_HTML.get(ch, ch) for ch in out)
    return _MD_SPECIAL.sub(r"\\\1", out)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


#: the summary table's columns
HEADER: tuple[str, ...] = ("strategy", "NDIS", "measured", "status", "p50", "p50 95% CI", "p99", "× ref per packet")
HEADER += ("packets/s", "findings")


def _run(rv: RunView, report: Report, several: bool) -> list[str]:
    lines: list[str] = []
    trace = rv.trace
    if several:
        lines += [f"### {md_escape(rv.label)}", ""]
    ratios = {r.strategy: r for r in rv.ratios}
    lines.append(_row(list(HEADER)))
    lines.append("|" + "---|" * 10)
    for s in rv.strategies:
        ci = f"{fmt_ns(s.p50_interval.low)} – {fmt_ns(s.p50_interval.high)}" if s.p50_interval else "—"
        if s.name == rv.reference:
            ref = "reference"
        elif s.name in ratios:
            ref = fmt_ratio(ratios[s.name].packet_ratio)
        else:
            ref = "—"
        status = s.status + (f" ({s.failure})" if s.failure else "") + (" · noisy" if s.noisy else "")
        lines.append(
            _row(
                [
                    md_escape(s.name),
                    str(s.ndis_version),
                    s.measured or "—",
                    md_escape(status),
                    fmt_ns(s.p50),
                    ci,
                    fmt_ns(s.p99),
                    ref,
                    f"{s.packets_per_s:,.0f}" if s.packets_per_s else "—",
                    f"**{s.errors}**" if s.errors else "0",
                ]
            )
        )
    lines.append("")
    if rv.comparison is not None and rv.comparison.comparisons:
        lines += [f"**Against the baseline** (±{report.threshold:.0%} and a significant test):", ""]
        lines.append(_row(["strategy", "metric", "baseline", "this run", "change", "interval", "verdict"]))
        lines.append("|" + "---|" * 7)
        for c in rv.comparison.comparisons:
            interval = f"{c.interval[0]:+.1%} … {c.interval[1]:+.1%}" if c.interval else "—"
            verdict = f"**{c.verdict}**" if c.verdict == "regressed" else c.verdict
            fmt = (lambda v: f"{v:,.0f}/s") if c.metric == "packets_per_s" else fmt_ns
            lines.append(
                _row(
                    [
                        md_escape(c.strategy),
                        c.metric,
                        fmt(c.base),
                        fmt(c.new),
                        f"{c.change:+.1%}",
                        interval,
                        verdict,
                    ]
                )
            )
        lines.append("")
    measured = rv.measured or {}
    if measured.get("packets"):
        lines.append(
            f"Measured by the driver (send → completion, {measured['packets']:,} packets): "
            f"p50 {fmt_ns(measured.get('p50_ns'))}, p99 {fmt_ns(measured.get('p99_ns'))}, "
            f"max {fmt_ns(measured.get('max_ns'))}."
        )
        lines.append("")
    if rv.notes:
        lines += [f"- {md_escape(note)}" for note in rv.notes]
        lines.append("")
    findings = [(s, f) for s in rv.strategies for f in s.findings[: min(MARKDOWN_FINDINGS, FINDINGS_SHOWN)]]
    if findings:
        lines += ["**Verifier findings** (first of each strategy; all in run.json):", ""]
        for s, f in findings:
            lines.append(
                f"- {md_escape(s.name)}: {md_escape(f.get('rule'))} ({md_escape(f.get('severity'))}) at packet "
                f"{md_escape(f.get('packet_index'))}: {md_escape(f.get('descriptor'))}: {md_escape(f.get('message'))}"
            )
        lines.append("")
    lines.append(
        f"Trace {md_escape(trace.get('path'))} ({trace.get('packets', 0):,} packets, sha256 "
        f"{md_escape(str(trace.get('sha256', ''))[:12])}…), {rv.run.rounds} round(s), host "
        f"{md_escape(rv.run.host.get('hostname'))} ({md_escape(rv.run.host.get('cpu_model'))}). Reproduce:"
    )
    lines += ["", _fence(rv.command), ""]
    return lines


def render_markdown(report: Report) -> str:
    """The report as a Markdown summary."""
    v = report.verdict
    mark = "✅" if v.ok else "❌"
    lines = [f"## {mark} ndis-replay: {md_escape(v.headline)}", ""]
    lines += [f"- ❌ {md_escape(r)}" for r in v.reasons]
    lines += [f"- {md_escape(h)}" for h in v.highlights]
    lines += [f"- ⚠️ {md_escape(w)}" for w in v.warnings]
    if v.reasons or v.highlights or v.warnings:
        lines.append("")
    several = len(report.runs) > 1
    for rv in report.runs:
        lines += _run(rv, report, several)
    lines.append(f"<sub>ndis-replay {md_escape(report.tool_version)} · {md_escape(report.created)}</sub>")
    return "\n".join(lines) + "\n"


__all__ = ["md_escape", "render_markdown"]
