"""What ``ndis-replay inspect`` reports about a trace, as plain data (the CLI renders it; ``--json`` dumps it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from ndis_replay.batching import assign_batches, format_duration_ns, parse_batching
from ndis_replay.importers.headers import linktype_name
from ndis_replay.runner import measured_latency
from ndis_replay.trace import DIRECTIONS, Trace

#: Batching rules shown by ``inspect``: the single-packet case, fixed batches, and gaps around the default.
INSPECT_RULES = ("none", "8", "32", "gap=5us", "gap=20us", "gap=100us", "auto")
#: Frame-size buckets (upper bounds, bytes on the wire): minimum frames, small, …, full size, LSO/jumbo.
SIZE_BUCKETS = (64, 127, 255, 511, 1023, 1518)


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="microseconds")


def _auto_label(frame: pl.DataFrame, gap_ns: int) -> str:
    if "send_call" in frame.columns:
        return "auto (the driver's send calls)"
    return f"auto (gap={format_duration_ns(gap_ns)})"


def summarize(trace: Trace) -> dict[str, Any]:
    """Counts, time span, interfaces, sizes, directions, send calls per batching rule and warnings."""
    f = trace.frame
    meta = trace.meta
    n = f.height
    ts = f["ts_ns"].drop_nulls()
    first = int(ts.min()) if ts.len() else None  # type: ignore[arg-type]
    last = int(ts.max()) if ts.len() else None  # type: ignore[arg-type]
    span_ns = (last - first) if first is not None and last is not None else 0
    wire_total = int(f["wire_len"].sum()) if n else 0
    out_of_order = int((f["ts_ns"].diff() < 0).sum()) if n > 1 else 0

    per_iface = (
        f.group_by("interface")
        .agg(
            pl.len().alias("packets"),
            *[(pl.col("direction") == d).sum().alias(d) for d in DIRECTIONS],
        )
        .sort("interface")
    )
    counts = {row["interface"]: row for row in per_iface.iter_rows(named=True)}
    interfaces = []
    for i in meta.interfaces:
        c = counts.get(i.id, {})
        interfaces.append(
            {
                "id": i.id,
                "name": i.name,
                "description": i.description,
                "linktype": i.linktype,
                "linktype_name": linktype_name(i.linktype),
                "snaplen": i.snaplen,
                "section": i.section,
                "ts_resolution_ns": i.ts_resolution,
                "packets": int(c.get("packets", 0)),
                **{d: int(c.get(d, 0)) for d in DIRECTIONS},
            }
        )

    sizes: dict[str, Any] = {}
    if n:
        w = f["wire_len"]
        sizes = {
            "min": int(w.min()),  # type: ignore[arg-type]
            "p50": float(w.quantile(0.5, "nearest")),  # type: ignore[arg-type]
            "p90": float(w.quantile(0.9, "nearest")),  # type: ignore[arg-type]
            "p99": float(w.quantile(0.99, "nearest")),  # type: ignore[arg-type]
            "max": int(w.max()),  # type: ignore[arg-type]
            "mean": float(w.mean()),  # type: ignore[arg-type]
            "header_len_p50": float(f["header_len"].quantile(0.5, "nearest")),  # type: ignore[arg-type]
            "truncated": int((f["cap_len"] < f["wire_len"]).sum()),
        }
        buckets = []
        low = 0
        for high in (*SIZE_BUCKETS, None):
            sel = (w > low) if high is None else ((w > low) & (w <= high)) if low else (w <= high)
            label = f">{low}" if high is None else f"{low + 1 if low else 0}-{high}"
            buckets.append({"bucket": label, "packets": int(sel.sum())})
            low = high or low
        sizes["buckets"] = buckets

    calls = []
    replayed = int((f["direction"] != "recv").sum()) if n else 0
    for text in INSPECT_RULES:
        rule = parse_batching(text)
        b = assign_batches(f, rule).drop_nulls()
        if b.len():
            per_call = b.value_counts().get_column("count")
            calls.append(
                {
                    "rule": str(rule) if text != "auto" else _auto_label(f, rule.gap_ns),
                    "calls": int(b.n_unique()),
                    "mean_packets": replayed / b.n_unique(),
                    "max_packets": int(per_call.max()),  # type: ignore[arg-type]
                }
            )
        else:
            calls.append({"rule": str(rule), "calls": 0, "mean_packets": 0.0, "max_packets": 0})

    protocols: list[dict[str, Any]] = []
    if "protocol" in f.columns:
        top = f["protocol"].fill_null("?").value_counts(sort=True).head(15)
        protocols = [{"protocol": p, "packets": int(c)} for p, c in top.iter_rows()]

    return {
        "source": meta.source,
        "format": meta.format,
        "compression": meta.compression,
        "reader": meta.reader,
        "size": meta.size,
        "sha256": meta.sha256,
        "packets": n,
        "first": _iso(first),
        "last": _iso(last),
        "duration_s": span_ns / 1e9,
        "timestamps_missing": int(f["ts_ns"].null_count()),
        "out_of_order": out_of_order,
        "wire_bytes": wire_total,
        "captured_bytes": int(f["cap_len"].sum()) if n else 0,
        "rate_pps": (n / (span_ns / 1e9)) if span_ns else None,
        "rate_mbps": (wire_total * 8 / span_ns * 1e3) if span_ns else None,
        "directions": {d: int((f["direction"] == d).sum()) for d in DIRECTIONS} if n else dict.fromkeys(DIRECTIONS, 0),
        "interfaces": interfaces,
        "sizes": sizes,
        "batching": meta.batching,
        "send_calls": calls,
        "protocols": protocols,
        "details": dict(meta.details),
        "measured": measured_latency(trace),
        "warnings": [
            {"code": w.code, "detail": w.detail, "offset": w.offset, "record": w.record, "count": w.count}
            for w in meta.warnings
        ],
    }
