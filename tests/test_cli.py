"""The command line through click's CliRunner, and once end to end as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ndis_replay.cli import cli
from ndis_replay.errors import ExitCode
from ndis_replay.importers.pcap import write_pcap
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng
from ndis_replay.trace import Trace
from tests.conftest import PCAP_CORPUS, REPO, SAMPLES

T0 = 1_700_000_000_000_000_000


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "c.pcapng"
    packets = [(0, T0 + i * 3_000, bytes(60 + i), 60 + i, "send" if i % 3 else "recv") for i in range(30)]
    write_pcapng(path, packets, interfaces=[WriterInterface(name="eth0")])
    return path


def test_help_explains_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for word in ("import", "inspect", "Exit codes", "bad input"):
        assert word in result.output
    assert "--batching" in run("import", "--help").output


def test_import_writes_a_trace_that_loads(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "out.parquet"
    result = run("import", capture, "-o", out, "--batching", "gap=5us")
    assert result.exit_code == 0, result.stderr
    assert "30 packets" in result.stdout
    trace = Trace.load(out)
    assert len(trace) == 30 and trace.meta.batching == "gap=5us"


def test_import_refuses_to_overwrite_without_force(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_text("keep me")
    result = run("import", capture, "-o", out)
    assert result.exit_code == ExitCode.USAGE
    assert "--force" in result.stderr and out.read_text() == "keep me"
    assert run("import", capture, "-o", out, "--force").exit_code == 0


def test_import_no_data(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "lean.parquet"
    assert run("import", capture, "-o", out, "--no-data").exit_code == 0
    assert "data" not in Trace.load(out).frame.columns


def test_inspect_json(capture: Path) -> None:
    result = run("inspect", capture, "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["packets"] == 30
    assert summary["directions"] == {"send": 20, "recv": 10, "unknown": 0}
    assert summary["interfaces"][0]["name"] == "eth0"
    calls = {c["rule"]: c["calls"] for c in summary["send_calls"]}
    assert calls["none"] == 20 and calls["8"] == 3
    assert summary["duration_s"] == pytest.approx(29 * 3e-6)


def test_inspect_tables_and_parquet_input(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "t.parquet"
    run("import", capture, "-o", out)
    for target in (capture, out):
        result = run("inspect", target)
        assert result.exit_code == 0
        for heading in ("Interfaces", "Frame sizes", "Send calls by batching rule", "eth0"):
            assert heading in result.stdout


@pytest.mark.parametrize(
    "args,code,fragment",
    [
        (("inspect", "{missing}"), ExitCode.BAD_INPUT, "cannot read: no such file"),
        (("inspect", "{garbage}", "--reader", "fast"), ExitCode.BAD_INPUT, "not a pcap, pcapng or ETW capture"),
        (
            ("inspect", "{truncated}", "--strict"),
            ExitCode.BAD_INPUT,
            "cut short (71 bytes left of a record) (at record 1, byte 100)",
        ),
        (("import", "{capture}", "-o", "{out}", "--batching", "gap=fast"), ExitCode.USAGE, "not a duration"),
        (("inspect", "{capture}", "--reader", "nope"), ExitCode.USAGE, "Invalid value"),
    ],
    ids=["missing", "garbage", "strict-truncated", "bad-batching", "bad-reader"],
)
def test_errors_are_one_line_with_the_right_exit_code(
    tmp_path: Path, capture: Path, args: tuple[str, ...], code: int, fragment: str
) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_text("this is not a capture\n")
    truncated = tmp_path / "trunc.pcap"
    write_pcap(truncated, [(T0, bytes(60)), (T0 + 1, bytes(60))], nanosecond=False)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    names = {"missing": tmp_path / "nope.pcap", "garbage": garbage, "truncated": truncated}
    names |= {"capture": capture, "out": tmp_path / "o.parquet"}
    result = run(*(a.format(**names) for a in args))
    assert result.exit_code == code
    assert fragment in result.stderr
    if code != ExitCode.USAGE:  # click's own usage errors print usage lines too
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_salvage_warning_is_printed_and_import_succeeds(tmp_path: Path) -> None:
    truncated = tmp_path / "trunc.pcap"
    write_pcap(truncated, [(T0, bytes(60)), (T0 + 1, bytes(60))], nanosecond=False)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    result = run("import", truncated, "-o", tmp_path / "t.parquet")
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "byte 100" in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_text("nope")
    result = run("--debug", "inspect", garbage)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "Traceback" in result.stderr and "not a pcap" in result.stderr


@pytest.mark.skipif(not PCAP_CORPUS.is_dir(), reason="corpus missing")
def test_refused_corpus_file_through_the_cli() -> None:
    result = run("inspect", PCAP_CORPUS / "libpcap" / "pcap-invalid-version-1.pcap")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stderr.count("\n") == 1 and "version 1.4" in result.stderr


def test_end_to_end_as_a_subprocess(tmp_path: Path) -> None:
    """The installed console script and ``python -m ndis_replay`` on a shipped sample trace."""
    sample = SAMPLES / "request_response.pcapng"
    assert sample.is_file(), "sample_traces/ must ship request_response.pcapng (make samples)"
    env = {**os.environ, "COLUMNS": "120"}
    out = tmp_path / "rr.parquet"
    script = Path(sys.executable).with_name("ndis-replay")
    done = subprocess.run(
        [str(script), "import", str(sample), "-o", str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "ndis_replay", "inspect", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["packets"] == len(Trace.load(out))
    bad = subprocess.run(
        [str(script), "inspect", str(REPO / "README.md")], capture_output=True, text=True, env=env, timeout=120
    )
    assert bad.returncode == ExitCode.BAD_INPUT
    assert bad.stderr.startswith("ndis-replay: error:") and bad.stderr.count("\n") == 1


def test_text_from_the_trace_is_shown_literally(tmp_path: Path) -> None:
    """Interface names are the capturer's text: no rich markup is applied and no terminal escape gets through."""
    path = tmp_path / "hostile.pcapng"
    write_pcapng(path, [(0, T0, bytes(60), 60, "send")], interfaces=[WriterInterface(name="[red]eth0\x1b[2J")])
    result = run("inspect", path)
    assert result.exit_code == 0
    assert "[red]eth0\\x1b[2J" in result.stdout
    assert "\x1b" not in result.stdout
