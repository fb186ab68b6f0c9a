"""The HTML report (``ndis-replay report``) in a real browser: it renders, with every chart, offline and cleanly.

One small run (sample_traces/request_response.pcapng, three strategies, 3 rounds) is rendered once for the module in
headless chromium with the network cut off (tests/browser.py); the tests then query the open page. The screenshot is
kept under the module's temporary directory for a look when a test fails.

The helper's own tests (``test_helper_catches_*``) load pages that break the rules on purpose: they show that the
checks on the report can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from playwright.sync_api import Browser

from ndis_replay.cli import cli
from ndis_replay.errors import ExitCode
from tests.browser import RenderedPage, chromium, open_page
from tests.conftest import SAMPLES

TRACE = SAMPLES / "request_response.pcapng"
STRATEGIES = ("ndis5-reuse", "alloc", "reuse")
#: Charts the report must draw (``figure.chart[data-chart=NAME]``); it may draw more.
CHARTS = ("ndis5-vs-ndis6", "latency-by-size", "latency-by-call-size", "cdf", "histogram", "over-trace", "op-counts")
#: A full-page PNG of the report is far larger than a blank page's (~5 kB at this viewport).
MIN_SCREENSHOT_BYTES = 20_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ndis-replay run`` then ``ndis-replay report``: the HTML file."""
    root = tmp_path_factory.mktemp("report")
    strategies = [a for s in STRATEGIES for a in ("-s", s)]
    run = invoke("run", TRACE, *strategies, "--rounds", "3", "--warmup", "1", "--out", root / "run")
    assert run.exit_code in (0, ExitCode.FINDINGS), run.stdout + run.stderr
    result = invoke("report", root / "run", "-o", root / "report.html")
    assert result.exit_code == 0, result.stdout + result.stderr
    html = root / "report.html"
    assert html.is_file(), f"`ndis-replay report` wrote no {html.name}"
    return html


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser for the module (each page gets a fresh context): starting it is most of a page's cost."""
    with chromium() as started:
        yield started


@pytest.fixture(scope="module")
def rendered(browser: Browser, report: Path) -> Iterator[RenderedPage]:
    with open_page(browser, report, report.with_name("report.png")) as seen:
        yield seen


def assert_shown(rendered: RenderedPage, selector: str) -> None:
    """The one element matching ``selector`` is visible and takes up room on the page."""
    element = rendered.page.locator(selector)
    assert element.count() == 1, f"{element.count()} elements match {selector}"
    assert element.is_visible(), f"{selector} is hidden"
    box = element.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, f"{selector} has no size: {box}"


# --- the page loads cleanly ---------------------------------------------------------------------------------------


def test_no_console_errors(rendered: RenderedPage) -> None:
    assert rendered.console_errors == [], f"warnings too: {rendered.console_warnings}"


def test_no_page_errors(rendered: RenderedPage) -> None:
    assert rendered.page_errors == []


def test_self_contained_no_request_at_all(rendered: RenderedPage) -> None:
    # Not even a local file beside the report: it must survive being mailed on its own
    assert rendered.blocked == []
    assert rendered.requests == []
    assert rendered.failed == []


def test_screenshot_saved(rendered: RenderedPage) -> None:
    png = rendered.screenshot.read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > MIN_SCREENSHOT_BYTES, f"{len(png)} bytes: is the page blank?"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    assert width > 0 and height > 0


# --- what the report shows ----------------------------------------------------------------------------------------


def test_verdict_comes_first(rendered: RenderedPage) -> None:
    assert_shown(rendered, "#verdict")
    assert rendered.page.locator("#verdict").inner_text().strip(), "the verdict is empty"
    first = rendered.page.locator("main > *").first
    assert first.get_attribute("id") == "verdict", f"<main> starts with {first.evaluate('e => e.outerHTML')[:200]}"


def test_summary_has_a_row_per_strategy(rendered: RenderedPage) -> None:
    assert_shown(rendered, "table#summary")
    rows = rendered.page.locator("table#summary tbody tr")
    names = [rows.nth(i).locator("td, th").first.inner_text().strip() for i in range(rows.count())]
    assert sorted(names) == sorted(STRATEGIES)


@pytest.mark.parametrize("name", CHARTS)
def test_chart_shown(rendered: RenderedPage, name: str) -> None:
    figure = f'figure.chart[data-chart="{name}"]'
    assert_shown(rendered, figure)
    assert_shown(rendered, f"{figure} svg >> nth=0")


