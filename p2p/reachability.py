"""Whether peers on the internet can dial a host: AutoNAT (``/libp2p/autonat/1.0.0``), both sides.

A host asks several peers to dial it back on the addresses it would announce; a peer that
reaches it says ``OK`` (a vote for *public*), one that cannot says ``E_DIAL_ERROR`` (a vote for
*private*: behind a NAT or a firewall). Refusals (an address not at the asker's own IP, a
relayed request) and peers that do not answer are no votes. py-libp2p 0.8.1's AutoNAT carries
the wire format; its server is used through :func:`serve_autonat`, which works around three
defects (``quirks.md``-style, each with its reason):

- it "dials back" with ``host.connect``, which returns at once over the connection the request
  came on, so every asker seemed public: here each dial-back is a fresh connection, closed after;
- it dials the peer id the request names, which need not be the asker's: here always the
  asker's, as Noise authenticated it;
- it reads the request with no deadline and serves any number of askers at once: here one
  request per stream within ``REQUEST_SECONDS``, at most ``CONCURRENT_DIAL_BACKS`` node-wide,
  and at most ``MAX_DIAL_BACK_ADDRESSES`` addresses tried each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

log = logging.getLogger("peerlight.p2p")

REQUEST_SECONDS = 30.0  # one asker's whole exchange, its dial-back included
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

    service = AutoNATService(host, serve=False)
    service._try_dial = _fresh_dial_back(host)  # quirk: a new connection per dial-back (see above)
    limiter = trio.CapacityLimiter(CONCURRENT_DIAL_BACKS)

    async def answer(stream: Any) -> None:
        request = Message()
        request.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_REQUEST_BYTES))
        if request.type == Message.DIAL:  # quirk: dial the asker, never a peer id the message names
            request.dial.peer.id = stream.muxed_conn.peer_id.to_bytes()
            del request.dial.peer.addrs[MAX_DIAL_BACK_ADDRESSES:]
        response = await service._handle_request(request, service._observed_ip(stream), _is_relayed_stream(stream))
        await stream.write(encode_varint_prefixed(response.SerializeToString()))

    async def handle(stream: Any) -> None:
        if limiter.available_tokens == 0:  # busy: no queue of strangers' dial-backs
            await _reset(stream)
            return
        async with limiter:
            with trio.move_on_after(REQUEST_SECONDS) as waited:
                try:
                    await answer(stream)
                except Exception as exc:  # a malformed request, a vanished asker
                    log.debug("a reachability request failed", extra={"reason": f"{type(exc).__name__}: {exc}"})
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

    host.set_stream_handler(AUTONAT_PROTOCOL_ID, handle)
    return service


async def check(service: Any, servers: Sequence[str], addresses: Sequence[str], confirmations: int = CONFIRMATIONS) -> Reachability:
    """Ask ``servers`` (peer ids this host can reach) to dial ``addresses`` back, all at once, and
    decide: ``confirmations`` agreeing votes and none against, else unknown."""
    from libp2p.host.autonat.pb.autonat_pb2 import Message
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    wanted = [Multiaddr(a).to_bytes() for a in addresses]
    found = Reachability()

    async def ask(server: str) -> None:
        try:
            status, reached = await service.query_server(ID.from_base58(server), wanted, timeout=QUERY_SECONDS)
        except Exception as exc:  # no answer, no AutoNAT there: no vote
            log.debug("no reachability answer", extra={"peer": server, "reason": f"{type(exc).__name__}: {exc}"})
            return
        if status == Message.OK:
            found.public_votes += 1
            if reached:
                found.reached_at.append(str(Multiaddr(reached)))
        elif status == Message.E_DIAL_ERROR:
            found.private_votes += 1

    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(ask, server)
    if found.public_votes >= confirmations and not found.private_votes:
        found.status = PUBLIC
    elif found.private_votes >= confirmations and not found.public_votes:
        found.status = PRIVATE
    return found


def _fresh_dial_back(host: Any) -> Any:
    async def dial_back(peer_id: Any, addresses: list[bytes]) -> bytes | None:
        from multiaddr import Multiaddr

        network = host.get_network()
        for raw in addresses[:MAX_DIAL_BACK_ADDRESSES]:
            connection = None
            with trio.move_on_after(DIAL_BACK_SECONDS):
                try:
                    connection = await network.dial_addr(Multiaddr(raw), peer_id)
                except Exception:
                    connection = None
            if connection is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await connection.close()
                    except Exception:
                        pass
                return bytes(raw)
        return None

    return dial_back


async def _reset(stream: Any) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:
            pass
