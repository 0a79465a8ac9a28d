"""Hole punching (DCUtR, ``/libp2p/dcutr``): two hosts behind NATs that met through a relay
upgrade to a direct TCP connection. py-libp2p 0.8.1's protocol, hardened.

Over the relayed connection, each side tells the other where its NAT will map its listen port
(its public IP, as peers observe it, with its TCP listen port: a NAT that keeps the port, as an
endpoint-independent one does, maps it there), then both dial each other from their listen
ports at once (TCP simultaneous open). Each NAT lets the other's SYN in as the answer to its
own. A symmetric NAT maps each connection to a new port, so the punch fails there and the
hosts stay on the relay, within its limits. New streams prefer the direct connection (0.8.1's
"best" connection), and the relayed one is closed a minute after.

0.8.1's protocol is wrapped for what a peer it meets over a relay could make it do:

- it answered DCUtR on any connection: a directly connected peer could have it dial any
  addresses it names. Here only over a relayed connection, one session per peer at a time;
- it dialled every address a peer named (up to 20, three rounds each) and every address the
  peerstore held for it (identify's listen addresses, which the peer chooses too). Here at most
  ``MAX_PEER_ADDRESSES`` addresses, each exactly ``/ip4|ip6/<ip>/tcp/<port>`` at a routable IP,
  and the peerstore is set to them before the dials;
- it told the peer the host's listen addresses when no NAT mapping was known, private LAN
  addresses included. Here only predictions at the observed public IPs, or nothing;
- it took the host's listen ports from its *announced* addresses, which a global share filters
  to public ones: behind a NAT there were none, and no punch ever worked outside a test with
  ``announce = "all"`` (see :func:`.quirks.hole_punch_from_listen_ports`).

The host that accepted the relayed connection (the NATed share) starts the punch, as the
specification has it; the dialling client only answers (``initiate=False``), so the two never
start sessions against each other at once.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from . import quirks
from .relay import connections_to, is_circuit, is_relayed

log = logging.getLogger("peerlight.p2p")

MAX_PEER_ADDRESSES = 4  # addresses of a peer dialled in one punch
MAX_EXAMINED = 16
CONCURRENT_PUNCHES = 4  # punches (dialling) at once, over all peers
SESSIONS_PER_PEER = 3  # punch sessions a peer may take part in ...
SESSION_WINDOW_SECONDS = 600.0  # ... in this long


def routable_tcp(address: Any, *, private: bool = True) -> bool:
    """``/ip4|ip6/<ip>/tcp/<port>`` exactly, at an IP that is not loopback, unspecified, link-local
    or multicast; and, unless ``private``, a globally routable one (not RFC 1918, carrier NAT or
    documentation ranges: a peer on the internet has no business naming our LAN)."""
    try:
        names = [protocol.name for protocol in address.protocols()]
        if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
            return False
        ip = ipaddress.ip_address(address.value_for_protocol(names[0]))
        port = int(address.value_for_protocol("tcp"))
    except Exception:
        return False
    if not 0 < port < 65536 or ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return False
    return private or ip.is_global


@functools.cache
def _hole_punch_class() -> type:
    import libp2p.relay.circuit_v2.dcutr as dcutr
    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol, _external_ips
    from multiaddr import Multiaddr

    quirks.hole_punch_from_listen_ports()  # the class below predicts from the ports this reads

    class HolePunch(DCUtRProtocol):  # type: ignore[misc]
        initiate: bool
        private: bool  # peers' private addresses are dialled too (a test network)
        may_meet: Callable[[str], bool]
        answering: set[Any]
        sessions: dict[str, list[float]]
        punching: trio.Semaphore

        async def _auto_drive_loop(self) -> None:
            if self.initiate:
                await super()._auto_drive_loop()
            else:
                await trio.sleep_forever()

        def _may_start_session(self, peer: Any) -> bool:
            """The peer is one we may meet directly, and has not used its sessions of late (the
            budget outlives its connections: 0.8.1 reset it at every disconnect)."""
            if not self.may_meet(str(peer)):
                return False
            now = trio.current_time()
            recent = [at for at in self.sessions.get(str(peer), []) if now - at < SESSION_WINDOW_SECONDS]
            if len(recent) >= SESSIONS_PER_PEER:
                return False
            self.sessions[str(peer)] = [*recent, now]
            if len(self.sessions) > 4096:
                self.sessions = {p: t for p, t in self.sessions.items() if now - t[-1] < SESSION_WINDOW_SECONDS}
            return True

        async def initiate_hole_punch(self, peer_id: Any) -> bool:
            if not self._may_start_session(peer_id):
                return False
            return bool(await super().initiate_hole_punch(peer_id))

        async def _try_unilateral_upgrade(self, peer_id: Any) -> bool:
            return False  # 0.8.1 dialled every address the peer's identify listed (up to 1,000) first

        async def _handle_dcutr_stream(self, stream: Any) -> None:
            peer = stream.muxed_conn.peer_id
            if not is_relayed(stream.muxed_conn) or peer in self.answering or peer in self._in_progress or not self._may_start_session(peer):
                await stream.reset()
                return
            self.answering.add(peer)
            try:
                await super()._handle_dcutr_stream(stream)
            finally:
                self.answering.discard(peer)

        def _decode_observed_addrs(self, addr_bytes: list[bytes]) -> list[Any]:
            decoded = super()._decode_observed_addrs(list(addr_bytes)[:MAX_EXAMINED])
            return [a for a in decoded if routable_tcp(a, private=self.private)][:MAX_PEER_ADDRESSES]

        async def _perform_hole_punch(self, peer_id: Any, addrs: list[Any], as_responder: bool = False) -> bool:
            if not addrs:
                return False
            # 0.8.1 adds every address the peerstore holds for the peer: only these are dialled.
            quirks.replace_addresses(self.host, peer_id, list(addrs))
            async with self.punching:
                return bool(await super()._perform_hole_punch(peer_id, addrs, as_responder))

        async def _get_observed_addrs(self) -> list[bytes]:
            manager = getattr(self.host, "_observed_addr_manager", None)
            if manager is None:
                return []
            external = _external_ips(a for a in manager.addrs(min_observers=1) if not is_circuit(str(a)))
            ports = {(family, port) for family, _, port in dcutr._local_tcp_listen_addrs(self.host)}
            predicted = [Multiaddr(f"/ip{family}/{ip}/tcp/{port}") for family, ip in external for f, port in sorted(ports) if f == family]
            return [a.to_bytes() for a in predicted if routable_tcp(a, private=self.private)][:MAX_PEER_ADDRESSES]

    return HolePunch


@asynccontextmanager
async def hole_punching(
    host: Any, *, initiate: bool, may_meet: Callable[[str], bool] = lambda peer: True, private: bool = False
) -> AsyncIterator[None]:
    """Upgrade ``host``'s relayed connections to direct ones while the block runs: it starts
    punches (``initiate``, the side that accepted the relayed connection) or answers them, with
    the peers ``may_meet`` admits (a punch tells the peer this home's public IP). ``private``
    lets private addresses be predicted and dialled (a test network of documentation addresses)."""
    from libp2p.tools.anyio_service import background_trio_service

    service = _hole_punch_class()(host)
    service.initiate, service.private, service.may_meet = initiate, private, may_meet
    service.answering, service.sessions, service.punching = set(), {}, trio.Semaphore(CONCURRENT_PUNCHES)
    async with background_trio_service(service):
        yield


def _inbound(connection: Any) -> bool:
    return "INBOUND" in str(getattr(connection, "direction", "")).upper()


@asynccontextmanager
async def inbound_only_from_punch_partners(host: Any) -> AsyncIterator[None]:
    """Close every inbound direct connection to ``host`` from a peer it holds no relayed
    connection to, for the block. A client host listens beyond loopback only so that a punch's
    simultaneous open has a port to leave from and land on; a stranger who connects to that port
    directly would otherwise take connection slots the client needs for its own dials, and learn
    the node's peer id."""
    from libp2p.abc import INotifee

    # Unbounded, as the swarm's own limit on connections bounds what can wait here; a bounded
    # queue would leave the connections of a flood beyond it open.
    closing_send, closing_receive = trio.open_memory_channel[Any](math.inf)

    class Gate(INotifee):  # type: ignore[misc]
        async def connected(self, network: Any, connection: Any) -> None:
            if not _inbound(connection) or is_relayed(connection):
                return
            if not any(is_relayed(c) for c in connections_to(host, connection.muxed_conn.peer_id)):
                closing_send.send_nowait(connection)  # closed from outside the swarm's own call

        async def opened_stream(self, network: Any, stream: Any) -> None:
            pass

        async def closed_stream(self, network: Any, stream: Any) -> None:
            pass

        async def disconnected(self, network: Any, connection: Any) -> None:
            pass

        async def listen(self, network: Any, address: Any) -> None:
            pass

        async def listen_close(self, network: Any, address: Any) -> None:
            pass

    async def close_them() -> None:
        async for connection in closing_receive:
            log.debug("closing a direct connection from %s: no punch with it", connection.muxed_conn.peer_id)
            with trio.move_on_after(2):
                try:
                    await connection.close()
                except Exception:
                    pass

    gate = Gate()
    network = host.get_network()
    network.register_notifee(gate)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_them)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    finally:
        network.remove_notifee(gate)