def test_every_chart_is_a_named_inline_svg(rendered: RenderedPage) -> None:
    figures = rendered.page.locator("figure.chart")
    found = [figures.nth(i).get_attribute("data-chart") for i in range(figures.count())]
    names = [name for name in found if name]
    assert names == found, f"a figure.chart without a data-chart name: {found}"
    assert len(set(names)) == len(names), f"charts named twice: {names}"
    assert set(CHARTS) <= set(names), f"missing: {sorted(set(CHARTS) - set(names))}"
    for name in names:
        assert_shown(rendered, f'figure.chart[data-chart="{name}"]')
        assert_shown(rendered, f'figure.chart[data-chart="{name}"] svg >> nth=0')


# --- the checks can fail: pages that break the rules --------------------------------------------------------------

#: Ways a page reaches out, each with the URL the helper must report as blocked.
LEAKS = {
    "img": ('<img src="http://example.com/x.png">', "http://example.com/x.png"),
    "script": ('<script src="https://cdn.example.com/d3.js"></script>', "https://cdn.example.com/d3.js"),
    "stylesheet": ('<link rel="stylesheet" href="https://example.com/s.css">', "https://example.com/s.css"),
    "css-font": (
        "<style>@font-face{font-family:F;src:url(https://example.com/f.woff2)}body{font-family:F}</style>x",
        "https://example.com/f.woff2",
    ),
    "fetch": ("<script>fetch('http://example.com/api').catch(() => {})</script>", "http://example.com/api"),
    "websocket": ("<script>new WebSocket('ws://example.com/live')</script>", "ws://example.com/live"),
}


@pytest.mark.parametrize("body,url", list(LEAKS.values()), ids=list(LEAKS))
def test_helper_catches_network(browser: Browser, tmp_path: Path, body: str, url: str) -> None:
    html = tmp_path / "leak.html"
    html.write_text(f"<!doctype html><html><body><main>{body}</main></body></html>")
    with open_page(browser, html, tmp_path / "leak.png") as seen:
        pass
    assert url in seen.blocked
    assert url in seen.requests


def test_helper_catches_local_file(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "beside.png").write_bytes(b"")
    html = tmp_path / "local.html"
    html.write_text('<!doctype html><html><body><img src="beside.png"></body></html>')
    with open_page(browser, html, tmp_path / "local.png") as seen:
        pass
    assert seen.requests == [(tmp_path / "beside.png").as_uri()]
    assert seen.blocked == []  # allowed (a local file), yet reported


def test_helper_catches_script_errors(browser: Browser, tmp_path: Path) -> None:
    html = tmp_path / "broken.html"
    html.write_text(
        "<!doctype html><html><body><main><p id=verdict>ok</p>"
        '<img src="http://example.com/x.png">'
        "<script>console.error('drawn badly'); console.warn('careful'); undefinedChart();</script>"
        "</main></body></html>"
    )
    with open_page(browser, html, tmp_path / "broken.png") as seen:
        pass
    assert any("drawn badly" in e for e in seen.console_errors), seen.console_errors
    assert any("careful" in w for w in seen.console_warnings), seen.console_warnings
    assert seen.page_errors == ["ReferenceError: undefinedChart is not defined"]
    assert seen.blocked == ["http://example.com/x.png"]
    assert len(seen.failed) == 1 and seen.failed[0].startswith("http://example.com/x.png (net::ERR_BLOCKED_BY_CLIENT")
    assert (tmp_path / "broken.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "injected",
    [
        "<script>document.body.dataset.ran = 'yes'</script>",
        "<img src=x onerror=\"document.body.dataset.ran = 'yes'\">",
        "<svg onload=\"document.body.dataset.ran = 'yes'\"></svg>",
    ],
    ids=["script", "img-onerror", "svg-onload"],
)
def test_report_policy_stops_what_escaping_would_have_let_through(
    browser: Browser, report: Path, tmp_path: Path, injected: str
) -> None:
    """Text from a trace is escaped; should that ever fail, the report's Content-Security-Policy (no script, no
    fetch) is the second line: markup injected into the real report does not run."""
    html = tmp_path / "injected.html"
    html.write_text(report.read_text(encoding="utf-8").replace("</main>", f"{injected}</main>"), encoding="utf-8")
    with open_page(browser, html, tmp_path / "injected.png") as seen:
        assert seen.page.evaluate("document.body.dataset.ran") is None
    assert seen.blocked == []
