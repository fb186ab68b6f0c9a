"""The report's charts, drawn by matplotlib as SVG text for inlining in the HTML (no scripts, no network).

Every chart function takes the reduced data of :mod:`ndis_replay.reports.data` (a few hundred points per strategy
at most) and returns one ``<svg>`` element. Text stays text (``svg.fonttype = none``: smaller files, searchable,
and escaped by matplotlib's XML writer like any other text), ids are salted per chart so several charts can live
in one HTML document without clashing, and no date is embedded, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any, Final

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter

from ndis_replay.reports.data import BucketRow, RunView, Series, StrategyView

#: One colour per strategy, in the run's order (matplotlib's tab10, readable on white and when printed).
PALETTE: Final = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
VERDICT_COLOURS: Final = {"regressed": "#d62728", "improved": "#2ca02c", "unchanged": "#7f7f7f"}
_WIDTH_IN: Final = 7.6  # inches; the HTML scales the SVG down on narrow screens
#: rc parameters of every chart (typed Any: matplotlib types rc_context keys as a closed Literal set)
_STYLE: Final[Any] = {
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    # names come from users and traces: a "$" must not switch to mathtext (slow, and an error on bad TeX)
    "text.parse_math": False,
}
_NS = EngFormatter(unit="s")  # places=None: 2.5 µs stays 2.5 µs


def _seconds(value: float, _pos: object = None) -> str:
    return str(_NS.format_data(value * 1e-9))


_NS_AXIS = FuncFormatter(_seconds)


def colours(strategies: Sequence[StrategyView]) -> dict[str, str]:
    """Strategy name → colour, stable for the run."""
    return {s.name: PALETTE[i % len(PALETTE)] for i, s in enumerate(strategies)}


def _svg(fig: Figure, name: str) -> str:
    buf = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": f"ndis-replay-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.index("<svg")  # drop the XML declaration and DOCTYPE: not allowed inside an HTML body
    svg = text[start:]
    # scale with the page: keep the viewBox, let CSS size it
    svg = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 role="img"', svg, count=1)
    # matplotlib numbers its element ids per figure (figure_1, axes_1, …): prefix them and every reference to them
    # with the chart's name, so ids stay unique when several charts share one HTML document
    svg = re.sub(r'(\sid="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{name}-{m.group(2)}", svg)
    return svg


def _figure(height: float) -> Figure:
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(_WIDTH_IN, height), layout="constrained")
    return fig


def _apply_style(fig: Figure) -> None:
    for ax in fig.axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, alpha=0.3)
        ax.set_axisbelow(True)


def ndis5_vs_ndis6(rv: RunView, name: str = "ndis5-vs-ndis6") -> str:
    """p50 per strategy (bar, with its 95% interval) and p99 (marker), NDIS 5 strategies hatched."""
    timed = [s for s in rv.strategies if s.p50 is not None]
    palette = colours(rv.strategies)
    with mpl.rc_context(_STYLE):
        fig = _figure(0.5 + 0.45 * max(len(timed), 1))
        ax = fig.add_subplot()
        for i, s in enumerate(timed):
            assert s.p50 is not None
            err = None
            if s.p50_interval is not None:
                err = [[max(s.p50 - s.p50_interval.low, 0)], [max(s.p50_interval.high - s.p50, 0)]]
            ax.barh(
                i,
                s.p50,
                xerr=err,
                color=palette[s.name],
                hatch="//" if s.ndis_version == 5 else None,
                edgecolor="white",
                capsize=3,
                label="p50 (95% CI)" if i == 0 else None,
            )
            if s.p99 is not None:
                ax.plot([s.p99], [i], marker="|", markersize=14, color="black", label="p99" if i == 0 else None)
        ax.set_yticks(range(len(timed)), [s.label for s in timed])
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(_NS_AXIS)
        ax.set_xlabel("latency per packet")
        ax.set_xlim(left=0)
        if timed:
            ax.legend(loc="lower right")
        _apply_style(fig)
        return _svg(fig, name)


def _bucket_chart(rows: Sequence[BucketRow], rv: RunView, value: str, xlabel: str, ylabel: str, name: str) -> str:
    buckets = list(dict.fromkeys(r.bucket for r in rows))
    names = [s.name for s in rv.strategies if any(r.strategy == s.name for r in rows)]
    palette = colours(rv.strategies)
    width = 0.8 / max(len(names), 1)
    with mpl.rc_context(_STYLE):
        fig = _figure(2.6)
        ax = fig.add_subplot()
        for j, strategy in enumerate(names):
            by_bucket = {r.bucket: getattr(r, value) for r in rows if r.strategy == strategy}
            xs = [i + (j - (len(names) - 1) / 2) * width for i, b in enumerate(buckets) if b in by_bucket]
            ys = [by_bucket[b] for b in buckets if b in by_bucket]
            ax.bar(xs, ys, width=width, color=palette[strategy], label=strategy)
        ax.set_xticks(range(len(buckets)), buckets)
        ax.yaxis.set_major_formatter(_NS_AXIS)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if names:  # above the plot: bars would hide under it
            ax.legend(ncols=min(len(names), 5), loc="lower left", bbox_to_anchor=(0, 1.0))
        _apply_style(fig)
        return _svg(fig, name)


def latency_by_size(rv: RunView, name: str = "latency-by-size") -> str:
    """Median latency per packet-size bucket and strategy."""
    return _bucket_chart(rv.size_rows, rv, "p50", "captured bytes per packet", "median latency", name)


def latency_by_call_size(rv: RunView, name: str = "latency-by-call-size") -> str:
    """Median time per packet (send call latency ÷ packets in the call) per send-call size and strategy."""
    return _bucket_chart(
        rv.call_rows, rv, "per_packet_p50", "packets per send call", "median time per packet of the call", name
    )


def _lines(
    series: Sequence[Series],
    rv: RunView,
    name: str,
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    x_ns: bool = False,
    y_ns: bool = False,
    extra: Sequence[tuple[Series, dict[str, Any]]] = (),
    step: bool = False,
) -> str:
    palette = colours(rv.strategies)
    with mpl.rc_context(_STYLE):
        fig = _figure(2.6)
        ax = fig.add_subplot()
        for s in series:
            kwargs: dict[str, Any] = {"color": palette.get(s.label, "#333333"), "label": s.label, "linewidth": 1.4}
            if step:
                ax.step(s.x, s.y, where="post", **kwargs)
            else:
                ax.plot(s.x, s.y, **kwargs)
        for s, kwargs in extra:
            ax.plot(s.x, s.y, label=s.label, **kwargs)
        if logx:
            ax.set_xscale("log")
        if x_ns:
            ax.xaxis.set_major_formatter(_NS_AXIS)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))
        if y_ns:
            ax.yaxis.set_major_formatter(_NS_AXIS)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if series or extra:
            ax.legend(ncols=min(len(series) + len(extra), 5), loc="lower left", bbox_to_anchor=(0, 1.0))
        _apply_style(fig)
        return _svg(fig, name)


def cdf(rv: RunView, name: str = "cdf") -> str:
    """Latency CDF per strategy (log latency axis)."""
    return _lines(rv.cdf, rv, name, xlabel="latency per packet", ylabel="share of packets", logx=True, x_ns=True)


def histogram(rv: RunView, name: str = "histogram") -> str:
    """Share of packets per log-spaced latency bin, per strategy (beyond p99.9: counted in the table)."""
    return _lines(
        rv.histogram, rv, name, xlabel="latency per packet", ylabel="% of packets", logx=True, x_ns=True, step=True
    )


def over_trace(rv: RunView, name: str = "over-trace") -> str:
    """Median latency per window of the trace (packet index), per strategy."""
    return _lines(rv.over_trace, rv, name, xlabel="packet index in the trace", ylabel="median latency", y_ns=True)


def op_counts(rv: RunView, name: str = "op-counts") -> str:
    """Counted operations per packet (grouped bars), per strategy; log scale when they span decades."""
    names = [s for s in rv.strategies if s.per_packet]
    counters = rv.counters
    palette = colours(rv.strategies)
    height = 0.8 / max(len(names), 1)
    with mpl.rc_context(_STYLE):
        fig = _figure(0.8 + 0.32 * max(len(counters), 1) * max(1, len(names) / 3))
        ax = fig.add_subplot()
        values: list[float] = []
        for j, s in enumerate(names):
            ys = [i + (j - (len(names) - 1) / 2) * height for i in range(len(counters))]
            xs = [s.per_packet.get(c, 0.0) for c in counters]
            values.extend(x for x in xs if x > 0)
            ax.barh(ys, xs, height=height, color=palette[s.name], label=s.name)
        ax.set_yticks(range(len(counters)), [c.replace("_", " ") for c in counters])
        ax.invert_yaxis()
        if values and max(values) / min(values) > 100:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))
        ax.set_xlabel("per packet (mean over the measured rounds)")
        if names:
            ax.legend(loc="lower right")
        _apply_style(fig)
        return _svg(fig, name)


def measured_vs_replayed(rv: RunView, name: str = "measured-vs-replayed") -> str:
    """The driver's own measured latency CDF (from the trace's completions) beside each strategy's replayed one."""
    measured = rv.measured or {}
    extra = []
    if measured.get("quantiles"):
        extra.append(
            (
                Series("measured by the driver", tuple(measured["quantiles"]), tuple(measured["levels"])),
                {"color": "black", "linestyle": "--", "linewidth": 1.8},
            )
        )
    return _lines(
        rv.cdf, rv, name, xlabel="latency per packet", ylabel="share of packets", logx=True, x_ns=True, extra=extra
    )


