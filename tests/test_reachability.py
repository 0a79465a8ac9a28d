"""AutoNAT between real hosts on loopback: a host peers can dial back is public, one they cannot
is private, and a dial-back request can make a server dial nothing but its asker."""

from __future__ import annotations

import os
import socket
from contextlib import AsyncExitStack

import trio

from peerlight.p2p import reachability
from peerlight.p2p.host import connect, listen_addresses, new_host, running
from peerlight.p2p.reachability import PRIVATE, PUBLIC, UNKNOWN, check, serve_autonat

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_peers_that_can_dial_back_say_public_and_peers_that_cannot_say_private(monkeypatch) -> None:
    monkeypatch.setattr(reachability, "PER_PEER_SECONDS", 0.0)  # the same asker, four rounds in a row
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
        # An address at another IP (a host behind a NAT names its private one) is dialled at the
        # asker's own IP with that port, never at the IP named: no third party is ever dialled.
        own_port = own[0].split("/tcp/")[1]
        behind_nat = await check(service, ids, [f"/ip4/10.9.8.7/tcp/{own_port}"])
        assert (behind_nat.status, behind_nat.public_votes) == (PUBLIC, 3), behind_nat
        assert behind_nat.reached_at == [f"/ip4/127.0.0.1/tcp/{own_port}"] * 3
        # Too few servers agree: unknown, not a guess.
        assert (await check(service, ids[:1], own)).status == UNKNOWN


async def _ask_raw(asker, server, peer_id: bytes, addresses: list[str]) -> int | None:  # type: ignore[no-untyped-def]
    """A hand-made DIAL request, as a hostile asker writes it: the answer's status (None: reset)."""
    from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID
    from libp2p.host.autonat.pb.autonat_pb2 import Message
    from libp2p.peer.id import ID
    from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
    from multiaddr import Multiaddr

    request = Message()
    request.type = Message.DIAL
    request.dial.peer.id = peer_id
    request.dial.peer.addrs.extend(Multiaddr(a).to_bytes() for a in addresses)
    with trio.fail_after(30):
        try:
            stream = await asker.new_stream(ID.from_base58(str(server.get_id())), [AUTONAT_PROTOCOL_ID])
            await stream.write(encode_varint_prefixed(request.SerializeToString()))
            body = await read_varint_prefixed_bytes_limited(stream, 4096)
        except Exception:  # reset: not served
            return None
    answer = Message()
    answer.ParseFromString(body)
    return int(answer.dialResponse.status)


async def test_a_dial_back_request_can_make_a_server_dial_its_asker_only(monkeypatch) -> None:
    """A hostile asker names another peer (a third host on its machine, which would answer), or
    hides another host behind its own IP in one address (py-libp2p's check reads the first IP,
    its dialler the last): the server dials neither. And it answers one request at a time per
    peer, a few a minute."""
    from libp2p.host.autonat.pb.autonat_pb2 import Message

    server, asker, other = (new_host(os.urandom(32)) for _ in range(3))
    serve_autonat(server)
    victim = trio.socket.socket()
    await victim.bind(("127.0.0.2", 0))
    victim.listen(8)
    victim_port = victim.getsockname()[1]
    async with running(server, LOOPBACK), running(asker, LOOPBACK), running(other, LOOPBACK):
        await connect(asker, str(server.get_id()), listen_addresses(server))
        monkeypatch.setattr(reachability, "PER_PEER_SECONDS", 0.0)
        others = [a.split("/p2p/")[0] for a in listen_addresses(other)]
        # Another peer's id at its (same-IP) address: dialled as the asker's id there, it is not the asker.
        assert await _ask_raw(asker, server, other.get_id().to_bytes(), others) == Message.E_DIAL_ERROR
        # Another host behind the asker's own IP: refused, and nothing connects to it.
        smuggled = f"/ip4/127.0.0.1/tcp/{victim_port}/ip4/127.0.0.2/tcp/{victim_port}"
        assert await _ask_raw(asker, server, asker.get_id().to_bytes(), [smuggled, "/dns4/example.invalid/tcp/1"]) == Message.E_DIAL_REFUSED
        # The victim's own address, plainly: its port is tried at the asker's IP, never at the victim's.
        assert await _ask_raw(asker, server, asker.get_id().to_bytes(), [f"/ip4/127.0.0.2/tcp/{victim_port}"]) == Message.E_DIAL_ERROR
        with trio.move_on_after(0.5) as waited:
            await victim.accept()
        assert waited.cancelled_caught, "the server connected to a host the asker named"
        # A few a minute per peer: a second request at once is reset, not served (a peer that
        # has not asked yet: the one named above).
        monkeypatch.setattr(reachability, "PER_PEER_SECONDS", 60.0)
        await connect(other, str(server.get_id()), listen_addresses(server))
        assert await _ask_raw(other, server, other.get_id().to_bytes(), others) == Message.OK
        assert await _ask_raw(other, server, other.get_id().to_bytes(), others) is None
    victim.close()
