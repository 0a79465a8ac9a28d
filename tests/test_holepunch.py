"""Hole punching (DCUtR) against a hostile peer, on loopback: the wrapper around py-libp2p 0.8.1's
protocol answers only over a relayed connection, and dials only a few routable addresses a peer names."""

from __future__ import annotations

import os

import pytest
import trio
from multiaddr import Multiaddr

from peerlight.p2p.holepunch import MAX_PEER_ADDRESSES, _hole_punch_class, hole_punching, inbound_only_from_punch_partners, routable_tcp
from peerlight.p2p.host import connect, listen_addresses, new_host, running

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


async def test_a_directly_connected_peer_cannot_start_a_punch() -> None:
    """A punch is for peers that met through a relay: a peer connected directly gets no answer
    and nothing is dialled (the wrapper resets the stream before reading it; 0.8.1 itself
    closes it once it sees the direct connection)."""
    from libp2p.host.exceptions import StreamFailure
    from libp2p.network.stream.exceptions import StreamError
    from libp2p.relay.circuit_v2.dcutr import PROTOCOL_ID
    from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
    from libp2p.relay.circuit_v2.utils import write_delimited_msg

    share, attacker = new_host(os.urandom(32)), new_host(os.urandom(32))
    victim = trio.socket.socket()
    await victim.bind(("127.0.0.1", 0))
    victim.listen(8)
    async with running(share, LOOPBACK), running(attacker, LOOPBACK), hole_punching(share, initiate=True):
        await connect(attacker, str(share.get_id()), listen_addresses(share))
        message = HolePunch(type=HolePunch.CONNECT)
        message.ObsAddrs.extend([Multiaddr(f"/ip4/127.0.0.1/tcp/{victim.getsockname()[1]}").to_bytes()])
        with pytest.raises((StreamFailure, StreamError)), trio.fail_after(10):
            stream = await attacker.new_stream(share.get_id(), [PROTOCOL_ID])
            await write_delimited_msg(stream, message)
            await write_delimited_msg(stream, HolePunch(type=HolePunch.SYNC))
            await stream.read(1)
            await stream.read(1)  # a reset shows on the read after the answer's (no answer comes)
        with trio.move_on_after(1) as waited:
            await victim.accept()
        assert waited.cancelled_caught, "the host dialled an address a directly connected peer named"


def _service(private: bool = False, may_meet=lambda peer: True):  # type: ignore[no-untyped-def]
    """The hardened DCUtR service's checks, without a host (they need none)."""
    service = _hole_punch_class().__new__(_hole_punch_class())
    service.private, service.may_meet, service.sessions = private, may_meet, {}
    return service


def test_a_peer_s_addresses_are_cut_to_a_few_routable_tcp_ones() -> None:
    named = [f"/ip4/93.184.216.{i}/tcp/4001" for i in range(1, 30)]
    hostile = ["/ip4/127.0.0.1/tcp/22", "/ip4/0.0.0.0/tcp/80", "/ip4/169.254.1.1/tcp/80", "/ip4/224.0.0.1/tcp/80", "/ip4/93.184.216.1/udp/4001/quic-v1", "/ip4/93.184.216.1/tcp/1/ip4/10.0.0.1/tcp/2"]
    lan = ["/ip4/192.168.1.1/tcp/80", "/ip4/10.0.0.1/tcp/22", "/ip4/100.64.0.1/tcp/22"]
    kept = _service()._decode_observed_addrs([Multiaddr(a).to_bytes() for a in hostile + lan + named])
    assert [str(a) for a in kept] == named[:MAX_PEER_ADDRESSES]  # nothing of our LAN, nothing odd, four at most
    on_a_test_network = _service(private=True)._decode_observed_addrs([Multiaddr(a).to_bytes() for a in hostile + lan])
    assert [str(a) for a in on_a_test_network] == lan
    assert routable_tcp(Multiaddr("/ip6/2606:4700::1/tcp/4001"), private=False)
    assert not routable_tcp(Multiaddr("/ip4/192.168.1.2/tcp/1"), private=False) and routable_tcp(Multiaddr("/ip4/192.168.1.2/tcp/1"))


async def test_only_peers_that_may_meet_us_get_a_punch_and_only_a_few_times() -> None:
    service = _service(may_meet=lambda peer: peer.startswith("12D3KooWFriend"))
    assert not service._may_start_session("12D3KooWStranger")  # a stranger of a members share learns no IP
    assert [service._may_start_session("12D3KooWFriend") for _ in range(4)] == [True, True, True, False]


async def test_a_stranger_connecting_to_a_punching_client_directly_is_shut_out() -> None:
    """The client listens beyond loopback for punches; a direct connection from a peer it has no
    relayed connection to (no punch under way) is closed at once."""
    client, stranger = new_host(os.urandom(32)), new_host(os.urandom(32))
    async with running(client, LOOPBACK), running(stranger, LOOPBACK), inbound_only_from_punch_partners(client):
        await connect(stranger, str(client.get_id()), listen_addresses(client))
        with trio.fail_after(10):
            while client.get_network().connections.get(stranger.get_id()) or stranger.get_network().connections.get(client.get_id()):
                await trio.sleep(0.05)
        # Its own dials are untouched.
        await connect(client, str(stranger.get_id()), listen_addresses(stranger))
        await trio.sleep(0.5)
        assert client.get_network().connections.get(stranger.get_id())
