"""Circuit relay v2 (``/libp2p/circuit/relay/0.2.0/hop`` and ``/stop``): py-libp2p 0.8.1's, both sides.

A host behind a NAT cannot be dialled, so it *reserves* a slot on a public relay and announces
``<relay address>/p2p/<relay id>/p2p-circuit``. A peer dials that address: the relay opens a
STOP stream to the reserved host and copies bytes between the two streams. Noise runs end to
end inside the circuit, so the relay carries ciphertext it cannot read.

The wire format, the reservation exchange and the dialling side are 0.8.1's. Its relay side is
wrapped, for defects that matter on the internet:

- a RESERVE naming a ``peer`` reserved a slot *for that peer*: anyone could take slots in
  another host's name. Here a reservation is always for the peer that asked;
- the copy loop kept its streams in a dict keyed by peer, so the end of one circuit to a host
  closed every other circuit to it, and it reset both streams at a half-close (EOF) instead of
  passing the half-close on. :meth:`_relay_data` is replaced: per-circuit streams, half-close
  passed on, the circuit's duration enforced by a deadline (0.8.1 checked it only between
  reads, so an idle circuit outlived it), bytes counted into :class:`RelayStats`;
- it had no bound on circuits at once over all peers (only per reservation): ``circuits`` is one;
- any peer could open a STOP stream to a host directly and have it upgrade a "connection"
  inside it. Here a host accepts STOP only from a relay it holds a reservation with.

Each limit of :class:`RelayLimits` is enforced and tested (``tests/test_relay.py``).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from .errors import Unreachable
from .host import connect, split_peer_address, transport_address

log = logging.getLogger("peerlight.p2p")

RELAY_CHUNK = 256 * 1024
HOP_STREAMS_SPARE = 64  # HOP streams open beyond the circuits' own (reservations being made)
RESERVATIONS_PER_IP = 8  # hosts of one IP (a household, a carrier-grade NAT) holding slots at once
RESERVE_SECONDS = 15.0  # one reservation exchange, the connection to the relay included
RENEW_MARGIN_SECONDS = 120.0  # renew a reservation this long before it expires
KEEPER_SECONDS = 30.0  # how often the reservation keeper looks at its relays
RETRY_RELAY_SECONDS = 300.0  # a relay that refused or failed is not tried again for this long
CIRCUIT_DIAL_SECONDS = 20.0


@dataclass(frozen=True)
class RelayLimits:
    """What a relay gives (``network.relay_*``); 0 for bytes or seconds means no limit."""

    reservations: int = 128  # hosts holding a slot at once
    circuits: int = 64  # circuits open at once, over all hosts
    circuits_per_peer: int = 4  # circuits open at once to one reserved host
    circuit_bytes: int = 128 * 2**20  # both directions of one circuit together
    circuit_seconds: int = 300  # one circuit's lifetime
    reservation_seconds: int = 3600  # a reservation's lifetime before it must be renewed


@dataclass
class RelayStats:
    """What a relay did, for ``share show``."""

    circuits_open: int = 0
    circuits: int = 0
    circuits_refused: int = 0
    circuits_cut: int = 0  # ended by a limit (bytes or time)
    bytes_relayed: int = 0

    def to_wire(self, reservations: int) -> dict[str, int]:
        return {"reservations": reservations, **self.__dict__}


def is_circuit(address: str) -> bool:
    return "/p2p-circuit" in address


def circuit_address(relay_address: str, relay_id: str) -> str:
    """The address a host reserved on a relay announces (its own ``/p2p/<id>`` is appended by the host)."""
    return f"{relay_address.split('/p2p/')[0]}/p2p/{relay_id}/p2p-circuit"


def relay_of(circuit: str) -> tuple[str, str]:
    """(relay peer id, relay transport address) of ``…/p2p/<relay>/p2p-circuit[/p2p/<target>]``;
    ValueError when it names no relay."""
    return split_peer_address(circuit.split("/p2p-circuit")[0])


def connections_to(host: Any, peer_id: Any) -> list[Any]:
    """``host``'s connections to ``peer_id`` (an ID), as a list (0.8.1 keeps one or a list)."""
    connections = host.get_network().connections.get(peer_id) or []
    return connections if isinstance(connections, list) else [connections]


