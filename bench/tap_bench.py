"""The TAP miniport against ``tcpreplay --topspeed``: frames per second written and verified, and loss (issue 6).

Both replay the same 100,000 small frames (60 bytes) into a TAP device of their own, each in a network namespace
of its own (nothing touches the host's interfaces):

* **ndis-replay**: the ``reuse`` strategy on the tap miniport (sync completion), one timed round after the checked
  pass, on each engine: the Python model, and the native core (issue 7: one ``writev`` per NB in C, the far side
  read and checked by the same Python code between calls). *Written* = frames / the round's timed window (write,
  complete, and the far side's reads at half the window); *verified* = frames the far side (an AF_PACKET socket on
  the device) received intact / the whole round including the last reads.
* **tcpreplay --topspeed** on the device: what it sends leaves through the TAP device, so its far side is the TAP
  file descriptor; a reader thread drains it and counts the bench's frames that came out, while an AF_PACKET
  socket on the device counts those the kernel accepted onto it (outgoing). *Delivered* = frames read from the fd
  / tcpreplay's run time, measured here (its own report is printed beside it, not used).

Needs root. Run: ``make bench-tap`` (or ``python bench/tap_bench.py [--packets N]``).
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ndis_replay.engine.miniports import CompletionPolicy, netns
from ndis_replay.engine.miniports.tap import ETH_P_ALL, PACKET_OUTGOING, TapMiniport, TapParams, _tun_fd
from ndis_replay.engine.native import NativeReplayer
from ndis_replay.engine.replay import ReplayInput, StrategyReplayer
from ndis_replay.engine.strategies.reuse import ReuseParams, ReuseStrategy
from ndis_replay.importers import open_trace
from ndis_replay.importers.pcapng import WriterInterface, write_pcapng

MAGIC = b"NDRB"


def frames(count: int) -> list[bytes]:
    """Distinct 60-byte Ethernet frames: locally administered MACs, EtherType 0x88B5 (local experimental), a magic
    and the frame's number."""
    head = bytes.fromhex("02000000000202000000000188b5") + MAGIC
    return [head + struct.pack("!I", i) + bytes(60 - len(head) - 4) for i in range(count)]


def write_trace(path: Path, count: int) -> Path:
    """The frames as a pcapng of sends, 1 µs apart."""
    t0 = 1_700_000_000_000_000_000
    packets = [(0, t0 + i * 1000, f, len(f), "send") for i, f in enumerate(frames(count))]
    write_pcapng(path, packets, interfaces=[WriterInterface(name="bench0")])
    return path


def bench_miniport(path: Path, engine: str) -> dict[str, float]:
    """One timed round of ``reuse`` on the tap miniport on ``engine`` (after the checked pass, which verifies every
    frame too)."""
    inp = ReplayInput.from_trace(open_trace(path))
    params = TapMiniport.prepare_run(TapParams(), [1], str(path))
    try:
        replayer = StrategyReplayer(inp, ReuseStrategy, lambda: TapMiniport(params), CompletionPolicy("sync"))
        check = replayer.check()
        assert check.delivery is not None and check.failure is None, check.findings[:3]
        timed: StrategyReplayer | NativeReplayer = replayer
        if engine == "native":
            timed = NativeReplayer(inp, "reuse", ReuseParams(), CompletionPolicy("sync"), miniport_params=params)
        timed.open_timed()
        timed.timed_round(0, True)  # warm-up: pools at steady state
        started = time.perf_counter_ns()
        outcome = timed.timed_round(1, False)
        finished = time.perf_counter_ns()
        timed.close_timed()
    finally:
        TapMiniport.finish_run(params)
    d = outcome.delivery or {}
    lost = d.get("frames", 0) - d.get("delivered", 0)
    return {
        "written_fps": inp.packets / ((outcome.end_ns - outcome.start_ns) / 1e9),
        "verified_fps": d.get("delivered", 0) / ((finished - started) / 1e9),
        "delivered": float(d.get("delivered", 0)),
        "lost": float(lost),
        "checked_pass_problems": float(sum(v for k, v in check.delivery.items() if k not in ("frames", "delivered"))),
    }


