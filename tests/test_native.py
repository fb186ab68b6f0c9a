"""The native core against the Python model: layouts, operation counts, transmitted bytes, bad input, sanitizers.

The differential tests replay every sample trace through ``reuse`` and ``alloc`` in both engines, under every
batching rule and completion policy of the acceptance list, and require identical counters (per round, after
bind, after unbind), identical strategy stats and — from the native loopback's wire capture — exactly the trace's
bytes. The sanitizer tests rebuild the same C sources with ASan + UBSan (and run the normal build under valgrind
memcheck) and replay in a subprocess that imports nothing but the core.
"""

from __future__ import annotations

import array
import functools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ndis_replay.engine import native
from ndis_replay.engine.miniports import CompletionPolicy, get_miniport
from ndis_replay.engine.ndis.counters import COUNT_FIELDS, GAUGE_FIELDS
from ndis_replay.engine.replay import ReplayInput, StrategyReplayer
from ndis_replay.engine.strategies import get_strategy
from ndis_replay.engine.strategies.base import StrategyParams
from ndis_replay.importers import open_trace
from tests.conftest import REPO, SAMPLES

SAMPLE_TRACES = sorted(p.name for p in SAMPLES.glob("*.pcapng"))
BATCHINGS = ("none", "8", "gap=20us")
COMPLETIONS = ("sync", "deferred", "batched:4")
LOOPBACK = get_miniport("loopback")
NATIVE_DIR = Path(native.__file__).parent
SOURCES = ("core.c", "ndis.c", "loopback.c", "strategies.c", "ndis5.c", "strategies6.c")


def test_the_core_is_built() -> None:
    """`pip install` builds the extension (a C compiler is the only build need)."""
    assert native.available(), native.import_error()


# --- layouts ---------------------------------------------------------------------------------------------------------

#: NDIS_MODEL.md §1, x64, transcribed: (struct, size, {field: offset}). The model file lives outside the repository
#: (../shared/NDIS_MODEL.md); when it is there, test_transcription_matches_ndis_model parses it and checks this table.
MODEL_LAYOUTS: dict[str, tuple[int | None, dict[str, int]]] = {
    "NET_BUFFER_LIST": (
        368,
        {
            "Next": 0,
            "FirstNetBuffer": 8,
            "Context": 16,
            "ParentNetBufferList": 24,
            "NdisPoolHandle": 32,
            "NdisReserved": 48,
            "ProtocolReserved": 64,
            "MiniportReserved": 96,
            "Scratch": 112,
            "SourceHandle": 120,
            "NblFlags": 128,
            "ChildRefCount": 132,
            "Flags": 136,
            "Status": 140,
            "NetBufferListInfo": 144,
        },
    ),
    "NET_BUFFER": (
        176,
        {
            "Next": 0,
            "CurrentMdl": 8,
            "CurrentMdlOffset": 16,
            "DataLength": 24,
            "MdlChain": 32,
            "DataOffset": 40,
            "ChecksumBias": 48,
            "NdisPoolHandle": 56,
            "NdisReserved": 64,
            "ProtocolReserved": 80,
            "MiniportReserved": 128,
            "DataPhysicalAddress": 160,
            "SharedMemoryInfo": 168,
        },
    ),
    "MDL": (
        48,
        {
            "Next": 0,
            "Size": 8,
            "MdlFlags": 0xA,
            "Process": 0x10,
            "MappedSystemVa": 0x18,
            "StartVa": 0x20,
            "ByteCount": 0x28,
            "ByteOffset": 0x2C,
        },
    ),
    "NET_BUFFER_LIST_CONTEXT": (16, {"Next": 0}),
    # §1.4: NDIS_PACKET_PRIVATE is 48 bytes and ProtocolReserved starts at 96 (the packet's size depends on the
    # pool's ProtocolReservedLength: not a fixed number)
    "NDIS_PACKET": (None, {"Private": 0, "ProtocolReserved": 96}),
    "NDIS_PACKET_PRIVATE": (48, {}),
}


@pytest.mark.parametrize("struct", list(MODEL_LAYOUTS))
def test_native_layout_matches_the_model(struct: str) -> None:
    layout = native.core().layouts()[struct]
    size, offsets = MODEL_LAYOUTS[struct]
    if size is not None:
        assert layout["size"] == size
    for name, offset in offsets.items():
        assert layout["offsets"][name] == offset, name