def baseline(rv: RunView, name: str = "baseline") -> str:
    """Change against the baseline per strategy and metric, with its interval, coloured by verdict."""
    comps = list(rv.comparison.comparisons) if rv.comparison else []
    with mpl.rc_context(_STYLE):
        fig = _figure(0.6 + 0.35 * max(len(comps), 1))
        ax = fig.add_subplot()
        for i, c in enumerate(comps):
            err = None
            if c.interval is not None:
                err = [[max(c.change - c.interval[0], 0) * 100], [max(c.interval[1] - c.change, 0) * 100]]
            ax.barh(i, c.change * 100, xerr=err, color=VERDICT_COLOURS.get(c.verdict, "#7f7f7f"), capsize=3)
        if comps:
            threshold = comps[0].threshold * 100
            for x in (-threshold, threshold):
                ax.axvline(x, color="#999999", linestyle=":", linewidth=1)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(comps)), [f"{c.strategy} {c.metric}" for c in comps])
        ax.invert_yaxis()
        ax.set_xlabel("change against the baseline (%); dotted: the threshold")
        _apply_style(fig)
        return _svg(fig, name)


#: Chart name → (title, function); the HTML draws every chart whose data exist, in this order.
CHARTS: Final = {
    "ndis5-vs-ndis6": ("NDIS 5 vs NDIS 6", ndis5_vs_ndis6),
    "latency-by-size": ("Latency by packet size", latency_by_size),
    "latency-by-call-size": ("Latency by send-call size", latency_by_call_size),
    "cdf": ("Latency CDF", cdf),
    "histogram": ("Latency histogram", histogram),
    "over-trace": ("Latency over the trace", over_trace),
    "op-counts": ("Operations per packet", op_counts),
    "measured-vs-replayed": ("Measured (driver) vs replayed latency", measured_vs_replayed),
    "baseline": ("Against the baseline", baseline),
}


def draw(rv: RunView, run_index: int = 0) -> dict[str, str]:
    """Every chart that has data for ``rv``: chart name → SVG text (names as :data:`CHARTS`)."""
    out: dict[str, str] = {}
    timed = any(s.p50 is not None for s in rv.strategies)
    for key, (_title, function) in CHARTS.items():
        if key == "measured-vs-replayed" and not (rv.measured and rv.measured.get("quantiles")):
            continue
        if key == "baseline" and not (rv.comparison and rv.comparison.comparisons):
            continue
        if key == "op-counts" and not rv.counters:
            continue
        if key not in ("op-counts", "baseline") and not timed:
            continue
        out[key] = function(rv, f"{key}-{run_index}")
    return out


__all__ = ["CHARTS", "PALETTE", "colours", "draw"]
