"""``ndis-replay run | verify | strategies | miniports`` through click's CliRunner, and end to end as subprocesses.

Runs use small captures and few rounds; the worker processes are real (forkserver). No timing assertions.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from ndis_replay.cli import cli
from ndis_replay.engine.strategies import STRATEGIES
from ndis_replay.errors import ExitCode
from ndis_replay.importers import open_trace
from ndis_replay.results import PACKET_SCHEMA, RESULTS_FORMAT_VERSION, load
from tests.conftest import SAMPLES
from tests.replay_helpers import SEEDED, write_capture, write_empty, write_receive_only

PACKETS = 18  # sent packets of write_capture()'s default capture


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    return write_capture(tmp_path / "c.pcapng")


@pytest.fixture
def seeded() -> Iterator[None]:
    """The seeded-bug strategies registered by name for the duration of a test."""
    for cls in SEEDED:
        STRATEGIES.register(cls)
    yield
    STRATEGIES.reload()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of the run (the replay input) go here, so a test can see that none is left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(folder: Path) -> list[str]:
    """What ndis-replay left in a temporary folder (multiprocessing's own pymp-* folder lives as long as the
    process)."""
    return [p.name for p in folder.iterdir() if not p.name.startswith("pymp-")]


# --- run ---------------------------------------------------------------------------------------------------------


def test_run_writes_a_results_directory(tmp_path: Path, capture: Path, private_tmp: Path) -> None:
    out = tmp_path / "res"
    result = run("run", capture, "-s", "reuse", "-s", "alloc", "--rounds", "2", "--warmup", "1", "--out", out)
    assert result.exit_code == 0, result.stderr
    for word in ("reuse", "alloc", "p99.9", "packets/s", "allocs", "locks", "findings", f"results: {out}"):
        assert word in result.stdout
    res = load(out)
    assert res.format_version == RESULTS_FORMAT_VERSION and res.ok
    assert [s.name for s in res.strategies] == ["reuse", "alloc"]
    assert res.command == ["ndis-replay", "run", str(capture), "-s", "reuse", "-s", "alloc", "--rounds", "2",
                           "--warmup", "1", "--out", str(out)]  # fmt: skip
    trace = open_trace(capture)
    assert res.trace["sha256"] == trace.meta.sha256 and res.trace["replayed"] == PACKETS
    assert res.trace["received"] == len(trace) - PACKETS
    assert res.miniport["name"] == "loopback" and res.miniport["completion"] == "sync"
    assert res.timer_overhead_ns is not None and res.measurement_overhead is not None
    for s in res.strategies:
        assert s.timed and s.summary is not None and s.summary["samples"] == 2 * PACKETS
        assert s.wire["ok"] and s.params and s.memory["worker_peak_rss_bytes"]
        assert len(s.counters["rounds"]) == 2
    assert res.strategy("alloc").counters["per_packet"]["nbl_allocs"] == 1.0
    assert res.strategy("reuse").counters["per_packet"]["nbl_allocs"] == 0.0
    assert res.packets is not None and res.packets.height == PACKETS * 2 * 2
    assert dict(res.packets.schema) == PACKET_SCHEMA
    assert res.packets.group_by("strategy", "round").len().height == 4
    assert leftovers(private_tmp) == []  # the replay input is gone


def test_rounds_are_interleaved_across_strategies(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "res"
    names = ["reuse", "alloc", "ndis5-reuse"]
    args = [a for n in names for a in ("-s", n)]
    assert run("run", capture, *args, "--rounds", "3", "--warmup", "1", "--out", out).exit_code == 0
    res = load(out, packets=False)
    rounds = sorted((t["start_ns"], t["end_ns"], s.name, t["round"]) for s in res.strategies for t in s.round_times)
    assert [(name, number) for _, _, name, number in rounds] == [(n, r) for r in range(3) for n in names]
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(rounds))  # one at a time


def test_seeded_bug_exits_1_with_its_findings_in_run_json(tmp_path: Path, capture: Path, seeded: None) -> None:
    out = tmp_path / "res"
    result = run("run", capture, "-s", "reuse", "-s", "test-stale-offset", "--rounds", "1", "--out", out)
    assert result.exit_code == ExitCode.FINDINGS
    assert "Findings: test-stale-offset" in result.stdout and "REUSE-CONSISTENCY" in result.stdout
    res = load(out)
    assert res.strategy("reuse").status == "ok"
    bad = res.strategy("test-stale-offset")
    assert bad.status == "findings" and bad.timed and bad.base == "test-stale-offset"
    assert bad.finding_counts == {"REUSE-CONSISTENCY": PACKETS, "WIRE-BYTES": PACKETS}
    first = open_trace(capture).frame["index"][0]
    assert {"rule": "WIRE-BYTES", "packet_index": first} in [
        {"rule": f["rule"], "packet_index": f["packet_index"]} for f in bad.findings
    ]
    assert bad.wire["mismatched"] == PACKETS


def test_broken_strategies_never_stop_the_run(tmp_path: Path, capture: Path, seeded: None) -> None:
    out = tmp_path / "res"
    names = ["test-raises", "test-reuse-in-flight", "test-fails-timed", "test-kills-worker", "reuse"]
    args = [a for n in names for a in ("-s", n)]
    result = run("run", capture, *args, "--completion", "batched:4", "--rounds", "2", "--out", out)
    assert result.exit_code == ExitCode.FINDINGS, result.stderr
    res = load(out)
    outcome = {s.name: (s.status, s.failure, s.timed) for s in res.strategies}
    assert outcome == {
        "test-raises": ("failed", "exception", False),
        "test-reuse-in-flight": ("failed", "bugcheck", False),
        "test-fails-timed": ("failed", "timed-exception", False),
        "test-kills-worker": ("failed", "worker-died", False),
        "reuse": ("ok", None, True),
    }
    died = res.strategy("test-kills-worker").findings
    assert died[0]["rule"] == "WORKER-DIED" and "exited with status 9" in died[0]["message"]
    assert res.packets is not None and set(res.packets["strategy"]) == {"reuse"}
    assert res.packets.height == PACKETS * 2


def test_wire_capture_per_strategy(tmp_path: Path, capture: Path) -> None:
    wire = tmp_path / "wire.pcap"
    result = run("run", capture, "-s", "reuse", "-s", "ndis5-alloc", "--rounds", "1", "--out", tmp_path / "r",
                 "--wire", wire)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    sent = open_trace(capture).frame.filter(pl.col("direction") != "recv")["data"].to_list()
    for name in ("reuse", "ndis5-alloc"):
        written = open_trace(tmp_path / f"wire.{name}.pcap")
        assert written.frame["data"].to_list() == sent
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pcap") == [
        "wire.ndis5-alloc.pcap",
        "wire.reuse.pcap",
    ]


def test_config_variant_and_cost_profile(tmp_path: Path, capture: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text('[strategy.reuse-deep]\nbase = "reuse"\npool_depth = 64\n')
    profile = tmp_path / "costs.toml"
    profile.write_text('name = "made up"\n[ns]\nmdl_allocs = 100\nnbl_allocs = 1000\n')
    out = tmp_path / "res"
    result = run("run", capture, "-s", "reuse-deep", "-s", "alloc", "--config", config, "--cost-profile", profile,
                 "--rounds", "1", "--warmup", "0", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "modelled" in result.stdout and "profile 'made up'" in result.stdout
    res = load(out)
    deep = res.strategy("reuse-deep")
    assert deep.base == "reuse" and deep.params["pool_depth"] == 64
    assert deep.modelled_ns_per_packet == pytest.approx(100.0)
    alloc = res.strategy("alloc")
    per = alloc.counters["per_packet"]
    assert per["nbl_allocs"] == 1.0 and per["mdl_allocs"] >= 1.0
    assert alloc.modelled_ns_per_packet == pytest.approx(100 * per["mdl_allocs"] + 1000)
    assert res.cost_profile is not None and res.cost_profile["name"] == "made up"
    assert res.packets is not None and "modelled_ns" in res.packets.columns
    assert set(res.packets.filter(pl.col("strategy") == "reuse-deep")["modelled_ns"]) == {100.0}


def test_several_traces_and_a_parquet_trace(tmp_path: Path, capture: Path) -> None:
    parquet = tmp_path / "second.parquet"
    assert run("import", capture, "-o", parquet).exit_code == 0
    out = tmp_path / "all"
    result = run("run", capture, parquet, "-s", "copy", "--rounds", "1", "--batching", "4", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["c", "second"]
    for name in ("c", "second"):
        res = load(out / name)
        assert res.batching == "4" and res.trace["calls"] == 5


def test_default_results_folder(tmp_path: Path, capture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("run", capture, "-s", "reuse", "--rounds", "1").exit_code == 0
    (folder,) = (tmp_path / "results").iterdir()
    assert folder.name.startswith("c-") and (folder / "run.json").is_file()


# --- verify ------------------------------------------------------------------------------------------------------


def test_verify(capture: Path, seeded: None) -> None:
    good = run("verify", capture, "-s", "reuse", "-s", "clone", "--completion", "deferred")
    assert good.exit_code == 0, good.stderr
    assert f"reuse: ok; wire: {PACKETS} of {PACKETS} packets transmitted exactly" in good.stdout
    bad = run("verify", capture, "-s", "test-stale-offset", "--json")
    assert bad.exit_code == ExitCode.FINDINGS
    doc = json.loads(bad.stdout)
    assert doc["check_only"] and doc["strategies"][0]["finding_counts"]["WIRE-BYTES"] == PACKETS


# --- catalogues --------------------------------------------------------------------------------------------------


def test_strategies_lists_builtins_with_parameters(tmp_path: Path) -> None:
    result = run("strategies")
    assert result.exit_code == 0
    for name in ("ndis5-alloc", "ndis5-reuse", "alloc", "reuse", "copy", "cache", "clone", "pool_depth"):
        assert name in result.stdout
    config = tmp_path / "cfg.toml"
    config.write_text('[strategy.reuse-deep]\nbase = "reuse"\npool_depth = 4096\n')
    entries = json.loads(run("strategies", "--json", "--config", config).stdout)
    by_name = {e["name"]: e for e in entries}
    assert by_name["reuse"]["ndis_version"] == 6 and by_name["ndis5-reuse"]["ndis_version"] == 5
    deep = by_name["reuse-deep"]
    assert deep["base"] == "reuse"
    assert {p["name"]: p["default"] for p in deep["params"]}["pool_depth"] == 4096
    assert all({"name", "type", "default", "help"} <= set(p) for e in entries for p in e["params"])


def test_miniports_lists_loopback() -> None:
    result = run("miniports")
    assert result.exit_code == 0 and "loopback" in result.stdout and "batched:N" in result.stdout
    doc = json.loads(run("miniports", "--json").stdout)
    assert doc["miniports"][0]["name"] == "loopback"
    assert {p["name"] for p in doc["miniports"][0]["params"]} >= {"backfill", "mtu"}


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,code,fragments",
    [
        (("-s", "nope"), ExitCode.USAGE, ["strategy 'nope': unknown strategy", "valid: ndis5-alloc, ndis5-reuse"]),
        (("-s", "reuse", "--config", "{unknown_key}"), ExitCode.USAGE, ["[strategy.reuse] depth", "pool_depth"]),
        (("-s", "reuse", "--config", "{bad_toml}"), ExitCode.USAGE, ["is not valid TOML"]),
        (("-s", "reuse", "--config", "{bad_value}"), ExitCode.USAGE, ["[strategy.reuse] pool_depth", "-1"]),
        (("-s", "reuse", "--config", "{bad_base}"), ExitCode.USAGE, ["unknown base strategy", "valid: ndis5"]),
        (("-s", "reuse", "--completion", "later"), ExitCode.USAGE, ["completion 'later'", "batched:N"]),
        (("-s", "reuse", "--miniport", "tap0"), ExitCode.USAGE, ["miniport 'tap0': unknown miniport", "loopback"]),
        (("-s", "reuse", "--pacing", "fast"), ExitCode.USAGE, ["pacing 'fast'", "valid: asap, original"]),
        (("-s", "reuse", "--batching", "gap=soon"), ExitCode.USAGE, ["not a duration"]),
        (("-s", "reuse", "--cost-profile", "{bad_profile}"), ExitCode.USAGE, ["'bogus_op': is not a counted"]),
        (("-s", "reuse", "--out", "{existing}"), ExitCode.USAGE, ["exists; pass --force"]),
    ],
    ids=[
        "strategy",
        "parameter",
        "toml",
        "value",
        "base",
        "completion",
        "miniport",
        "pacing",
        "batching",
        "profile",
        "existing-out",
    ],
)
def test_bad_usage_is_one_line_exit_2(
    tmp_path: Path, capture: Path, args: tuple[str, ...], code: int, fragments: list[str]
) -> None:
    files = {
        "unknown_key": ("cfg.toml", "[strategy.reuse]\ndepth = 3\n"),
        "bad_toml": ("bad.toml", "[strategy.reuse\n"),
        "bad_value": ("v.toml", "[strategy.reuse]\npool_depth = -1\n"),
        "bad_base": ("b.toml", '[strategy.mine]\nbase = "nope"\n'),
        "bad_profile": ("p.toml", "[ns]\nbogus_op = 3\n"),
    }
    names = {key: tmp_path / name for key, (name, _) in files.items()}
    for _key, (name, text) in files.items():
        (tmp_path / name).write_text(text)
    existing = tmp_path / "existing"
    existing.mkdir()
    names["existing"] = existing
    result = run("run", capture, "--out", tmp_path / "res", *(a.format(**names) for a in args))  # a later --out wins
    assert result.exit_code == code, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert result.stderr.startswith("ndis-replay: error:") and result.stderr.count("\n") == 1
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "make,fragment",
    [
        (write_empty, "t.pcapng: no packets"),
        (write_receive_only, "no packets to replay: all 5 packets are received (direction recv)"),
    ],
    ids=["empty", "receive-only"],
)
def test_bad_trace_is_one_line_exit_3(tmp_path: Path, make: object, fragment: str) -> None:
    trace = make(tmp_path / "t.pcapng")  # type: ignore[operator]
    result = run("run", trace, "-s", "reuse", "--out", tmp_path / "res")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert fragment in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "res").exists()
    assert run("verify", trace, "-s", "reuse").exit_code == ExitCode.BAD_INPUT


def test_trace_without_bytes_replays_synthesized_frames(tmp_path: Path, capture: Path) -> None:
    lean = tmp_path / "lean.parquet"
    assert run("import", capture, "-o", lean, "--no-data").exit_code == 0
    result = run("run", lean, "-s", "reuse", "--rounds", "1", "--out", tmp_path / "res")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert "no packet bytes" in result.stderr
    saved = json.loads((tmp_path / "res" / "run.json").read_text())
    assert saved["trace"]["synthetic_payload"] is True
    full = run("run", capture, "-s", "reuse", "--rounds", "1", "--out", tmp_path / "full")
    assert json.loads((tmp_path / "full" / "run.json").read_text())["trace"]["synthetic_payload"] is False
    assert full.exit_code == ExitCode.OK


# --- Ctrl-C ------------------------------------------------------------------------------------------------------


def test_interrupt_leaves_no_results(
    tmp_path: Path, capture: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second trace is interrupted: the first trace's finished results are removed too."""
    import ndis_replay.runner as runner

    calls = {"n": 0}
    take = runner._take_round

    def interrupt(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 12:  # the first trace takes (1 warm-up + 2 rounds) x 3 workers = 9
            raise KeyboardInterrupt
        take(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "_take_round", interrupt)
    second = write_capture(tmp_path / "d.pcapng")
    out = tmp_path / "res"
    wire = tmp_path / "w.pcap"
    result = run("run", capture, second, "-s", "reuse", "-s", "alloc", "--rounds", "2", "--out", out, "--wire", wire)
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "interrupted; nothing was written" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pcapng", "d.pcapng", "tmp"]
    assert leftovers(private_tmp) == []


# --- end to end --------------------------------------------------------------------------------------------------


def _script() -> Path:
    return Path(sys.executable).with_name("ndis-replay")


def test_end_to_end_as_a_subprocess(tmp_path: Path) -> None:
    sample = SAMPLES / "request_response.pcapng"
    out = tmp_path / "res"
    done = subprocess.run(
        [str(_script()), "run", str(sample), "-s", "ndis5-reuse", "-s", "reuse", "--rounds", "2", "--warmup", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "run.json").read_text())
    assert doc["format_version"] == RESULTS_FORMAT_VERSION
    replayed = doc["trace"]["replayed"]
    assert replayed == open_trace(sample).frame.filter(pl.col("direction") != "recv").height
    assert pl.read_parquet(out / "packets.parquet").height == replayed * 2 * 2
    assert [s["status"] for s in doc["strategies"]] == ["ok", "ok"]


def test_ctrl_c_as_a_subprocess(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: exit 130, no results, no temp files, no workers."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "res"
    proc = subprocess.Popen(
        [str(_script()), "run", str(SAMPLES / "small_packets.pcapng"), "-s", "reuse", "-s", "alloc",
         "--rounds", "500", "--engine", "python", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("ndis-replay-input-") for p in scratch.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started its workers"
        time.sleep(0.05)
    time.sleep(1.0)  # into the rounds (the Python engine's 500 take ~15 s here; the native core's ~2 s is too close)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert err == "ndis-replay: interrupted; nothing was written\n"
    assert not out.exists()
    deadline = time.monotonic() + 10
    while True:
        ps = subprocess.run(["ps", "-o", "stat=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        if all(s.startswith("Z") for s in ps.split()) and not list(scratch.iterdir()):
            break
        assert time.monotonic() < deadline, f"left behind: {ps!r} {list(scratch.iterdir())}"
        time.sleep(0.1)


def test_a_later_unusable_trace_keeps_nothing(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "all"
    received = write_receive_only(tmp_path / "r.pcapng")
    result = run("run", capture, received, "-s", "reuse", "--rounds", "1", "--out", out)
    assert result.exit_code == ExitCode.BAD_INPUT and "r.pcapng: no packets to replay" in result.stderr
    assert not out.exists()


def test_strategy_class_a_worker_cannot_import(capture: Path) -> None:
    reuse = STRATEGIES.get("reuse")

    class Local(reuse):  # type: ignore[misc, valid-type]
        name = "test-local"

    STRATEGIES.register(Local)
    try:
        result = run("run", capture, "-s", "test-local", "--rounds", "1")
    finally:
        STRATEGIES.reload()
    assert result.exit_code == ExitCode.USAGE
    assert "strategy 'test-local': its class cannot be handed to a worker process" in result.stderr
