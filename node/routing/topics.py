"""What a share tells the world it holds: its topics (DHT keys) and its summary (histogram and sub-centroids).

A share provides a DHT key for each codebook topic under which it holds at least
``MIN_TOPIC_ITEMS`` items, its ``MAX_TOPICS`` fullest at most (one provider record each). Its
summary lists the same topics with their item counts and a few sub-centroids each, within
``MAX_SUMMARY_BYTES``. Re-publishing is incremental: a topic provided before keeps its place
until another holds clearly more (``STICKINESS``), so a library that changed a little
changes few keys.
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
STICKINESS = 1.5  # a provided topic is replaced only by one holding this many times its items
SUMMARY_LIFETIME = 6 * 3600  # a summary expires this long after it is made (re-made well before)
SAMPLE_PER_TOPIC = 2000  # items of one topic its sub-centroids are computed from


def topic_key_text(codebook_id: str, centroid: int) -> str:
    return f"peerlight:topic:v1:{codebook_id}:{centroid}"


def topic_key(codebook_id: str, centroid: int) -> str:
    """The DHT key of a topic: the sha2-256 multihash of its text, as the DHT's provider records expect."""
    return provider_key(topic_key_text(codebook_id, centroid))


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
    topics: list[int]  # provided, fullest first
    subs: dict[int, np.ndarray]  # topic -> (s, K) sub-centroids
    items: int


def profile(codebook: Codebook, vectors: np.ndarray, previous: frozenset[int] = frozenset(), seed: int = 0) -> Profile:
    """The share's topics and sub-centroids from its items' vectors in the codebook's space."""
    prefixes = codebook.prefixes(vectors) if len(vectors) else np.zeros((0, codebook.prefix), np.float32)
    assigned = np.argmax(prefixes @ codebook.centroids.T, axis=1) if len(prefixes) else np.zeros(0, np.int64)
    histogram = np.bincount(assigned, minlength=codebook.size)
    topics = choose_topics(histogram, previous)
    budget = _sub_budget([int(histogram[t]) for t in topics])
    subs = {t: _sub_centroids(prefixes[assigned == t], s, seed + t) for t, s in zip(topics, budget)}
    return Profile(histogram, topics, subs, len(prefixes))


def summary_of(codebook: Codebook, found: Profile, peer_id: str, seq: int, now: float | None = None, retired: tuple[int, ...] = ()) -> TopicSummary:
    issued = int(time.time() if now is None else now)
    topics = tuple(Topic(t, int(found.histogram[t]), found.subs[t]) for t in found.topics)
    lifetime = min(SUMMARY_LIFETIME, MAX_LIFETIME)
    return TopicSummary(peer_id, codebook.id, codebook.model_id, found.items, topics, seq, issued, issued + lifetime, retired)
