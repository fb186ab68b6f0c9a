"""ETW input on the command line: routing by content, the ETW options, `inspect`'s ETW tables, bad input, and a
driver send/complete trace replayed into a report that shows the measured latency beside the replayed one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ndis_replay.cli import cli
from ndis_replay.errors import ExitCode
from ndis_replay.importers.etw.driver import DEFAULT_EVENT_MAP, write_driver_etl
from ndis_replay.trace import Trace
from tests.conftest import CORPUS, SAMPLES

PKTMON = CORPUS / "etw" / "demikernel" / "PktMon.etl"
SONDE = CORPUS / "etw" / "generic-etl-sonde" / "test.etl"
NETSH = SAMPLES / "request_response.etl"
DRIVER_MAP = SAMPLES / "driver_sends.toml"
T0 = 1_700_000_000_000_000_000


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


def one_line_error(result: Result, code: ExitCode, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stderr.startswith("ndis-replay: error:") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.mark.parametrize(
    ("args", "tables"),
    [
        pytest.param((PKTMON,), ("ETW events", "PktMon components", "mlx5.sys", "Windows build 20348"), id="pktmon"),
        pytest.param((NETSH,), ("NDIS-PacketCapture layers", "eth:12", "802.3"), id="netsh"),
        pytest.param(
            (SAMPLES / "driver_sends.etl", "--event-map", DRIVER_MAP),
            ("Driver send/complete events", "measured by the driver", "auto (the driver's send calls)"),
            id="driver-etl",
        ),
    ],
)
def test_inspect_shows_what_the_etw_trace_holds(args: tuple[Path | str, ...], tables: tuple[str, ...]) -> None:
    result = run("inspect", *args)
    assert result.exit_code == 0, result.stderr
    for text in tables:
        assert text in result.stdout, text


def test_inspect_json_carries_the_layer_table() -> None:
    result = run("inspect", NETSH, "--json")
    layers = json.loads(result.stdout)["details"]["etw"]["layers"]
    assert {(row["miniport"], row["lower"], row["kept"]) for row in layers} == {(12, 12, True), (12, 18, False)}


@pytest.mark.parametrize(
    ("option", "packets"), [(("--etw-layer", "all"), 631), (("--etw-layer", "12:18"), 231), ((), 400)], ids=str
)
def test_import_keeps_the_chosen_layers(tmp_path: Path, option: tuple[str, ...], packets: int) -> None:
    out = tmp_path / "t.parquet"
    result = run("import", NETSH, "-o", out, *option)
    assert result.exit_code == 0, result.stderr
    trace = Trace.load(out)
    assert len(trace) == packets and trace.meta.format == "etl"


def test_pktmon_all_components_is_the_pcapng_export() -> None:
    result = run("inspect", PKTMON, "--etw-component", "all", "--json")
    assert json.loads(result.stdout)["packets"] == 114


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        pytest.param(
            ("inspect", PKTMON, "--etw-component", "99"),
            ExitCode.BAD_INPUT,
            ("no PktMon component '99'", "48 (mlx5.sys)", "--etw-component"),
            id="unknown-component",
        ),
        pytest.param(
            ("inspect", NETSH, "--etw-layer", "3:4"), ExitCode.BAD_INPUT, ("12:12", "12:18"), id="unknown-layer"
        ),
        pytest.param(
            ("inspect", SONDE),
            ExitCode.BAD_INPUT,
            ("no packet events found", "sonde-gateway ×9", "--event-map"),
            id="no-packet-events",
        ),
        pytest.param(
            ("inspect", SONDE, "--event-map", DRIVER_MAP),
            ExitCode.BAD_INPUT,
            ("no send events matching the event map found", "sonde-gateway"),
            id="no-matching-driver-events",
        ),
        pytest.param(
            ("inspect", SAMPLES / "driver_sends.csv"),
            ExitCode.USAGE,
            ("tracerpt CSV", "--event-map"),
            id="csv-without-map",
        ),
        pytest.param(
            ("inspect", SAMPLES / "small_packets.pcap", "--event-map", DRIVER_MAP),
            ExitCode.USAGE,
            ("--event-map", "is pcap"),
            id="map-for-a-pcap",
        ),
    ],
)
def test_bad_etw_input_is_one_line(args: tuple[str | Path, ...], code: ExitCode, fragments: tuple[str, ...]) -> None:
    one_line_error(run(*args), code, *fragments)


def test_bad_event_map_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "map.toml"
    bad.write_text(DEFAULT_EVENT_MAP.replace('nbl = "Nbl"', 'nbl = "Nbl"\ncolour = "blue"', 1))
    one_line_error(run("inspect", SAMPLES / "driver_sends.etl", "--event-map", bad), ExitCode.BAD_INPUT, "colour")


def test_cut_etl_is_salvaged_with_a_warning_or_refused_under_strict(tmp_path: Path) -> None:
    cut = tmp_path / "cut.etl"
    data = NETSH.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = run("inspect", cut, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert 0 < summary["packets"] < 400 and summary["warnings"]
    one_line_error(run("inspect", cut, "--strict"), ExitCode.BAD_INPUT)


def test_driver_trace_report_shows_measured_beside_replayed(tmp_path: Path) -> None:
    # 200 single-NBL sends of 60-123 bytes, each completed 5-24.9 µs later: the driver's measured latency
    sends = [(T0 + i * 50_000, 0x1000 + (i % 8) * 0x200, 60 + i % 64, i) for i in range(200)]
    completes = [(ts + 5_000 + (i % 200) * 100, nbl) for i, (ts, nbl, _, _) in enumerate(sends)]
    etl = tmp_path / "driver.etl"
    write_driver_etl(etl, sends, completes)
    html = tmp_path / "report.html"
    result = run(
        "run", etl, "--event-map", DRIVER_MAP, "-s", "alloc", "-s", "reuse", "--rounds", "1", "--out",
        tmp_path / "res", "--report", html, "--markdown", tmp_path / "summary.md",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "synthesized frames" in result.stderr
    saved = json.loads((tmp_path / "res" / "run.json").read_text())
    measured = saved["trace"]["measured"]
    assert measured["packets"] == 200 and measured["min_ns"] == 5_000 and measured["max_ns"] == 24_900
    assert saved["trace"]["synthetic_payload"] is True
    page = html.read_text()
    assert 'data-chart="measured-vs-replayed"' in page and "measured by the driver" in page
    assert re.search(r"synthesized at the recorded lengths", page)
    summary = (tmp_path / "summary.md").read_text()
    assert "Measured by the driver (send → completion, 200 packets)" in summary and "max 24.90 µs" in summary
    assert "synthesized at the recorded lengths" in summary


def test_csv_with_missing_columns_is_one_line(tmp_path: Path) -> None:
    text = (SAMPLES / "driver_sends.csv").read_text()
    header, rest = text.split("\n", 1)
    broken = tmp_path / "broken.csv"
    broken.write_text(header.replace(" Clock-Time,", "") + "\n" + rest)
    one_line_error(run("inspect", broken, "--event-map", DRIVER_MAP), ExitCode.BAD_INPUT, "Clock-Time")


def test_bad_compressed_block_is_salvaged_with_counts_or_refused_under_strict(tmp_path: Path) -> None:
    from ndis_replay.importers.etw.ndiscap import EVENT_FRAGMENT, KW_DEFAULT, KW_SEND, NDIS_PROVIDER, encode_1001
    from ndis_replay.importers.etw.writer import EtlWriter

    path = tmp_path / "c.etl"
    with EtlWriter(path, start_ns=T0, cpus=1, compress=True, buffer_size=4096) as writer:
        for i in range(200):
            frame = bytes([i % 256]) * 100
            writer.add_event(
                cpu=0, ts_ns=T0 + i * 1000, provider=NDIS_PROVIDER, event_id=EVENT_FRAGMENT,
                keyword=KW_DEFAULT | KW_SEND, user_data=encode_1001(1, 1, frame),
            )  # fmt: skip
    start, size, _cpu = writer.buffers[2]
    data = bytearray(path.read_bytes())
    data[start + 0x48 : start + size] = b"\xff" * (size - 0x48)  # every flag bit a match, offsets into nothing
    path.write_bytes(bytes(data))
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert 0 < summary["packets"] < 200
    assert any("compress" in w["detail"] for w in summary["warnings"]), summary["warnings"]
    one_line_error(run("inspect", path, "--strict"), ExitCode.BAD_INPUT)


def test_with_an_event_map_nothing_falls_back_to_tshark(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    one_line_error(
        run("inspect", text, "--event-map", DRIVER_MAP), ExitCode.BAD_INPUT, "--event-map reads a driver's .etl"
    )
