"""Whether peers on the internet can dial a host: AutoNAT (``/libp2p/autonat/1.0.0``), both sides.

A host asks several peers to dial it back on the addresses it would announce; a peer that
reaches it says ``OK`` (a vote for *public*), one that cannot says ``E_DIAL_ERROR`` (a vote for
*private*: behind a NAT or a firewall). Refusals (an address not at the asker's own IP, a
relayed request) and peers that do not answer are no votes.

py-libp2p 0.8.1's AutoNAT carries the wire format and the asking side (``query_server``). Its
answering side is not used, for its defects: it "dials back" with ``host.connect``, which
returns at once over the connection the request came on (every asker seemed public); it dials
the peer id the request names, which need not be the asker's; its address check reads the
first IP of an address while the TCP dialler uses the last (``/ip4/<asker>/tcp/P/ip4/<victim>
/tcp/1`` made it connect to any host: a port scanner for hire); and it reads with no deadline
and serves any number at once. :func:`serve_autonat` answers instead: only the asker Noise
authenticated, only at the IP its connection came from (the address rebuilt from that IP and the
port of an address that is exactly ``/ip4|ip6/<ip>/tcp/<port>``: behind a NAT, its private
address's port at the NAT's IP), on a new connection
closed after; a request read within ``READ_SECONDS`` before it takes one of
``CONCURRENT_DIAL_BACKS`` slots per host, one at a time per peer and one per
``PER_PEER_SECONDS``, at most ``MAX_DIAL_BACK_ADDRESSES`` ports tried.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

log = logging.getLogger("peerlight.p2p")

REQUEST_SECONDS = 30.0  # one asker's whole exchange, its dial-back included
READ_SECONDS = 5.0  # for the request to arrive
PER_PEER_SECONDS = 10.0  # one request per peer this often
MAX_REMEMBERED_ASKERS = 4096
MAX_EXAMINED_ADDRESSES = 32
DIAL_BACK_SECONDS = 10.0  # one address's dial-back
MAX_DIAL_BACK_ADDRESSES = 4
CONCURRENT_DIAL_BACKS = 4
CONFIRMATIONS = 2  # agreeing votes that decide; fewer: unknown
QUERY_SECONDS = 35.0
MAX_REQUEST_BYTES = 4096  # a DIAL request is a peer id and a few addresses

PUBLIC, PRIVATE, UNKNOWN = "public", "private", "unknown"


@dataclass
class Reachability:
    """What the last check found: the verdict, the votes, and the address peers reached us at."""

    status: str = UNKNOWN
    public_votes: int = 0
    private_votes: int = 0
    reached_at: list[str] = field(default_factory=list)  # the addresses the public votes dialled

    observed: list[str] = field(default_factory=list)  # where peers saw our connections come from
    checked_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "public_votes": self.public_votes,
            "private_votes": self.private_votes,
            "reached_at": sorted(set(self.reached_at)),
            "observed": self.observed,
            "checked_at": self.checked_at,
        }


def serve_autonat(host: Any) -> Any:
    """Answer other hosts' dial-back requests on ``host`` (see the module's notes); the service,
    whose ``query_server`` this host's own checks use."""
    from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService, _is_relayed_stream
    from libp2p.host.autonat.pb.autonat_pb2 import Message
    from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

    service = AutoNATService(host, serve=False)  # the client half (query_server); we answer ourselves
    limiter = trio.CapacityLimiter(CONCURRENT_DIAL_BACKS)
    asking: set[str] = set()  # peers with a request being answered: one each
    last_asked: dict[str, float] = {}  # peer -> when it last asked (a few a minute each)

    def refused(status: int, text: str) -> Any:
        response = Message()
        response.type = Message.DIAL_RESPONSE
        response.dialResponse.status = status
        response.dialResponse.statusText = text
        return response

    async def answer(stream: Any, request: Any) -> Any:
        if request.type != Message.DIAL:
            return refused(Message.E_BAD_REQUEST, "not a dial request")
        if _is_relayed_stream(stream):
            return refused(Message.E_DIAL_REFUSED, "dial requests over relayed connections are refused")
        observed = service._observed_ip(stream)  # normalised as the library does (IPv4-mapped IPv6 too)
        ports = _ports_at(request.dial.peer.addrs, observed)
        if observed is None or not ports:
            return refused(Message.E_DIAL_REFUSED, "no advertised /ip/tcp address at the asker's own IP")
        # Only the asker Noise authenticated, only at the IP its connection came from: whatever
        # else the request names is never dialled (no third party, no other host or port scan).
        family = "ip6" if ":" in observed else "ip4"
        reached = await _dial_back(host, stream.muxed_conn.peer_id, [f"/{family}/{observed}/tcp/{port}" for port in ports])
        if reached is None:
            return refused(Message.E_DIAL_ERROR, "no dial-back answered")
        response = refused(Message.OK, "")
        response.dialResponse.addr = reached
        return response

    async def handle(stream: Any) -> None:
        peer = str(stream.muxed_conn.peer_id)
        now = trio.current_time()
        if peer in asking or now - last_asked.get(peer, -PER_PEER_SECONDS) < PER_PEER_SECONDS or limiter.available_tokens == 0:
            await _reset(stream)  # one at a time per peer, a few a minute, and no queue
            return
        if len(last_asked) > MAX_REMEMBERED_ASKERS:
            for old in [p for p, at in last_asked.items() if now - at >= PER_PEER_SECONDS]:
                del last_asked[old]
        asking.add(peer)
        last_asked[peer] = now
        try:
            request = Message()
            try:
                with trio.fail_after(READ_SECONDS):  # read before a slot is taken: a silent asker holds none
                    request.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_REQUEST_BYTES))
            except Exception:
                await _reset(stream)
                return
            if limiter.available_tokens == 0:
                await _reset(stream)
                return
            async with limiter:
                with trio.move_on_after(REQUEST_SECONDS) as waited:
                    try:
                        response = await answer(stream, request)
                        await stream.write(encode_varint_prefixed(response.SerializeToString()))
                    except Exception as exc:  # a malformed request, a vanished or silent asker
                        log.debug("a reachability request failed", extra={"peer": peer, "reason": f"{type(exc).__name__}: {exc}"})
                        await _reset(stream)
                        return
                if waited.cancelled_caught:
                    await _reset(stream)
                    return
                with trio.move_on_after(1):
                    try:
                        await stream.close()
                    except Exception:
                        pass
        finally:
            asking.discard(peer)

    host.set_stream_handler(AUTONAT_PROTOCOL_ID, handle)
    return service


