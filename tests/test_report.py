"""The report: its model (reports/data.py), the HTML, Markdown and JUnit renderers, ``ndis-replay report`` and
``run``/``compare`` with ``--report/--markdown/--junit``, on real runs of the sample traces.

What a user reads is checked in the rendered text (parsed, not grepped where structure matters); the browser test
(tests/test_report_browser.py) checks that the HTML displays.
"""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result
from markdown_it import MarkdownIt

from ndis_replay.cli import cli
from ndis_replay.engine.strategies import STRATEGIES
from ndis_replay.errors import ExitCode
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcapng import WriterInterface
from ndis_replay.reports.charts import CHARTS
from ndis_replay.reports.data import CDF_LEVELS, HISTOGRAM_BINS, TRACE_WINDOWS, build_report
from ndis_replay.reports.html import render_html
from ndis_replay.reports.junit import render_junit
from ndis_replay.reports.markdown import md_escape, render_markdown
from ndis_replay.results import load
from tests.conftest import SAMPLES
from tests.replay_helpers import SEEDED, write_capture
from tests.report_helpers import grow_run

TRACE = SAMPLES / "request_response.pcapng"
ALWAYS_CHARTS = (
    "ndis5-vs-ndis6",
    "latency-by-size",
    "latency-by-call-size",
    "cdf",
    "histogram",
    "over-trace",
    "op-counts",
)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> [link](javascript:alert(1)) **b** | `c`'


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


def replay(out: Path, trace: Path, *strategies: str, rounds: int = 3, extra: tuple[str, ...] = ()) -> Path:
    args = [a for s in strategies for a in ("-s", s)]
    result = invoke("run", trace, *args, "--rounds", str(rounds), "--warmup", "1", "--out", out, *extra)
    assert result.exit_code in (0, ExitCode.FINDINGS), result.stderr
    return out


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    for cls in SEEDED:
        STRATEGIES.register(cls)
    yield
    STRATEGIES.reload()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, registered: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    hostile = write_capture(
        root / "hostile.pcapng",
        48,
        interface=WriterInterface(name=HOSTILE, description="</title><script>alert(2)</script>", comment=HOSTILE),
        comment=HOSTILE,
        packet_comments={3: HOSTILE},
    )
    return {
        "three": replay(root / "three", TRACE, "ndis5-reuse", "alloc", "reuse"),
        "again": replay(root / "again", TRACE, "ndis5-reuse", "alloc", "reuse"),
        "findings": replay(root / "findings", TRACE, "reuse", "test-stale-offset", rounds=1),
        "hostile": replay(root / "hostile", hostile, "reuse", "alloc", rounds=1),
    }


# --- parsing helpers ---------------------------------------------------------------------------------------------


