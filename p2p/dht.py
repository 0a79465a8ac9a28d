"""The Kademlia DHT (libp2p's ``/ipfs/kad/1.0.0``), as global shares and discovery use it.

A global share is a DHT server on its own host and a *provider* of two keys: the well-known
Peerlight key (every global share) and its own share key (derived from its name), so a
node can find global shares it was never told about, or one share by name. Keys are
multihashes (sha2-256) of fixed strings, as the DHT's provider records expect; the protocol
is the standard one, so a node bootstrapped from public libp2p nodes joins the public DHT.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .host import connect, split_peer_address, transport_address

log = logging.getLogger("peerlight.dht")

PEERLIGHT_KEY_TEXT = "peerlight:shares:v1"
BOOTSTRAP_TIMEOUT = 10.0


def provider_key(text: str) -> str:
    """A DHT key for ``text``: the hex of its sha2-256 multihash (code 0x12, length 0x20)."""
    return "1220" + hashlib.sha256(text.encode()).hexdigest()


PEERLIGHT_KEY = provider_key(PEERLIGHT_KEY_TEXT)
RELAY_KEY = provider_key("peerlight:relays:v1")  # provided by global shares that relay for others


@asynccontextmanager
async def running_dht(host: Any, *, server: bool) -> AsyncIterator[Any]:
    """A DHT node on ``host`` (server: it stores records for others) for the duration of the block."""
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.tools.anyio_service import background_trio_service

    from . import quirks

    quirks.more_providers_per_key()
    dht = KadDHT(host, DHTMode.SERVER if server else DHTMode.CLIENT)
    async with background_trio_service(dht):
        yield dht


MAX_PROVIDER_ADDRESSES = 8  # addresses kept of one provider
MAX_ADDRESS_CHARS = 300
DNS_PROTOCOLS = ("/dnsaddr/", "/dns4/", "/dns6/", "/dns/")
MAX_RESOLVED = 16  # addresses kept of one DNS name (its TXT records are whatever its owner writes)

# The public IPFS DHT's (Amino's) bootstrap peers, as go-libp2p and kubo list them: a node joins
# the public DHT with ``network.bootstrap`` set to these (DNS names resolved at each join).
AMINO_BOOTSTRAP = (
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
)


async def resolved(text: str) -> list[str]:
    """A bootstrap entry as dialable multiaddrs: a ``/dnsaddr`` name (DNS TXT records
    ``_dnsaddr.<name>``, as Amino's list uses) or ``/dns4``, ``/dns6``, ``/dns`` name resolved
    by multiaddr's resolver, keeping the addresses of the peer the entry names; others as they are.
    A name that does not resolve in time gives nothing (the other entries are tried)."""
    if not text.startswith(DNS_PROTOCOLS):
        return [text]
    from multiaddr import Multiaddr
    from multiaddr.resolvers import DNSResolver

    wanted = text.rsplit("/p2p/", 1)[1] if "/p2p/" in text else None
    found: list[str] = []
    with trio.move_on_after(BOOTSTRAP_TIMEOUT):
        try:
            found = [str(a) for a in await DNSResolver().resolve(Multiaddr(text))]
        except Exception as exc:  # no DNS here, an unknown name, a malformed record
            log.info("a bootstrap name did not resolve: %s", exc)
    return [a for a in found if "/p2p/" in a and (wanted is None or a.endswith(f"/p2p/{wanted}"))][:MAX_RESOLVED]


async def bootstrap(host: Any, dht: Any, peers: Sequence[str]) -> int:
    """Connect to the given DHT nodes (full multiaddrs, DNS names resolved) and add them to the
    routing table; how many answered."""
    joined = 0
    found: list[list[str]] = [[] for _ in peers]

    async def resolve(i: int, entry: str) -> None:
        found[i] = await resolved(entry)

    async with trio.open_nursery() as nursery:  # DNS names at once: each may take BOOTSTRAP_TIMEOUT
        for i, entry in enumerate(peers):
            nursery.start_soon(resolve, i, entry)
    for text in (address for addresses in found for address in addresses):
        try:
            peer_id, address = split_peer_address(text)
        except ValueError as exc:
            log.warning("a bootstrap address is not usable: %s", exc)
            continue
        if peer_id == str(host.get_id()):
            continue
        try:
            await connect(host, peer_id, [address], timeout=BOOTSTRAP_TIMEOUT)
            from libp2p.peer.id import ID

            if await dht.add_peer(ID.from_base58(peer_id)):
                joined += 1
        except Exception as exc:  # a bootstrap node that is down: try the others
            log.info("a bootstrap node did not answer: %s", exc)
    return joined


async def find_providers(dht: Any, key: str, count: int = 50, timeout: float = 15.0) -> dict[str, list[str]]:
    """Providers of ``key``: peer id -> transport multiaddrs, each peer once (py-libp2p 0.8.1 repeats them)."""
    found: dict[str, list[str]] = {}
    with trio.move_on_after(timeout):
        for info in await dht.find_providers(key, count):
            known = found.setdefault(str(info.peer_id), [])
            for address in info.addrs[:MAX_PROVIDER_ADDRESSES]:  # a record's addresses are its provider's word
                text = str(address)
                if len(known) < MAX_PROVIDER_ADDRESSES and len(text) <= MAX_ADDRESS_CHARS and (kept := transport_address(text)) not in known:
                    known.append(kept)
    return found
