"""AutoNAT between real hosts on loopback: a host peers can dial back is public, one they cannot
is private, and a dial-back request can make a server dial nothing but its asker."""

from __future__ import annotations

import os
import socket
from contextlib import AsyncExitStack

import trio

from peerlight.p2p.host import connect, listen_addresses, new_host, running
from peerlight.p2p.reachability import PRIVATE, PUBLIC, UNKNOWN, check, serve_autonat

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_peers_that_can_dial_back_say_public_and_peers_that_cannot_say_private() -> None:
    servers = [new_host(os.urandom(32)) for _ in range(3)]
    asker = new_host(os.urandom(32))
    for server in servers:
        serve_autonat(server)
    service = serve_autonat(asker)
    async with AsyncExitStack() as stack:
        for host in (*servers, asker):
            await stack.enter_async_context(running(host, LOOPBACK))
        ids = [str(server.get_id()) for server in servers]
        for server in servers:
            await connect(asker, str(server.get_id()), listen_addresses(server))
        own = [address.split("/p2p/")[0] for address in listen_addresses(asker)]
        reachable = await check(service, ids, own)
        assert (reachable.status, reachable.public_votes, reachable.private_votes) == (PUBLIC, 3, 0), reachable
        assert reachable.reached_at == own * 3
        # Already connected to every server: py-libp2p's own server would answer OK over that
        # connection; a fresh dial to a port nobody listens on fails, as from behind a NAT.
        unreachable = await check(service, ids, [f"/ip4/127.0.0.1/tcp/{_closed_port()}"])
        assert (unreachable.status, unreachable.private_votes) == (PRIVATE, 3), unreachable
        # An address at another IP than the asker's is not dialled (no amplification): no vote.
        elsewhere = await check(service, ids, ["/ip4/10.9.8.7/tcp/4001"])
        assert (elsewhere.status, elsewhere.public_votes, elsewhere.private_votes) == (UNKNOWN, 0, 0), elsewhere
        # Too few servers agree: unknown, not a guess.
        assert (await check(service, ids[:1], own)).status == UNKNOWN


async def test_a_dial_back_request_naming_another_peer_dials_only_the_asker() -> None:
    """Without the fix a server dials the peer id the request names at any address on the
    asker's IP: here a third host on the same machine, which answers, so the asker "is public"."""
    from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID
    from libp2p.host.autonat.pb.autonat_pb2 import Message
    from libp2p.peer.id import ID
    from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
    from multiaddr import Multiaddr

    server, asker, other = (new_host(os.urandom(32)) for _ in range(3))
    serve_autonat(server)
    async with running(server, LOOPBACK), running(asker, LOOPBACK), running(other, LOOPBACK):
        await connect(asker, str(server.get_id()), listen_addresses(server))
        request = Message()
        request.type = Message.DIAL
        request.dial.peer.id = other.get_id().to_bytes()
        request.dial.peer.addrs.extend(Multiaddr(a.split("/p2p/")[0]).to_bytes() for a in listen_addresses(other))
        stream = await asker.new_stream(ID.from_base58(str(server.get_id())), [AUTONAT_PROTOCOL_ID])
        await stream.write(encode_varint_prefixed(request.SerializeToString()))
        with trio.fail_after(30):
            answer = Message()
            answer.ParseFromString(await read_varint_prefixed_bytes_limited(stream, 4096))
        assert answer.dialResponse.status == Message.E_DIAL_ERROR  # it dialled the asker's id there: not the asker
