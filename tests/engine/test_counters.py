"""OpCounters (snapshot, difference, order) and CostProfile (validation, no defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndis_replay.engine.ndis import COUNT_DOCS, COUNT_FIELDS, GAUGE_DOCS, CostProfile, OpCounters
from ndis_replay.engine.ndis.counters import OUTSTANDING_FIELDS
from ndis_replay.errors import ConfigError


def test_new_counters_are_zero() -> None:
    c = OpCounters()
    assert set(c.snapshot()) == set(COUNT_DOCS) | set(GAUGE_DOCS) | set(OUTSTANDING_FIELDS)
    assert not any(c.snapshot().values())
    assert c.counts() == (0,) * len(COUNT_FIELDS)


def test_outstanding_is_allocs_minus_frees() -> None:
    c = OpCounters()
    c.nbl_allocs = 5
    c.nbl_frees = 3
    c.mdl_allocs = 2
    assert c.nbl_outstanding == 2
    assert c.snapshot()["nbl_outstanding"] == 2
    assert c.snapshot()["mdl_outstanding"] == 2


def test_difference_and_copy() -> None:
    c = OpCounters()
    c.pool_hits = 4
    c.mem_bytes = 100
    before = c.copy()
    c.pool_hits += 3
    c.mem_bytes += 50
    c.nbl_allocs += 1
    delta = c - before
    assert isinstance(delta, OpCounters)
    assert delta.pool_hits == 3
    assert delta.mem_bytes == 50
    assert delta.nbl_allocs == 1
    assert delta.nbl_outstanding == 1
    assert before.pool_hits == 4  # the copy is independent
    assert c != before
    assert c.copy() == c


def test_counts_follow_count_fields_order() -> None:
    c = OpCounters()
    for i, name in enumerate(COUNT_FIELDS):
        setattr(c, name, i)
    assert c.counts() == tuple(range(len(COUNT_FIELDS)))


def test_every_name_is_documented() -> None:
    assert all(isinstance(doc, str) and doc for doc in {**COUNT_DOCS, **GAUGE_DOCS}.values())


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "costs.toml"
    path.write_text(text)
    return path


def test_cost_profile_from_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "lab"\nsource = "assumed"\n[ns]\npool_hits = 20\nsys_allocs = 150.5\n')
    profile = CostProfile.from_toml(path)
    assert profile.name == "lab" and profile.source == "assumed"
    c = OpCounters()
    c.pool_hits = 10
    c.sys_allocs = 2
    c.bytes_copied = 1000  # not priced: costs nothing
    assert profile.cost(c) == pytest.approx(10 * 20 + 2 * 150.5)
    assert profile.cost({"pool_hits": 1}) == pytest.approx(20)


def test_cost_profile_has_no_defaults() -> None:
    assert CostProfile({}).cost(OpCounters()) == 0
    c = OpCounters()
    c.sys_allocs = 1000
    assert CostProfile({}).cost(c) == 0


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("[ns]\nmalloc = 3\n", "cost profile counter"),
        ("[ns]\npool_hits = -1\n", "cost of pool_hits"),
        ('[ns]\npool_hits = "fast"\n', "cost of pool_hits"),
        ("[ns]\npool_hits = true\n", "cost of pool_hits"),
        ("[ns]\npool_hits = nan\n", "cost of pool_hits"),
        ("[ns]\nnbl_peak = 3\n", "cost profile counter"),
        ("ns = 3\n", "cost profile [ns]"),
        ("[costs]\npool_hits = 1\n", "cost profile key"),
        ("[ns\n", "cost profile"),
    ],
    ids=["unknown-counter", "negative", "string", "bool", "nan", "gauge", "not-a-table", "unknown-key", "bad-toml"],
)
def test_cost_profile_rejects(tmp_path: Path, text: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        CostProfile.from_toml(_write(tmp_path, text))
    assert info.value.what == what


def test_cost_profile_unknown_name_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        CostProfile.from_toml(_write(tmp_path, "[ns]\nallocs = 1\n"))
    assert "pool_hits" in info.value.choices


def test_cost_profile_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        CostProfile.from_toml(tmp_path / "nope.toml")