def test_transcription_matches_ndis_model() -> None:
    """Parse NDIS_MODEL.md's §1 tables and size lines (when the file is next to the repository) against the
    transcription above."""
    model = REPO.parent / "shared" / "NDIS_MODEL.md"
    if not model.is_file():
        pytest.skip(f"{model} is not here (it lives outside the repository)")
    text = model.read_text(encoding="utf-8")
    sections = {
        "NET_BUFFER_LIST": text.split("### 1.1", 1)[1].split("### 1.2", 1)[0],
        "NET_BUFFER": text.split("### 1.2", 1)[1].split("### 1.3", 1)[0],
    }
    for struct, section in sections.items():
        parsed: dict[str, int] = {}
        for match in re.finditer(r"^\| (\d+)(?:/[\d/]+)? \| `(\w+)`", section, re.MULTILINE):
            parsed[match.group(2)] = int(match.group(1))
        assert parsed, struct
        expected = MODEL_LAYOUTS[struct][1]
        for name, offset in parsed.items():
            assert expected[name] == offset, (struct, name)
    assert "N=27 (6.80+ driver view) → 368 (0x170)" in text
    assert "sizeof(NET_BUFFER) x64 = 176 (0xB0)" in text
    assert "sizeof(MDL) = 0x30 (48) on x64" in text
    mdl = dict(re.findall(r"(\w+)@(0x[0-9A-Fa-f]+|\d+)", text.split("### 1.3", 1)[1].split("### 1.4", 1)[0]))
    assert {k: int(v, 0) for k, v in mdl.items()} == MODEL_LAYOUTS["MDL"][1]
    assert "NDIS_PACKET_PRIVATE is 48 bytes and ProtocolReserved starts at offset 96 (0x60) on x64" in text


def test_counter_names_are_the_models() -> None:
    assert native.core().COUNTER_NAMES == COUNT_FIELDS + GAUGE_FIELDS


# --- differential ----------------------------------------------------------------------------------------------------


@functools.cache
def replay_input(trace: str, batching: str) -> ReplayInput:
    return ReplayInput.from_trace(open_trace(SAMPLES / trace).with_batching(batching))


def _snapshot(values: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(COUNT_FIELDS + GAUGE_FIELDS, values, strict=True))


def _model(snapshot: dict[str, int]) -> dict[str, int]:
    """The counts and gauges of a Python snapshot (without the derived ``*_outstanding``)."""
    return {name: snapshot[name] for name in COUNT_FIELDS + GAUGE_FIELDS}


def differential(
    inp: ReplayInput,
    strategy: str,
    params: StrategyParams,
    completion: str,
    rounds: int = 2,
    *,
    miniport: Any = None,
    fragment_mtu: int = 0,
) -> None:
    """Both engines over ``inp``: the same counters after bind, per round and after unbind, the same stats, and
    the native wire capture equal to the trace's bytes packet by packet. ``miniport``: the loopback's parameters
    (None: its defaults); ``fragment_mtu``: frames above it are expected as a fragmenting filter sends them."""
    cls = get_strategy(strategy)
    policy = CompletionPolicy.parse(completion)
    python = StrategyReplayer(
        inp, lambda: cls(params), LOOPBACK if miniport is None else lambda: LOOPBACK(miniport), policy
    )
    compiled = native.NativeReplayer(inp, strategy, params, policy, miniport_params=miniport)
    python.open_timed()
    compiled.open_timed()
    assert python._timed is not None
    ndis = python._timed[0]
    assert _snapshot(compiled.bound_counters) == _model(ndis.counters.snapshot())  # after bind
    for number in range(rounds):
        # odd rounds of sync replays are timed by runs of 7 calls (a short last run) in both engines: the clock
        # reading moves, the counts and bytes must not
        python.run_calls = compiled.run_calls = 7 if number % 2 and completion == "sync" else 1
        expected = python.timed_round(number, False)
        got = compiled.timed_round(number, False, capture=number == rounds - 1)
        assert got.error is None and expected.error is None
        assert got.counts == expected.counts, number
        assert got.gauges == expected.gauges, number
        assert (got.latency_ns >= 0).all()
    assert compiled.wire is not None
    packets = compiled.wire.packets
    assert len(packets) == inp.packets
    for position, frames in enumerate(packets):
        assert frames == expected_frames(inp, position, fragment_mtu), f"packet {position}"
    assert compiled.close_timed() == python.close_timed()
    assert _snapshot(compiled.closed_counters) == _model(ndis.counters.snapshot())  # after drain and unbind


