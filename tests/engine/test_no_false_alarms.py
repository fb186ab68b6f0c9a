"""No false alarms: every built-in strategy, correct by construction, replays real traces with zero findings,
transmits exactly the trace's bytes and leaves nothing outstanding after unbind.

Checked mode is 10-20x slower than the timed path, so each trace contributes its first sends (the sample traces'
first 300 cover bare segments, full-size 1514/1518-byte frames, padding and header lengths 42..90).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ndis_replay.engine.miniports.loopback import LoopbackParams
from ndis_replay.engine.ndis.counters import OUTSTANDING_FIELDS
from ndis_replay.engine.strategies import Strategy, available, get_strategy
from tests.conftest import PCAP_CORPUS, SAMPLES, corpus_manifest
from tests.engine.driver import Calls, Run, load_calls, replay

STRATEGIES = available()[:7]
BUILTINS = ["ndis5-alloc", "ndis5-reuse", "alloc", "reuse", "copy", "cache", "clone"]
SAMPLE_TRACES = sorted(SAMPLES.glob("*.pcap")) + sorted(SAMPLES.glob("*.pcapng"))
POLICIES = ["sync", "deferred", "batched:8", "delay:50us"]
PACKETS = 300

_CALLS: dict[tuple[Path, int, int], Calls] = {}


def calls(path: Path, batch: int = 1, limit: int = PACKETS) -> Calls:
    key = (path, batch, limit)
    if key not in _CALLS:
        _CALLS[key] = load_calls(path, batch, limit=limit)
    return _CALLS[key]


def assert_clean(run: Run, trace: Calls) -> None:
    """Zero findings (warnings included), the trace's bytes, nothing outstanding, the verifier's books empty."""
    assert run.bug_check is None
    assert [str(f) for f in run.findings] == []
    assert run.first_wire_mismatch(trace) is None
    counters = run.ndis.counters
    assert {name: getattr(counters, name) for name in OUTSTANDING_FIELDS} == dict.fromkeys(OUTSTANDING_FIELDS, 0)
    verifier = run.ndis.verifier
    assert verifier is not None
    assert not verifier.in_flight and not verifier.packets_in_flight and not verifier.locked_mdls
    # one NBL (or NDIS_PACKET) per trace packet reaches the miniport and is completed
    assert counters.nbls_completed + counters.packets_completed == len(trace.frames)
    assert counters.packets_sent == counters.packets_completed


def test_builtins_are_registered_in_order() -> None:
    assert STRATEGIES == BUILTINS


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("trace", SAMPLE_TRACES, ids=lambda p: p.name)
@pytest.mark.parametrize("name", BUILTINS)
def test_sample_traces_are_clean(name: str, trace: Path, policy: str) -> None:
    sends = calls(trace)
    assert_clean(replay(get_strategy(name)(), sends, policy), sends)


@pytest.mark.parametrize("policy", ["sync", "batched:8"])
@pytest.mark.parametrize("name", BUILTINS)
def test_batches_of_8_are_clean(name: str, policy: str) -> None:
    sends = calls(SAMPLES / "request_response.pcap", batch=8)
    assert_clean(replay(get_strategy(name)(), sends, policy), sends)


def _corpus_sample() -> list[Any]:
    """Ethernet pcap files of the corpus with 25..500 packets that capinfos read cleanly (deterministic order)."""
    entries = [
        e
        for e in corpus_manifest()
        if e["link"] == "EN10MB(1)"
        and e["capinfos_rc"] == 0
        and str(e["packets"]).isdigit()
        and 25 <= int(e["packets"]) <= 500
        and not any("error" in note for note in e["notes"])
    ]
    return [pytest.param(PCAP_CORPUS / e["file"], id=e["file"]) for e in sorted(entries, key=lambda e: e["file"])]


CORPUS = _corpus_sample()


def test_corpus_sample_is_not_empty() -> None:
    assert len(CORPUS) >= 5, "the corpus at ../shared/corpus/pcap is missing or changed"


@pytest.mark.parametrize("batch", [1, 8], ids=["batching-none", "batching-8"])
@pytest.mark.parametrize("trace", CORPUS)
@pytest.mark.parametrize("name", BUILTINS)
def test_corpus_sample_is_clean(name: str, trace: Path, batch: int) -> None:
    sends = calls(trace, batch, limit=500)
    assert_clean(replay(get_strategy(name)(), sends, "deferred" if batch > 1 else "sync"), sends)


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("ndis5-alloc", {"split_header": False}),
    ("ndis5-alloc", {"descriptors": 1, "overflow": 16}),
    ("ndis5-reuse", {"keep_buffers": False}),
    ("ndis5-reuse", {"pool_depth": 1, "split_header": False}),
    ("alloc", {"mdl_source": "locked"}),
    ("alloc", {"split_header": False, "context_size": 0}),
    ("alloc", {"context_size": 32, "context_backfill": 16}),
    ("reuse", {"header": "split"}),
    ("reuse", {"mdl_reuse": True}),
    ("reuse", {"header": "split", "mdl_reuse": True, "pool_depth": 1}),
    ("reuse", {"clear_oob": False, "reset_status": False}),
    ("copy", {"buffers": "mdl-and-data"}),
    ("copy", {"backfill": 64, "pool_depth": 1}),
    ("cache", {"cache_depth": 2, "cpus": 4}),
    ("cache", {"cache_depth": 0, "mdl_source": "locked"}),
    ("clone", {"upper": "alloc"}),
    ("clone", {"use_original_mdls": False}),
]


@pytest.mark.parametrize("policy", ["sync", "batched:8"])
@pytest.mark.parametrize(
    ("name", "params"), VARIANTS, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for n, p in VARIANTS]
)
def test_parameter_variants_are_clean(name: str, params: dict[str, Any], policy: str) -> None:
    cls = get_strategy(name)
    sends = calls(SAMPLES / "request_response.pcap", batch=2, limit=80)
    assert_clean(replay(cls(cls.Params(**params)), sends, policy, miniport=LoopbackParams(backfill=16)), sends)


@pytest.mark.parametrize("policy", ["sync", "deferred", "batched:8"])
@pytest.mark.parametrize("upper", ["reuse", "alloc"])
def test_clone_fragments_above_the_mtu(upper: str, policy: str) -> None:
    """Frames above a 600-byte MTU leave as fragments, each carrying the header; rejoined they are the trace."""
    cls = get_strategy("clone")
    strategy: Strategy = cls(cls.Params(upper=upper, mtu=600))
    sends = calls(SAMPLES / "bulk_tcp.pcap", limit=60)
    run = replay(strategy, sends, policy)
    assert_clean(run, sends)
    fragmented = [frames for frames in run.wire.packets if len(frames) > 1]
    assert len(fragmented) == strategy.stats()["fragmented"] > 0
    assert all(len(frame) <= 600 for frames in fragmented for frame in frames)
    assert all(frames[0][:54] == frames[-1][:54] for frames in fragmented)  # the header, replicated


def test_retreat_mode_only_warns() -> None:
    """reuse's header = "retreat" is correct but slow: RETREAT-ALLOC warnings only, never an error."""
    cls = get_strategy("reuse")
    sends = calls(SAMPLES / "request_response.pcap", limit=40)
    run = replay(cls(cls.Params(header="retreat")), sends, "batched:8")
    assert {f.rule for f in run.findings} == {"RETREAT-ALLOC"}
    assert {f.severity for f in run.findings} == {"warning"}
    assert run.first_wire_mismatch(sends) is None
