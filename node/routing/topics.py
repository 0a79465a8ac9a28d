"""What a share tells the world it holds: its DHT keys (topics and regions, by tier) and its summary.

Keys carry a *tier*, how many items the share holds there, so that a query finds the
shares holding many items near it without reading a summary first, and so that no key
collects every small share of a popular topic:

- a **topic key** for each of its fullest topics: tier 0 for 1–9 items, 1 for 10–99, 2 for
  100 or more (``TOPIC_TIERS``);
- a **region key** for each of its fullest regions (the codebook's 32 groups of topics)
  holding at least 300 items: tier 1 below 3,000, tier 2 from 3,000 (``REGION_TIERS``). A
  large library holds items in hundreds of topics, more than its 64 records could name, and
  in few regions: its region keys find it for every query near what it holds.

At most ``MAX_REGION_KEYS`` region keys, and topic keys for the rest of ``MAX_TOPICS``
records. The summary lists the fullest ``MAX_TOPICS`` topics with their item counts and a few
sub-centroids each, and the items per region, within ``MAX_SUMMARY_BYTES``. Re-publishing is
incremental: a topic provided before keeps its place until another holds clearly more
(``STICKINESS``), and a key changes only when its tier does, so a library that changed a
little changes few keys.

The tiers and the number of region keys were chosen on the seven training sources in
``bench/global_routing.py --corpus tune`` and checked on Debian's descriptions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from peerlight.embeddings.codebook import Codebook
from peerlight.embeddings.vectors import normalize
from peerlight.p2p.dht import provider_key
from peerlight.p2p.summaries import MAX_LIFETIME, MAX_SUBS, MAX_SUBS_PER_TOPIC, MAX_TOPICS, Topic, TopicSummary

MIN_TOPIC_ITEMS = 1  # a share provides its fullest topics, however small it is (the 64 cap bounds its records)
TOPIC_TIERS = (10, 100)  # a topic key's tier: how many of these floors the share's items there reach
REGION_TIERS = (300, 3000)  # a region key's tier 1 and 2; a region under 300 items has no key
MAX_REGION_KEYS = 16  # region keys of one share at most; its topic keys fill the rest of its records
TIER_TOLERANCE = 10  # a key whose tier's floor is over this many times the summary's count is an overclaim
STICKINESS = 1.5  # a provided topic is replaced only by one holding this many times its items
SUMMARY_LIFETIME = 6 * 3600  # a summary expires this long after it is made (re-made well before)
SAMPLE_PER_TOPIC = 2000  # items of one topic its sub-centroids are computed from


def tier(count: int, floors: tuple[int, ...]) -> int:
    """How many of ``floors`` a count reaches."""
    return sum(count >= floor for floor in floors)


def tier_floor(level: int, floors: tuple[int, ...]) -> int:
    """The fewest items a key of this tier stands for."""
    return floors[level - 1] if level > 0 else 1


def topic_key_text(codebook_id: str, centroid: int, level: int) -> str:
    return f"peerlight:topic:v2:{codebook_id}:{centroid}:{level}"


def region_key_text(codebook_id: str, region: int, level: int) -> str:
    return f"peerlight:region:v1:{codebook_id}:{region}:{level}"


def topic_key(codebook_id: str, centroid: int, level: int) -> str:
    """The DHT key of a topic's tier: the sha2-256 multihash of its text, as the DHT's provider records expect."""
    return provider_key(topic_key_text(codebook_id, centroid, level))


def region_key(codebook_id: str, region: int, level: int) -> str:
    return provider_key(region_key_text(codebook_id, region, level))


def sticky_tier(count: int, floors: tuple[int, ...], previous: int | None = None) -> int:
    """The tier of ``count``, except that a tier held before is kept while the count stays within
    ``STICKINESS`` of its bounds: a count wavering at a floor does not change the key each time."""
    now = tier(count, floors)
    if previous is None or previous == now:
        return now
    if previous > now:
        return previous if count * STICKINESS >= tier_floor(previous, floors) else now
    return previous if previous < len(floors) and count < floors[previous] * STICKINESS else now


def choose_regions(histogram: np.ndarray, previous: frozenset[int] = frozenset(), limit: int = MAX_REGION_KEYS) -> list[int]:
    """The regions to provide keys for, fullest first: those with at least ``REGION_TIERS[0]``
    items, and those provided before while they keep two-thirds of it."""
    held = [r for r in range(len(histogram)) if histogram[r] >= REGION_TIERS[0] or (r in previous and histogram[r] * STICKINESS >= REGION_TIERS[0])]
    return sorted(held, key=lambda r: -histogram[r])[:limit]


def choose_topics(histogram: np.ndarray, previous: frozenset[int] = frozenset(), limit: int = MAX_TOPICS, minimum: int = MIN_TOPIC_ITEMS) -> list[int]:
    """The topics to provide, fullest first: at least ``minimum`` items each, at most ``limit``;
    those provided before weigh ``STICKINESS`` times their items, so small changes keep them."""
    held = np.flatnonzero(histogram >= minimum)
    weight = histogram[held].astype(np.float64) * np.array([STICKINESS if int(t) in previous else 1.0 for t in held])
    chosen = held[np.argsort(-weight, kind="stable")][:limit]
    return [int(t) for t in chosen[np.argsort(-histogram[chosen], kind="stable")]]


def _sub_budget(counts: list[int]) -> list[int]:
    """Sub-centroids per topic: one each, the rest shared by the square root of their items."""
    if not counts:
        return []
    spare = MAX_SUBS - len(counts)
    roots = np.sqrt(np.asarray(counts, dtype=np.float64))
    extra = np.floor(spare * roots / roots.sum()).astype(int) if spare > 0 else np.zeros(len(counts), int)
    return [int(min(MAX_SUBS_PER_TOPIC, 1 + e, n)) for e, n in zip(extra, counts)]


def _sub_centroids(prefixes: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` points summarising where ``prefixes`` lie: spherical k-means, or the points themselves."""
    if len(prefixes) <= count:
        return normalize(prefixes)
    if len(prefixes) > SAMPLE_PER_TOPIC:
        prefixes = prefixes[np.random.default_rng(seed).choice(len(prefixes), SAMPLE_PER_TOPIC, replace=False)]
    if count == 1:
        return normalize(prefixes.mean(axis=0, keepdims=True))
    import faiss

    kmeans = faiss.Kmeans(prefixes.shape[1], count, niter=10, seed=seed, spherical=True, verbose=False, max_points_per_centroid=SAMPLE_PER_TOPIC, min_points_per_centroid=1)
    kmeans.train(np.ascontiguousarray(prefixes, dtype=np.float32))
    return normalize(kmeans.centroids.astype(np.float32))