def expected_frames(inp: ReplayInput, position: int, mtu: int = 0) -> tuple[bytes, ...]:
    """What the loopback transmits for one packet: the frame, or (a fragmenting filter, frames above ``mtu``) one
    NB per at most mtu − header bytes of payload, each behind a copy of the header."""
    frame = bytes(inp.frame(position))
    header = int(inp.header_len[position])
    if not mtu or not (len(frame) > mtu and 0 < header < mtu and header < len(frame)):
        return (frame,)
    step = mtu - header
    return tuple(frame[:header] + frame[at : at + step] for at in range(header, len(frame), step))


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize("batching", BATCHINGS)
@pytest.mark.parametrize("trace", SAMPLE_TRACES)
@pytest.mark.parametrize("strategy", native.NATIVE_STRATEGIES)
def test_native_counts_and_bytes_equal_the_model(strategy: str, trace: str, batching: str, completion: str) -> None:
    differential(replay_input(trace, batching), strategy, get_strategy(strategy).Params(), completion)


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("reuse", {"header": "split"}),
    ("reuse", {"mdl_reuse": True}),
    ("reuse", {"mdl_reuse": True, "header": "split"}),
    ("reuse", {"pool_depth": 1}),
    ("reuse", {"clear_oob": False, "reset_status": False}),
    ("alloc", {"split_header": False}),
    ("alloc", {"mdl_source": "locked"}),
    ("alloc", {"context_size": 0}),
    ("alloc", {"context_size": 0, "context_backfill": 16}),
    ("alloc", {"context_size": 32, "context_backfill": 16}),
]


