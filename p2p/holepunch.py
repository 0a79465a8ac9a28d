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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from . import quirks
from .relay import is_circuit

log = logging.getLogger("peerlight.p2p")

MAX_PEER_ADDRESSES = 4  # addresses of a peer dialled in one punch
MAX_EXAMINED = 16


def routable_tcp(address: Any) -> bool:
    """``/ip4|ip6/<ip>/tcp/<port>`` exactly, at an IP that is not loopback, unspecified, link-local or multicast."""
    try:
        names = [protocol.name for protocol in address.protocols()]
        if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
            return False
        ip = ipaddress.ip_address(address.value_for_protocol(names[0]))
        port = int(address.value_for_protocol("tcp"))
    except Exception:
        return False
    return 0 < port < 65536 and not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast)


def _relayed(stream: Any) -> bool:
    try:
        return any(is_circuit(str(a)) for a in stream.muxed_conn.get_transport_addresses())
    except Exception:
        return False


@functools.cache
def _hole_punch_class() -> type:
    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol, _external_ips, _local_tcp_listen_addrs
    from multiaddr import Multiaddr

    class HolePunch(DCUtRProtocol):  # type: ignore[misc]
        initiate: bool
        answering: set[Any]

        async def _auto_drive_loop(self) -> None:
            if self.initiate:
                await super()._auto_drive_loop()
            else:
                await trio.sleep_forever()

        async def _handle_dcutr_stream(self, stream: Any) -> None:
            peer = stream.muxed_conn.peer_id
            if not _relayed(stream) or peer in self.answering:
                await stream.reset()
                return
            self.answering.add(peer)
            try:
                await super()._handle_dcutr_stream(stream)
            finally:
                self.answering.discard(peer)

        def _decode_observed_addrs(self, addr_bytes: list[bytes]) -> list[Any]:
            decoded = super()._decode_observed_addrs(list(addr_bytes)[:MAX_EXAMINED])
            return [a for a in decoded if routable_tcp(a)][:MAX_PEER_ADDRESSES]

        async def _perform_hole_punch(self, peer_id: Any, addrs: list[Any], as_responder: bool = False) -> bool:
            # 0.8.1 adds every address the peerstore holds for the peer: only these are dialled.
            quirks.replace_addresses(self.host, peer_id, list(addrs))
            return bool(await super()._perform_hole_punch(peer_id, addrs, as_responder))

        async def _get_observed_addrs(self) -> list[bytes]:
            manager = getattr(self.host, "_observed_addr_manager", None)
            if manager is None:
                return []
            external = _external_ips(a for a in manager.addrs(min_observers=1) if not is_circuit(str(a)))
            ports = {(family, port) for family, _, port in _local_tcp_listen_addrs(self.host)}
            predicted = [Multiaddr(f"/ip{family}/{ip}/tcp/{port}") for family, ip in external for f, port in sorted(ports) if f == family]
            return [a.to_bytes() for a in predicted if routable_tcp(a)][:MAX_PEER_ADDRESSES]

    return HolePunch


@asynccontextmanager
async def hole_punching(host: Any, *, initiate: bool) -> AsyncIterator[None]:
    """Upgrade ``host``'s relayed connections to direct ones while the block runs: it starts
    punches (``initiate``, the side that accepted the relayed connection) or answers them."""
    from libp2p.tools.anyio_service import background_trio_service

    quirks.hole_punch_from_listen_ports()
    service = _hole_punch_class()(host)
    service.initiate, service.answering = initiate, set()
    async with background_trio_service(service):
        yield
