"""Speed of the preference model in the node: retraining after one new rating, and ``recommend``.

A real catalog (SQLite file) holds N local items with one 384-d vector each in the node's
vector index, N items of a peer's share with their 48-value prefixes, and R rated items;
everything goes through the node's own :class:`Recommendations` (catalog reads in its
threads, the model trained in a worker thread and stored as a new version).

- ``retrain``: one more rating, then the retraining the daemon does in the background
  (read every label and vector, train, store). Baseline in the same run: the bare
  :func:`train` call on the same examples.
- ``recommend``: the top 20 among all candidates (local, and local + the peer's), with
  exploration, novelty, diversity and presentation. Baseline in the same run: a bare numpy
  scan, every local vector times the head's weights and a partial sort (what a linear
  model's ranking costs at the least).

Vectors are drawn with the variance profile of ordered embeddings (decaying along the
dimensions); ratings from a hidden linear taste plus noise. Timings are medians of repeats.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, percentile  # noqa: E402

from peerlight.embeddings.vectors import to_blob  # noqa: E402
from peerlight.node.catalog import Catalog  # noqa: E402
from peerlight.node.catalog import feedback as store  # noqa: E402
from peerlight.node.catalog.embeddings import register_model  # noqa: E402
from peerlight.node.recommendations import Recommendations, RecommendRequest  # noqa: E402
from peerlight.node.search.vector_indexes import VectorIndexes  # noqa: E402
from peerlight.recommender.model import train  # noqa: E402

DIMENSION = 384
PREFIX = 48
MODEL_ID = "bench:ordered-384"
PEER = "12D3KooWBenchPeer"


def ordered_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(count, DIMENSION)).astype(np.float32) * np.exp(-np.arange(DIMENSION) / 80.0).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(conn, local: np.ndarray, remote: np.ndarray, ratings: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (1, '/bench', 'bench', 0)")
    for start in range(0, len(local), 10_000):
        ids = range(start + 1, min(len(local), start + 10_000) + 1)
        conn.executemany(
            "INSERT INTO items (id, content_hash, size, modality, first_seen, updated_at, embedding_state) VALUES (?, ?, 1000, 'text', 0, 0, 'done')",
            [(i, f"{i:064x}") for i in ids],
        )
        conn.executemany(
            "INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen) VALUES (?, 1, ?, 1, 1, ?, 1, 0)",
            [(i, f"/bench/{i}.txt", i) for i in ids],
        )
        conn.executemany(
            "INSERT INTO embeddings (item_id, model_id, segment, dimension, vector) VALUES (?, ?, 0, ?, ?)",
            [(i, MODEL_ID, DIMENSION, to_blob(local[i - 1])) for i in ids],
        )
    conn.execute("INSERT INTO remote_shares (peer_id, name, found_by, first_seen) VALUES (?, 'bench-peer', 'manual', 0)", (PEER,))
    for start in range(0, len(remote), 10_000):
        rows = range(start, min(len(remote), start + 10_000))
        conn.executemany(
            "INSERT INTO remote_items (peer_id, content_hash, name, size, modality, synced_at) VALUES (?, ?, ?, 1000, 'text', 0)",
            [(PEER, f"{i:064x}".replace("0", "f", 1), f"remote-{i}.txt") for i in rows],
        )
        conn.executemany(
            "INSERT INTO remote_vectors (peer_id, content_hash, model_id, prefix) VALUES (?, ?, ?, ?)",
            [(PEER, f"{i:064x}".replace("0", "f", 1), MODEL_ID, (remote[i, :PREFIX] / np.linalg.norm(remote[i, :PREFIX])).astype("<f2").tobytes()) for i in rows],
        )
    for i, rating in enumerate(ratings):
        store.set_rating(conn, f"{i + 1:064x}", float(rating), at=float(i))


async def measure(items: int, rated: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    local, remote = ordered_vectors(items, rng), ordered_vectors(items, rng)
    taste = rng.normal(size=DIMENSION) * np.exp(-np.arange(DIMENSION) / 80.0)
    scores = local[:rated] @ taste
    ratings = np.clip(np.round(5 + 2 * (scores - scores.mean()) / scores.std() + rng.normal(0, 1, rated)), 0, 10)
    base = Path(tempfile.mkdtemp(prefix="pl-rec-bench-"))
    try:
        catalog = await Catalog.open(base / "catalog.sqlite3")
        await catalog.write(lambda c: register_model(c, MODEL_ID, "bench", "text", DIMENSION))
        await catalog.write(partial(fill, local=local, remote=remote, ratings=ratings))
        indexes = VectorIndexes(catalog, base / "indexes")
        await indexes.index(MODEL_ID, DIMENSION)
        recommendations = Recommendations(catalog, indexes)
        await recommendations.retrain()
        figures: dict[str, float] = {}

        retrain, bare = [], []
        for n in range(repeats):
            await catalog.write(partial(store.set_rating, content_hash=f"{rated + 1 + n:064x}", rating=7.0))
            started = time.perf_counter()
            await recommendations.retrain()
            retrain.append(time.perf_counter() - started)
            from peerlight.node.recommendations import _training_set

            by_space, dimensions = await catalog.read(_training_set)
            started = time.perf_counter()
            train(by_space, dimensions)
            bare.append(time.perf_counter() - started)
        figures |= {
            "retrain_after_one_rating_s_p50": round(percentile(retrain, 50), 3),
            "bare_train_s_p50": round(percentile(bare, 50), 3),
            "retrain_vs_bare_train": round(percentile(retrain, 50) / percentile(bare, 50), 2),
        }

        head = recommendations.model.heads[MODEL_ID]
        weights = head.fitted.mean[:DIMENSION].astype(np.float32)  # type: ignore[union-attr]
        for source in ("local", "all", "peers"):
            request = RecommendRequest(limit=20, source=source)
            await recommendations.recommend(request)  # the peer's prefixes are read once and cached
            latencies = []
            for _ in range(repeats):
                started = time.perf_counter()
                reply = await recommendations.recommend(request)
                latencies.append((time.perf_counter() - started) * 1000)
                assert len(reply["results"]) == 20
            figures[f"recommend_{source}_ms_p50"] = round(percentile(latencies, 50), 1)
            figures[f"recommend_{source}_ms_p99"] = round(percentile(latencies, 99), 1)
        scan = []
        for _ in range(repeats):
            started = time.perf_counter()
            predicted = local @ weights
            np.argpartition(-predicted, 20)[:20]
            scan.append((time.perf_counter() - started) * 1000)
        figures["bare_linear_scan_ms_p50"] = round(percentile(scan, 50), 1)
        figures["recommend_local_vs_bare_scan"] = round(figures["recommend_local_ms_p50"] / figures["bare_linear_scan_ms_p50"], 1)
        await catalog.aclose()
        return figures
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="local items, and as many of a peer's")
    parser.add_argument("--rated", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    figures = trio.run(measure, args.items, args.rated, args.repeats)
    emit("recommend_latency", local_items=args.items, peer_items=args.items, rated=args.rated, **figures)


if __name__ == "__main__":
    main()
