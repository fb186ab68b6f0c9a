"""Large results for the report's size tests and bench/report_bench.py, grown from a real run.

Replaying millions of packets through six strategies to test a renderer would take minutes; the renderer only sees
``run.json`` and ``packets.parquet``. :func:`grow_run` keeps a real run's ``run.json`` (its strategies, counters,
findings, trace and host) and replaces its packets with ``packets`` per round drawn, per strategy, from that
strategy's own measured latencies (with their sizes and send calls), so the distributions are real ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from ndis_replay.results import PACKET_SCHEMA, RunResult, StrategyResult


def grow_run(
    template: RunResult, packets: int, rounds: int = 1, strategies: int | None = None, seed: int = 0
) -> RunResult:
    """A copy of ``template`` with ``packets`` packets per measured round and strategy (``strategies`` of them: the
    template's, repeated under new names when it has fewer)."""
    assert template.packets is not None
    rng = np.random.default_rng(seed)
    names = [s.name for s in template.strategies if s.timed]
    count = strategies or len(names)
    records: list[StrategyResult] = []
    frames = []
    for k in range(count):
        source = template.strategy(names[k % len(names)])
        name = source.name if k < len(names) else f"{source.name}-{k}"
        rows = template.packets.filter(pl.col("strategy") == source.name)
        pick = rng.integers(0, rows.height, size=packets * rounds)
        sample = rows[pick]
        frames.append(
            pl.DataFrame(
                {
                    "strategy": [name] * (packets * rounds),
                    "round": np.repeat(np.arange(rounds, dtype=np.uint16), packets),
                    "index": np.tile(np.arange(packets, dtype=np.uint32), rounds),
                    "batch": np.tile(np.arange(packets, dtype=np.uint32), rounds),
                    "size": sample.get_column("size"),
                    "latency_ns": sample.get_column("latency_ns"),
                    "build_ns": sample.get_column("build_ns"),
                    "send_ns": sample.get_column("send_ns"),
                },
                schema=PACKET_SCHEMA,
            )
        )
        span = int(packets * max(float(np.median(rows.get_column("latency_ns").to_numpy())), 1.0))
        records.append(
            dataclasses.replace(
                source,
                name=name,
                round_times=[{"round": r, "start_ns": r * span, "end_ns": (r + 1) * span} for r in range(rounds)],
            )
        )
    trace = {**template.trace, "packets": packets, "replayed": packets, "calls": packets}
    grown = dataclasses.replace(template, strategies=records, trace=trace, rounds=rounds)
    grown.packets = pl.concat(frames)
    return grown
