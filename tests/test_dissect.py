"""The tshark path (``importers/dissect.py``), and the fast reader checked against tshark packet by packet.

Every test here runs the real tshark (through pyshark). Without it they fail rather than skip: `make test`
installs the Debian package, and a silently skipped cross-check proves nothing. The tests that need tshark to
be *absent* make it so by emptying PATH — the real missing-tool situation, not a stand-in for tshark.
"""

from __future__ import annotations

import gzip
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from ndis_replay.cli import cli
from ndis_replay.errors import ExitCode, ToolMissing, TraceFormatError
from ndis_replay.importers import open_trace
from ndis_replay.importers.dissect import (
    LINKTYPE_UNMAPPED,
    WTAP_TO_LINKTYPE,
    TsharkCannotRead,
    TsharkRun,
    add_protocols,
    epoch_ns,
    read_with_tshark,
)
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng
from ndis_replay.importers.source import UnknownFormat
from ndis_replay.trace import Trace
from tests.conftest import PCAP_CORPUS, REPO, SAMPLES, corpus_manifest

pytestmark = pytest.mark.tshark

ENTRIES = corpus_manifest()
BY_FILE = {e["file"]: e for e in ENTRIES}
T0 = 1_700_000_000_000_000_000

#: pcap LINKTYPEs whose records start with a pseudo-header that Wireshark moves out of the packet bytes, and
#: its length: tshark's bytes (and lengths) are the record's minus that prefix. SunATM is the corpus's case.
PSEUDO_HEADER_LEN = {123: 4, 139: 4, 144: 16, 177: 16, 196: 5, 201: 4, 204: 1, 209: 5, 245: 2, 254: 4}

#: Disagreements known to be the fast reader's, each marked as a strict xfail so that a fix shows up as XPASS.
FAST_READER_ISSUES: dict[str, str] = {}

#: The columns both readers must agree on (the acceptance criterion), and those read_with_tshark adds to them.
ACCEPTANCE_COLUMNS = ("ts_ns", "cap_len", "wire_len", "direction", "data")
TRACE_COLUMNS = ("index", *ACCEPTANCE_COLUMNS, "interface", "linktype", "header_len")


@pytest.fixture
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed: `make test` installs it (Debian package tshark)")
    return path


def corpus(name: str) -> Path:
    path = PCAP_CORPUS / name
    if not path.is_file():
        pytest.fail(f"corpus file missing: {path}")
    return path


# --- the acceptance check: fast reader == tshark, packet by packet ------------------------------------------


def _fair_sample() -> list[Any]:
    """Every whole pcap, pcapng or compressed corpus file (capinfos read it) of at most 2,000 packets, and the
    project's own samples."""
    params = [
        pytest.param(PCAP_CORPUS / e["file"], id=e["file"], marks=_known_issue(e["file"]))
        for e in ENTRIES
        if e["capinfos_rc"] == 0 and e["format"].startswith(("pcap", "zstd")) and int(e["packets"]) <= 2000
    ]
    params += [pytest.param(p, id=f"sample_traces/{p.name}") for p in sorted(SAMPLES.glob("*.pcap*"))]
    return params or [pytest.param(None, marks=pytest.mark.skip(reason=f"no corpus at {PCAP_CORPUS}"))]


def _known_issue(name: str) -> list[pytest.MarkDecorator]:
    reason = FAST_READER_ISSUES.get(name)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def _tshark_direction(frame: Any, linktype: int) -> str:
    """What tshark says about a packet's direction: the pcapng flags when set, else (LINUX_SLL/SLL2 only) the
    dissected ``sll.pkttype`` — 4 outgoing, 0-3 incoming — else unknown."""
    if frame.flags_direction in (1, 2):
        return "recv" if frame.flags_direction == 1 else "send"
    if linktype in (113, 276) and "sll" in frame.layers:
        pkttype = int(frame.layers["sll"].get("sll.pkttype", -1))
        return "send" if pkttype == 4 else "recv" if 0 <= pkttype < 4 else "unknown"
    return "unknown"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", _fair_sample())
