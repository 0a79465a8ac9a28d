"""Routing a query to the few shares that matter, from the DHT's topic keys and the shares' signed summaries.

1. The query's K-prefix finds its nearest topics in the codebook, and :func:`plan` orders the
   keys to look up: the top two tiers of the nearest topic's region (the large libraries
   near the query), then the topics' keys by tier and nearness (``TIER_STEP``).
2. The first ``lookups`` keys' providers are looked up in parallel (each lookup bounded in
   time); the next ones, tier 0 included, only while fewer than ``ask`` shares are found.
3. Candidates are ordered by the best key they were found under; the summaries of the best
   ``summaries`` are fetched (or taken from the cache) and verified.
4. Each is scored from its summary (:func:`share_score`), and the best ``ask`` are returned.

The DHT and the wire are passed in as two functions, so the same code routes inside the
daemon (py-libp2p's DHT, the summary protocol) and in ``bench/global_routing.py`` (a model
of Kademlia over 10,000 shares).

Everything a peer says is doubted. A summary that does not verify counts as no answer, and a
share that did not answer drops in rank for a while. A share that answered with no summary
or one of another space is not fetched again for half an hour. A key its own summary does not
bear out (a topic it does not list, or a tier over ten times what it counts there: as a share
claiming every topic provides) counts for nothing: the share is ranked by its summary alone,
and once that summary is cached it no longer takes a fetch ahead of others. Provider records
are not signed (any DHT node may answer with any peer), so a record is never held against
the share it names. No key's providers take more than a quarter of the fetches while other keys' wait.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from peerlight.embeddings.codebook import Codebook
from peerlight.p2p.errors import NotFound
from peerlight.p2p.summaries import TopicSummary, decode

from .topics import REGION_TIERS, TIER_TOLERANCE, TOPIC_TIERS, region_key, tier_floor, topic_key

log = logging.getLogger("peerlight.routing")

Lookup = Callable[[str], Awaitable[dict[str, list[str]]]]  # DHT key -> providers: peer id -> addresses
FetchSummary = Callable[[str, list[str]], Awaitable[bytes]]  # peer id, addresses -> the signed summary

SIZE_WEIGHT = 0.06  # how much a sub-centroid's items count against its closeness (tuned in bench/global_routing.py)
MAX_ITEMS_PER_SUB = 10_000  # items one sub-centroid counts for at most, whatever a summary claims
TIER_STEP = 0.03  # a topic key one tier up is worth one this much less near in cosine (tuned in bench/global_routing.py)
REGION_BONUS = 0.5  # a region key ranks as a topic key of its tier at the query's own point, and half a tier more
MISS_PENALTY = 0.05  # rank lost per unanswered request, while remembered
MISS_PROMISE = 1.0  # ... and a tier of promise per unanswered request, in the order of fetching
KEY_SHARE = 4  # the providers of one key take 1/KEY_SHARE of a query's summary fetches before the other keys' have theirs
LOOKUP_CACHE_BYTES = 32 * 2**20  # what cached lookups may hold (a hostile answer is 256 peers × 8 addresses)


@dataclass(frozen=True)
class RouteSettings:
    lookups: int = 8  # keys looked up (DHT lookups) at once, the most promising first
    max_lookups: int = 24  # ... and in all, while fewer than ``ask`` shares are found
    region_lookups: int = 2  # of the first ``lookups``: the nearest region's top tiers
    summaries: int = 48  # summaries fetched per query at most (those cached are free)
    ask: int = 10  # shares asked
    providers: int = 256  # providers wanted per topic (all a DHT server keeps: p2p/quirks.py)
    lookup_seconds: float = 10.0
    summary_seconds: float = 5.0
    parallel: int = 16  # summary fetches at once
    size_weight: float = SIZE_WEIGHT

    def __post_init__(self) -> None:
        if min(self.lookups, self.max_lookups, self.summaries, self.ask, self.parallel) < 1 or self.region_lookups < 0:
            raise ValueError(f"routing settings must be positive: {self}")


def share_score(summary: TopicSummary, query: np.ndarray, size_weight: float = SIZE_WEIGHT) -> float:
    """How likely the share holds items near the query: a soft count of its items near it, in
    cosine units. Each sub-centroid stands for its topic's items shared among its
    sub-centroids; ``log Σ items · exp((cos − 1) / w) · w`` is the best sub-centroid's cosine
    plus ``w`` times the log of the items it stands for, when one dominates, and adds up
    several that lie equally near."""
    terms = []
    for topic in summary.topics:
        closeness = topic.subs @ query[: topic.subs.shape[1]]
        # A summary's counts are the share's word: what one sub-centroid may stand for is capped.
        terms.append(np.log(min(topic.items / len(topic.subs), MAX_ITEMS_PER_SUB)) + (closeness - 1.0) / size_weight)
    if not terms:
        return -math.inf
    every = np.concatenate(terms)
    top = float(every.max())
    return 1.0 + size_weight * (top + math.log(float(np.exp(every - top).sum())))


@dataclass(frozen=True)
class Probe:
    """A DHT key a query may look up, and what a share found under it promises."""

    key: str
    priority: float  # the preliminary rank of a share found under it, before its summary is read
    level: int  # the key's tier
    topic: int | None = None
    region: int | None = None

    def borne_out_by(self, summary: TopicSummary) -> bool:
        """Whether the share's own summary holds what its record under this key promises (within
        a tier: a key outlives a change of tier by up to 48 hours)."""
        if self.topic is not None:
            counts = {t.centroid: t.items for t in summary.topics}
            return counts.get(self.topic, 0) * TIER_TOLERANCE >= tier_floor(self.level, TOPIC_TIERS)
        assert self.region is not None
        held = summary.regions[self.region] if self.region < len(summary.regions) else 0
        return held * TIER_TOLERANCE >= tier_floor(self.level, REGION_TIERS)


def plan(codebook: Codebook, prefix: np.ndarray, settings: RouteSettings) -> list[Probe]:
    """The keys a query looks up, in order: the first ``settings.lookups`` are the nearest
    region's top two tiers and the topic keys of tier 1 and 2 most worth it (a tier up is worth
    ``TIER_STEP`` of cosine); tier 0 keys (small shares) come after, for a young or small network."""
    topics, closeness = codebook.nearest(prefix, settings.max_lookups)
    region = int(codebook.regions[int(topics[0])])
    regions = [Probe(region_key(codebook.id, region, level), level + REGION_BONUS, level, region=region) for level in (2, 1)][: settings.region_lookups]
    ranked = sorted(((level - (1.0 - float(c)) / TIER_STEP, int(t), level) for t, c in zip(topics, closeness) for level in (2, 1, 0)), reverse=True)
    probes = [Probe(topic_key(codebook.id, t, level), priority, level, topic=t) for priority, t, level in ranked]
    first = [p for p in probes if p.level > 0][: max(0, settings.lookups - len(regions))]
    return regions + first + [p for p in probes if p not in first]


@dataclass
class Candidate:
    peer_id: str
    addresses: list[str]
    found_under: list[Probe] = field(default_factory=list)  # the keys it was found under
    summary: TopicSummary | None = None
    score: float = -math.inf
    flagged: bool = False  # found under a key its summary does not bear out (the key then counts for nothing)
    error: str | None = None

    def judge_keys(self, summary: TopicSummary) -> None:
        """Keep only the keys the share's summary bears out."""
        kept = [p for p in self.found_under if p.borne_out_by(summary)]
        self.flagged = self.flagged or len(kept) < len(self.found_under)
        self.found_under = kept

    @property
    def promise(self) -> float:
        """Its preliminary rank: the best key it was found under (a share only listed: last)."""
        return max((p.priority for p in self.found_under), default=-math.inf)