def bench_tcpreplay(path: Path, count: int) -> dict[str, float]:
    """``tcpreplay --topspeed`` into a TAP device of its own namespace; its far side counted here."""
    name = netns.new_name()
    netns.create(name)
    device = "ndrbench"
    stop = threading.Event()
    counts = {"fd": 0, "outgoing": 0}
    try:
        with netns.entered(name):
            netns.write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
            fd = _tun_fd(device, "tap")
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=device)[0], state="up", txqlen=10_000)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
            sock.bind((device, 0))
        os.set_blocking(fd, False)
        sock.setblocking(False)

        def read() -> None:
            buf = bytearray(2048)
            while not stop.is_set():
                readable, _, _ = select.select([fd, sock], [], [], 0.05)
                if fd in readable:
                    while True:
                        try:
                            n = os.readv(fd, [buf])
                        except BlockingIOError:
                            break
                        if buf[14:18] == MAGIC and n == 60:
                            counts["fd"] += 1
                if sock in readable:
                    while True:
                        try:
                            n, address = sock.recvfrom_into(buf)
                        except BlockingIOError:
                            break
                        if address[2] == PACKET_OUTGOING and buf[14:18] == MAGIC:
                            counts["outgoing"] += 1

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started = time.perf_counter()
        done = subprocess.run(
            ["tcpreplay", "--topspeed", "-i", device, str(path)],
            capture_output=True,
            text=True,
            preexec_fn=lambda: _setns(name),  # tcpreplay runs inside the namespace
            check=False,
        )
        elapsed = time.perf_counter() - started
        time.sleep(0.5)  # the reader catches up
        stop.set()
        reader.join()
        os.close(fd)
        sock.close()
        if done.returncode != 0:
            raise SystemExit(f"tcpreplay failed: {done.stderr.strip()}")
        claimed = next((line.strip() for line in done.stdout.splitlines() if "Rated:" in line), "")
    finally:
        netns.remove(name)
    return {
        "delivered_fps": counts["fd"] / elapsed,
        "delivered": float(counts["fd"]),
        "on_device": float(counts["outgoing"]),
        "lost": float(count - counts["fd"]),
        "seconds": elapsed,
        "claimed": claimed,  # type: ignore[dict-item]
    }


def _setns(name: str) -> None:
    from pyroute2 import netns as pyroute2_netns

    pyroute2_netns.setns(name, flags=0)


def main() -> None:
    """Run both and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=100_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("tap_bench: needs root (network namespaces, TAP devices)")
    if shutil.which("tcpreplay") is None:
        raise SystemExit("tap_bench: tcpreplay is missing: apt-get install tcpreplay (or make bench-tap)")
    with tempfile.TemporaryDirectory(prefix="ndis-replay-tapbench-") as folder:
        path = write_trace(Path(folder) / "small.pcapng", args.packets)
        ours = {engine: bench_miniport(path, engine) for engine in ("python", "native")}
        theirs = bench_tcpreplay(path, args.packets)
    print(f"{args.packets:,} frames of 60 bytes, each into a TAP device of its own network namespace")
    print(f"{'':28}{'written/s':>12}{'verified/s':>12}{'delivered':>11}{'lost':>8}")
    for engine, row in ours.items():
        print(
            f"{f'ndis-replay tap, {engine}':28}{row['written_fps']:>12,.0f}{row['verified_fps']:>12,.0f}"
            f"{row['delivered']:>11,.0f}{row['lost']:>8,.0f}"
        )
    print(
        f"{'tcpreplay --topspeed':28}{'':>12}{theirs['delivered_fps']:>12,.0f}{theirs['delivered']:>11,.0f}"
        f"{theirs['lost']:>8,.0f}"
    )
    seen = f"{theirs['on_device']:,.0f}"
    print(f"tcpreplay: {seen} frames seen leaving on the device (AF_PACKET); it said: {theirs['claimed']}")
    for engine, target in (("python", 0.5), ("native", 0.8)):
        row = ours[engine]
        ratio = row["verified_fps"] / theirs["delivered_fps"] if theirs["delivered_fps"] else float("inf")
        print(f"{engine}: verified rate / tcpreplay's delivered rate: {ratio:.2f} (target ≥ {target} with zero loss)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
