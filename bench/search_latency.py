"""Search latency (p50/p99) of the local search at 10k and 100k items.

A real catalog is filled with N items (names, metadata, full-text rows and one 384-d vector
each, in the real all-MiniLM-L6-v2 model's space); queries go through the real search
engine: the query is embedded by the real model, searched in the node's persisted prefix
index (int8 prefix shortlist + exact rerank), filtered and hydrated from SQLite, and (hybrid)
fused with FTS5 BM25. Baselines, in the same run, are the bare index searches over the
same vectors: the funnel, and an exact full-dimension scan.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, percentile  # noqa: E402

from peerlight.embeddings.vectors import normalize, to_blob  # noqa: E402
from peerlight.node.catalog import Catalog  # noqa: E402
from peerlight.node.catalog.embeddings import register_model  # noqa: E402
from peerlight.node.config import Config  # noqa: E402
from peerlight.node.models import ModelManager  # noqa: E402
from peerlight.node.search.vector_indexes import VectorIndexes  # noqa: E402
from peerlight.node.callers import Caller  # noqa: E402
from peerlight.node.search.engine import SearchEngine, SearchRequest  # noqa: E402
from peerlight.node.search.filters import Filters  # noqa: E402

WORDS = "river mountain city night summer winter music jazz concert garden ocean forest storm light shadow".split()
QUERIES = ["a quiet night by the ocean", "jazz concert in the city", "storm over the mountain", "summer garden", "light"]


def fill(conn, count: int, model_id: str, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (1, '/bench', 'bench', 0)")
    vectors = normalize(rng.normal(size=(count, 384)).astype(np.float32))
    for start in range(0, count, 5000):
        ids = range(start + 1, min(count, start + 5000) + 1)
        names = {i: " ".join(rng.choice(WORDS, 3)) for i in ids}
        conn.executemany(
            "INSERT INTO items (id, content_hash, size, modality, first_seen, updated_at, embedding_state) VALUES (?, ?, ?, 'text', 0, 0, 'done')",
            [(i, f"{i:064x}", 1000 + i) for i in ids],
        )
        conn.executemany(
            "INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen) VALUES (?, 1, ?, 1, 1, ?, 1, 0)",
            [(i, f"/bench/{names[i].replace(' ', '_')}_{i}.txt", i) for i in ids],
        )
        conn.executemany("INSERT INTO item_metadata VALUES (?, 'title', ?)", [(i, names[i]) for i in ids])
        conn.executemany(
            "INSERT INTO items_fts (rowid, name, path, metadata) VALUES (?, ?, ?, ?)",
            [(i, names[i], f"/bench/{i}.txt", names[i]) for i in ids],
        )
        conn.executemany(
            "INSERT INTO embeddings (item_id, model_id, segment, dimension, vector) VALUES (?, ?, 0, 384, ?)",
            [(i, model_id, to_blob(vectors[i - 1])) for i in ids],
        )


async def measure(count: int, queries: int) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        catalog = await Catalog.open(base / "catalog.sqlite3")
        models = ModelManager(Config())
        text = await models.get("text")
        await catalog.write(lambda c: register_model(c, text.model_id, "minilm", "text", text.dimension))
        await catalog.write(lambda c: fill(c, count, text.model_id, np.random.default_rng(0)))
        engine = SearchEngine(catalog, models, VectorIndexes(catalog, base / "indexes"))
        started = time.perf_counter()
        index = await engine.indexes.index(text.model_id, text.dimension)
        figures: dict[str, float] = {"index_build_and_save_s": round(time.perf_counter() - started, 2)}
        for mode in ("semantic", "hybrid", "text"):
            await engine.search(SearchRequest("warm up", mode, 20, Filters(modalities=("text",))), Caller.local())
            latencies = []
            for i in range(queries):
                started = time.perf_counter()
                reply = await engine.search(SearchRequest(QUERIES[i % len(QUERIES)], mode, 20, Filters(modalities=("text",))), Caller.local())
                latencies.append((time.perf_counter() - started) * 1000)
                assert reply["results"], mode
            figures[f"{mode}_p50_ms"] = round(percentile(latencies, 50), 2)
            figures[f"{mode}_p99_ms"] = round(percentile(latencies, 99), 2)
        query = text.encode(["night"])[0]
        for mode in ("funnel", "exact"):
            bare = []
            for _ in range(queries):
                started = time.perf_counter()
                index.search(query, 200, shortlist=500, mode=mode)
                bare.append((time.perf_counter() - started) * 1000)
            figures[f"bare_{mode}_p50_ms"] = round(percentile(bare, 50), 2)
        await catalog.aclose()
        return figures
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    for count in map(int, args.sizes.split(",")):
        figures = trio.run(measure, count, args.queries)
        emit("search_latency", items=count, queries=args.queries, **figures)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