def _ports_at(addresses: Sequence[bytes], observed: str | None) -> list[int]:
    """The TCP ports to dial back at the asker's ``observed`` IP: those of its addresses that are
    exactly ``/ip4|ip6/<ip>/tcp/<port>`` (optionally ``/p2p/...``), the ones at ``observed``
    first. Anything longer (a second /ip4, a /dns4 to resolve) is ignored, and the IP is never
    taken from the request: a host behind a NAT names its private address (192.168.1.2:4001),
    and the dial-back tries its NAT's public IP at that port (a forwarded port answers: public;
    none does: private), never 192.168.1.2 or any other host."""
    from libp2p.host.autonat.autonat import _normalize_ip
    from multiaddr import Multiaddr

    at_observed: list[int] = []
    elsewhere: list[int] = []
    for raw in list(addresses)[:MAX_EXAMINED_ADDRESSES]:
        try:
            address = Multiaddr(raw)
            names = [protocol.name for protocol in address.protocols()]
            if names[:2] not in (["ip4", "tcp"], ["ip6", "tcp"]) or names[2:] not in ([], ["p2p"]):
                continue
            same_ip = _normalize_ip(str(address.value_for_protocol(names[0]))) == observed
            port = int(address.value_for_protocol("tcp"))
        except Exception:  # not a multiaddr, or a value that is none
            continue
        if 0 < port < 65536:
            (at_observed if same_ip else elsewhere).append(port)
    return list(dict.fromkeys(at_observed + elsewhere))[:MAX_DIAL_BACK_ADDRESSES]


async def check(service: Any, servers: Sequence[str], addresses: Sequence[str], confirmations: int = CONFIRMATIONS) -> Reachability:
    """Ask ``servers`` (peer ids this host can reach) to dial ``addresses`` back, all at once, and
    decide: at least ``confirmations`` agreeing votes and two thirds of all votes, else unknown."""
    from libp2p.host.autonat.pb.autonat_pb2 import Message
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    wanted = [Multiaddr(a).to_bytes() for a in addresses]
    found = Reachability()

    async def ask(server: str) -> None:
        try:
            status, reached = await service.query_server(ID.from_base58(server), wanted, timeout=QUERY_SECONDS)
            shown = str(Multiaddr(reached)) if reached else None
        except Exception as exc:  # no answer, no AutoNAT there, an address that is none: no vote
            log.debug("no reachability answer", extra={"peer": server, "reason": f"{type(exc).__name__}: {exc}"})
            return
        if status == Message.OK:
            found.public_votes += 1
            if shown:
                found.reached_at.append(shown)
        elif status == Message.E_DIAL_ERROR:
            found.private_votes += 1

    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(ask, server)
    # Enough agreeing votes and a clear majority (one confused or lying peer does not sway it).
    votes = found.public_votes + found.private_votes
    if found.public_votes >= confirmations and 3 * found.public_votes >= 2 * votes:
        found.status = PUBLIC
    elif found.private_votes >= confirmations and 3 * found.private_votes >= 2 * votes:
        found.status = PRIVATE
    return found


async def _dial_back(host: Any, peer_id: Any, addresses: list[str]) -> bytes | None:
    """Dial ``peer_id`` at each address on a new connection, closed after; the first that answered.

    A connection whose close does not finish in time (its peer stopped reading) is dropped from
    the swarm's records and its socket closed, so it cannot linger and fill the host's slots."""
    from multiaddr import Multiaddr

    network = host.get_network()
    for address in addresses:
        connection = None
        with trio.move_on_after(DIAL_BACK_SECONDS):
            try:
                connection = await network.dial_addr(Multiaddr(address), peer_id)
            except Exception:
                connection = None
        if connection is not None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(2) as closing:
                    try:
                        await connection.close()
                    except Exception:
                        pass
                if closing.cancelled_caught:
                    with trio.move_on_after(1):
                        try:
                            network.remove_conn(connection)
                            await connection.muxed_conn.secured_conn.close()
                        except Exception:
                            pass
            return Multiaddr(address).to_bytes()
    return None


async def _reset(stream: Any) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:
            pass
