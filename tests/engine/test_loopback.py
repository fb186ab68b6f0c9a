"""The loopback miniport: completion policies, FIFO, complete_ns stamping, DMA-style gathering, pcap wire."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ndis_replay.engine.miniports import COMPLETION_CHOICES, CompletionPolicy, ListWire, PcapWire
from ndis_replay.engine.miniports.loopback import LoopbackMiniport
from ndis_replay.engine.ndis import Ndis, NetBufferList
from ndis_replay.engine.strategies import BindContext, SendCall, Strategy, get_strategy
from ndis_replay.errors import ConfigError
from ndis_replay.importers import open_trace
from tests.conftest import SAMPLES
from tests.engine.driver import calls_from_frames, load_calls

FRAMES = [bytes((i * 3 + j) % 256 for j in range(60 + 10 * i)) for i in range(12)]


@pytest.mark.parametrize(
    ("text", "policy", "in_flight"),
    [
        ("sync", CompletionPolicy("sync"), 3),
        ("deferred", CompletionPolicy("deferred"), 3),
        ("batched:8", CompletionPolicy("batched", count=8), 10),
        ("delay:50us", CompletionPolicy("delay", delay_ns=50_000), None),
        (" delay:1.5ms ", CompletionPolicy("delay", delay_ns=1_500_000), None),
    ],
)
def test_policy_parsing(text: str, policy: CompletionPolicy, in_flight: int | None) -> None:
    parsed = CompletionPolicy.parse(text)
    assert parsed == policy
    assert CompletionPolicy.parse(str(parsed)) == parsed
    assert parsed.max_in_flight(3) == in_flight


@pytest.mark.parametrize("text", ["", "async", "batched", "batched:0", "batched:x", "delay:50", "delay:", "sync:1"])
def test_bad_policies(text: str) -> None:
    with pytest.raises(ConfigError) as error:
        CompletionPolicy.parse(text)
    assert (error.value.what, error.value.value, error.value.choices) == ("completion", text, COMPLETION_CHOICES)


class Recorder:
    """Bind a strategy and record the order of the NBLs each completion chain brings back."""

    def __init__(self, name: str, policy: str, batch: int = 1) -> None:
        self.ndis = Ndis(checked=True)
        self.port = LoopbackMiniport()
        info = self.port.open(self.ndis, CompletionPolicy.parse(policy))
        self.sends = calls_from_frames(FRAMES, [14] * len(FRAMES), batch)
        in_flight = CompletionPolicy.parse(policy).max_in_flight(self.sends.max_call) or 64
        self.strategy: Strategy = get_strategy(name)()
        self.strategy.bind(BindContext(self.ndis, info, self.sends.max_frame, self.sends.max_call, in_flight))
        self.stamps = np.zeros(len(FRAMES), dtype=np.int64)
        self.wire = ListWire()
        self.port.begin(self.stamps, self.wire)

    def send(self, call: SendCall) -> None:
        assert self.ndis.verifier is not None
        self.ndis.verifier.packet_index = call.indices[0]
        self.strategy.submit(self.strategy.build(call))

    def finish(self) -> None:
        self.port.drain()
        self.strategy.unbind()
        self.port.close()
        assert self.ndis.verifier is not None and self.ndis.verifier.finish() == []


@pytest.mark.parametrize("name", ["reuse", "ndis5-reuse"])
@pytest.mark.parametrize("policy", ["sync", "deferred", "batched:5", "delay:1ms"])
def test_every_packet_is_stamped_in_fifo_order(name: str, policy: str) -> None:
    rec = Recorder(name, policy)
    for call in rec.sends.calls:
        rec.send(call)
        rec.port.poll()
    rec.finish()
    assert rec.port.completed == len(FRAMES)
    assert (rec.stamps > 0).all()
    assert (np.diff(rec.stamps) >= 0).all()  # FIFO: the k-th completion is the k-th packet sent
    assert rec.wire.reassembled() == FRAMES


def test_sync_completes_inside_the_send() -> None:
    rec = Recorder("reuse", "sync")
    rec.send(rec.sends.calls[0])
    assert rec.port.completed == 1 and rec.port.pending == 0
    rec.finish()


def test_deferred_completes_on_poll_one_chain_per_call() -> None:
    rec = Recorder("alloc", "deferred", batch=3)
    rec.send(rec.sends.calls[0])
    rec.send(rec.sends.calls[1])
    assert rec.port.completed == 0 and rec.port.pending == 6
    before = rec.ndis.counters.ddk_calls
    rec.port.poll()
    assert rec.port.completed == 6
    assert rec.stamps[0] == rec.stamps[2] < rec.stamps[3] == rec.stamps[5]  # one stamp per completion call
    # 2 NdisMSendNetBufferListsComplete + per NBL NdisFreeNetBufferList and 2 NdisFreeMdl
    assert rec.ndis.counters.ddk_calls - before == 2 + 6 * 3
    for call in rec.sends.calls[2:]:
        rec.send(call)
    rec.finish()


def test_batched_completes_full_chains_and_drain_the_rest() -> None:
    seen: list[int] = []
    rec = Recorder("reuse", "batched:5")
    complete = rec.strategy._send_complete  # type: ignore[attr-defined]

    def spy(chain: NetBufferList) -> None:
        n, nbl = 0, chain
        while nbl is not None:
            n, nbl = n + 1, nbl.next
        seen.append(n)
        complete(chain)

    rec.ndis.register_protocol(send_net_buffer_lists_complete_handler=spy)
    for call in rec.sends.calls:
        rec.send(call)
        rec.port.poll()
    assert seen == [5, 5] and rec.port.pending == 2
    rec.finish()
    assert seen == [5, 5, 2]


def test_delay_waits_for_the_duration() -> None:
    rec = Recorder("reuse", "delay:20ms")
    rec.send(rec.sends.calls[0])
    rec.port.poll()
    assert rec.port.completed == 0
    time.sleep(0.03)
    rec.port.poll()
    assert rec.port.completed == 1
    for call in rec.sends.calls[1:]:
        rec.send(call)
    rec.finish()


def test_untimed_rounds_write_no_stamps() -> None:
    ndis = Ndis()
    port = LoopbackMiniport()
    info = port.open(ndis, CompletionPolicy.parse("sync"))
    sends = calls_from_frames(FRAMES, [14] * len(FRAMES))
    strategy = get_strategy("reuse")()
    strategy.bind(BindContext(ndis, info, sends.max_frame, 1, 1))
    port.begin(None, None)
    for call in sends.calls:
        strategy.submit(strategy.build(call))
    assert port.completed == len(FRAMES)
    strategy.unbind()


def test_pcap_wire_round_trips(tmp_path: Path) -> None:
    sends = load_calls(SAMPLES / "request_response.pcap", batch=4, limit=40)
    ndis = Ndis()
    port = LoopbackMiniport()
    info = port.open(ndis, CompletionPolicy.parse("batched:8"))
    strategy = get_strategy("copy")()
    strategy.bind(BindContext(ndis, info, sends.max_frame, sends.max_call, 11))
    wire = PcapWire(str(tmp_path / "wire.pcap"))
    port.begin(None, wire)
    for call in sends.calls:
        strategy.submit(strategy.build(call))
        port.poll()
    port.drain()
    strategy.unbind()
    wire.close()
    back = open_trace(tmp_path / "wire.pcap")
    assert [bytes(d) for d in back.frame["data"].to_list()] == sends.frames
