"""Routing a search to the few shares that matter: on the DHT by topic, or among the shares already known.

``search --global`` finds shares it was never told of: the keys of the query's nearest region
and topics, by tier, are looked up on the DHT (plain multihashes on ``/ipfs/kad/1.0.0``), the candidates'
signed summaries are fetched with the summary protocol (and cached), and the best
``RouteSettings.ask`` are asked. ``search --peers`` asks the shares the user added or
joined, and of the shares discovery found only the best few by their summaries, never all.

The routing cache lives as long as the daemon: summaries until they expire, topic lookups
for ten minutes, a share that did not answer ranked down for an hour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from peerlight.embeddings.codebook import Codebook
from peerlight.p2p import schema
from peerlight.p2p.dht import PEERLIGHT_KEY, find_providers
from peerlight.p2p.errors import Unavailable

from ..catalog.database import Catalog
from ..catalog.shares import RemoteShare, list_remote
from ..routing.router import Candidate, Route, RouteSettings, RoutingCache, rank, route
from .host import PeerHost, dht_entry


@dataclass
class Routing:
    """Which shares a search asks, and why: what the CLI shows under ``--explain``-like output."""

    remotes: list[RemoteShare]
    route: Route | None = None  # global routing's figures
    skipped: int = 0  # known shares not asked: their summaries ranked them out

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"asked": len(self.remotes), "skipped": self.skipped}
        if self.route is not None:
            described |= {"topics": self.route.topics, "keys": len(self.route.probes), "candidates": self.route.candidates, "lookups": self.route.lookups, "summaries_fetched": self.route.fetched}
        return described


def _found_share(candidate: Candidate) -> RemoteShare:
    """A share found by routing, as the search asks it: a stranger, told only a K-prefix of the query."""
    assert candidate.summary is not None
    manifest = {"scope": "global", "models": [{"id": candidate.summary.model_id, "space": "text"}], "items": candidate.summary.items}
    return RemoteShare(candidate.peer_id, None, tuple(candidate.addresses), manifest, "topics", time.time(), None, None)


class GlobalRouting:
    def __init__(self, catalog: Catalog, host: PeerHost, codebooks: tuple[Codebook, ...], bootstrap: tuple[str, ...] = (), settings: RouteSettings = RouteSettings()) -> None:
        self._catalog = catalog
        self._host = host
        self._codebooks = {codebook.model_id: codebook for codebook in codebooks}
        self._bootstrap = bootstrap
        self.settings = settings
        self.cache = RoutingCache()

    def codebook_for(self, vectors: dict[str, Any]) -> tuple[Codebook, np.ndarray] | None:
        """The first query space that has a codebook, and the query's vector in it."""
        for model_id, known in vectors.items():
            if model_id in self._codebooks:
                return self._codebooks[model_id], np.asarray(known[0])
        return None

    async def _fetch_summary(self, peer_id: str, addresses: list[str]) -> bytes:
        requester = await self._host.requester()
        reply = await requester.request(peer_id, addresses, schema.SUMMARY, {}, timeout=self.settings.summary_seconds)
        return bytes(reply["summary"])

    async def find(self, vectors: dict[str, Any]) -> Routing:
        """The shares to ask for a query, found on the DHT by its topics."""
        chosen = self.codebook_for(vectors)
        if chosen is None:
            raise Unavailable("global search routes by the shipped text space's topics; this node has no text vectors in it (is the text model loaded?)")
        codebook, vector = chosen
        known = await self._catalog.read(list_remote)
        requester = await self._host.requester()
        async with self._host.joined_dht(dht_entry(self._bootstrap, known)) as dht:

            async def lookup(key: str) -> dict[str, list[str]]:
                return await find_providers(dht, key, count=self.settings.providers, timeout=self.settings.lookup_seconds)

            async def list_any() -> dict[str, list[str]]:
                return await find_providers(dht, PEERLIGHT_KEY, count=self.settings.providers, timeout=self.settings.lookup_seconds)

            me = frozenset({str(requester.host.get_id())})
            routed = await route(vector, codebook, lookup, self._fetch_summary, self.cache, self.settings, exclude=me, list_any=list_any)
        by_peer = {remote.peer_id: remote for remote in known}
        # A share found again that the user added or joined keeps its token and name.
        remotes = [by_peer.get(c.peer_id) or _found_share(c) for c in routed.chosen]
        return Routing(remotes, routed)

    async def among_known(self, vectors: dict[str, Any]) -> Routing:
        """The known shares to ask: every one the user added or joined, and the best
        ``settings.ask`` of the others (found by discovery) by their summaries; those without a
        summary (a LAN share, an older node) fill what is left of the ``ask``."""
        known = await self._catalog.read(list_remote)
        chosen_ones = [remote for remote in known if not remote.stranger]
        strangers = [remote for remote in known if remote.stranger]
        space = self.codebook_for(vectors)
        if space is None or len(strangers) <= self.settings.ask:
            return Routing(chosen_ones + strangers[: self.settings.ask], skipped=max(0, len(strangers) - self.settings.ask))
        codebook, vector = space
        candidates = [Candidate(remote.peer_id, list(remote.addresses)) for remote in strangers]
        scored, _ = await rank(vector, codebook, candidates, self._fetch_summary, self.cache, self.settings)
        best = [c.peer_id for c in scored[: self.settings.ask]]
        unscored = [remote.peer_id for remote in strangers if remote.peer_id not in {c.peer_id for c in scored}]
        asked = set(best + unscored[: max(0, self.settings.ask - len(best))])
        return Routing(chosen_ones + [remote for remote in strangers if remote.peer_id in asked], skipped=len(strangers) - len(asked))

    def answered(self, peer_id: str, ok: bool) -> None:
        """What became of asking a share: one that did not answer drops in rank for a while."""
        if ok:
            self.cache.answered(peer_id)
        else:
            self.cache.missed(peer_id)