def test_fast_reader_matches_tshark(tshark: str, path: Path) -> None:
    fast = open_trace(path, reader="fast")
    with TsharkRun(path, raw=True, extra_layers=("sll",)) as run:
        frames = [f for f in run if f.is_packet]  # tshark also shows pcapng Custom Blocks as frames
    assert run.failure is None, run.failure
    assert len(fast) == len(frames), f"fast reader {len(fast)} packets, tshark {len(frames)}"
    mismatches = []
    for position, (row, frame) in enumerate(zip(fast.frame.iter_rows(named=True), frames, strict=True)):
        phdr = PSEUDO_HEADER_LEN.get(row["linktype"], 0)
        # Decimal, independently of dissect.epoch_ns: tshark prints seconds with 9 decimals
        ts = None if frame.time_epoch is None else int(Decimal(frame.time_epoch) * 10**9)
        expected = {
            "ts_ns": ts if ts is None or -(2**63) <= ts < 2**63 else None,  # beyond i64: no timestamp
            "cap_len": frame.cap_len + phdr,
            "wire_len": frame.wire_len + phdr,
            "direction": _tshark_direction(frame, row["linktype"]),
            "data": frame.data,
        }
        got = {**{c: row[c] for c in ACCEPTANCE_COLUMNS}, "data": row["data"][phdr:]}
        assert row["index"] == position
        for column, want in expected.items():
            if got[column] != want:
                mismatches.append(f"packet {row['index']} {column}: fast {got[column]!r}, tshark {want!r}")
    assert not mismatches, "\n".join(mismatches[:10])


# --- read_with_tshark: the same canonical trace ---------------------------------------------------------------


def _written_pcapng(tmp_path: Path) -> Path:
    """Two interfaces (ns and 2^-10 s timestamps), every direction flag, a snaplen-truncated packet."""
    path = tmp_path / "flags.pcapng"
    ip = bytes.fromhex("450000280001000040060000c0a80001c0a80002") + bytes.fromhex("0050d431" + "00" * 16)
    frame = bytes(12) + b"\x08\x00" + ip
    packets = [
        (i % 2, T0 + i * 1_953_125 * (1 + i % 2), frame + bytes(i), len(frame) + i + (5 if i == 7 else 0), d)
        for i, d in enumerate(["send", "recv", "unknown"] * 4)
    ]
    write_pcapng(
        path,
        packets,
        interfaces=[WriterInterface(name="eth0", description="first"), WriterInterface(name="eth1", tsresol=0x8A)],
    )
    return path