@dataclass(frozen=True)
class Profile:
    """A share's items seen through the codebook: the input of its topic keys and summary."""

    histogram: np.ndarray  # (C,) items per topic
    topics: list[int]  # listed in the summary, fullest first
    subs: dict[int, np.ndarray]  # topic -> (s, K) sub-centroids
    items: int
    region_histogram: np.ndarray  # (R,) items per region
    regions: list[int]  # provided, fullest first
    topic_tiers: dict[int, int]  # provided topic -> its key's tier
    region_tiers: dict[int, int]  # provided region -> its key's tier

    @property
    def provided_topics(self) -> list[int]:
        """The listed topics that have a key: the fullest, within the records the regions leave."""
        return self.topics[: MAX_TOPICS - len(self.regions)]

    def keys(self, codebook_id: str) -> list[str]:
        """Every DHT key the share provides: its regions', then its topics', each at its tier."""
        regions = [region_key(codebook_id, r, self.region_tiers[r]) for r in self.regions]
        return regions + [topic_key(codebook_id, t, self.topic_tiers[t]) for t in self.provided_topics]


def profile(codebook: Codebook, vectors: np.ndarray, previous: Profile | None = None, seed: int = 0) -> Profile:
    """The share's topics, regions and sub-centroids from its items' vectors in the codebook's
    space; with the ``previous`` profile, its keys change only where the library clearly did."""
    prefixes = codebook.prefixes(vectors) if len(vectors) else np.zeros((0, codebook.prefix), np.float32)
    assigned = np.argmax(prefixes @ codebook.centroids.T, axis=1) if len(prefixes) else np.zeros(0, np.int64)
    histogram = np.bincount(assigned, minlength=codebook.size)
    topics = choose_topics(histogram, frozenset(previous.topics) if previous else frozenset())
    budget = _sub_budget([int(histogram[t]) for t in topics])
    subs = {t: _sub_centroids(prefixes[assigned == t], s, seed + t) for t, s in zip(topics, budget)}
    regions = np.bincount(codebook.regions, weights=histogram, minlength=codebook.region_count).astype(np.int64)
    provided_regions = choose_regions(regions, frozenset(previous.regions) if previous else frozenset())
    before_topics, before_regions = (previous.topic_tiers, previous.region_tiers) if previous else ({}, {})
    region_tiers = {r: max(1, sticky_tier(int(regions[r]), REGION_TIERS, before_regions.get(r))) for r in provided_regions}
    topic_tiers = {t: sticky_tier(int(histogram[t]), TOPIC_TIERS, before_topics.get(t)) for t in topics}
    return Profile(histogram, topics, subs, len(prefixes), regions, provided_regions, topic_tiers, region_tiers)


def summary_of(codebook: Codebook, found: Profile, peer_id: str, seq: int, now: float | None = None, retired: tuple[int, ...] = ()) -> TopicSummary:
    issued = int(time.time() if now is None else now)
    topics = tuple(Topic(t, int(found.histogram[t]), found.subs[t]) for t in found.topics)
    lifetime = min(SUMMARY_LIFETIME, MAX_LIFETIME)
    regions = tuple(int(n) for n in found.region_histogram)
    return TopicSummary(peer_id, codebook.id, codebook.model_id, found.items, topics, seq, issued, issued + lifetime, retired, regions)
