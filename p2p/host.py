"""A libp2p host as Peerlight runs it: TCP, Noise and Yamux only, with the 0.8.1 workarounds applied.

``new_host`` offers TLS, secio and plaintext as well unless told otherwise; a Data Server
offers Noise alone (and Yamux alone as its muxer), so no connection to it is ever
unencrypted or weaker than Noise. Hosts are created by :func:`open_host`, which also
applies the fixes of :mod:`.quirks` to the host's swarm.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from . import quirks
from .errors import Unreachable

log = logging.getLogger("peerlight.p2p")

DIAL_TIMEOUT_SECONDS = 10.0


def _libp2p_key_pair(seed: bytes) -> Any:
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.keys import KeyPair

    private = Ed25519PrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


def new_host(
    seed: bytes, *, max_connections: int = 1000, per_peer: int = 3, announce: Callable[[list[Any]], list[Any]] | None = None
) -> Any:
    """A host for the Ed25519 key with the 32-byte ``seed``: Noise + Yamux over TCP, nothing else.

    ``announce`` chooses, from the addresses it listens on, those it tells peers (identify) and
    the DHT (provider records): by default, all of them."""
    from libp2p import new_host as libp2p_new_host
    from libp2p.crypto import x25519
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE, Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX, Yamux

    quirks.check_patch_targets()
    quirks.tune_bulk_transfer()
    quirks.buffered_tcp_reads()
    quirks.no_dial_delay()
    quirks.typed_protocol_refusal()
    key_pair = _libp2p_key_pair(seed)
    host = libp2p_new_host(
        key_pair=key_pair,
        sec_opt={NOISE: NoiseTransport(key_pair, noise_privkey=x25519.create_new_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX): Yamux},
        connection_config=ConnectionConfig(
            max_connections=max_connections,
            min_connections=0,
            max_connections_per_peer=per_peer,
            dial_timeout=DIAL_TIMEOUT_SECONDS,
        ),
        enable_mDNS=False,
        addrs_factory=announce,
    )
    network = host.get_network()
    quirks.release_inbound_slots(network)
    network.retry_config.max_retries = 0  # :func:`connect` tries each address once, under its own deadline
    return host


@asynccontextmanager
async def running(host: Any, listen: Sequence[str]) -> AsyncIterator[Any]:
    """Run ``host`` listening on ``listen`` (multiaddrs) until the block ends."""
    from multiaddr import Multiaddr

    async with host.run(listen_addrs=[Multiaddr(address) for address in listen]):
        try:
            yield host
        finally:
            await quirks.close_listeners(host.get_network())


def listen_addresses(host: Any) -> list[str]:
    """Where the host listens, as multiaddrs ending in ``/p2p/<peer id>``."""
    return [f"{address}/p2p/{host.get_id()}" for address in host.get_transport_addrs()]


def announced_addresses(host: Any) -> list[str]:
    """What the host tells peers and the DHT of where to reach it (see ``announce`` of :func:`new_host`)."""
    return [str(address) for address in host.get_addrs()]


def observed_addresses(host: Any) -> list[str]:
    """Where peers saw this host's connections come from (identify's observed addresses, each
    reported by at least two peers, so one cannot plant one): behind a NAT, the NAT's address."""
    manager = getattr(host, "_observed_addr_manager", None)  # py-libp2p 0.8.1 keeps it private
    return [str(address) for address in manager.addrs(min_observers=2)] if manager is not None else []


def connected_peers(host: Any) -> list[str]:
    """The peer ids this host holds a connection to now."""
    return [str(peer_id) for peer_id in host.get_network().connections]


async def connect(host: Any, peer_id: str, addresses: Sequence[str], timeout: float = DIAL_TIMEOUT_SECONDS) -> str:
    """Connect to ``peer_id`` by trying each address in turn; the one that worked.

    One address at a time (py-libp2p's dialer would try only one per transport), each with
    its own deadline, and a failure is forgotten before the next try (see :mod:`.quirks`).
    An existing connection is reused.
    """
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from multiaddr import Multiaddr

    from .relay import dial_circuit, is_circuit

    try:
        target = ID.from_base58(peer_id)
    except Exception:
        raise Unreachable(f"not a peer id: {peer_id!r:.80}") from None
    network = host.get_network()
    if network.connections.get(target):
        return ""
    failures = []
    for address in addresses:
        if is_circuit(address):  # through a relay (the host behind it is behind a NAT)
            try:
                await dial_circuit(host, peer_id, transport_address(address), timeout=2 * timeout)
                return address
            except Exception as exc:
                failures.append(f"{address}: {exc}")
                continue
        try:
            multiaddr = Multiaddr(transport_address(address))
        except Exception as exc:
            failures.append(f"{address}: {exc}")
            continue
        quirks.replace_addresses(host, target, [multiaddr])
        quirks.forget_failed_dial(network, target)
        with trio.move_on_after(timeout):
            try:
                await host.connect(PeerInfo(target, [multiaddr]))
                return address
            except Exception as exc:
                failures.append(f"{address}: {type(exc).__name__}: {exc}")
                continue
        failures.append(f"{address}: no answer within {timeout:g} s")
    quirks.forget_failed_dial(network, target)
    raise Unreachable(f"cannot reach {peer_id}: " + ("; ".join(failures) or "no address known"), {"tried": len(failures)})


def transport_address(text: str) -> str:
    """An address without the peer it leads to: ``/ip4/…/tcp/…`` of ``/ip4/…/tcp/…/p2p/<id>``, and
    ``…/p2p/<relay>/p2p-circuit`` of a circuit address ``…/p2p/<relay>/p2p-circuit/p2p/<id>``."""
    if "/p2p-circuit" in text:
        return text.split("/p2p-circuit")[0] + "/p2p-circuit"
    return text.split("/p2p/")[0]




def split_peer_address(text: str) -> tuple[str, str]:
    """(peer id, transport address) of a full multiaddr ``/ip4/…/tcp/…/p2p/<id>``, or of a circuit
    address ``…/p2p/<relay>/p2p-circuit/p2p/<id>`` (the peer is the last one named, the transport
    keeps the relay); ValueError if it names no peer."""
    from multiaddr import Multiaddr

    try:
        address = Multiaddr(text)
        named = [str(value) for protocol, value in address.items() if protocol.name == "p2p"]
    except Exception as exc:
        raise ValueError(f"not a multiaddr with a peer id (/ip4/…/tcp/…/p2p/…): {text!r:.120} ({exc})") from None
    if not named or str(address).endswith("/p2p-circuit"):
        raise ValueError(f"the multiaddr names no peer (/p2p/…): {text!r:.120}")
    return named[-1], transport_address(str(address))
