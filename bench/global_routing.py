"""Global search routing over 10,000 simulated shares: recall@10 against asking every share.

The routing is the node's own code (``peerlight.node.routing``: topics, signed summaries,
caches, the router); only the network is modelled. Kademlia is **modelled**, faithfully to
py-libp2p 0.8.1 where it matters for routing:

- every share is a DHT server; node ids are the sha2-256 of the peer id (the top 64 bits);
- routing tables hold k = 20 peers per bucket (chosen at random among those that fit);
- a provider record lands on the k nodes closest to its key, and each keeps the first
  ``--provider-cap`` providers of a key (256 with Peerlight's quirk; py-libp2p alone keeps 20);
- a lookup is iterative: ALPHA = 10 closest unqueried peers per round, each answering with the
  k closest it knows, until the k closest have all answered; then the closest is asked for
  the providers. A round lasts as long as its slowest answer (py-libp2p waits for the batch);
- round-trip times come from a region model (Europe, North America, Asia, South America,
  Oceania, weighted like the public IPFS network's nodes) with medians close to public
  inter-region ping tables (WonderNetwork), plus each home's access link. A peer first met
  costs 4 round trips (TCP, Noise XX, multistream), one already connected costs 1. A node's
  routing-table peers count as connected.

Content is real: each share is a user with 1–3 interests drawn from a long-tailed
distribution (interests are k-means clusters of the corpus's full vectors, popularity
Zipf(1)); sizes are Zipf-distributed from 10 to 100,000 items (P(s) ∝ s⁻², capped at the
pool); a share's items are drawn from its interests by a Zipf popularity, spilling into the
nearest interests when it holds more. Queries are held-out texts of the same corpus.

Two corpora: ``--corpus tune`` (the seven sources the ordering and codebook were trained on:
the routing's constants were tuned on it) and ``--corpus debian`` (Debian's package
descriptions, never trained or tuned on: the figure the README reports).

Recall@10: the share-side answers (each share's top 10 by its K = 48 prefix, as a stranger is
asked) merged, against the top 10 of every item of every share scored the same way.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, median, percentile  # noqa: E402

from peerlight.embeddings.adapters import Adapter  # noqa: E402
from peerlight.embeddings.default_adapters import file_for, shipped_codebook  # noqa: E402
from peerlight.embeddings.vectors import normalize  # noqa: E402
from peerlight.node.routing.router import RouteSettings, RoutingCache, route  # noqa: E402
from peerlight.node.routing.topics import profile, region_key, summary_of  # noqa: E402
from peerlight.p2p.summaries import encode  # noqa: E402

BASE_MODEL = "st:all-MiniLM-L6-v2"
K_BUCKET, ALPHA = 20, 10
ASKED_PREFIX = 48  # what a stranger's share is sent, and ranks by
REGIONS = ("eu", "na", "as", "sa", "oc")
REGION_SHARE = (0.40, 0.33, 0.20, 0.04, 0.03)
RTT_MS = np.array(  # median round trips between regions (ms), after public inter-region ping tables
    [
        [30, 110, 230, 200, 280],
        [110, 60, 180, 150, 190],
        [230, 180, 90, 320, 150],
        [200, 150, 320, 60, 300],
        [280, 190, 150, 300, 40],
    ],
    dtype=np.float64,
)
NEW_CONTACT_RTTS, KNOWN_CONTACT_RTTS = 4, 1
SHARE_ANSWER_MS = 20.0  # a share's own search of its items


def corpus_vectors(name: str, pool: int, queries: int) -> tuple[str, np.ndarray, np.ndarray]:
    """The encoder's model id, and base vectors of the pool and of held-out queries (never in the
    pool); kept in the benchmark cache (reading the sources again takes minutes)."""
    cached = Path(os.environ.get("PEERLIGHT_BENCH_CACHE", Path.home() / ".cache" / "peerlight-bench")) / f"routing-{name}-{pool}-{queries}.npz"
    if cached.exists():
        with np.load(cached) as saved:
            return str(saved["model_id"]), saved["pool"], saved["queries"]
    model_id, items, held = _corpus_vectors(name, pool, queries)
    np.savez(cached, model_id=np.array(model_id), pool=items, queries=held)
    return model_id, items, held


def _corpus_vectors(name: str, pool: int, queries: int) -> tuple[str, np.ndarray, np.ndarray]:
    import prefix_quality as pq
    from text_sources import BY_NAME, SOURCES

    model = pq.encoder()
    if name == "debian":
        texts = BY_NAME["debian"].texts()
        if len(texts) < pool + queries:
            raise SystemExit(f"debian: {len(texts)} units, fewer than {pool} + {queries}")
        vectors = pq.encoded(model, texts[: pool + queries], "debian")
        return model.model_id, vectors[:pool], vectors[pool:]
    names = [source.name for source in SOURCES if source.trains]
    splits = pq.source_splits(model, names, pq.CORPUS, pq.QUERIES, pq.TRAIN_PER_SOURCE)
    items = np.concatenate([np.concatenate([s.corpus, s.train]) for s in splits.values()])[:pool]
    held = np.concatenate([s.queries for s in splits.values()])
    return model.model_id, items, held[np.random.default_rng(1).permutation(len(held))[:queries]]


@dataclass
class World:
    vectors: np.ndarray  # (pool, D) ordered vectors
    shares: list[np.ndarray]  # item indices per share
    region: np.ndarray  # (shares,)
    access_ms: np.ndarray  # (shares,) each home's access link
    prefix48: np.ndarray  # (pool, 48) the renormalised prefixes shares rank by


def build_world(vectors: np.ndarray, shares: int, interests: int, rng: np.random.Generator) -> World:
    import faiss

    kmeans = faiss.Kmeans(vectors.shape[1], interests, niter=15, seed=int(rng.integers(1 << 30)), spherical=True, verbose=False)
    kmeans.train(np.ascontiguousarray(vectors))
    _, assigned = kmeans.index.search(np.ascontiguousarray(vectors), 1)
    members = [np.flatnonzero(assigned[:, 0] == i) for i in range(interests)]
    for m in members:
        rng.shuffle(m)  # the order within an interest is its items' popularity
    neighbours = np.argsort(-(kmeans.centroids @ kmeans.centroids.T), axis=1)
    popularity = 1.0 / np.arange(1, interests + 1)
    popularity = popularity[rng.permutation(interests)]
    popularity /= popularity.sum()
    # Sizes: P(s) ∝ s^-2 on [10, 100000] (a Pareto tail: most shares small, a few huge).
    u = rng.random(shares)
    low, high = 10.0, 100_000.0
    sizes = np.minimum((1.0 / (1.0 / low - u * (1.0 / low - 1.0 / high))).astype(int), len(vectors))
    held = []
    for size in sizes:
        chosen = list(rng.choice(interests, size=int(rng.integers(1, 4)), replace=False, p=popularity))
        pool_size = sum(len(members[i]) for i in chosen)
        for extra in neighbours[chosen[0]]:
            if pool_size >= size * 1.5:
                break
            if extra not in chosen:
                chosen.append(int(extra))
                pool_size += len(members[extra])
        candidates = np.concatenate([members[i] for i in chosen])
        weights = np.concatenate([1.0 / np.arange(1, len(members[i]) + 1) ** 0.8 for i in chosen])
        take = min(int(size), len(candidates))
        held.append(np.sort(rng.choice(candidates, size=take, replace=False, p=weights / weights.sum())))
    region = rng.choice(len(REGIONS), size=shares, p=REGION_SHARE)
    access = rng.uniform(5, 25, size=shares)
    return World(vectors, held, region, access, normalize(vectors[:, :ASKED_PREFIX]))


class Kademlia:
    """Routing tables, provider records and iterative lookups of ``n`` DHT servers (see the module doc)."""

    def __init__(self, ids: np.ndarray, world: World, provider_cap: int, rng: np.random.Generator) -> None:
        self.ids = ids
        self.world = world
        self.cap = provider_cap
        self.rng = rng
        self.tables = [self._table(i) for i in range(len(ids))]
        self.providers: dict[int, list[int]] = {}  # key -> providers stored at its closest nodes

    def _table(self, node: int) -> np.ndarray:
        distance = (self.ids ^ self.ids[node]).astype(np.float64)
        distance[node] = np.inf
        bucket = np.floor(np.log2(np.maximum(distance, 1)))
        table = []
        for b in np.unique(bucket[np.isfinite(distance)]):
            inside = np.flatnonzero(bucket == b)
            table.append(inside if len(inside) <= K_BUCKET else self.rng.choice(inside, K_BUCKET, replace=False))
        return np.concatenate(table)

    def rtt(self, a: int, b: int) -> float:
        w = self.world
        return float(RTT_MS[w.region[a], w.region[b]] * self.rng.lognormal(0, 0.15) + w.access_ms[a] + w.access_ms[b])

    def closest(self, key: int, among: np.ndarray, count: int) -> np.ndarray:
        return among[np.argsort(self.ids[among] ^ np.uint64(key))[:count]]

    def store(self, key: int, provider: int) -> None:
        held = self.providers.setdefault(key, [])
        if len(held) < self.cap and provider not in held:
            held.append(provider)

    def lookup(self, origin: int, key: int, alive: np.ndarray | None = None) -> tuple[list[int], float]:
        """The providers of ``key`` as ``origin`` finds them, and the milliseconds it took."""
        known = set(self.tables[origin].tolist())
        queried: set[int] = set()
        shortlist = self.closest(key, self.tables[origin], K_BUCKET)
        elapsed = 0.0
        while True:
            batch = [int(p) for p in shortlist if int(p) not in queried][:ALPHA]
            if not batch:
                break
            slowest = 0.0
            for peer in batch:
                queried.add(peer)
                rtts = KNOWN_CONTACT_RTTS if peer in self.tables[origin] else NEW_CONTACT_RTTS
                slowest = max(slowest, rtts * self.rtt(origin, peer))
                if alive is not None and not alive[peer]:
                    slowest = max(slowest, 10_000.0)  # py-libp2p's QUERY_TIMEOUT: a vanished peer holds the round
                    continue
                known.update(self.closest(key, self.tables[peer], K_BUCKET).tolist())
            elapsed += slowest
            shortlist = self.closest(key, np.fromiter(known, dtype=np.int64), K_BUCKET)
        # The closest live node that answered holds the records (one more round trip).
        holders = [int(p) for p in shortlist if alive is None or alive[int(p)]]
        if not holders:
            return [], elapsed
        elapsed += self.rtt(origin, holders[0])
        closest_true = self.closest(key, np.arange(len(self.ids)), K_BUCKET)
        found = self.providers.get(key, []) if holders[0] in set(closest_true.tolist()) else []
        return [p for p in found if alive is None or alive[p]], elapsed


def top_items(world: World, query: np.ndarray, shares: list[int], k: int = 10) -> list[int]:
    """What asking ``shares`` returns: each share's top k by the asked prefix, merged."""
    q = normalize(query[:ASKED_PREFIX].reshape(1, -1))[0]
    best: dict[int, float] = {}
    for share in shares:
        items = world.shares[share]
        scores = world.prefix48[items] @ q
        for i in np.argsort(-scores)[:k]:
            best[int(items[i])] = float(scores[i])
    return [item for item, _ in sorted(best.items(), key=lambda kv: -kv[1])[:k]]


