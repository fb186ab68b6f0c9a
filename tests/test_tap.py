"""The tap miniport on real TAP/TUN devices in network namespaces the harness creates (issue 6).

Every built-in strategy replays the sample traces through a TAP device with nothing lost, changed or reordered on the
far side; a strategy that transmits stale bytes is caught there (WIRE-DELIVERY); no namespace or device survives a
run, an error in a run or SIGTERM; ``miniports --cleanup`` removes leftovers; an unprivileged user gets exit 4 and
one line. Tests skip only where the kernel refuses TAP devices or namespaces to root (detected, not assumed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ndis_replay.cli import cli
from ndis_replay.engine.config import resolve_miniport, resolve_strategy
from ndis_replay.engine.miniports import CompletionPolicy, netns
from ndis_replay.engine.miniports.tap import TapMiniport, TapParams
from ndis_replay.engine.native import NATIVE_STRATEGIES, NativeReplayer
from ndis_replay.engine.replay import ReplayInput, StrategyReplayer
from ndis_replay.engine.strategies import STRATEGIES
from ndis_replay.engine.strategies.clone import CloneParams, CloneStrategy
from ndis_replay.errors import ExitCode, MiniportUnavailable
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng
from ndis_replay.results import RunResult
from ndis_replay.runner import RunOptions, run_trace
from ndis_replay.worker import MiniportSpec, StrategySpec
from tests.conftest import SAMPLES
from tests.replay_helpers import T0, StaleDataOffset


def _tap_refusal() -> str | None:
    """Why this machine cannot run the tap miniport (None: it can): try the real thing once."""
    if os.geteuid() != 0:
        return "not root: the tap miniport needs root or CAP_NET_ADMIN (CI runs as root)"
    try:
        params = TapMiniport.prepare_run(TapParams(), [1], "probe")
    except MiniportUnavailable as exc:
        return f"the kernel refuses TAP devices or network namespaces here: {exc.what}: {exc.reason}"
    assert isinstance(params, TapParams)
    TapMiniport.finish_run(params)
    return None


REFUSAL = _tap_refusal()
pytestmark = pytest.mark.skipif(REFUSAL is not None, reason=REFUSAL or "")


def _harness_devices() -> list[str]:
    """Network devices of the harness's naming (ndr…) in this (the root) namespace: there must never be any."""
    return [name for name in os.listdir("/sys/class/net") if name.startswith("ndr")]


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """Every test leaves no namespace of the harness and no harness device behind."""
    before = set(netns.leftovers())
    yield
    assert set(netns.leftovers()) <= before, f"left behind: {sorted(set(netns.leftovers()) - before)}"
    assert not _harness_devices()


def _tap(completion: str = "sync") -> RunOptions:
    miniport = resolve_miniport("tap")
    spec = MiniportSpec("tap", TapMiniport, miniport.params)
    return RunOptions(miniport=spec, completion=CompletionPolicy.parse(completion), rounds=2, warmup=1, pin=False)


def _spec(name: str) -> StrategySpec:
    strategy = resolve_strategy(name)
    return StrategySpec(name, type(strategy), strategy.params, type(strategy).name)


def _assert_delivered(result: RunResult) -> None:
    for s in result.strategies:
        d = s.delivery
        assert d is not None, s.name
        # the checked pass and every round (warm-up included), each frame of each replayed packet
        assert d["passes"] == 1 + result.rounds + result.warmup, s.name
        assert d["frames"] >= result.trace["replayed"] * d["passes"], s.name
        assert d["delivered"] == d["frames"], (s.name, d)
        assert d["problems"] == 0, (s.name, d)
        assert s.status == "ok" and not s.findings, (s.name, s.findings[:3])


