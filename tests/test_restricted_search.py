"""Scopes and filters act inside the vector search: a folder holding 1% of a 20,000-item library
gets the same top 10 as an exact search over that folder alone (real SQLite, real FAISS, the
real search engine; the funnel path of ordered vectors)."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from peerlight.embeddings.vectors import normalize
from peerlight.node.api.search import SearchMethods
from peerlight.node.callers import Caller, Scope
from peerlight.node.catalog import Catalog
from peerlight.node.catalog.embeddings import Segment, register_model, store_vectors
from peerlight.node.catalog.items import IndexedFile, record_files
from peerlight.node.config import Config
from peerlight.node.control.protocol import Forbidden
from peerlight.node.models import ModelManager
from peerlight.node.search.engine import SearchEngine
from peerlight.node.search.filters import Filters
from peerlight.node.search.vector_indexes import VectorIndexes

MODEL = "ordered:test:0123456789abcdef"
ITEMS, DIM = 20_000, 64
FOLDER = "/media/lib/trip"  # every 100th item lives here


def fill(conn: sqlite3.Connection, vectors: np.ndarray) -> None:
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (1, '/media/lib', 'lib', 0)")
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (2, '/media/other', 'other', 0)")
    register_model(conn, MODEL, "test", "text", DIM)
    for i in range(ITEMS):
        folder = FOLDER if i % 100 == 0 else f"/media/lib/f{i % 50}"
        library = 2 if i % 7 == 3 else 1
        if library == 2:
            folder = "/media/other"
        path = f"{folder}/item{i}.txt"
        (item_id,) = record_files(conn, library, [IndexedFile(path, 1, 1, i, 1, f"{i:064x}", "text", "text/plain", {})])
        # Long documents have many chunks: they must not crowd out the rest.
        segments = [Segment(0, vectors[i])] + ([Segment(s, vectors[i]) for s in range(1, 30)] if i % 1000 == 1 else [])
        store_vectors(conn, item_id, MODEL, segments)


async def test_a_restricted_search_finds_the_true_best_of_its_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    # Importance-ordered-like vectors: variance decays along the dimensions.
    vectors = normalize(rng.normal(size=(ITEMS, DIM)).astype(np.float32) * np.exp(-np.arange(DIM) / 16))
    catalog = await Catalog.open(tmp_path / "catalog.sqlite3")
    try:
        await catalog.write(partial(fill, vectors=vectors))
        engine = SearchEngine(catalog, ModelManager(Config()), VectorIndexes(catalog, tmp_path / "indexes"))
        example = "/media/lib/f7/item7.txt"
        folder_items = np.arange(0, ITEMS, 100)
        folder_items = folder_items[folder_items % 7 != 3]
        exact = folder_items[np.argsort(-(vectors[folder_items] @ vectors[7]))][:10]

        reply = await engine.similar(example, 10, Filters(folder=FOLDER), Caller.local())
        assert [r["path"] for r in reply["results"]] == [f"{FOLDER}/item{i}.txt" for i in exact]

        # The same through a caller's scope (a share of one folder), and the share sees no paths.
        peer = Caller("peer", "12D3KooWpeer", Scope(folders=(FOLDER,)))
        scoped = await engine.similar(example, 10, Filters(), peer)
        assert [r["name"] for r in scoped["results"]] == [f"item{i}.txt" for i in exact]
        assert all("path" not in r and "item_id" not in r and "rating" not in r for r in scoped["results"])

        # Per item, not per chunk: unrestricted, the 20 many-chunk documents take one place each.
        unrestricted = await engine.similar(example, 50, Filters(), Caller.local())
        names = [r["name"] for r in unrestricted["results"]]
        assert len(names) == len(set(names)) == 50
        everything = np.argsort(-(vectors @ vectors[7]))
        assert names[:10] == [f"item{i}.txt" for i in everything if i != 7][:10]
        # What only the node's user may ask: rating and folder filters, files by path.
        table = SearchMethods(catalog, engine).methods()
        for params in ({"query": "x", "rating_min": 5}, {"query": "x", "folder": FOLDER}):
            with pytest.raises(Forbidden):
                await table["search.query"](params, peer)
        for method, params in (("search.similar", {"path": example}), ("items.info", {"path": example})):
            with pytest.raises(Forbidden):
                await table[method](params, peer)
        # A library scope: nothing from the other library.
        library_only = await engine.similar(example, 30, Filters(), Caller("peer", "p", Scope(libraries=frozenset({2}))))
        assert len(library_only["results"]) == 30
        assert all(int(r["name"][4:-4]) % 7 == 3 for r in library_only["results"])
    finally:
        await catalog.aclose()