def best_possible(world: World, truth: list[int], ask: int) -> float:
    """Recall@10 of the ``ask`` shares that hold the most of the true top 10 (greedy cover): routing's ceiling."""
    left, holders = set(truth), [set(np.intersect1d(s, truth).tolist()) for s in world.shares]
    for _ in range(ask):
        best = max(holders, key=lambda h: len(h & left))
        if not best & left:
            break
        left -= best
    return 1 - len(left) / len(truth)


def exhaustive(world: World, query: np.ndarray, held: np.ndarray, k: int = 10) -> list[int]:
    q = normalize(query[:ASKED_PREFIX].reshape(1, -1))[0]
    scores = world.prefix48[held] @ q
    return [int(held[i]) for i in np.argsort(-scores)[:k]]


async def run(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    base_id, base, base_queries = corpus_vectors(args.corpus, args.pool, args.queries)
    adapter = Adapter.load(file_for(base_id))
    codebook = shipped_codebook(adapter.model_id)
    if codebook is None:
        raise SystemExit(f"no codebook ships for {adapter.model_id}")
    vectors, queries = adapter.apply(base), adapter.apply(base_queries)
    started = time.perf_counter()
    world = build_world(vectors, args.shares, args.interests, rng)
    sizes = np.array([len(s) for s in world.shares])
    print(f"{args.shares} shares, {sizes.sum():,} items held, sizes p50 {int(np.median(sizes))} max {sizes.max()}", file=sys.stderr)

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.ed25519 import Ed25519PublicKey as LibP2PPublic
    from libp2p.peer.id import ID

    keys = [Ed25519PrivateKey.from_private_bytes(rng.bytes(32)) for _ in range(args.shares)]
    peer_ids = [ID.from_pubkey(LibP2PPublic.from_bytes(k.public_key().public_bytes_raw())).to_base58() for k in keys]
    index_of = {p: i for i, p in enumerate(peer_ids)}
    ids = np.array([int.from_bytes(__import__("hashlib").sha256(p.encode()).digest()[:8], "big") for p in peer_ids], dtype=np.uint64)
    dht = Kademlia(ids, world, args.provider_cap, rng)
    summaries, records = [], []
    for i in range(args.shares):
        found = profile(codebook, vectors[world.shares[i]], seed=i)
        value = encode(summary_of(codebook, found, peer_ids[i], seq=1), keys[i])
        summaries.append(value)
        records.append(found.keys(codebook.id))
        if i % 1000 == 999:
            print(f"  {i + 1} summaries", file=sys.stderr)
    sizes_bytes = [len(v) for v in summaries]
    for i in rng.permutation(args.shares):  # shares publish in no particular order
        for key in records[i]:
            dht.store(dht_key(key), int(i))
    print(f"world built in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    held_any = np.unique(np.concatenate(world.shares))
    region_keys = {region_key(codebook.id, r, level) for r in range(codebook.region_count) for level in (1, 2)}
    settings = RouteSettings(ask=args.ask, lookups=args.lookups, max_lookups=args.max_lookups, summaries=args.summaries, size_weight=args.size_weight)
    recalls, latencies, lookups, fetched, asked, reachable, oracle = [], [], [], [], [], [], []
    phase_ms: list[tuple[float, float, float]] = []
    cache = RoutingCache()
    for query in queries:
        origin = int(rng.integers(args.shares))
        costs: dict[str, list] = {"lookup": [], "summary": [], "connected": []}
        alive = None
        if args.vanish:
            alive = rng.random(args.shares) >= args.vanish

        async def lookup(key: str, origin: int = origin, costs: dict = costs, alive: np.ndarray | None = alive) -> dict[str, list[str]]:
            found, ms = dht.lookup(origin, int(key[4:20], 16), alive)
            costs["lookup"].append(ms)
            return {peer_ids[p]: [] for p in found}

        async def fetch(peer_id: str, addresses: list[str], origin: int = origin, costs: dict = costs) -> bytes:
            costs["summary"].append(NEW_CONTACT_RTTS * dht.rtt(origin, index_of[peer_id]))
            costs["connected"].append(index_of[peer_id])
            return summaries[index_of[peer_id]]

        fresh = RoutingCache() if not args.warm else cache
        routed = await route(query, codebook, lookup, fetch, fresh, settings)
        chosen = [index_of[c.peer_id] for c in routed.chosen]
        # A share whose summary was fetched for this query is connected already: one round trip.
        contact = {s: KNOWN_CONTACT_RTTS if s in costs["connected"] else NEW_CONTACT_RTTS for s in chosen}
        ask_ms = max((contact[s] * dht.rtt(origin, s) + SHARE_ANSWER_MS for s in chosen), default=0.0)
        phases = (max(costs["lookup"], default=0.0), max(costs["summary"], default=0.0), ask_ms)
        phase_ms.append(phases)
        total = sum(phases)
        truth = exhaustive(world, query, held_any)
        got = top_items(world, query, chosen)
        recalls.append(len(set(truth) & set(got)) / len(truth))
        found_under_topics = set().union(*[set(dht.providers.get(dht_key(p.key), [])) for p in routed.probes])
        reachable.append(len({i for i in truth if any(np.isin(i, world.shares[s]).any() for s in found_under_topics)}) / len(truth))
        oracle.append(best_possible(world, truth, args.ask))
        latencies.append(total)
        lookups.append(routed.lookups)
        fetched.append(routed.fetched)
        asked.append(len(chosen))
    emit(
        "global_routing",
        corpus=args.corpus,
        shares=args.shares,
        items_held=int(sizes.sum()),
        queries=len(queries),
        recall_at_10=round(float(np.mean(recalls)), 4),
        recall_p10=round(float(percentile(recalls, 10)), 2),
        recall_if_every_candidate_were_asked=round(float(np.mean(reachable)), 4),
        recall_of_the_best_shares=round(float(np.mean(oracle)), 4),
        shares_asked_max=int(max(asked)),
        dht_lookups_median=float(median(lookups)),
        dht_lookups_p90=float(percentile(lookups, 90)),
        dht_lookups_max=int(max(lookups)),
        summaries_fetched_median=float(median(fetched)),
        summary_bytes_max=int(max(sizes_bytes)),
        provider_records_max=int(max(len(r) for r in records)),
        region_records_median=float(median([sum(k in region_keys for k in r) for r in records])),
        provider_cap=args.provider_cap,
        latency_ms_median=round(median(latencies)),
        latency_ms_p90=round(percentile(latencies, 90)),
        lookups_ms_median=round(median([p[0] for p in phase_ms])),
        summaries_ms_median=round(median([p[1] for p in phase_ms])),
        asking_ms_median=round(median([p[2] for p in phase_ms])),
        warm_cache=args.warm,
        vanished=args.vanish,
        size_weight=args.size_weight,
    )


def dht_key(key: str) -> int:
    """A provider key (a sha2-256 multihash, hex) as a 64-bit node-id-space point."""
    return int(key[4:20], 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["tune", "debian"], default="debian")
    parser.add_argument("--shares", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=100_000, help="distinct items the shares draw from")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--interests", type=int, default=300)
    parser.add_argument("--ask", type=int, default=RouteSettings.ask)
    parser.add_argument("--lookups", type=int, default=RouteSettings.lookups)
    parser.add_argument("--max-lookups", type=int, default=RouteSettings.max_lookups, help="keys looked up in all, while fewer shares than --ask are found")
    parser.add_argument("--summaries", type=int, default=RouteSettings.summaries)
    parser.add_argument("--size-weight", type=float, default=RouteSettings.size_weight)
    parser.add_argument("--provider-cap", type=int, default=256, help="providers a DHT node keeps per key (Peerlight: 256; py-libp2p alone: 20)")
    parser.add_argument("--warm", action="store_true", help="keep the routing cache between queries")
    parser.add_argument("--vanish", type=float, default=0.0, help="fraction of DHT nodes gone during each query")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trio.run(run, args)


if __name__ == "__main__":
    main()