class _Elements(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> _Elements:
    parser = _Elements()
    parser.feed(text)
    parser.close()
    return parser


def assert_inert_html(text: str) -> None:
    """No script, no event handler, no external reference: what a trace says can only be text."""
    doc = parse_html(text)
    for tag, attrs in doc.tags:
        assert tag not in ("script", "img", "iframe", "object", "embed", "link"), tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src", "xlink:href") and value:
                assert value.startswith("#"), (tag, name, value)


# --- the model and the HTML ----------------------------------------------------------------------------------------


def test_report_of_three_strategies(runs: dict[str, Path]) -> None:
    run = load(runs["three"])
    report = build_report([("three", run)])
    assert report.verdict.ok and report.verdict.headline.startswith("PASS")
    rv = report.runs[0]
    assert rv.reference == "ndis5-reuse"  # NDIS 5 packet reuse is what the port is measured against
    assert [r.strategy for r in rv.ratios] == ["alloc", "reuse"]
    for r in rv.ratios:
        assert r.packet_interval is not None and r.packet_interval[0] <= r.packet_ratio <= r.packet_interval[1]
        assert r.verdict in ("regressed", "improved", "unchanged")
    for s in rv.strategies:
        assert s.samples == 3 * run.trace["replayed"] and s.rounds == 3
        assert s.p50 is not None and s.p50_interval is not None and s.p50_interval.low <= s.p50 <= s.p50_interval.high
        assert s.p99 is not None and s.p999 is not None and s.max is not None and s.p50 <= s.p99 <= s.max
        assert "order statistic" in s.p50_interval.method  # 3 rounds: too few for the bootstrap over rounds
    # size buckets cover every packet of every strategy once per round; send calls are single-packet (no batching)
    assert sum(r.packets for r in rv.size_rows) == 3 * 3 * run.trace["replayed"]
    assert {r.bucket for r in rv.call_rows} == {"1"}
    assert all(len(s.x) == len(CDF_LEVELS) for s in rv.cdf)
    assert len(rv.histogram_edges) == HISTOGRAM_BINS + 1
    assert all(0 < len(s.x) <= TRACE_WINDOWS for s in rv.over_trace)
    assert "nbl_allocs" in rv.counters  # alloc allocates an NBL per send


def test_html_has_every_section(runs: dict[str, Path]) -> None:
    text = render_html(build_report([("three", load(runs["three"]))]))
    doc = parse_html(text)
    ids = [a.get("id") for _, a in doc.tags]
    assert ids.index("verdict") < ids.index("summary")  # the verdict comes first
    charts = [a.get("data-chart") for t, a in doc.tags if t == "figure"]
    assert set(ALWAYS_CHARTS) <= set(charts) and set(charts) <= set(CHARTS)
    assert sum(1 for t, _ in doc.tags if t == "svg") == len(charts)
    body = " ".join(doc.text)
    for needle in ("NDIS 5 vs NDIS 6", "ndis5-reuse", "Verifier findings", "ndis-replay run", "sha256"):
        assert needle in body
    assert_inert_html(text)  # nothing fetched, nothing run: the file opens offline


def test_findings_fail_the_verdict_everywhere(runs: dict[str, Path]) -> None:
    run = load(runs["findings"])
    report = build_report([("findings", run)])
    assert not report.verdict.ok and report.verdict.headline.startswith("FAIL")
    assert any("test-stale-offset" in r for r in report.verdict.reasons)
    bad = run.strategy("test-stale-offset")
    first = bad.findings[0]
    doc = parse_html(render_html(report))
    assert first["rule"] in " ".join(doc.text) and str(first["packet_index"]) in " ".join(doc.text)
    assert "❌" in render_markdown(report) and first["rule"] in render_markdown(report)
    suites = ET.fromstring(render_junit(report))
    failed = {
        (case.get("classname", "").rsplit(".", 1)[-1], case.get("name"))
        for case in suites.iter("testcase")
        if case.find("failure") is not None
    }
    assert ("test-stale-offset", first["rule"]) in failed
    assert not any(cls == "reuse" for cls, _ in failed)  # the correct strategy passes every rule


def test_junit_one_case_per_rule_and_comparison(runs: dict[str, Path]) -> None:
    report = build_report([("three", load(runs["three"]))], baseline=("again", load(runs["again"])))
    suites = ET.fromstring(render_junit(report))
    cases = list(suites.iter("testcase"))
    names = {(c.get("classname"), c.get("name")) for c in cases}
    stem = "ndis-replay.request_response.pcapng"
    assert (f"{stem}.verifier.reuse", "OWN-AFTER-SEND") in names
    assert (f"{stem}.strategies", "reuse vs ndis5-reuse p50") in names
    assert (f"{stem}.baseline", "reuse p50") in names and (f"{stem}.baseline", "alloc p99") in names
    regressed = {c.strategy for c in report.runs[0].comparison.comparisons if c.verdict == "regressed"}  # type: ignore[union-attr]
    failing = {c.get("name", "").split()[0] for c in cases if c.find("failure") is not None}
    assert failing == regressed  # only regressions against the baseline fail: no finding here


def test_markdown_summary(runs: dict[str, Path]) -> None:
    report = build_report([("three", load(runs["three"]))])
    text = render_markdown(report)
    assert text.startswith("## ✅ ndis-replay: PASS")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    assert any(t.type == "table_open" for t in tokens)
    assert "ndis-replay run" in text


# --- escaping: what a trace says stays text --------------------------------------------------------------------------


def test_hostile_trace_text_is_recorded(runs: dict[str, Path]) -> None:
    trace = load(runs["hostile"]).trace
    assert trace["interfaces"][0]["name"] == HOSTILE
    assert [c["where"] for c in trace["comments"]] == ["section", "interface", "packet"]
    assert all(c["text"] == HOSTILE for c in trace["comments"])


def test_hostile_trace_is_inert_in_html(runs: dict[str, Path]) -> None:
    text = render_html(build_report([("hostile", load(runs["hostile"]))]))
    assert_inert_html(text)
    doc = parse_html(text)
    assert HOSTILE in " ".join(doc.text)  # shown, as text
    assert "&lt;script&gt;" in text and "<script" not in text


def test_hostile_trace_is_inert_in_markdown(runs: dict[str, Path]) -> None:
    report = build_report([("hostile", load(runs["hostile"]))])
    text = render_markdown(report)
    # GitHub allows some raw HTML in Markdown: render with HTML on and check nothing but text came through
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert_inert_html(rendered)
    assert 'href="javascript' not in rendered
    escaped = md_escape(HOSTILE)
    assert "<" not in escaped and "\n" not in md_escape("a\nb")


def test_hostile_trace_is_inert_in_junit(runs: dict[str, Path]) -> None:
    report = build_report([("hostile", load(runs["hostile"]))])
    root = ET.fromstring(render_junit(report))  # well-formed XML
    assert not list(root.iter("script"))
    assert md_escape("\x01") == " "


def test_control_characters_in_junit(runs: dict[str, Path], tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "ctl.pcapng", 12, interface=WriterInterface(name="eth\x01\x1b[31m0"))
    out = replay(tmp_path / "ctl", capture, "reuse", rounds=1)
    text = render_junit(build_report([("ctl", load(out))]))
    ET.fromstring(text)  # XML 1.0 cannot hold \x01: replaced, still well-formed


# --- the CLI -------------------------------------------------------------------------------------------------------


def test_report_command_writes_every_format(runs: dict[str, Path], tmp_path: Path) -> None:
    html_file, md_file, junit_file = tmp_path / "r.html", tmp_path / "s.md", tmp_path / "j.xml"
    result = invoke("report", runs["three"], "-o", html_file, "--markdown", md_file, "--junit", junit_file)
    assert result.exit_code == 0, result.stderr
    for path in (html_file, md_file, junit_file):
        assert path.stat().st_size > 0 and f"report: {path}" in result.stderr
    assert not list(tmp_path.glob(".*.tmp"))
    # Markdown to standard output, for >> $GITHUB_STEP_SUMMARY
    result = invoke("report", runs["three"], "--markdown", "-")
    assert result.exit_code == 0 and result.stdout.startswith("## ✅ ndis-replay")


def test_report_default_path_and_replace(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.html").write_text("old")
    result = invoke("report", runs["three"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")  # a report is replaced, atomically


def test_report_exits_1_on_findings(runs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("report", runs["findings"], "-o", tmp_path / "r.html")
    assert result.exit_code == ExitCode.FINDINGS
    assert (tmp_path / "r.html").is_file()  # the report is written, and CI still fails


def test_report_with_baseline_and_several_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = invoke("report", runs["three"], "--baseline", runs["again"], "-o", out)
    assert result.exit_code in (0, ExitCode.FINDINGS), result.stderr
    doc = parse_html(out.read_text())
    assert "baseline" in [a.get("data-chart") for t, a in doc.tags if t == "figure"]
    both = invoke("report", runs["three"], runs["findings"], "-o", tmp_path / "two.html")
    assert both.exit_code == ExitCode.FINDINGS
    rows = (tmp_path / "two.html").read_text().count('<td class="text name">reuse</td>')
    assert rows >= 2  # one summary row per strategy and run


def test_run_writes_the_report(tmp_path: Path) -> None:
    files = {"--report": tmp_path / "r.html", "--markdown": tmp_path / "r.md", "--junit": tmp_path / "r.xml"}
    extra = tuple(str(a) for pair in files.items() for a in pair)
    replay(tmp_path / "res", TRACE, "ndis5-reuse", "reuse", rounds=1, extra=extra)
    assert all(p.is_file() for p in files.values())
    assert '<section id="verdict" class="pass"' in files["--report"].read_text()


def test_compare_writes_the_report(runs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("compare", runs["again"], runs["three"], "--report", tmp_path / "c.html")
    assert result.exit_code in (0, ExitCode.FINDINGS)
    assert 'data-chart="baseline"' in (tmp_path / "c.html").read_text()


def _edited(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    doc = json.loads((dst / "run.json").read_text())
    doc.update(changes)
    (dst / "run.json").write_text(json.dumps(doc))
    return dst


@pytest.mark.parametrize(
    ("make", "code", "fragment"),
    [
        pytest.param(lambda r, t: t, 3, "not a results directory", id="not-results"),
        pytest.param(lambda r, t: _edited(r, t / "v", format_version=99), 3, "format version 99", id="newer-schema"),
        pytest.param(lambda r, t: _edited(r, t / "c", strategies="x"), 3, "run.json", id="corrupted-run-json"),
    ],
)
def test_report_bad_input(runs: dict[str, Path], tmp_path: Path, make: object, code: int, fragment: str) -> None:
    target = make(runs["three"], tmp_path)  # type: ignore[operator]
    result = invoke("report", target, "-o", tmp_path / "r.html")
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_baseline_of_another_trace_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("report", runs["three"], "--baseline", runs["hostile"], "-o", tmp_path / "r.html")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "different traces" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_unwritable_report_path_leaves_nothing(runs: dict[str, Path], tmp_path: Path) -> None:
    # a path below a regular file cannot be created, as root too; the other formats are not written either
    blocker = tmp_path / "file"
    blocker.write_text("x")
    md = tmp_path / "s.md"
    result = invoke("report", runs["three"], "--markdown", md, "-o", blocker / "r.html")
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert len(result.stderr.strip().splitlines()) == 1 and "r.html" in result.stderr
    assert not md.exists() and not list(tmp_path.glob(".*.tmp"))


# --- large runs, old runs, measured latency ---------------------------------------------------------------------------


def test_large_runs_are_summarised(runs: dict[str, Path]) -> None:
    # the HTML's size depends on the strategies, not on the packets: 20x the packets, about the same size
    template = load(runs["three"])
    small = len(render_html(build_report([("s", grow_run(template, 5_000, strategies=6))])))
    large = len(render_html(build_report([("l", grow_run(template, 100_000, strategies=6))])))
    assert large < 1.15 * small and large < 3_000_000, (small, large)


def test_results_format_1_still_reports(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "v1"
    shutil.copytree(runs["three"], old)
    doc = json.loads((old / "run.json").read_text())
    doc["format_version"] = 1
    for key in ("interfaces", "comments", "comment_count", "measured"):
        doc["trace"].pop(key)
    (old / "run.json").write_text(json.dumps(doc))
    result = invoke("report", old, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.stderr


def test_measured_latency_beside_replayed(tmp_path: Path) -> None:
    # a trace with the driver's own completions (as the ETW importers produce): measured 40 µs per send
    trace = open_trace(write_capture(tmp_path / "c.pcapng", 40, receive_every=0))
    frame = trace.frame.with_columns(
        pl.col("index").cast(pl.UInt64).alias("nbl_id"), (pl.col("ts_ns") + 40_000).alias("complete_ts_ns")
    )
    trace.replace(frame).save(tmp_path / "etw.parquet")
    out = replay(tmp_path / "res", tmp_path / "etw.parquet", "reuse", rounds=1)
    measured = load(out).trace["measured"]
    assert measured["packets"] == 40 and measured["p50_ns"] == 40_000 and measured["without_completion"] == 0
    text = render_html(build_report([("etw", load(out))]))
    assert 'data-chart="measured-vs-replayed"' in text and "measured by the driver" in text


def test_no_measured_latency_without_completions(runs: dict[str, Path]) -> None:
    assert load(runs["three"]).trace["measured"] is None
    assert 'data-chart="measured-vs-replayed"' not in render_html(build_report([("t", load(runs["three"]))]))


def test_svg_ids_are_unique(runs: dict[str, Path]) -> None:
    text = render_html(build_report([("three", load(runs["three"]))], baseline=("again", load(runs["again"]))))
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids))