@pytest.mark.parametrize("completion", ["sync", "batched:4"])
@pytest.mark.parametrize(
    ("strategy", "params"), VARIANTS, ids=[f"{s}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for s, p in VARIANTS]
)
def test_native_parameter_variants_equal_the_model(strategy: str, params: dict[str, Any], completion: str) -> None:
    differential(replay_input("bulk_tcp.pcapng", "8"), strategy, get_strategy(strategy).Params(**params), completion)


def test_delay_completion_completes_everything_and_transmits_the_trace() -> None:
    """delay:D counts depend on timing (how many calls each poll completes), so only what does not is compared."""
    inp = replay_input("request_response.pcapng", "none")
    compiled = native.NativeReplayer(inp, "reuse", get_strategy("reuse").Params(), CompletionPolicy.parse("delay:2us"))
    outcome = compiled.timed_round(0, False, capture=True)
    # completed once 2 µs old, except the calls still pending at the end of the round, which the drain completes
    assert outcome.error is None and (outcome.latency_ns >= 0).all() and np.median(outcome.latency_ns) >= 2000
    assert outcome.counts["nbls_sent"] == outcome.counts["nbls_completed"] == inp.packets
    assert compiled.wire is not None and [f[0] for f in compiled.wire.packets] == [
        bytes(inp.frame(i)) for i in range(inp.packets)
    ]
    compiled.close_timed()


def test_paced_native_round_measures_from_the_schedule() -> None:
    from ndis_replay.engine.replay import parse_pacing

    inp = replay_input("small_packets.pcapng", "8")
    pacing = parse_pacing("pps=2000000")
    compiled = native.NativeReplayer(
        inp, "alloc", get_strategy("alloc").Params(), CompletionPolicy("sync"), pacing=pacing
    )
    outcome = compiled.timed_round(0, False)
    assert outcome.lag_ns is not None and (outcome.lag_ns >= 0).all()
    offsets = pacing.offsets(inp)
    assert offsets is not None
    # the calls started on schedule: each at or after its due time (a generous bound on how late: 5 ms)
    assert (outcome.lag_ns < 5_000_000).mean() > 0.9
    assert (outcome.latency_ns >= 0).all()
    compiled.close_timed()


# --- bad input -------------------------------------------------------------------------------------------------------


def _arrays(inp: ReplayInput) -> dict[str, Any]:
    return {
        "data": inp.data,
        "frame_offset": inp.frame_offset.astype(np.int64),
        "header_len": inp.header_len.astype(np.int64),
        "index": inp.index.astype(np.int64),
        "call_start": inp.call_start.astype(np.int64),
    }


def _engine(**override: Any) -> Any:
    core = native.core()
    kw: dict[str, Any] = {
        "strategy": core.STRATEGY_REUSE,
        "params": (0, 0, 0, 1, 1),
        "completion": core.COMPLETION_SYNC,
        "count": 0,
        "delay_ns": 0,
        "from_current_mdl": False,
        **_arrays(replay_input("request_response.pcapng", "none")),
        "max_in_flight": 1,
    }
    kw.update(override)
    return core.Engine(**kw)


HUGE = 1_000_001


@pytest.mark.parametrize(
    ("override", "error"),
    [
        (
            {
                "index": np.zeros(0, dtype=np.int64),
                "frame_offset": np.zeros(1, dtype=np.int64),
                "header_len": np.zeros(0, dtype=np.int64),
                "call_start": np.zeros(1, dtype=np.int64),
            },
            ValueError,
        ),
        ({"frame_offset": np.zeros(3, dtype=np.float64)}, TypeError),
        ({"header_len": np.zeros(5, dtype=np.int64)}, ValueError),
        ({"call_start": np.array([0, 5], dtype=np.int32)}, TypeError),
        ({"call_start": np.array([1, 638], dtype=np.int64)}, ValueError),
        ({"call_start": np.array([0, 0, 638], dtype=np.int64)}, ValueError),
        ({"frame_offset": np.arange(639, dtype=np.int64) * 10**9}, ValueError),
        ({"frame_offset": np.arange(639 * 2, dtype=np.int64)[::2]}, TypeError),
        ({"data": "not bytes"}, TypeError),
        ({"params": (0, 0)}, TypeError),
        ({"params": (-1, 0, 0, 0, 0)}, ValueError),
        ({"strategy": 99}, ValueError),
        ({"completion": 2, "count": 0}, ValueError),
        ({"strategy": 2, "params": (8, 0, 0, 0, 0)}, ValueError),
        (
            {
                "index": np.zeros(HUGE, dtype=np.int64),
                "header_len": np.zeros(HUGE, dtype=np.int64),
                "frame_offset": np.zeros(HUGE + 1, dtype=np.int64),
                "call_start": np.array([0, HUGE], dtype=np.int64),
            },
            ValueError,
        ),
    ],
    ids=[
        "empty-trace",
        "float-offsets",
        "short-header-len",
        "int32-calls",
        "calls-not-from-0",
        "empty-call",
        "frames-beyond-data",
        "strided",
        "data-not-bytes",
        "too-few-params",
        "negative-param",
        "unknown-strategy",
        "batched-0",
        "alloc-context-not-16",
        "huge-send-call",
    ],
)
def test_bad_input_is_refused_with_an_exception(override: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _engine(**override)


def test_bad_round_arrays_are_refused() -> None:
    engine = _engine()
    inp = replay_input("request_response.pcapng", "none")
    c, n = inp.calls, inp.packets
    ok = [np.zeros(c, dtype=np.int64) for _ in range(3)] + [np.zeros(n, dtype=np.int64)]
    with pytest.raises(ValueError):
        engine.round(*ok[:3], np.zeros(n - 1, dtype=np.int64))
    with pytest.raises(TypeError):
        engine.round(*ok[:3], np.zeros(n, dtype=np.int32))
    readonly = np.zeros(c, dtype=np.int64)
    readonly.flags.writeable = False
    with pytest.raises(TypeError):
        engine.round(readonly, *ok[1:])
    with pytest.raises(TypeError):
        engine.round(*ok, np.zeros(c, dtype=np.int64))  # offsets without due
    engine.round(*ok)  # the engine is still usable
    engine.close()
    with pytest.raises(RuntimeError):
        engine.round(*ok)


def test_cli_native_without_the_core_exits_4(tmp_path: Path) -> None:
    """A core that cannot be imported: --engine native is one line on stderr and exit 4; the default falls back to
    Python with a note (an empty folder shadows nothing: the module is blocked by a finder)."""
    block = tmp_path / "sitecustomize.py"
    block.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ndis_replay.engine.native._core':\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    trace = str(SAMPLES / "request_response.pcapng")
    args = [sys.executable, "-m", "ndis_replay", "run", trace, "-s", "reuse", "--rounds", "1", "--warmup", "0"]
    native_run = subprocess.run(
        [*args, "--engine", "native", "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env
    )
    assert native_run.returncode == 4
    assert "native core is not built" in native_run.stderr and len(native_run.stderr.strip().splitlines()) == 1
    fallback = subprocess.run([*args, "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert fallback.returncode == 0, fallback.stderr
    assert "native core is not built" in fallback.stderr
    assert '"engine": "python"' in (tmp_path / "b" / "run.json").read_text()


def test_run_records_the_engine_per_strategy(tmp_path: Path) -> None:
    from ndis_replay.results import load

    trace = str(SAMPLES / "request_response.pcapng")
    config = tmp_path / "variants.toml"
    config.write_text('[strategy.reuse-retreat]\nbase = "reuse"\nheader = "retreat"\n')  # not native
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ndis_replay",
            "run",
            trace,
            "-s",
            "reuse",
            "-s",
            "reuse-retreat",
            "--config",
            str(config),
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},  # the whole table, engine column included
    )
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "r")
    assert {s.name: s.engine for s in result.strategies} == {"reuse": "native", "reuse-retreat": "python"}
    assert "native" in done.stdout and "python" in done.stdout
    # a floor for each way of measuring, the first strategy's first
    floors = result.measurement_overheads
    assert floors is not None and [(f["engine"], f["timing"]) for f in floors] == [
        ("native", "runs:32"),
        ("python", "call"),
    ]
    assert result.measurement_overhead == floors[0]
    assert "harness floor (no-op strategy, native, runs:32)" in done.stdout
    assert "harness floor (no-op strategy, python, call)" in done.stdout


# --- NDIS 5 (ndis5.c): the differential tests above cover the defaults through NATIVE_STRATEGIES ---------------------

NDIS5_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("ndis5-alloc", {"split_header": False}),
    # one static descriptor: overflow descriptors come and go, static ones leave circulation (freed while overflow
    # ones are out)
    ("ndis5-alloc", {"descriptors": 1}),
    ("ndis5-alloc", {"descriptors": 2, "overflow": 64, "protocol_reserved": 64}),
    ("ndis5-reuse", {"keep_buffers": False}),
    ("ndis5-reuse", {"split_header": False}),
    ("ndis5-reuse", {"pool_depth": 1}),
    ("ndis5-reuse", {"pool_depth": 1, "keep_buffers": False, "protocol_reserved": 0}),
]
#: the sanitizer child's NDIS 5 engines (strategy id, the core's five parameters)
NDIS5_CHILD = (
    "(core.STRATEGY_NDIS5_ALLOC, (0, 0, 16, 1, 0)), (core.STRATEGY_NDIS5_ALLOC, (1, 101, 16, 0, 0)), "
    "(core.STRATEGY_NDIS5_REUSE, (0, 1, 1, 16, 0)), (core.STRATEGY_NDIS5_REUSE, (1, 0, 1, 0, 0))"
)


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize(
    ("strategy", "params"),
    NDIS5_VARIANTS,
    ids=[f"{s}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for s, p in NDIS5_VARIANTS],
)
@pytest.mark.parametrize("trace", ["bulk_tcp.pcapng", "small_packets.pcapng"])
def test_native_ndis5_variants_equal_the_model(
    strategy: str, params: dict[str, Any], completion: str, trace: str
) -> None:
    differential(replay_input(trace, "8"), strategy, get_strategy(strategy).Params(**params), completion)


@pytest.mark.parametrize("strategy", ["ndis5-alloc", "ndis5-reuse"])
def test_ndis5_delay_completion_completes_everything_and_transmits_the_trace(strategy: str) -> None:
    inp = replay_input("request_response.pcapng", "8")
    compiled = native.NativeReplayer(
        inp, strategy, get_strategy(strategy).Params(), CompletionPolicy.parse("delay:2us")
    )
    outcome = compiled.timed_round(0, False, capture=True)
    assert outcome.error is None and (outcome.latency_ns >= 0).all() and np.median(outcome.latency_ns) >= 2000
    assert outcome.counts["packets_sent"] == outcome.counts["packets_completed"] == inp.packets
    assert compiled.wire is not None and [f[0] for f in compiled.wire.packets] == [
        bytes(inp.frame(i)) for i in range(inp.packets)
    ]
    compiled.close_timed()
    closed = _snapshot(compiled.closed_counters)
    # everything given back after drain and unbind: every packet and buffer, and (delay completes a call at a time)
    # the MDL lookaside keeps only whole 232-byte blocks
    assert closed["packet_allocs"] == closed["packet_frees"] and closed["buffer_allocs"] == closed["buffer_frees"]
    assert closed["mem_bytes"] % 232 == 0


def test_ndis5_pool_exhaustion_fails_the_round_in_both_engines() -> None:
    """ndis5-alloc with one descriptor and no overflow: the second packet of a send call gets
    NDIS_STATUS_RESOURCES, a failed round in either engine (not a crash)."""
    inp = replay_input("bulk_tcp.pcapng", "8")
    params = get_strategy("ndis5-alloc").Params(descriptors=1, overflow=0)
    python = StrategyReplayer(inp, lambda: get_strategy("ndis5-alloc")(params), LOOPBACK, CompletionPolicy("sync"))
    python.open_timed()
    compiled = native.NativeReplayer(inp, "ndis5-alloc", params, CompletionPolicy("sync"))
    expected = python.timed_round(0, False)
    got = compiled.timed_round(0, False)
    assert expected.error is not None and got.error is not None and compiled.failed
    compiled.close_timed()


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        (6, (0, 0, 8, 1, 0)),
        (6, (0, 0, 20, 1, 0)),
        (6, (70000, 0, 16, 1, 0)),
        (7, (0, 1, 1, 12, 0)),
        (7, (65536, 1, 1, 16, 0)),
        (7, (0, 1, 1, 4104, 0)),
    ],
    ids=[
        "alloc-reserved-short",
        "alloc-reserved-not-8",
        "alloc-too-many",
        "reuse-reserved-not-8",
        "reuse-too-deep",
        "reuse-reserved-too-big",
    ],
)
def test_ndis5_bad_parameters_are_refused(strategy: int, params: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        _engine(strategy=strategy, params=params)


# --- sanitizers ------------------------------------------------------------------------------------------------------

CHILD = r"""
import array, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("_core", sys.argv[1])
core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core)
folder = sys.argv[2]
def load(name):
    a = array.array("q")
    with open(f"{folder}/{name}.bin", "rb") as fh:
        a.frombytes(fh.read())
    return a
with open(f"{folder}/frames.bin", "rb") as fh:
    data = fh.read()
fo, hl, ix, cs = (load(n) for n in ("frame_offset", "header_len", "index", "call_start"))
n, c = len(ix), len(cs) - 1
runs = 0
ENGINES = ((core.STRATEGY_REUSE, (0, 0, 0, 1, 1)), (core.STRATEGY_REUSE, (1, 1, 1, 1, 1)),
           (core.STRATEGY_ALLOC, (16, 0, 1, 0, 0)), (core.STRATEGY_ALLOC, (16, 16, 1, 1, 0)), *NDIS5, *NDIS6)
for which, params in ENGINES:
    for kind, count in ((core.COMPLETION_SYNC, 0), (core.COMPLETION_DEFERRED, 0), (core.COMPLETION_BATCHED, 4),
                        (core.COMPLETION_DELAY, 0)):
        engine = core.Engine(which, params, kind, count, 1000, kind == core.COMPLETION_DEFERRED, data, fo, hl, ix,
                             cs, 8)
        t = [array.array("q", bytes(8 * c)) for _ in range(3)]
        complete = array.array("q", bytes(8 * n))
        offsets = array.array("q", [k * 50 for k in range(c)])
        due = array.array("q", bytes(8 * c))
        engine.round(*t, complete)
        engine.round(*t, complete, offsets, due)
        if kind == core.COMPLETION_SYNC:
            engine.round(*t, complete, run_calls=5)
            assert min(complete) == 0, "runs: completions are marked, not read from the clock"
        else:
            try:
                engine.round(*t, complete, run_calls=5)
            except ValueError:
                pass
            else:
                raise AssertionError("runs of calls were accepted with a deferred completion")
        start, end, wire = engine.round(*t, complete, capture=True)
        # a fragmenting clone (mtu 600) repeats each header: its bytes are the differential tests'
        assert wire[0] == data[fo[0]:fo[n]] or which == core.STRATEGY_CLONE and params[2] == 600, "wire"
        assert min(complete) > 0
        try:
            engine.round(*t, array.array("q", bytes(8)))
        except ValueError:
            pass  # refused, as it must be: a completion array shorter than the trace
        else:
            raise AssertionError("a completion array shorter than the trace was accepted")
        engine.close()
        runs += 1
core.baseline_round(cs, *t, complete, 3)
core.baseline_round(cs, *t, complete, c + 1)
# the tap write path (writev per NB, the write log, back-pressure, the far side called with the GIL taken back) into
# a datagram socket pair instead of a device: one datagram per frame, read by a far side that only counts
import socket
near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
far.setblocking(False)
for end in (near, far):
    end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
got = {"logged": 0, "written": 0, "read": 0}
def drain(log, size):
    entries = array.array("q")
    entries.frombytes(log)
    got["logged"] += len(entries) // 4
    got["written"] += sum(1 for i in range(3, len(entries), 4) if entries[i] > 0)
    while True:
        try:
            far.recv(1 << 17)
        except BlockingIOError:
            return (0, 0)
        got["read"] += 1
for which, params in ENGINES:
    for kind, count in ((core.COMPLETION_SYNC, 0), (core.COMPLETION_BATCHED, 4)):
        engine = core.Engine(which, params, kind, count, 1000, False, data, fo, hl, ix, cs, 8)
        engine.attach_tap(near.fileno(), drain, 8, 4, 1 << 20, 0)
        t = [array.array("q", bytes(8 * c)) for _ in range(3)]
        complete = array.array("q", bytes(8 * n))
        engine.round(*t, complete)
        if kind == core.COMPLETION_SYNC:
            engine.round(*t, complete, run_calls=5)
        engine.close()
        runs += 1
assert got["logged"] == got["written"] == got["read"] > 0, got
print("ok", runs, core.CLOCK, flush=True)
os._exit(0)  # the interpreter's finalisation is not under test (valgrind reports its own noise there)
"""


def _prepare_child(tmp_path: Path) -> Path:
    inp = replay_input("bulk_tcp.pcapng", "8")
    folder = tmp_path / "input"
    folder.mkdir()
    for name in ("frame_offset", "header_len", "index", "call_start"):
        (folder / f"{name}.bin").write_bytes(getattr(inp, name).astype(np.int64).tobytes())
    (folder / "frames.bin").write_bytes(bytes(inp.data))
    (tmp_path / "child.py").write_text(CHILD.replace("*NDIS5", NDIS5_CHILD).replace("*NDIS6", NDIS6_CHILD))
    return folder


def test_asan_and_ubsan_report_nothing(tmp_path: Path) -> None:
    """The same sources built with -fsanitize=address,undefined (no recovery: any report aborts), replayed in a
    subprocess with libasan preloaded (the interpreter is not instrumented; its exit-time leaks are not ours, so
    leak detection is off — the counters prove our frees)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc is not None, "a C compiler builds the core; the sanitizer build needs it too"
    folder = _prepare_child(tmp_path)
    module = tmp_path / f"_core{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    build = subprocess.run(
        [
            gcc,
            "-std=c11",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-shared",
            "-fPIC",
            f"-I{include}",
            "-o",
            str(module),
            *(str(NATIVE_DIR / s) for s in SOURCES),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    libasan = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    env = {
        **os.environ,
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    done = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(module), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith(
        f"ok {(4 + 2) * (4 + NDIS5_CHILD.count('STRATEGY_NDIS5') + NDIS6_CHILD.count('core.STRATEGY_'))}"
    )
    assert "runtime error" not in done.stderr and "AddressSanitizer" not in done.stderr


#: a memcheck error record names one of these when it comes from the core (the installed build or its sources)
OURS = re.compile(r"_core\.cpython|\b(core|ndis|loopback|strategies|ndis5|strategies6)\.c:")
MEMCHECK_ERROR = re.compile(r"Invalid (read|write|free)|uninitialised|Conditional jump|Mismatched free|overlap")


def test_valgrind_memcheck_is_clean(tmp_path: Path) -> None:
    """The installed build under valgrind memcheck (PYTHONMALLOC=malloc so the interpreter's arenas do not confuse
    it): no error record whose stack passes through the core. The interpreter itself is not under test (this one
    reports ~500 uninitialised-value records for `python -c "import os; os._exit(0)"` alone), so records are kept
    only when a frame is ours. `make test` installs valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed (make test installs it)")
    folder = _prepare_child(tmp_path)
    module = native.core().__file__
    assert module is not None
    done = subprocess.run(
        [
            valgrind,
            "--tool=memcheck",
            "--num-callers=40",
            sys.executable,
            str(tmp_path / "child.py"),
            module,
            str(folder),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONMALLOC": "malloc"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith(
        f"ok {(4 + 2) * (4 + NDIS5_CHILD.count('STRATEGY_NDIS5') + NDIS6_CHILD.count('core.STRATEGY_'))}"
    )
    assert "ERROR SUMMARY" in done.stderr
    records = re.split(r"^==\d+== $", done.stderr, flags=re.MULTILINE)
    ours = [r for r in records if MEMCHECK_ERROR.search(r) and OURS.search(r)]
    assert ours == [], ours[0]


def test_array_module_buffers_are_accepted() -> None:
    """Any int64 buffer will do (array.array('q') here), not only numpy."""
    inp = replay_input("request_response.pcapng", "none")
    engine = _engine(call_start=array.array("q", inp.call_start.tolist()))
    engine.close()


# --- NDIS 6 copy, cache, clone (strategies6.c): the differential tests above cover the defaults ----------------------

NDIS6_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("copy", {"backfill": 32}),
    ("copy", {"buffers": "mdl-and-data"}),
    ("copy", {"buffers": "mdl-and-data", "backfill": 16, "pool_depth": 1}),
    ("copy", {"pool_depth": 1}),
    ("cache", {"cache_depth": 0}),
    ("cache", {"cache_depth": 2}),
    ("cache", {"cache_depth": 3, "cpus": 3}),
    ("cache", {"mdl_source": "locked", "split_header": False}),
    ("cache", {"context_size": 0, "context_backfill": 16}),
    ("clone", {"use_original_mdls": False}),
    ("clone", {"upper": "alloc"}),
    ("clone", {"upper": "alloc", "use_original_mdls": False}),
    # fragments: every frame above 600 bytes is cut, each fragment retreated for a copy of its header
    ("clone", {"mtu": 600}),
    ("clone", {"mtu": 600, "upper": "alloc", "use_original_mdls": False}),
    ("clone", {"mtu": 64}),
]
#: the sanitizer child's NDIS 6 engines of strategies6.c (strategy id, the core's five parameters)
NDIS6_CHILD = (
    "(core.STRATEGY_COPY, (0, 0, 0, 0, 0)), (core.STRATEGY_COPY, (1, 16, 1, 0, 0)), "
    "(core.STRATEGY_CACHE, (16, 0, 1, 2, 1)), (core.STRATEGY_CACHE, (16, 16, 3, 1, 3)), "
    "(core.STRATEGY_CLONE, (0, 0, 65536, 0, 0)), (core.STRATEGY_CLONE, (1, 1, 600, 0, 0))"
)


def _mtu(params: dict[str, Any]) -> int:
    return int(params.get("mtu", 0))


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize(
    ("strategy", "params"),
    NDIS6_VARIANTS,
    ids=[f"{s}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for s, p in NDIS6_VARIANTS],
)
@pytest.mark.parametrize("trace", ["bulk_tcp.pcapng", "small_packets.pcapng"])
def test_native_ndis6_variants_equal_the_model(
    strategy: str, params: dict[str, Any], completion: str, trace: str
) -> None:
    differential(
        replay_input(trace, "8"),
        strategy,
        get_strategy(strategy).Params(**params),
        completion,
        fragment_mtu=_mtu(params),
    )


@pytest.mark.parametrize(
    ("strategy", "miniport", "params"),
    [
        ("copy", {"backfill": 48}, {}),
        ("copy", {"backfill": 48}, {"backfill": 0}),
        ("clone", {"mtu": 1000}, {}),
        ("clone", {"mtu": 1000}, {"mtu": 700}),
    ],
    ids=["copy-miniport-backfill", "copy-own-backfill", "clone-miniport-mtu", "clone-own-mtu"],
)
def test_native_ndis6_takes_the_miniports_backfill_and_mtu(
    strategy: str, miniport: dict[str, Any], params: dict[str, Any]
) -> None:
    """copy's backfill -1 and clone's mtu 0 mean the miniport's: the native engine resolves them as the model."""
    loopback = LOOPBACK.Params(**miniport)
    mtu = params.get("mtu", miniport["mtu"]) if strategy == "clone" else 0
    differential(
        replay_input("bulk_tcp.pcapng", "8"),
        strategy,
        get_strategy(strategy).Params(**params),
        "deferred",
        miniport=loopback,
        fragment_mtu=mtu,
    )


@pytest.mark.parametrize("strategy", ["copy", "cache", "clone"])
def test_ndis6_delay_completion_completes_everything_and_transmits_the_trace(strategy: str) -> None:
    inp = replay_input("request_response.pcapng", "8")
    compiled = native.NativeReplayer(
        inp, strategy, get_strategy(strategy).Params(), CompletionPolicy.parse("delay:2us")
    )
    outcome = compiled.timed_round(0, False, capture=True)
    assert outcome.error is None and (outcome.latency_ns >= 0).all() and np.median(outcome.latency_ns) >= 2000
    # clone: the protocol's parents and the filter's children are both sent, only the children reach the miniport
    assert outcome.counts["nbls_sent"] == inp.packets * (2 if strategy == "clone" else 1)
    assert outcome.counts["nbls_completed"] == inp.packets
    assert compiled.wire is not None and [f[0] for f in compiled.wire.packets] == [
        bytes(inp.frame(i)) for i in range(inp.packets)
    ]
    compiled.close_timed()


@pytest.mark.parametrize(
    ("strategy", "params"),
    [("copy", {"backfill": 32}), ("copy", {"buffers": "mdl-and-data", "backfill": 16}), ("clone", {"mtu": 600})],
    ids=["copy-backfill", "copy-mdl-and-data", "clone-fragments"],
)
def test_ndis6_current_mdl_describes_the_same_bytes(strategy: str, params: dict[str, Any]) -> None:
    """A miniport gathering from CurrentMdl + CurrentMdlOffset (copy's DataOffset = backfill, fragments' retreated
    header MDLs) transmits what the walk from MdlChain does."""
    inp = replay_input("bulk_tcp.pcapng", "8")
    compiled = native.NativeReplayer(
        inp, strategy, get_strategy(strategy).Params(**params), CompletionPolicy("sync"), from_current_mdl=True
    )
    compiled.timed_round(0, False, capture=True)
    assert compiled.wire is not None
    assert compiled.wire.packets == [expected_frames(inp, i, _mtu(params)) for i in range(inp.packets)]
    compiled.close_timed()
