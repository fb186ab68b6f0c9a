"""The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched), from jinja2 with
autoescape on, so text from a trace (pcapng comments, interface names) or a run is inert wherever it appears."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import jinja2

from ndis_replay.reports.charts import draw
from ndis_replay.reports.data import FINDINGS_SHOWN, Interval, Ratio, Report, RunView, fmt_ns, fmt_ratio


def _rate(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.0f}"


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def _interval(value: Interval | None) -> str:
    return "—" if value is None else f"{fmt_ns(value.low)} – {fmt_ns(value.high)}"


def _metric(value: float, metric: str) -> str:
    return f"{value:,.0f}/s" if metric == "packets_per_s" else fmt_ns(value)


def _ratio_map(ratios: Sequence[Ratio]) -> dict[str, Ratio]:
    return {r.strategy: r for r in ratios}


def _interval_methods(runs: Sequence[RunView]) -> str:
    methods = {
        i.method for rv in runs for s in rv.strategies for i in (s.p50_interval, s.p99_interval) if i is not None
    }
    return "; ".join(sorted(methods)) or "none (too few packets)"


def _tojson_sorted(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def environment() -> jinja2.Environment:
    """The jinja2 environment of the report templates (autoescape on for every template, undefined is an error)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ndis_replay.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )
    env.filters.update(
        ns=fmt_ns,
        ratio=fmt_ratio,
        rate=_rate,
        pct=_pct,
        interval=_interval,
        metric=_metric,
        ratio_map=_ratio_map,
        interval_methods=_interval_methods,
        tojson_sorted=_tojson_sorted,
    )
    return env


def render_html(report: Report) -> str:
    """The report as one HTML document."""
    charts = [draw(rv, i) for i, rv in enumerate(report.runs)]
    template = environment().get_template("report.html.j2")
    return template.render(report=report, rv_charts=charts, findings_shown=FINDINGS_SHOWN)


__all__ = ["environment", "render_html"]
