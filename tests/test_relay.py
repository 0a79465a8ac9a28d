"""Circuit relay v2 between real hosts on loopback: a host reserved on a relay is reached through
it, the relay carries only ciphertext, and every limit of the relay holds."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from peerlight.p2p import relay as relay_module
from peerlight.p2p.host import connect, listen_addresses, new_host, running
from peerlight.p2p.relay import RelayLimits, Reservations, circuit_address, connection_kind, relay_service

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
BLOB = "/test/blob/1.0.0"
MARKER = b"plain-text-the-relay-must-never-see:"


async def _send_blob(stream: Any) -> None:
    """A test protocol: the asker writes a size, gets that many bytes of a known plaintext back."""
    size = int((await stream.read(32)).decode())
    sent = 0
    while sent < size:
        chunk = (MARKER * (65536 // len(MARKER) + 1))[: min(65536, size - sent)]
        await stream.write(chunk)
        sent += len(chunk)
    await stream.close()


async def _fetch_blob(host: Any, target: str, size: int) -> bytes:
    from libp2p.peer.id import ID

    stream = await host.new_stream(ID.from_base58(target), [BLOB])
    await stream.write(str(size).encode())
    received = bytearray()
    try:
        while len(received) < size:
            chunk = await stream.read(65536)
            if not chunk:
                break
            received += chunk
    except Exception:
        pass
    return bytes(received)


class Net:
    """A relay, hosts behind it (reserved) and hosts dialling through it, all on loopback."""

    def __init__(self, stack: AsyncExitStack, nursery: trio.Nursery) -> None:
        self.stack, self.nursery = stack, nursery

    async def relay(self, limits: RelayLimits) -> tuple[Any, Any]:
        host = new_host(os.urandom(32))
        await self.stack.enter_async_context(running(host, LOOPBACK))
        running_relay = await self.stack.enter_async_context(relay_service(host, limits))
        return host, running_relay

    async def host(self) -> Any:
        host = new_host(os.urandom(32))
        host.set_stream_handler(BLOB, _send_blob)
        await self.stack.enter_async_context(running(host, LOOPBACK))
        return host

    async def reserved(self, relay: Any) -> tuple[Any, Reservations]:
        host = await self.host()
        reservations = Reservations(host, wanted=1)

        async def candidates() -> list[str]:
            return listen_addresses(relay)

        self.nursery.start_soon(reservations.keep, candidates)
        with trio.fail_after(20):
            while not reservations.held and not reservations._failed:
                await trio.sleep(0.05)
        return host, reservations


def _circuit(relay: Any) -> str:
    return circuit_address(listen_addresses(relay)[0], str(relay.get_id()))


async def test_a_host_behind_a_relay_is_reached_through_it_and_the_relay_sees_only_ciphertext(monkeypatch) -> None:
    seen = bytearray()
    hop_class, _ = relay_module._classes()
    original = hop_class._relay_data

    async def recording(self, source, sink, *args):  # type: ignore[no-untyped-def]
        class Recorder:  # what the relay's copy loop reads: the bytes an operator could look at
            async def read(self, n: int) -> bytes:
                data = await source.read(n)
                seen.extend(data)
                return data

            def __getattr__(self, name: str) -> Any:
                return getattr(source, name)

        await original(self, Recorder(), sink, *args)

    monkeypatch.setattr(hop_class, "_relay_data", recording)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = Net(stack, nursery)
        relay, describe = await net.relay(RelayLimits())
        behind, reservations = await net.reserved(relay)
        assert list(reservations.held) == [str(relay.get_id())]
        # It announces the circuit: the relay's address, the relay's id, then its own id.
        announced = [str(a) for a in behind.get_addrs()]
        assert f"{_circuit(relay)}/p2p/{behind.get_id()}" in announced, announced
        dialler = await net.host()
        await connect(dialler, str(behind.get_id()), [_circuit(relay)])
        assert connection_kind(dialler, str(behind.get_id())) == "relayed"
        blob = await _fetch_blob(dialler, str(behind.get_id()), 1_000_000)
        assert len(blob) == 1_000_000 and blob.startswith(MARKER)
        stats = describe.describe()
        assert stats["reservations"] == 1 and stats["circuits"] == 1 and stats["bytes_relayed"] >= 1_000_000, stats
        # The relay copied every byte of the blob, and none of it in the clear: Noise is end to end.
        assert len(seen) >= 1_000_000
        assert MARKER not in bytes(seen) and MARKER[:16] not in bytes(seen)
        nursery.cancel_scope.cancel()


async def test_a_relay_refuses_reservations_and_circuits_beyond_its_limits() -> None:
    limits = RelayLimits(reservations=2, circuits=1, circuits_per_peer=1)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = Net(stack, nursery)
        relay, describe = await net.relay(limits)
        (first, held_first), (second, held_second), (third, held_third) = [await net.reserved(relay) for _ in range(3)]
        assert [bool(r.held) for r in (held_first, held_second, held_third)] == [True, True, False]
        assert describe.describe()["reservations"] == 2
        # One circuit at once over the whole relay: the second dialler is refused while the first holds it.
        a, b = await net.host(), await net.host()
        await connect(a, str(first.get_id()), [_circuit(relay)])
        with pytest.raises(Exception, match="did not connect"):
            await connect(b, str(second.get_id()), [_circuit(relay)])
        assert describe.describe()["circuits_refused"] == 1
        # Nobody can be reached through a relay it holds no reservation on.
        with pytest.raises(Exception, match="did not connect"):
            await connect(b, str(third.get_id()), [_circuit(relay)])
        nursery.cancel_scope.cancel()


async def test_a_circuit_is_cut_at_its_byte_and_time_limits() -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = Net(stack, nursery)
        relay, describe = await net.relay(RelayLimits(circuit_bytes=300_000, circuit_seconds=0))
        behind, _ = await net.reserved(relay)
        dialler = await net.host()
        await connect(dialler, str(behind.get_id()), [_circuit(relay)])
        blob = await _fetch_blob(dialler, str(behind.get_id()), 2_000_000)
        assert len(blob) < 300_000, len(blob)
        with trio.fail_after(10):
            while describe.describe()["circuits_cut"] != 1 or connection_kind(dialler, str(behind.get_id())) is not None:
                await trio.sleep(0.05)

        slow, slow_describe = await net.relay(RelayLimits(circuit_seconds=1))
        behind_slow, _ = await net.reserved(slow)
        idle = await net.host()
        await connect(idle, str(behind_slow.get_id()), [_circuit(slow)])
        assert connection_kind(idle, str(behind_slow.get_id())) == "relayed"
        # An idle circuit (no byte moves) still ends at its time limit.
        with trio.fail_after(15):
            while slow_describe.describe()["circuits_cut"] != 1:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


async def test_a_reservation_is_for_the_asker_and_stop_streams_come_only_from_its_relays() -> None:
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId as Peer, StopMessage
    from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP, STOP_PROTOCOL_ID
    from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
    from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = Net(stack, nursery)
        relay, running_relay = await net.relay(RelayLimits())
        victim = await net.host()  # never reserves
        attacker = await net.host()
        await connect(attacker, str(relay.get_id()), listen_addresses(relay))
        stream = await attacker.new_stream(relay.get_id(), [HOP])
        await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE, peer=Peer(id=victim.get_id().to_bytes())))
        answer = await read_delimited_msg(stream, HopMessage)
        assert answer.status == StatusCode.OK
        # The slot is the attacker's own: nobody reaches the victim through the relay.
        assert running_relay.holds(str(attacker.get_id())) and not running_relay.holds(str(victim.get_id()))

        # A host behind a relay takes STOP streams from that relay only.
        behind, reservations = await net.reserved(relay)
        await connect(attacker, str(behind.get_id()), listen_addresses(behind))
        from libp2p.host.exceptions import StreamFailure
        from libp2p.network.stream.exceptions import StreamError

        with pytest.raises((StreamFailure, StreamError)), trio.fail_after(10):  # reset at once (during or after negotiation)
            stop = await attacker.new_stream(ID.from_base58(str(behind.get_id())), [STOP_PROTOCOL_ID])
            await write_delimited_msg(stop, StopMessage(type=StopMessage.CONNECT, peer=Peer(id=attacker.get_id().to_bytes())))
            await read_delimited_msg(stop, StopMessage)
        nursery.cancel_scope.cancel()


async def test_slots_of_hosts_that_left_are_freed_and_one_ip_holds_only_a_few(monkeypatch) -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = Net(stack, nursery)
        relay, running_relay = await net.relay(RelayLimits(reservations=2))
        first, _ = await net.reserved(relay)
        second, _ = await net.reserved(relay)
        assert running_relay.describe()["reservations"] == 2
        # Both hang up: 0.8.1 kept their slots for the reservation's hour, locking others out.
        for host in (first, second):
            await host.get_network().close_peer(relay.get_id())
        with trio.fail_after(5):
            while relay.get_network().connections.get(first.get_id()) or relay.get_network().connections.get(second.get_id()):
                await trio.sleep(0.05)
        third, held = await net.reserved(relay)
        assert held.held and running_relay.describe()["reservations"] == 1

        monkeypatch.setattr(relay_module, "RESERVATIONS_PER_IP", 2)  # every host here is at 127.0.0.1
        fourth, held_fourth = await net.reserved(relay)
        assert held_fourth.held
        _, held_fifth = await net.reserved(relay)
        assert not held_fifth.held and running_relay.describe()["reservations"] == 2
        nursery.cancel_scope.cancel()


async def test_simultaneous_circuits_to_one_host_stop_at_its_limit() -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        net = Net(stack, nursery)
        relay, running_relay = await net.relay(RelayLimits(circuits_per_peer=2, circuits=50))
        behind, _ = await net.reserved(relay)
        diallers = [await net.host() for _ in range(6)]
        outcomes: list[bool] = []

        async def dial(host: Any) -> None:
            try:
                await connect(host, str(behind.get_id()), [_circuit(relay)])
                outcomes.append(True)
            except Exception:
                outcomes.append(False)

        async with trio.open_nursery() as dials:  # all at once: 0.8.1 counted a circuit only once established
            for host in diallers:
                dials.start_soon(dial, host)
        assert sorted(outcomes) == [False] * 4 + [True] * 2, outcomes
        assert running_relay.describe()["circuits_refused"] == 4
        nursery.cancel_scope.cancel()


def test_a_circuit_address_names_its_target_and_keeps_its_relay() -> None:
    from peerlight.p2p.host import split_peer_address, transport_address

    relay, target = "12D3KooWFPHc2pWDkPBXKXo5eqHVHgUWMDGAegEaPbGBdnZeqg7p", "12D3KooWApF5XY9peSJM5J4J9XZa3bL6Z5XD949G5WbhsJ9xu83y"
    circuit = f"/ip4/203.0.113.2/tcp/4001/p2p/{relay}/p2p-circuit"
    assert split_peer_address(f"{circuit}/p2p/{target}") == (target, circuit)
    assert transport_address(f"{circuit}/p2p/{target}") == circuit
    assert split_peer_address(f"/ip4/203.0.113.2/tcp/4001/p2p/{relay}") == (relay, "/ip4/203.0.113.2/tcp/4001")
    with pytest.raises(ValueError, match="names no peer"):
        split_peer_address(circuit)