def is_relayed(connection: Any) -> bool:
    """Whether a connection (a swarm's, or the muxed one a stream runs on) goes through a relay."""
    try:
        return any(is_circuit(str(a)) for a in connection.get_transport_addresses())
    except Exception:
        return False


def _ip_of(connection: Any) -> str | None:
    """The remote IP of a swarm connection's muxed connection."""
    try:
        return str(connection.secured_conn.get_remote_address()[0])
    except Exception:
        return None


@functools.cache
def _classes() -> tuple[type, type]:
    """The hop and stop services (made on first use: importing libp2p is slow, the CLI never does)."""
    from libp2p.network.stream.exceptions import StreamEOF, StreamReset
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
    from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

    limit_exceeded, no_reservation = StatusCode.RESOURCE_LIMIT_EXCEEDED, StatusCode.NO_RESERVATION

    class HopService(CircuitV2Protocol):  # type: ignore[misc]
        stats: RelayStats
        max_circuits: int
        cut: weakref.WeakSet[Any]  # streams of circuits already counted as cut
        open_from: dict[str, int]  # circuits open per source peer
        open_to: dict[str, int]  # circuits open per reserved target
        hop_streams: dict[str, int]  # HOP streams open per peer

        async def _handle_stop_stream(self, stream: Any) -> None:
            await stream.reset()  # a relay is dialled directly: nobody relays *to* it

        async def _handle_hop_stream(self, stream: Any) -> None:
            # 0.8.1 serves any number of HOP streams, each reading message after message: a
            # peer gets its circuits' streams and two more at once, the relay its circuits and
            # HOP_STREAMS_SPARE more.
            peer = str(stream.muxed_conn.peer_id)
            if self.hop_streams.get(peer, 0) >= self.limits.max_circuit_conns + 2 or sum(self.hop_streams.values()) >= self.max_circuits + HOP_STREAMS_SPARE:
                await stream.reset()
                return
            self.hop_streams[peer] = self.hop_streams.get(peer, 0) + 1
            try:
                await super()._handle_hop_stream(stream)
            finally:
                self.hop_streams[peer] -= 1
                if not self.hop_streams[peer]:
                    del self.hop_streams[peer]

        async def _handle_reserve(self, stream: Any, msg: Any) -> None:
            msg.ClearField("peer")  # a slot is for the peer that asks, never one it names
            manager, asker = self.resource_manager, stream.muxed_conn.peer_id
            # A slot lives while its host stays connected: slots of hosts that left are freed
            # first (0.8.1 counted them until they expired, an hour: 128 keys that reserved and
            # hung up locked every host out). And one IP holds only a few.
            for held in [p for p in manager._reservations if not manager._is_peer_connected(p)]:
                del manager._reservations[held]
            ip = _ip_of(stream.muxed_conn)
            if asker not in manager._reservations and ip is not None:
                same_ip = sum(1 for p in manager._reservations if ip in {_ip_of(c.muxed_conn) for c in connections_to(self.host, p)})
                if same_ip >= RESERVATIONS_PER_IP:
                    log.info("relay: a reservation refused, %d held from %s", same_ip, ip)
                    await self._send_status(stream, limit_exceeded, "too many reservations from one address")
                    return
            await super()._handle_reserve(stream, msg)

        async def _handle_connect(self, stream: Any, msg: Any) -> None:
            source = str(stream.muxed_conn.peer_id)
            try:
                target_id = ID(msg.peer.id)
            except Exception:
                target_id = None
            target = str(target_id)
            # Checked and counted with no await between (0.8.1 counted a circuit only once
            # established, so simultaneous CONNECTs all passed its per-target check), and a
            # CONNECT to a host that holds no slot is refused before it costs a circuit.
            if target_id is None or self.resource_manager.get_reservation(target_id) is None:
                self.stats.circuits_refused += 1
                await self._send_status(stream, no_reservation, "no reservation")
                await stream.reset()
                return
            limits = self.limits
            if (
                self.stats.circuits_open >= self.max_circuits
                or self.open_to.get(target, 0) >= limits.max_circuit_conns
                or self.open_from.get(source, 0) >= limits.max_circuit_conns
            ):
                self.stats.circuits_refused += 1
                log.info("relay: a circuit refused, %d open", self.stats.circuits_open)
                await self._send_status(stream, limit_exceeded, "too many circuits")
                await stream.reset()
                return
            self.stats.circuits_open += 1
            self.stats.circuits += 1
            self.open_to[target] = self.open_to.get(target, 0) + 1
            self.open_from[source] = self.open_from.get(source, 0) + 1
            try:
                await super()._handle_connect(stream, msg)
            finally:
                self.stats.circuits_open -= 1
                for counts, key in ((self.open_to, target), (self.open_from, source)):
                    counts[key] -= 1
                    if not counts[key]:
                        del counts[key]
                self._active_relays.clear()  # 0.8.1's dict keyed by peer: not used by the copy below

        async def _relay_data(self, source: Any, sink: Any, peer_id: Any, deadline: float | None = None, budget: list[int] | None = None) -> None:
            left = math.inf if deadline is None else deadline - time.monotonic()
            failed = over_budget = False
            with trio.move_on_after(max(0.0, left)) as timer:
                try:
                    while True:
                        data = await source.read(RELAY_CHUNK)
                        if not data:
                            break
                        if budget is not None:
                            if len(data) > budget[0]:
                                over_budget = True
                                break
                            budget[0] -= len(data)
                        await sink.write(data)
                        self.stats.bytes_relayed += len(data)
                except StreamEOF:
                    pass
                except (StreamReset, Exception) as exc:  # one side went away: the other learns it
                    log.debug("relay: a circuit ended: %s", exc)
                    failed = True
            if (over_budget or timer.cancelled_caught) and source not in self.cut:  # once per circuit, not per direction
                self.cut.update((source, sink))
                self.stats.circuits_cut += 1
                log.info("relay: a circuit to %s cut at its %s limit", peer_id, "bytes" if over_budget else "time")
            if over_budget or timer.cancelled_caught or failed:
                for end in (source, sink):
                    with trio.move_on_after(2):
                        try:
                            await end.reset()
                        except Exception:
                            pass
                return
            with trio.move_on_after(2):
                try:
                    await sink.close_write()  # pass the half-close on: the other direction goes on
                except Exception:
                    pass

    class StopService(CircuitV2Protocol):  # type: ignore[misc]
        relays: set[str]

        async def _handle_stop_stream(self, stream: Any) -> None:
            relay = str(stream.muxed_conn.peer_id)
            if relay not in self.relays:
                log.info("relay: a STOP stream from %s, which holds no reservation of ours, refused", relay)
                await stream.reset()
                return
            await super()._handle_stop_stream(stream)

    return HopService, StopService


