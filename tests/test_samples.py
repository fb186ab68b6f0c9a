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


@pytest.fixture(scope="module")
def remade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    script = SAMPLES / "make_samples.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_every_sample_is_shipped() -> None:
    assert sorted(f"{name}.{ext}" for name in EXPECTED for ext in ("pcap", "pcapng")) == FILES


@pytest.mark.parametrize("name", FILES)
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