@pytest.mark.parametrize(
    ("trace", "completion"),
    [
        ("request_response.pcapng", "sync"),
        ("bulk_tcp.pcapng", "deferred"),
        ("small_packets.pcapng", "batched:8"),
        ("request_response.pcapng", "delay:20us"),
    ],
    ids=lambda v: str(v).removesuffix(".pcapng"),
)
def test_every_builtin_strategy_is_delivered_intact(trace: str, completion: str) -> None:
    names = STRATEGIES.available()
    assert len(names) >= 7
    result = run_trace(open_trace(SAMPLES / trace), [_spec(n) for n in names], _tap(completion), path=trace)
    assert [s.name for s in result.strategies] == names
    assert result.miniport["name"] == "tap" and result.miniport["completion"] == completion
    _assert_delivered(result)


@pytest.mark.parametrize("completion", ["sync", "batched:4"], ids=["sync", "batched"])
def test_stale_bytes_are_caught_on_the_far_side(completion: str) -> None:
    spec = StrategySpec(StaleDataOffset.name, StaleDataOffset, StaleDataOffset.Params(), "reuse")
    result = run_trace(open_trace(SAMPLES / "request_response.pcapng"), [spec], _tap(completion))
    s = result.strategies[0]
    assert s.delivery is not None
    assert s.delivery["corrupted"] + s.delivery["refused"] > 0 and s.delivery["delivered"] < s.delivery["frames"]
    assert s.finding_counts.get("WIRE-DELIVERY", 0) > 0
    rules = {f["rule"] for f in s.findings}
    assert "WIRE-DELIVERY" in rules
    far = next(f for f in s.findings if f["rule"] == "WIRE-DELIVERY")
    assert "far side" in far["message"] or "refused" in far["message"]
    assert s.status != "ok"


