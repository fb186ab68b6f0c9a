"""Every third-party capture in ../shared/corpus/pcap imports correctly or is refused clearly.

Ground truth is the manifest's ``packets`` (what Wireshark's capinfos counted) where ``capinfos_rc`` is 0.
Where capinfos failed, the file is damaged or unusual: the importer must salvage the whole records with a
warning (giving the byte offset for damage), or refuse with one TraceFormatError / UnsupportedLinkType —
never another exception, never a hang (each import is bounded by a timeout).
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from click.testing import CliRunner

from ndis_replay.cli import cli
from ndis_replay.errors import ExitCode, TraceFormatError, UnsupportedLinkType
from ndis_replay.importers import open_trace
from tests.conftest import PCAP_CORPUS, corpus_manifest

ENTRIES = corpus_manifest()
#: Formats only tshark reads: the default ``auto`` reader hands them over when tshark is installed.
NEEDS_TSHARK = {e["file"] for e in ENTRIES if not e["format"].startswith(("pcap", "zstd"))}


def _params() -> list[Any]:
    if not ENTRIES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no corpus at {PCAP_CORPUS}"))]
    return [pytest.param(e, id=e["file"]) for e in ENTRIES]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("entry", _params())
def test_corpus_file(entry: dict[str, Any]) -> None:
    path = PCAP_CORPUS / entry["file"]
    if entry["file"] in NEEDS_TSHARK and shutil.which("tshark") is None:
        pytest.fail("tshark is needed for this file and `make test` installs it")
    if entry["capinfos_rc"] == 0:
        trace = open_trace(path)
        assert str(len(trace)) == str(entry["packets"])
        for w in trace.warnings:
            assert w.code not in ("damaged", "truncated"), w
        return
    try:
        trace = open_trace(path)
    except (TraceFormatError, UnsupportedLinkType) as exc:
        result = CliRunner().invoke(cli, ["inspect", str(path)])
        assert result.exit_code == ExitCode.BAD_INPUT
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("ndis-replay: error:")
        assert exc.path == str(path)
        return
    # salvaged: something must say what was unusual, and damage must say where
    assert trace.warnings, "a file capinfos rejects imported without a single warning"
    for w in trace.warnings:
        if w.code in ("damaged", "truncated"):
            assert w.offset is not None
    with (
        pytest.raises(TraceFormatError)
        if any(w.code in ("damaged", "truncated") for w in trace.warnings)
        else _no_raise()
    ):
        open_trace(path, strict=True)


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
