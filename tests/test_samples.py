"""The shipped sample traces: the script remakes them byte for byte, and they import as the README describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ndis_replay.importers import open_trace
from tests.conftest import SAMPLES

#: name → (packets, send, recv, smallest frame, largest frame), as in sample_traces/README.md
EXPECTED = {
    "bulk_tcp": (726, 484, 242, 54, 1514),
    "request_response": (1103, 638, 465, 54, 1518),
    "small_packets": (3000, 3000, 0, 60, 128),
}
FILES = sorted(p.name for p in SAMPLES.glob("*.pcap*"))
#: The ETW samples (made by the same script with the package's ETL writer).
ETW_FILES = ["driver_sends.csv", "driver_sends.etl", "driver_sends.toml", "request_response.etl"]


@pytest.fixture(scope="module")
def remade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    script = SAMPLES / "make_samples.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_every_sample_is_shipped() -> None:
    assert sorted(f"{name}.{ext}" for name in EXPECTED for ext in ("pcap", "pcapng")) == FILES


def test_every_etw_sample_is_shipped() -> None:
    shipped = sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".etl", ".csv", ".toml"))
    assert shipped == ETW_FILES


@pytest.mark.parametrize("name", FILES + ETW_FILES)
def test_script_remakes_the_shipped_file(remade: Path, name: str) -> None:
    assert (remade / name).read_bytes() == (SAMPLES / name).read_bytes(), f"{name} differs: rerun make samples"


@pytest.mark.parametrize("name", FILES)
def test_sample_imports_as_documented(name: str) -> None:
    trace = open_trace(SAMPLES / name)
    packets, send, recv, smallest, largest = EXPECTED[name.split(".")[0]]
    frame = trace.frame
    assert len(trace) == packets
    assert trace.warnings == ()
    assert (frame["cap_len"].min(), frame["cap_len"].max()) == (smallest, largest)
    assert (frame["cap_len"] == frame["wire_len"]).all()
    directions = frame["direction"].value_counts().to_dict(as_series=False)
    counts = dict(zip(directions["direction"], directions["count"], strict=True))
    if name.endswith(".pcapng"):
        assert (counts.get("send", 0), counts.get("recv", 0)) == (send, recv)
    else:
        assert counts == {"unknown": packets}  # pcap has no direction flags
    # every frame is Ethernet + IP + TCP/UDP with whole headers
    assert (frame["header_len"] >= 42).all()


@pytest.mark.parametrize(
    ("layer", "packets", "send"), [(None, 400, 231), ("all", 631, 462), ("12:18", 231, 231)], ids=str
)
def test_netsh_sample_is_the_first_frames_of_request_response(layer: str | None, packets: int, send: int) -> None:
    from ndis_replay.importers import EtwOptions

    etl = open_trace(SAMPLES / "request_response.etl", etw=EtwOptions(layer=layer))
    assert etl.warnings == ()
    assert len(etl) == packets
    assert int((etl.frame["direction"] == "send").sum()) == send
    if layer is None:  # the layer above the miniport holds every frame once: those of the pcapng, to 100 ns
        ref = open_trace(SAMPLES / "request_response.pcapng").frame.head(packets)
        assert etl.frame["data"].to_list() == ref["data"].to_list()
        assert etl.frame["direction"].to_list() == ref["direction"].to_list()
        assert (etl.frame["ts_ns"] == ref["ts_ns"] - ref["ts_ns"] % 100).all()


@pytest.mark.parametrize("name", ["driver_sends.etl", "driver_sends.csv"])
def test_driver_samples_pair_every_send_with_its_completion(name: str) -> None:
    from ndis_replay.importers import EtwOptions

    trace = open_trace(SAMPLES / name, etw=EtwOptions(event_map=SAMPLES / "driver_sends.toml"), batching="auto")
    frame = trace.frame
    assert len(trace) == 1000 and trace.warnings == () and not trace.meta.has_data
    latency = (frame["complete_ts_ns"] - frame["ts_ns"]).to_numpy()
    assert latency.min() >= 4_000 and latency.max() <= 60_000
    # lengths are the small_packets frames'; calls of 1-4 NBLs, from a pool of 64 reused NBLs
    ref = open_trace(SAMPLES / "small_packets.pcapng").frame.head(1000)
    assert frame["wire_len"].to_list() == ref["wire_len"].to_list()
    assert frame["nbl_id"].n_unique() == 64
    sizes = frame["batch"].value_counts()["count"]
    assert sizes.min() == 1 and sizes.max() == 4