def _raw_ip_capture(path: Path, count: int = 40) -> Path:
    """A LINKTYPE_RAW (101) capture of IPv4 and IPv6 packets (first nibble 4 or 6, as TUN requires)."""
    packets = []
    for i in range(count):
        if i % 2:
            head = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + bytes(32)
        else:
            head = bytes([0x45, 0, 0, 28 + i, 0, i, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
        frame = head + bytes((i * 7 + j) % 256 for j in range(8 + i))
        packets.append((0, T0 + i * 1000, frame, len(frame), "send"))
    write_pcapng(path, packets, interfaces=[WriterInterface(linktype=101, name="tun0")])
    return path


def test_raw_ip_goes_through_tun(tmp_path: Path) -> None:
    trace = open_trace(_raw_ip_capture(tmp_path / "raw.pcapng"))
    result = run_trace(trace, [_spec("reuse"), _spec("ndis5-alloc")], _tap())
    _assert_delivered(result)


def test_other_link_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wifi.pcapng"
    write_pcapng(path, [(0, T0, bytes(64), 64, "send")], interfaces=[WriterInterface(linktype=105, name="wlan0")])
    result = CliRunner().invoke(
        cli, ["run", str(path), "-s", "reuse", "--miniport", "tap", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert "not supported for the tap miniport" in result.stderr
    assert not (tmp_path / "o").exists()


# --- cleanup -------------------------------------------------------------------------------------------------------


def test_an_error_mid_run_removes_the_namespace() -> None:
    seen: list[list[str]] = []
    ours = f"{netns.PREFIX}{os.getpid()}-"  # another run on the machine (a CI run beside this one) has its own

    def progress(what: str, done: int, total: int) -> None:
        seen.append([name for name in netns.leftovers() if name.startswith(ours)])
        if done == 2:
            raise RuntimeError("stopped mid-run")

    with pytest.raises(RuntimeError, match="stopped mid-run"):
        run_trace(
            open_trace(SAMPLES / "small_packets.pcapng"), [_spec("reuse"), _spec("alloc")], _tap(), progress=progress
        )
    assert seen and seen[0], "the run had a namespace while it ran"
    assert not set(seen[0]) & set(netns.leftovers())


def _script() -> Path:
    return Path(sys.executable).with_name("ndis-replay")


def test_sigterm_mid_run_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "res"
    before = set(netns.leftovers())
    proc = subprocess.Popen(
        [str(_script()), "run", str(SAMPLES / "small_packets.pcapng"), "-s", "reuse", "-s", "alloc",
         "--miniport", "tap", "--rounds", "500", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not set(netns.leftovers()) - before:
        assert proc.poll() is None and time.monotonic() < deadline, "the run never made its namespace"
        time.sleep(0.05)
    time.sleep(1.5)  # into the rounds
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not out.exists()
    assert set(netns.leftovers()) <= before
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout if shutil.which("ip") else ""
    assert " ndr" not in listed


def test_miniports_cleanup_removes_leftovers() -> None:
    name = f"{netns.PREFIX}test-{secrets.token_hex(3)}"
    netns.create(name)
    try:
        assert name in netns.leftovers()
        result = CliRunner().invoke(cli, ["miniports", "--cleanup"])
        assert result.exit_code == 0, result.output
        assert f"removed network namespace {name}" in result.output
        assert name not in netns.listing()
    finally:
        if name in netns.listing():
            netns.remove(name)


def test_cleanup_spares_a_running_run() -> None:
    name = f"{netns.PREFIX}1-{secrets.token_hex(3)}"  # pid 1 is alive, but not ndis-replay: a leftover
    netns.create(name)
    try:
        assert name in netns.cleanup().removed
    finally:
        if name in netns.listing():
            netns.remove(name)


# --- environment errors ------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_unprivileged_user_gets_exit_4_and_one_line() -> None:
    # pytest's tmp_path sits in root's 0700 folder: the unprivileged user gets one of its own
    scratch = Path(tempfile.mkdtemp(prefix="ndis-replay-test-"))
    try:
        scratch.chmod(0o777)
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(_script()), "run",
             str(SAMPLES / "request_response.pcapng"), "-s", "reuse", "--miniport", "tap", "--out",
             str(scratch / "o")],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(scratch)}, cwd=scratch,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert done.returncode == ExitCode.ENVIRONMENT, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ndis-replay: error: the tap miniport cannot get a network namespace")
    assert "root" in lines[0] and "--miniport loopback" in lines[0]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_unprivileged_cleanup_gets_exit_4() -> None:
    name = f"{netns.PREFIX}test-{secrets.token_hex(3)}"
    netns.create(name)
    try:
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(_script()), "miniports",
             "--cleanup"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == ExitCode.ENVIRONMENT, (done.stdout, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "root" in done.stderr
    finally:
        netns.remove(name)


def test_tap_device_uses_the_users_device_and_leaves_it(tmp_path: Path) -> None:
    """--tap-device: the run writes to a device the user made (here: in a namespace this test creates, the CLI run
    inside it) and leaves it as it found it — still there, same MTU and state, no harness namespace made."""
    from pyroute2 import NetNS
    from pyroute2 import netns as pyroute_netns

    name = f"ndis-replay-test-{secrets.token_hex(3)}"
    pyroute_netns.create(name)
    try:
        with NetNS(name) as ns:
            ns.link("add", ifname="usertap0", kind="tuntap", mode="tap")
            (index,) = ns.link_lookup(ifname="usertap0")
            ns.link("set", index=index, mtu=1400, state="up")
            before = ns.get_links(index)[0]
        out = tmp_path / "res"
        result = subprocess.run(
            [str(_script()), "run", str(SAMPLES / "small_packets.pcapng"), "-s", "reuse", "--tap-device", "usertap0",
             "--rounds", "1", "--out", str(out)],
            capture_output=True, text=True, timeout=300, preexec_fn=lambda: pyroute_netns.setns(name),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        delivery = RunResult.from_dict(json.loads((out / "run.json").read_text())).strategies[0].delivery
        assert delivery is not None and delivery["dropped"] == 0 and delivery["corrupted"] == 0
        assert delivery["delivered"] == delivery["frames"] > 0
        with NetNS(name) as ns:
            after = ns.get_links(ns.link_lookup(ifname="usertap0")[0])[0]
        assert after.get_attr("IFLA_MTU") == before.get_attr("IFLA_MTU") == 1400
        assert after["flags"] & 1  # still up (IFF_UP), as the user left it
    finally:
        pyroute_netns.remove(name)


@pytest.mark.parametrize("rule", ["pps=2000", "original"])
def test_pacing_holds_on_the_tap_miniport(tmp_path: Path, rule: str) -> None:
    """Pacing is the loop's, not the loopback's: on the tap miniport pps=2000 is achieved within 5% (median of 3
    rounds) and `original` keeps the trace's own rate, with every frame delivered."""
    trace = tmp_path / "paced.pcapng"
    packets = [(0, T0 + i * 1_000_000, bytes((i + j) % 251 for j in range(60)), 60, "send") for i in range(300)]
    write_pcapng(trace, packets, interfaces=[WriterInterface(name="eth0")])
    out = tmp_path / "res"
    result = CliRunner().invoke(
        cli,
        ["run", str(trace), "-s", "reuse", "--miniport", "tap", "--pace", rule, "--rounds", "3", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    run = RunResult.from_dict(json.loads((out / "run.json").read_text()))
    reuse = run.strategies[0]
    assert reuse.pace is not None and run.requested_rate is not None
    assert run.requested_rate["packets_per_s"] == pytest.approx(1000 if rule == "original" else 2000, rel=0.01)
    assert reuse.pace["packets_per_s"] == pytest.approx(run.requested_rate["packets_per_s"], rel=0.05)
    assert reuse.delivery is not None and reuse.delivery["dropped"] == reuse.delivery["corrupted"] == 0


# --- the native core's TAP write path (issue 7) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trace", "completion"),
    [
        ("request_response.pcapng", "sync"),
        ("bulk_tcp.pcapng", "deferred"),
        ("small_packets.pcapng", "batched:8"),
        ("request_response.pcapng", "delay:20us"),
    ],
    ids=lambda v: str(v).removesuffix(".pcapng"),
)
def test_every_native_strategy_is_delivered_intact_by_the_native_tap_path(trace: str, completion: str) -> None:
    """Every strategy the core implements runs its timed rounds in C on the tap miniport (writev per NB), and the
    far side receives every frame of every round intact."""
    names = list(NATIVE_STRATEGIES)
    options = dataclasses.replace(_tap(completion), engine="native")
    result = run_trace(open_trace(SAMPLES / trace), [_spec(n) for n in names], options, path=trace)
    assert sorted(s.name for s in result.strategies) == sorted(names)
    assert {s.name: s.engine for s in result.strategies} == dict.fromkeys(names, "native")
    _assert_delivered(result)


def _short_frames(path: Path) -> Path:
    """Ethernet frames of 60 bytes, every fifth cut to 10 (shorter than an Ethernet header: TAP refuses it)."""
    packets = []
    for i in range(200):
        frame = bytes.fromhex("020000000002020000000001") + bytes((i + j) % 251 for j in range(48))
        frame = frame[:10] if i % 5 == 4 else frame
        packets.append((0, T0 + i * 1000, frame, len(frame), "send"))
    write_pcapng(path, packets, interfaces=[WriterInterface(name="eth0")])
    return path


@pytest.fixture(scope="module")
def tap_params() -> Iterator[TapParams]:
    """A namespace of the harness for the differential tests (removed at the end of the module)."""
    params = TapMiniport.prepare_run(TapParams(), [1], "differential")
    assert isinstance(params, TapParams)
    yield params
    TapMiniport.finish_run(params)


@pytest.mark.parametrize("window", [256, 3], ids=["window-256", "window-3"])
@pytest.mark.parametrize("completion", ["sync", "deferred", "batched:4", "delay:5us"])
@pytest.mark.parametrize("strategy", NATIVE_STRATEGIES)
@pytest.mark.parametrize("trace", ["request_response.pcapng", "short-frames"])
def test_native_tap_counts_equal_the_python_engines(
    tap_params: TapParams, tmp_path: Path, trace: str, strategy: str, completion: str, window: int
) -> None:
    """On the same trace, the native TAP path and the Python tap miniport count the same NDIS operations and the
    same far-side delivery (frames, delivered, refused, …) in every round — with back-pressure inside a send call
    (window 3) and writes the device refuses (10-byte frames) included. Under delay:D only delivery is compared (the
    operation counts depend on timing there, as on the loopback)."""
    path = _short_frames(tmp_path / "short.pcapng") if trace == "short-frames" else SAMPLES / trace
    inp = ReplayInput.from_trace(open_trace(path))
    params = dataclasses.replace(tap_params, window=window)
    policy = CompletionPolicy.parse(completion)
    made = resolve_strategy(strategy)
    python = StrategyReplayer(inp, lambda: type(made)(made.params), lambda: TapMiniport(params), policy)
    native = NativeReplayer(inp, strategy, made.params, policy, miniport_params=params)
    try:
        for number in range(2):
            want = python.timed_round(number, number == 0)
            got = native.timed_round(number, number == 0)
            assert want.error is None and got.error is None, (want.error, got.error)
            if policy.kind != "delay":  # delay:D counts depend on timing (what each poll finds due)
                assert got.counts == want.counts
            assert got.delivery == want.delivery
            assert want.delivery is not None and want.delivery["frames"] >= inp.packets
            refused = want.delivery["refused"]
            assert (refused > 0) == (trace == "short-frames")
            assert want.delivery["delivered"] + refused == want.delivery["frames"]
    finally:
        python.close_timed()
        native.close_timed()


@pytest.mark.parametrize("completion", ["sync", "batched:4"], ids=["sync", "batched"])
def test_stale_bytes_are_still_caught_with_the_native_engine(completion: str) -> None:
    """A seeded bug outside the core (StaleDataOffset) keeps its timed rounds in Python under ``engine=native``, and
    the checked pass (Python) and the far side still catch it."""
    spec = StrategySpec(StaleDataOffset.name, StaleDataOffset, StaleDataOffset.Params(), "reuse")
    options = dataclasses.replace(_tap(completion), engine="native")
    result = run_trace(open_trace(SAMPLES / "request_response.pcapng"), [spec], options)
    s = result.strategies[0]
    assert s.engine == "python"
    assert s.delivery is not None and s.delivery["delivered"] < s.delivery["frames"]
    assert s.finding_counts.get("WIRE-DELIVERY", 0) > 0 and s.status != "ok"


@pytest.mark.parametrize("completion", ["sync", "batched:4"])
def test_native_tap_back_pressure_inside_a_send_call(tap_params: TapParams, completion: str) -> None:
    """clone with mtu=256 cuts bulk_tcp's 1514-byte frames into up to 7 NBs of one send call: with a window of 2
    the core must stop for the far side inside the call (make_room) — and still counts and delivers exactly what
    the Python tap miniport does, fragments rejoined on the far side."""
    inp = ReplayInput.from_trace(open_trace(SAMPLES / "bulk_tcp.pcapng"))
    params = dataclasses.replace(tap_params, window=2)
    policy = CompletionPolicy.parse(completion)
    made = CloneStrategy(CloneParams(mtu=256))
    python = StrategyReplayer(inp, lambda: type(made)(made.params), lambda: TapMiniport(params), policy)
    native = NativeReplayer(inp, "clone", made.params, policy, miniport_params=params)
    try:
        want = python.timed_round(0, False)
        got = native.timed_round(0, False)
    finally:
        python.close_timed()
        native.close_timed()
    assert want.error is None and got.error is None, (want.error, got.error)
    assert got.counts == want.counts
    assert got.delivery == want.delivery
    assert want.delivery is not None and want.delivery["frames"] > 3 * inp.packets
    assert want.delivery["delivered"] == want.delivery["frames"]