class _Expiring:
    """A bounded map whose entries expire: oldest dropped first when full."""

    def __init__(self, seconds: float, limit: int, budget: int | None = None, cost: Callable[[Any], int] = lambda value: 1) -> None:
        self.seconds, self.limit, self.budget, self.cost = seconds, limit, budget, cost
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._spent = 0  # the entries' cost, when there is a budget

    def get(self, key: str, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            self._drop(key)
            return None
        return entry[1]

    def put(self, key: str, value: Any, now: float, until: float | None = None) -> None:
        self._drop(key)
        self._entries[key] = (min(until, now + self.seconds) if until is not None else now + self.seconds, value)
        self._spent += self.cost(value)
        while len(self._entries) > self.limit or (self.budget is not None and self._spent > self.budget and len(self._entries) > 1):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._spent -= self.cost(entry[1])


class RoutingCache:
    """What routing remembers between queries: key lookups (10 min, 32 MB at most), verified
    summaries (until they expire, an hour at most), shares that did not answer (an hour), and
    shares that answered with no usable summary (half an hour)."""

    def __init__(self, topic_seconds: float = 600, summary_seconds: float = 3600, penalty_seconds: float = 3600, limit: int = 2_000) -> None:
        self.topics = _Expiring(topic_seconds, limit, LOOKUP_CACHE_BYTES, _lookup_bytes)  # each up to 256 providers
        self.summaries = _Expiring(summary_seconds, limit)  # each a few KB decoded
        self.misses = _Expiring(penalty_seconds, limit)  # peer -> unanswered requests
        self.unusable = _Expiring(penalty_seconds / 2, limit)  # peer -> why its summary is of no use

    def missed(self, peer_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.misses.put(peer_id, (self.misses.get(peer_id, now) or 0) + 1, now)

    def answered(self, peer_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        misses = self.misses.get(peer_id, now)
        if misses:
            self.misses.put(peer_id, misses - 1, now)

    def summary(self, peer_id: str, now: float) -> TopicSummary | None:
        return self.summaries.get(peer_id, now)


@dataclass
class Route:
    """A query's routing: the shares to ask, best first, and what it cost."""

    chosen: list[Candidate]
    candidates: int  # shares found under the query's keys
    lookups: int  # DHT lookups made (not from the cache)
    fetched: int  # summaries fetched (not from the cache)
    probes: list[Probe]  # the keys looked up (or taken from the cache)

    @property
    def topics(self) -> list[int]:
        return sorted({p.topic for p in self.probes if p.topic is not None})


async def route(
    query: np.ndarray,
    codebook: Codebook,
    lookup: Lookup,
    fetch_summary: FetchSummary,
    cache: RoutingCache,
    settings: RouteSettings = RouteSettings(),
    *,
    now: Callable[[], float] = time.time,
    exclude: frozenset[str] = frozenset(),
    list_any: Callable[[], Awaitable[dict[str, list[str]]]] | None = None,
) -> Route:
    prefix = codebook.prefixes(np.asarray(query).reshape(1, -1))[0]
    probes = plan(codebook, prefix, settings)
    found: dict[str, dict[str, list[str]]] = {}
    lookups = 0

    async def look_up(key: str) -> None:
        nonlocal lookups
        cached = cache.topics.get(key, now())
        if cached is not None:
            found[key] = cached
            return
        lookups += 1
        found[key] = {}
        with trio.move_on_after(settings.lookup_seconds):
            try:
                found[key] = await lookup(key)
            except Exception as exc:  # a lookup that fails is a key without providers, not a failed search
                log.info("a topic lookup failed", extra={"key": key, "reason": str(exc)})
                return
            cache.topics.put(key, found[key], now())  # a finished lookup, even an empty one

    candidates: dict[str, Candidate] = {}
    searched = 0
    # The most promising keys first; where few shares hold them (a young or small network), the next ones.
    def usable() -> int:  # shares found that may answer with a summary (not those known to have none)
        return sum(cache.unusable.get(peer_id, now()) is None for peer_id in candidates)

    while searched < min(len(probes), settings.max_lookups) and (searched == 0 or usable() < settings.ask):
        batch = probes[searched : min(searched + settings.lookups, settings.max_lookups)]
        searched += len(batch)
        async with trio.open_nursery() as nursery:
            for probe in batch:
                nursery.start_soon(look_up, probe.key)
        for probe in batch:
            for peer_id, addresses in found.get(probe.key, {}).items():
                if peer_id in exclude:
                    continue
                candidates.setdefault(peer_id, Candidate(peer_id, list(addresses))).found_under.append(probe)
    if usable() < settings.ask and list_any is not None:
        # A network so small that its shares hold few of the topics: any share (the Peerlight
        # key lists them, 256 at most) may be the one, and the summaries still choose.
        lookups += 1
        with trio.move_on_after(settings.lookup_seconds):
            try:
                for peer_id, addresses in (await list_any()).items():
                    if peer_id not in exclude:
                        candidates.setdefault(peer_id, Candidate(peer_id, list(addresses)))
            except Exception as exc:
                log.info("listing shares failed", extra={"reason": str(exc)})
    # Before summaries: shares found under the most promising keys (many items near the query) first.
    ordered = sorted(candidates.values(), key=lambda c: c.promise, reverse=True)
    scored, fetched = await rank(prefix, codebook, ordered, fetch_summary, cache, settings, now=now)
    return Route(scored[: settings.ask], len(candidates), lookups, fetched, probes[:searched])


async def rank(
    query: np.ndarray,
    codebook: Codebook,
    ordered: list[Candidate],
    fetch_summary: FetchSummary,
    cache: RoutingCache,
    settings: RouteSettings = RouteSettings(),
    *,
    now: Callable[[], float] = time.time,
) -> tuple[list[Candidate], int]:
    """Score candidate shares (in a first order) from their summaries, best first, and how many
    summaries were fetched: those cached, and ``settings.summaries`` others (``_to_fetch``).
    Shares without a valid summary are left out."""
    prefix = codebook.prefixes(np.asarray(query).reshape(1, -1))[0]
    fetched = 0
    limiter = trio.CapacityLimiter(settings.parallel)

    async def get_summary(candidate: Candidate) -> None:
        nonlocal fetched
        async with limiter:
            fetched += 1
            try:
                with trio.fail_after(settings.summary_seconds):
                    value = await fetch_summary(candidate.peer_id, candidate.addresses)
                summary = decode(value, candidate.peer_id, now=now())
            except NotFound:  # it answered: it publishes no summary (a LAN share, an older node)
                candidate.error = "it publishes no topic summary"
                cache.unusable.put(candidate.peer_id, candidate.error, now())
                return
            except Exception as exc:  # no answer, or not a valid one (InvalidSummary, a wire error, a timeout)
                candidate.error = f"{type(exc).__name__}: {exc}"
                cache.missed(candidate.peer_id, now())
                return
        if summary.codebook != codebook.id or summary.model_id != codebook.model_id or any(t.subs.shape[1] != codebook.prefix for t in summary.topics):
            candidate.error = "its summary is not of this codebook's space"  # its codebook id copied onto other vectors
        elif not _regions_agree(summary, codebook):
            candidate.error = "its regions do not hold its topics"
        if candidate.error is not None:
            cache.unusable.put(candidate.peer_id, candidate.error, now())
            return
        candidate.summary = summary
        cache.summaries.put(candidate.peer_id, summary, now(), until=summary.expires)

    cached, uncached = [], []
    for candidate in ordered:
        if cache.unusable.get(candidate.peer_id, now()) is not None:
            continue
        candidate.summary = cache.summary(candidate.peer_id, now())
        if candidate.summary is not None:
            cached.append(candidate)
        else:
            uncached.append(candidate)
    wanted = cached + _to_fetch(uncached, cache, settings.summaries, now())
    async with trio.open_nursery() as nursery:
        for candidate in wanted:
            if candidate.summary is None:
                nursery.start_soon(get_summary, candidate)

    scored = []
    for candidate in wanted:
        if candidate.summary is None:
            continue
        candidate.judge_keys(candidate.summary)
        misses = cache.misses.get(candidate.peer_id, now()) or 0
        candidate.score = share_score(candidate.summary, prefix, settings.size_weight) - MISS_PENALTY * misses
        scored.append(candidate)
    scored.sort(key=lambda c: c.score, reverse=True)
    return scored, fetched


def _to_fetch(uncached: list[Candidate], cache: RoutingCache, budget: int, now: float) -> list[Candidate]:
    """The candidates whose summaries are fetched: the most promising, a tier lost per unanswered
    request; those found under one key alone beyond ``budget / KEY_SHARE`` only after every other
    key's (a few peers providing one popular key cannot crowd the others out)."""
    promise = {c.peer_id: c.promise - MISS_PROMISE * (cache.misses.get(c.peer_id, now) or 0) for c in uncached}
    per_key: dict[str, int] = {}
    chosen, held_back = [], []
    for candidate in sorted(uncached, key=lambda c: promise[c.peer_id], reverse=True):
        best = max(candidate.found_under, key=lambda p: p.priority).key if candidate.found_under else ""
        if best and per_key.get(best, 0) >= max(1, budget // KEY_SHARE):
            held_back.append(candidate)  # its key had its share: after every other key's candidates
            continue
        per_key[best] = per_key.get(best, 0) + 1
        chosen.append(candidate)
    return (chosen + held_back)[:budget]


def _lookup_bytes(providers: dict[str, list[str]]) -> int:
    return sum(len(peer) + sum(len(a) for a in addresses) + 64 for peer, addresses in providers.items())


def _regions_agree(summary: TopicSummary, codebook: Codebook) -> bool:
    """A summary's region counts are one per region of the codebook, each at least its listed topics' items."""
    if len(summary.regions) != codebook.region_count:
        return False
    listed = np.zeros(codebook.region_count, dtype=np.int64)
    for topic in summary.topics:
        if topic.centroid >= codebook.size:
            return False
        listed[codebook.regions[topic.centroid]] += topic.items
    return bool((listed <= np.asarray(summary.regions)).all())
