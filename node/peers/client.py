"""The node as a client of peers' shares: the parts, put together along the data flow.

``host`` (the node's client host) carries every request; ``remotes`` remembers shares and
reads their manifests; ``catalogs`` copies their catalogs; ``search`` asks them and ranks
their items; ``transfers`` previews and downloads; ``discovery`` finds them on the LAN and
the DHT; ``routing`` picks the few shares a search asks, by topic. Each part checks what it
receives through the wire schema (``p2p/schema.py``).
"""

from __future__ import annotations

import trio

from peerlight.embeddings.codebook import Codebook

from ..catalog.database import Catalog
from ..discovery import Discovery
from ..routing.router import RouteSettings
from .adapters import PeerAdapters
from .global_search import GlobalRouting
from .host import PeerHost
from .remotes import Remotes
from .search import PeerSearch
from .sync import CatalogSync
from .transfers import Transfers


class PeerClient:
    def __init__(
        self,
        catalog: Catalog,
        seed: bytes,
        query_timeout: float,
        sync_interval: float = 300.0,
        bootstrap: tuple[str, ...] = (),
        max_remote_items: int = 1_000_000,
        hole_punching: bool = False,
        private_addresses: bool = False,
        codebooks: tuple[Codebook, ...] = (),
        search_shares: int = RouteSettings.ask,
    ) -> None:
        self.sync_interval = sync_interval
        self.host = PeerHost(seed, hole_punching=hole_punching, private_addresses=private_addresses)
        self.adapters = PeerAdapters(query_timeout)
        self.catalogs = CatalogSync(catalog, self.host, query_timeout, max_remote_items)
        self.remotes = Remotes(catalog, self.host, self.catalogs, query_timeout)
        self.search = PeerSearch(catalog, self.host, self.adapters, query_timeout)
        self.transfers = Transfers(catalog, self.host, query_timeout)
        self.discovery = Discovery(catalog, self.host, self.remotes, bootstrap)
        self.routing = GlobalRouting(catalog, self.host, codebooks, bootstrap, RouteSettings(ask=search_shares))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the client host, and keep manifests and cached catalogs current."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.host.run)
            task_status.started()
            while True:
                await trio.sleep(self.sync_interval)
                await self.remotes.refresh_all()

    async def forget(self, peer_id: str) -> None:
        """A share was removed: its idle streams go, and so does what was remembered of its adapters."""
        requester = self.host.running_requester
        if requester is not None:
            await requester.forget(peer_id)
        self.adapters.forget(peer_id)
