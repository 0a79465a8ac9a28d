"""A public global share's topics and signed summary, kept in step with its items.

The summary is re-made when the catalog changed (it is a read of every item's K-prefix, so
not more often than the share re-provides) and re-signed before half its lifetime has
passed. Topics it stops holding are listed as *retired* for as long as their DHT records
may still name it (``RETIRED_SECONDS``), so an honest share is never taken for one that
provides topics it cannot fill.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from peerlight.embeddings.codebook import Codebook
from peerlight.p2p.summaries import MAX_RETIRED, InvalidSummary, TopicSummary, encode

from ..catalog.database import Catalog
from ..serving.share_queries import scope_prefixes
from .topics import SUMMARY_LIFETIME, Profile, profile, summary_of

REFRESH_SECONDS = 600.0  # a share's topics are computed again at most this often (a read of every item)
RETIRED_SECONDS = 48 * 3600  # a provider record's longest life on the DHT (go-libp2p and py-libp2p: 48 h)


class TopicPublisher:
    def __init__(self, catalog: Catalog, codebook: Codebook, peer_id: str, key: Any, scope: Callable[[], Any], now: Callable[[], float] = time.time) -> None:
        self._catalog = catalog
        self.codebook = codebook
        self._peer_id = peer_id
        self._key = key  # the share's Ed25519 signing key
        self._scope = scope  # what strangers may see of the share now
        self._now = now
        self._generation: int | None = None
        self.topics: list[int] = []  # listed in its summary
        self._profile: Profile | None = None
        self.retired: dict[int, float] = {}  # topic -> when it was given up
        self.value: bytes | None = None  # the signed summary, when the share holds items of the space
        self._issued = 0.0

    def keys(self) -> list[str]:
        """The DHT keys it provides now: its regions' and topics' at their tiers."""
        return self._profile.keys(self.codebook.id) if self._profile is not None and self.value is not None else []

    def withdraw(self) -> None:
        """The share no longer lets strangers search: no topics, no summary. What it provided is
        retired (its DHT records live on), and the next refresh, should it publish again, reads
        the library at once."""
        now = self._now()
        for topic in self._profile.provided_topics if self._profile is not None else []:
            self.retired[topic] = now
        self.topics, self.value, self._profile, self._generation, self._issued = [], None, None, None, 0.0

    async def refresh(self) -> None:
        """Re-make the summary if the catalog changed or it is half way to expiring."""
        now = self._now()
        due = now - self._issued >= SUMMARY_LIFETIME / 2
        # The catalog's generation moves with every write (an access log entry too): a library's
        # topics are read again at most every REFRESH_SECONDS, and at once when the summary ages.
        changed = self._generation != self._catalog.generation
        if not due and not (changed and (self.value is None or now - self._issued >= REFRESH_SECONDS)):
            return
        self._generation = self._catalog.generation
        prefixes = await self._catalog.read(partial(scope_prefixes, scope=self._scope(), model_id=self.codebook.model_id, k=self.codebook.prefix))
        found = await trio.to_thread.run_sync(profile, self.codebook, prefixes, self._profile)
        # Retired: topics whose keys it provided and provides no more (their records outlive the change).
        retired = dict(self.retired)
        before = set(self._profile.provided_topics) if self._profile is not None else set()
        for topic in before - set(found.provided_topics):
            retired[topic] = now
        for topic in found.topics:
            retired.pop(topic, None)
        recent = sorted((t for t, at in retired.items() if now - at < RETIRED_SECONDS), key=lambda t: -retired[t])[:MAX_RETIRED]
        retired = {t: retired[t] for t in recent}
        value = None
        if found.topics:
            summary = summary_of(self.codebook, found, self._peer_id, seq=int(now * 1000), now=now, retired=tuple(sorted(retired)))
            value = _signed_within_limit(summary, self._key)
        # Only once the summary is signed: keys never run ahead of the summary peers are served.
        self.topics, self._profile, self.retired, self.value = found.topics, found, retired, value
        self._issued = now


def _signed_within_limit(summary: TopicSummary, key: Any) -> bytes:
    """The signed summary; one sub-centroid per topic if the full one would pass the 2 KB limit
    (a long model id leaves less room)."""
    try:
        return encode(summary, key)
    except InvalidSummary:
        slim = tuple(dataclasses.replace(topic, subs=topic.subs[:1]) for topic in summary.topics)
        return encode(dataclasses.replace(summary, topics=slim), key)