def _same_trace_files() -> list[Any]:
    names = [
        "dpkt/http.pcap",  # Ethernet, µs
        "pcapplusplus/sll.pcap",  # LINUX_SLL: direction from the packet type
        "pcapplusplus/sll2.pcap",  # LINUX_SLL2
        "tcpdump/tcp-handshake-nano.pcap",  # ns magic
        "pcapplusplus/raw_ip.pcap",  # RAW(101)
        "pcapng-test-generator/output_be__difficult__test202.pcapng",  # 3 sections, 5 interfaces, SPB
        "pcapng-test-generator/output_le__basic__test008.pcapng",  # if_tsresol=9, two interfaces
        "pcapplusplus/pcapng-example.pcapng.zst",  # zstd-compressed
        "pcapplusplus/too_many_interfaces.pcapng",  # 95 interfaces
    ]
    return [pytest.param(n, id=n, marks=_known_issue(n)) for n in names] + [
        pytest.param("written", id="written-flags-tsresol"),
        pytest.param("gzip", id="written-gzip"),
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", _same_trace_files())
def test_read_with_tshark_equals_fast_reader(tshark: str, tmp_path: Path, name: str) -> None:
    if name == "written":
        path = _written_pcapng(tmp_path)
    elif name == "gzip":
        path = tmp_path / "http.pcap.gz"
        path.write_bytes(gzip.compress(corpus("dpkt/http.pcap").read_bytes()))
    else:
        path = corpus(name)
    fast = open_trace(path, reader="fast")
    slow = read_with_tshark(path)
    assert slow.meta.reader == "tshark" and slow.meta.sha256 == fast.meta.sha256
    assert slow.meta.size == fast.meta.size and slow.meta.compression == fast.meta.compression
    # the file type as Wireshark names it: pcap and pcapng as the fast reader does, ns pcap as "nsecpcap"
    assert slow.meta.format == fast.meta.format or (slow.meta.format, fast.meta.format) == ("nsecpcap", "pcap")
    for column in TRACE_COLUMNS:
        assert slow.frame[column].to_list() == fast.frame[column].to_list(), column
    assert slow.frame["batch"].to_list() == fast.frame["batch"].to_list()
    assert slow.meta.interfaces == fast.meta.interfaces  # ids, link types, names, snaplen, section, resolution


def test_interface_names_come_from_the_file(tshark: str, tmp_path: Path) -> None:
    trace = read_with_tshark(_written_pcapng(tmp_path))
    assert [(i.name, i.description) for i in trace.meta.interfaces] == [("eth0", "first"), ("eth1", "")]
    assert trace.meta.interfaces[1].ts_resolution == "1953125/2"  # 2^-10 s, in ns
    assert set(trace.frame["direction"].to_list()) == {"send", "recv", "unknown"}


def test_keep_data_false_and_batching(tshark: str) -> None:
    path = corpus("dpkt/http.pcap")
    trace = read_with_tshark(path, keep_data=False, batching="gap=1s")
    assert "data" not in trace.frame.columns and not trace.meta.has_data
    assert trace.meta.batching == "gap=1s"
    assert trace.frame["batch"].to_list() == open_trace(path, batching="gap=1s").frame["batch"].to_list()


def test_aliased_linktypes_read_as_wiresharks_canonical_one(tshark: str) -> None:
    # RAW as DLT 12 (old BSD files): Wireshark knows it as its raw-IP encapsulation, which it writes as 101
    path = corpus("pcapplusplus/four_ipv6_http_streams.pcap")
    fast, slow = open_trace(path, reader="fast"), read_with_tshark(path)
    assert set(fast.frame["linktype"].to_list()) == {12} and set(slow.frame["linktype"].to_list()) == {101}
    assert slow.frame["header_len"].to_list() == fast.frame["header_len"].to_list()
    assert slow.frame["data"].to_list() == fast.frame["data"].to_list()


def test_pseudo_header_encapsulation_is_unmapped_with_a_warning(tshark: str) -> None:
    # SunATM: Wireshark moves the 4-byte ATM pseudo-header out of the bytes, which then fit no LINKTYPE
    trace = read_with_tshark(corpus("tcpdump/atm-heapoverflow.pcap"))
    assert set(trace.frame["linktype"].to_list()) == {LINKTYPE_UNMAPPED}
    assert set(trace.frame["header_len"].to_list()) == {0}
    (warning,) = [w for w in trace.warnings if w.code == "unmapped-encapsulation"]
    assert "encapsulation 13 (ATM PDUs" in warning.detail and "pseudo-header" in warning.detail


def test_link_type_table_agrees_with_the_installed_tshark(tshark: str, tmp_path: Path) -> None:
    """One pcapng with an interface of every LINKTYPE the table produces: tshark must report, for each, an
    encapsulation the table maps back to that LINKTYPE."""
    linktypes = sorted(set(WTAP_TO_LINKTYPE.values()))
    path = tmp_path / "every-linktype.pcapng"
    interfaces = [WriterInterface(linktype=lt) for lt in linktypes]
    write_pcapng(
        path, [(i, T0 + i, bytes(range(64)), 64, "unknown") for i in range(len(linktypes))], interfaces=interfaces
    )
    with TsharkRun(path, raw=False) as run:
        seen = {frame.interface_id: frame.encap for frame in run}
    assert run.failure is None, run.failure
    wrong = {lt: seen.get(i) for i, lt in enumerate(linktypes) if WTAP_TO_LINKTYPE.get(seen.get(i, -1)) != lt}
    assert not wrong, f"LINKTYPE → tshark's encapsulation, not mapped back: {wrong}"


# --- other formats and damage -------------------------------------------------------------------------------


def _other_formats() -> list[Any]:
    params = [
        pytest.param(e, id=e["file"])
        for e in ENTRIES
        if e["capinfos_rc"] == 0 and not e["format"].startswith(("pcap", "zstd"))
    ]
    return params or [pytest.param(None, marks=pytest.mark.skip(reason=f"no corpus at {PCAP_CORPUS}"))]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("entry", _other_formats())
def test_other_format_count_matches_the_manifest(tshark: str, entry: dict[str, Any]) -> None:
    path = corpus(entry["file"])
    trace = open_trace(path, reader="tshark")
    assert len(trace) == int(entry["packets"])
    assert trace.meta.reader == "tshark" and trace.meta.format not in ("pcap", "pcapng")
    assert not trace.warnings
    assert trace.frame["ts_ns"].null_count() == 0 and (trace.frame["ts_ns"].diff().drop_nulls() >= 0).all()
    auto = open_trace(path)  # auto mode hands the file to tshark by itself
    assert auto.frame.equals(trace.frame)
    result = CliRunner().invoke(cli, ["inspect", "--reader", "tshark", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert str(entry["packets"]) in result.stdout


def test_damaged_foreign_file_is_salvaged_or_refused(tshark: str, tmp_path: Path) -> None:
    snoop = corpus("pcapplusplus/solaris.snoop").read_bytes()
    cut = tmp_path / "cut.snoop"
    cut.write_bytes(snoop[: len(snoop) // 2 + 7])  # ends inside a record
    trace = open_trace(cut)
    assert 0 < len(trace) < 250
    (warning,) = trace.warnings
    assert warning.code == "damaged" and f"after {len(trace)} packets" in warning.detail
    assert "\n" not in warning.detail and warning.record == len(trace)
    with pytest.raises(TraceFormatError) as strict:
        open_trace(cut, strict=True)
    assert not isinstance(strict.value, UnknownFormat) and strict.value.record == len(trace)
    header_only = tmp_path / "header.snoop"
    header_only.write_bytes(snoop[:20])  # the file header, then nothing whole
    with pytest.raises(TsharkCannotRead) as refused:
        read_with_tshark(header_only)
    assert "\n" not in refused.value.reason and refused.value.reason.startswith("tshark: ")


def test_text_file_in_auto_mode_is_refused_as_not_a_capture(tshark: str) -> None:
    with pytest.raises(UnknownFormat) as refused:
        open_trace(REPO / "README.md")
    assert isinstance(refused.value.__cause__, TsharkCannotRead)  # tshark was asked, and knew no better
    result = CliRunner().invoke(cli, ["inspect", str(REPO / "README.md")])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stderr.count("\n") == 1 and "not a pcap, pcapng or ETW" in result.stderr
    assert "tshark cannot read it either" in result.stderr
    result = CliRunner().invoke(cli, ["inspect", "--reader", "tshark", str(REPO / "README.md")])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stderr.count("\n") == 1 and "format TShark understands" in result.stderr


@pytest.mark.parametrize(
    ("content", "kind"), [(b"nope", "MP4"), (b'{"a": 1}\n', "JSON")], ids=["4-bytes-read-as-mp4", "json"]
)
def test_files_tshark_reads_only_as_documents_are_not_captures(
    tshark: str, tmp_path: Path, content: bytes, kind: str
) -> None:
    path = tmp_path / "not-a-capture.pcap"
    path.write_bytes(content)
    with pytest.raises(TsharkCannotRead, match=f"only as a {kind} file"):
        read_with_tshark(path)
    with pytest.raises(UnknownFormat):
        open_trace(path)


def test_tshark_is_ended_when_reading_stops_early(tshark: str) -> None:
    with TsharkRun(SAMPLES / "small_packets.pcapng") as run:
        next(iter(run))
        processes = list(run._capture._running_processes)
    assert processes and all(p.returncode is not None for p in processes)
    assert run.returncode is None and run.failure is None  # stopped by us: says nothing about the file
    with pytest.raises(ZeroDivisionError), TsharkRun(SAMPLES / "small_packets.pcapng") as run:
        for _frame in run:
            processes = list(run._capture._running_processes)
            1 / 0  # noqa: B018 - an error in the caller's loop
    assert processes and all(p.returncode is not None for p in processes)


# --- protocols ------------------------------------------------------------------------------------------------


def test_dissect_names_the_highest_protocols(tshark: str) -> None:
    trace = open_trace(SAMPLES / "request_response.pcapng", dissect=True)
    protocols = set(trace.frame["protocol"].to_list())
    assert {"tcp", "http"} <= protocols and None not in protocols
    assert not trace.warnings
    dns = open_trace(corpus("dpkt/dns_icmp.pcap"), dissect=True)
    assert "dns" in set(dns.frame["protocol"].to_list())  # its ICMP echoes carry "data" above ICMP


def test_dissect_in_the_same_pass_equals_add_protocols(tshark: str, tmp_path: Path) -> None:
    path = corpus("dpkt/http.pcap")
    one_pass = read_with_tshark(path, dissect=True)
    later = add_protocols(open_trace(path))
    assert one_pass.frame["protocol"].to_list() == later.frame["protocol"].to_list()
    assert "http" in one_pass.frame["protocol"].to_list()
    one_pass.save(tmp_path / "t.parquet")
    assert Trace.load(tmp_path / "t.parquet").frame["protocol"].to_list() == one_pass.frame["protocol"].to_list()


def test_protocols_attach_only_where_the_packet_provably_matches(tshark: str) -> None:
    trace = open_trace(corpus("dpkt/http.pcap"), keep_data=False)
    # Row 3 now claims other lengths than the file's record 3, and record 5 is missing from the trace
    changed = trace.frame.with_columns(
        pl.when(pl.col("index") == 3).then(pl.col("wire_len") + 1).otherwise(pl.col("wire_len")).alias("wire_len")
    ).filter(pl.col("index") != 5)
    labelled = add_protocols(trace.replace(changed))
    protocols = dict(zip(labelled.frame["index"].to_list(), labelled.frame["protocol"].to_list(), strict=True))
    assert protocols[3] is None and all(p is not None for i, p in protocols.items() if i != 3)
    (warning,) = [w for w in labelled.warnings if w.code == "protocol-mismatch"]
    assert "43" in warning.detail and "42" in warning.detail and warning.count == 1


def test_protocols_of_a_file_tshark_cannot_read_are_null_with_a_warning(tshark: str) -> None:
    trace = open_trace(corpus("libpcap/brcm-tag.pcap"), dissect=True)  # a link type Wireshark 4.0 lacks
    assert len(trace) > 0 and trace.frame["protocol"].null_count() == len(trace)
    (warning,) = [w for w in trace.warnings if w.code == "dissect-failed"]
    assert "281" in warning.detail


def test_a_changed_source_is_not_dissected(tshark: str, tmp_path: Path) -> None:
    path = tmp_path / "http.pcap"
    path.write_bytes(corpus("dpkt/http.pcap").read_bytes())
    trace = open_trace(path)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(TraceFormatError, match="changed since"):
        add_protocols(trace)


# --- no tshark ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_tshark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tshark (and everything else) off PATH."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("tshark") is None


def test_missing_tshark_names_the_package(no_tshark: None) -> None:
    snoop, pcap = corpus("pcapplusplus/solaris.snoop"), corpus("dpkt/http.pcap")
    for call in (
        lambda: read_with_tshark(snoop),
        lambda: open_trace(pcap, reader="tshark"),
        lambda: open_trace(pcap, dissect=True),
    ):
        with pytest.raises(ToolMissing) as missing:
            call()
        assert missing.value.tool == "tshark" and missing.value.package == "tshark"
        assert missing.value.exit_code == ExitCode.ENVIRONMENT
    with pytest.raises(UnknownFormat):  # auto mode without tshark: the fast reader's own refusal
        open_trace(snoop)


def test_missing_tshark_on_the_command_line(no_tshark: None) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--reader", "tshark", str(corpus("dpkt/http.pcap"))])
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert result.stderr.count("\n") == 1
    assert "tshark" in result.stderr and "apt-get install tshark" in result.stderr


# --- timestamps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1084443427.311224000", 1_084_443_427_311_224_000),
        ("1700000000.123456789", 1_700_000_000_123_456_789),  # float(…) * 1e9 would be off by tens of ns
        ("0.000000001", 1),
        ("12", 12_000_000_000),
        ("1.5", 1_500_000_000),
        ("-0.500000000", -500_000_000),
        ("-1.000000001", -1_000_000_001),
    ],
    ids=lambda v: str(v),
)
def test_epoch_ns_is_exact(text: str, ns: int) -> None:
    assert epoch_ns(text) == ns


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "1.1234567891", "1.-5", "1e9"])
def test_epoch_ns_refuses_what_tshark_does_not_print(text: str) -> None:
    with pytest.raises(ValueError):
        epoch_ns(text)


def test_asyncio_subprocesses_work_after_a_tshark_read(tshark: str) -> None:
    # pyshark leaves a child watcher bound to its closed event loop; the importer puts the previous one back, so a
    # later asyncio subprocess in the same process (the browser test's playwright driver, for one) still starts
    import asyncio

    open_trace(SAMPLES / "small_packets.pcap", reader="tshark")

    async def run_true() -> int:
        process = await asyncio.create_subprocess_exec("true")
        return await process.wait()

    loop = asyncio.new_event_loop()  # as playwright's sync API does: a loop of its own, never set as current
    try:
        assert loop.run_until_complete(run_true()) == 0
    finally:
        loop.close()
