"""Finding shares: announced over mDNS on the LAN, or providers of the Peerlight key on the DHT.

What discovery finds is a peer that says it is a share; it is remembered only once it answers
the manifest protocol as one (other libp2p nodes announce themselves the same way), or
refuses us as a share that needs a grant does.
"""

from __future__ import annotations

import time
from functools import partial

from peerlight.p2p.dht import PEERLIGHT_KEY, find_providers
from peerlight.p2p.errors import Forbidden
from peerlight.p2p.host import transport_address
from peerlight.p2p.listen import NoLanInterface, lan_addresses
from peerlight.p2p.mdns import browse

from .catalog.database import Catalog
from .catalog.shares import forget_remote, get_remote, list_remote, prune_refusing, remember_remote
from .peers.host import PeerHost, dht_entry
from .peers.remotes import Remotes

LAN_BROWSE_SECONDS = 3.0  # how long `discover --lan` listens for mDNS announcements


class Discovery:
    def __init__(self, catalog: Catalog, host: PeerHost, remotes: Remotes, bootstrap: tuple[str, ...] = ()) -> None:
        self._catalog = catalog
        self._host = host
        self._remotes = remotes
        self._bootstrap = bootstrap

    async def lan(self, seconds: float = LAN_BROWSE_SECONDS) -> int:
        """Listen for shares announced over mDNS on this machine's LAN interfaces; remember those that
        answer as Peerlight shares. How many."""
        interfaces = lan_addresses()
        if not interfaces:
            raise NoLanInterface("no LAN interface with a private IPv4 address to listen on")
        found = await browse(interfaces, seconds)
        known = {remote.peer_id for remote in await self._catalog.read(list_remote)}
        return await self._remember_found(found, "mdns", known)

    async def dht(self) -> int:
        """Find global shares on the DHT (providers of the Peerlight key); remember those that answer. How many.

        The DHT is joined through the configured bootstrap nodes and the global shares already
        known (each is a DHT server), for the duration of the lookup, as a client only.
        """
        known = await self._catalog.read(list_remote)
        async with self._host.joined_dht(dht_entry(self._bootstrap, known)) as dht:
            found = await find_providers(dht, PEERLIGHT_KEY)
        return await self._remember_found(found, "dht", {remote.peer_id for remote in known})

    async def _refused_us(self, peer_id: str) -> bool:
        """The peer answered as a Peerlight share that needs a grant (a members or devices share)."""
        remote = await self._catalog.read(partial(get_remote, key=peer_id))
        return (remote.last_error or "").startswith(f"{Forbidden.code}:")

    async def _remember_found(self, found: dict[str, list[str]], found_by: str, known: set[str]) -> int:
        """Remember discovered peers that answer as Peerlight shares; how many."""
        remembered = 0
        for peer_id, addresses in found.items():
            transports = [transport_address(a) for a in addresses if a.startswith(("/ip4/", "/ip6/"))]
            if not transports:
                continue
            remote = await self._catalog.write(partial(remember_remote, peer_id=peer_id, addresses=transports, found_by=found_by))
            if await self._remotes.refresh(remote, background=True) is None and peer_id not in known and not await self._refused_us(peer_id):
                await self._catalog.write(partial(forget_remote, key=peer_id))  # not (or not now) a Peerlight share
                continue
            remembered += 1
        await self._catalog.write(partial(prune_refusing, now=time.time()))
        return remembered