class RunningRelay:
    """A relay while it serves: what it holds and did."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def describe(self) -> dict[str, int]:
        manager = self._service.resource_manager
        manager._clean_expired()
        return self._service.stats.to_wire(len(manager._reservations))

    def holds(self, peer_id: str) -> bool:
        """Whether ``peer_id`` holds a reservation now."""
        return self._service.resource_manager.get_reservation(_peer(peer_id)) is not None


@asynccontextmanager
async def relay_service(host: Any, limits: RelayLimits) -> AsyncIterator[RunningRelay]:
    """Serve circuit relay v2 on ``host`` with ``limits`` for the block."""
    from libp2p.relay.circuit_v2.resources import RelayLimits as Libp2pLimits
    from libp2p.tools.anyio_service import background_trio_service

    hop_class, _ = _classes()
    service = hop_class(
        host,
        Libp2pLimits(
            duration=limits.circuit_seconds,
            data=limits.circuit_bytes,
            max_circuit_conns=limits.circuits_per_peer,
            max_reservations=limits.reservations,
            reservation_ttl=limits.reservation_seconds,
        ),
        allow_hop=True,
    )
    service.stats, service.max_circuits, service.cut = RelayStats(), limits.circuits, weakref.WeakSet()
    service.open_from, service.open_to, service.hop_streams = {}, {}, {}
    async with background_trio_service(service):
        yield RunningRelay(service)


@dataclass
class HeldReservation:
    relay_id: str
    address: str  # the relay's transport address, as this host reached it (what peers dial)
    expires: float


@dataclass
class Reservations:
    """A host's reservations on relays, kept by :meth:`keep`: what it announces while it cannot be dialled.

    Relays come from the configuration and the DHT, and a relay found on the DHT is a stranger:
    its slot is announced at the address this host reached it at (never one a record names),
    one relay's failures never stall the others (each try has a deadline, a pass too), and a
    relay that fails or refuses is left alone for ``RETRY_RELAY_SECONDS``."""

    host: Any
    wanted: int = 2
    usable: Callable[[str], bool] = lambda address: True  # which relay addresses peers could dial
    held: dict[str, HeldReservation] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)  # set when the circuit addresses change
    _stop: Any = None
    _transport: Any = None
    _failed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from . import quirks

        quirks.announce_circuit_addresses(self.host, self.circuit_addresses)  # identify and the DHT tell peers of them

    def circuit_addresses(self) -> list[str]:
        return [circuit_address(held.address, held.relay_id) for held in self.held.values()]

    def describe(self) -> list[dict[str, Any]]:
        return [{"relay": held.relay_id, "address": held.address, "expires": held.expires} for held in self.held.values()]

    async def keep(self, candidates: Callable[[], Awaitable[Sequence[str]]]) -> None:
        """Hold reservations with ``wanted`` relays among ``candidates()`` (full multiaddrs of relays):
        renew each before it expires, replace one that goes away or refuses. Runs until cancelled."""
        from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
        from libp2p.relay.circuit_v2.transport import CircuitV2Transport
        from libp2p.tools.anyio_service import background_trio_service

        _, stop_class = _classes()
        self._stop = stop_class(self.host, allow_hop=False)
        self._stop.relays = set()
        self._transport = CircuitV2Transport(self.host, self._stop, RelayConfig(roles=RelayRole.STOP))
        async with background_trio_service(self._stop):
            try:
                while True:
                    with trio.move_on_after(KEEPER_SECONDS * 4):  # one pass never stalls the renewals of the next
                        await self._tend(candidates)
                    await trio.sleep(KEEPER_SECONDS)
            finally:
                self._stop.relays.clear()
                if self.held:
                    self.held.clear()
                    self._changed()

    def _changed(self) -> None:
        self._stop.relays = set(self.held)
        self.changed.set()
        self.changed = trio.Event()

    async def _tend(self, candidates: Callable[[], Awaitable[Sequence[str]]]) -> None:
        for relay_id, held in list(self.held.items()):
            if held.expires - time.time() < RENEW_MARGIN_SECONDS or not self._connected(relay_id):
                if not await self._reserve(relay_id, [held.address]):  # reconnects a relay that dropped us
                    log.info("relay: lost the reservation on %s", relay_id)
                    del self.held[relay_id]
                    self._failed[relay_id] = time.time()
                    self._changed()
        now = time.time()
        self._failed = {relay: at for relay, at in self._failed.items() if now - at < RETRY_RELAY_SECONDS}
        if len(self.held) >= self.wanted:
            return
        try:
            offered = list(await candidates())
        except Exception as exc:  # no DHT now: keep what is held, try again later
            log.info("relay: finding relays failed: %s", exc)
            return
        by_relay: dict[str, list[str]] = {}
        for text in offered:
            try:
                relay_id, address = split_peer_address(text)
            except ValueError:
                continue
            if not is_circuit(address) and self.usable(address):
                by_relay.setdefault(relay_id, []).append(address)
        for relay_id, addresses in by_relay.items():
            if len(self.held) >= self.wanted:
                break
            if relay_id in self.held or relay_id == str(self.host.get_id()) or relay_id in self._failed:
                continue
            if await self._reserve(relay_id, addresses[:4]):
                log.info("relay: reserved a slot on %s", relay_id)
                self._changed()
            else:
                self._failed[relay_id] = time.time()

    def _connected(self, relay_id: str) -> bool:
        return bool(self.host.get_network().connections.get(_peer(relay_id)))

    async def _reserve(self, relay_id: str, addresses: list[str]) -> bool:
        """Reserve (or renew) a slot on ``relay_id``, reached at one of ``addresses``."""
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP

        with trio.move_on_after(RESERVE_SECONDS):
            try:
                if not self._connected(relay_id):
                    address = await connect(self.host, relay_id, addresses)
                else:  # already connected (a DHT neighbour): announce where we reach it, if it is one of these
                    address = _connected_at(self.host, relay_id, addresses)
                if not address:
                    return False
                stream = await self.host.new_stream(_peer(relay_id), [HOP])
                try:
                    if not await self._transport._make_reservation(stream, _peer(relay_id)):
                        return False
                finally:
                    await stream.close()
                # The relay says when the slot expires: held to a sane range (0 would renew at
                # every pass, a year never).
                now = time.time()
                expires = float(self._transport._reservations.get(_peer(relay_id), 0))
                expires = min(max(expires, now + 2 * RENEW_MARGIN_SECONDS), now + 86400)
                self.held[relay_id] = HeldReservation(relay_id, transport_address(address), expires)
                return True
            except Exception as exc:
                log.info("relay: reserving on %s failed: %s", relay_id, exc)
        return False


def _connected_at(host: Any, peer_id: str, addresses: list[str]) -> str | None:
    """Which of ``addresses`` this host's connection to ``peer_id`` goes to; None when none does
    (an inbound connection, or a record naming addresses the peer is not at)."""
    remote = {str(a) for connection in connections_to(host, _peer(peer_id)) for a in _addresses(connection)}
    return next((a for a in addresses if transport_address(a) in remote), None)


def _peer(peer_id: str) -> Any:
    from libp2p.peer.id import ID

    return ID.from_base58(peer_id)


async def dial_circuit(host: Any, target: str, circuit: str, timeout: float = CIRCUIT_DIAL_SECONDS) -> None:
    """Connect ``host`` to ``target`` through the relay ``circuit`` names (``…/p2p/<relay>/p2p-circuit``).

    0.8.1's circuit transport is not registered with the swarm (``host.connect`` drops
    ``/p2p-circuit`` addresses), so it is used directly: reach the relay, ask it to CONNECT,
    and upgrade the stream it gives (Noise + Yamux, end to end) into a connection of the swarm."""
    from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
    from libp2p.relay.circuit_v2.transport import CircuitV2Transport
    from multiaddr import Multiaddr

    relay_id, relay_address = relay_of(circuit)
    with trio.move_on_after(timeout):
        await connect(host, relay_id, [relay_address])
        transport = CircuitV2Transport(host, None, RelayConfig(roles=RelayRole.STOP))
        try:
            await transport.dial(Multiaddr(f"{relay_address}/p2p/{relay_id}/p2p-circuit/p2p/{target}"))
        except Exception as exc:
            raise Unreachable(f"the relay {relay_id} did not connect us to {target}: {exc}") from None
        return
    raise Unreachable(f"no circuit to {target} through {relay_id} within {timeout:g} s")


def connection_kind(host: Any, peer_id: str) -> str | None:
    """``direct`` or ``relayed``: how ``host`` is connected to ``peer_id`` now (a direct one is
    preferred by new streams); None when it is not."""
    try:
        connections = connections_to(host, _peer(peer_id))
    except Exception:  # not a peer id
        return None
    if not connections:
        return None
    return "relayed" if all(is_relayed(c) for c in connections) else "direct"


def _addresses(connection: Any) -> list[Any]:
    try:
        return list(connection.get_transport_addresses())
    except Exception:
        return []
