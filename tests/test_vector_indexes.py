"""The node's persisted vector indexes follow the catalog through its journal (real SQLite, real FAISS)."""

from __future__ import annotations

import json
import sqlite3
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from peerlight.embeddings.vectors import normalize
from peerlight.node.catalog import Catalog
from peerlight.node.catalog.embeddings import Segment, register_model, store_vectors, vector_id
from peerlight.node.catalog.items import forget_missing
from peerlight.node.search.vector_indexes import IndexSettings, VectorIndexes

ORDERED = "ordered:test:0123456789abcdef"
PLAIN = "clip:test:0123456789abcdef"
DIM = 32


def add_items(conn: sqlite3.Connection, vectors: dict[int, np.ndarray], model_id: str = ORDERED) -> None:
    conn.execute("INSERT OR IGNORE INTO libraries (id, path, name, added_at) VALUES (1, '/lib', 'lib', 0)")
    for item_id, vector in vectors.items():
        conn.execute(
            "INSERT OR IGNORE INTO items (id, content_hash, size, modality, first_seen, updated_at) VALUES (?, ?, 1, 'text', 0, 0)",
            (item_id, f"{item_id:064x}"),
        )
        store_vectors(conn, item_id, model_id, [Segment(0, vector)])


def delete_items(conn: sqlite3.Connection, item_ids: list[int]) -> None:
    conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in item_ids])


def catalog_vectors(conn: sqlite3.Connection, model_id: str = ORDERED) -> dict[int, np.ndarray]:
    rows = conn.execute("SELECT item_id, segment, vector FROM embeddings WHERE model_id = ?", (model_id,))
    return {vector_id(i, s): np.frombuffer(v, dtype="<f4") for i, s, v in rows}


def index_vectors(index) -> dict[int, np.ndarray]:  # type: ignore[no-untyped-def]
    return {int(vid): index.vector(int(vid)) for vid in index.ids()}


def assert_same(index, expected: dict[int, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    held = index_vectors(index)
    assert set(held) == set(expected)
    for vid, vector in expected.items():
        np.testing.assert_allclose(held[vid], vector, atol=1e-6)


def vectors(rng: np.random.Generator, ids: range) -> dict[int, np.ndarray]:
    return {i: v for i, v in zip(ids, normalize(rng.normal(size=(len(ids), DIM)).astype(np.float32)))}


@pytest.fixture
async def catalog(tmp_path: Path):
    catalog = await Catalog.open(tmp_path / "catalog.sqlite3")
    await catalog.write(partial(register_model, model_id=ORDERED, name="test", space="text", dimension=DIM))
    await catalog.write(partial(register_model, model_id=PLAIN, name="test", space="image", dimension=DIM))
    yield catalog
    await catalog.aclose()


def journal_size(catalog: Catalog):  # type: ignore[no-untyped-def]
    return catalog.read(lambda c: c.execute("SELECT count(*) FROM vector_changes").fetchone()[0])


async def test_search_matches_a_brute_force_scan(catalog: Catalog, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = vectors(rng, range(1, 401))
    await catalog.write(partial(add_items, vectors=data))
    indexes = VectorIndexes(catalog, tmp_path / "indexes", IndexSettings(prefix_length=8, shortlist=400))
    query = normalize(rng.normal(size=DIM).astype(np.float32))
    hits = await indexes.search(ORDERED, DIM, query, 10)
    ids = np.array(list(data))
    expected = ids[np.argsort(-np.stack(list(data.values())) @ query)[:10]]
    assert [h.item_id for h in hits] == expected.tolist()
    assert all(h.segment == 0 for h in hits)
    assert hits[0].score == pytest.approx(float(data[int(expected[0])] @ query), abs=1e-5)
    assert indexes.describe()[0] | {"vectors": None} == {
        "model_id": ORDERED,
        "vectors": None,
        "prefix_length": 8,
        "mode": "funnel",
        "unsaved_changes": False,  # a fresh build is saved at once
    }


async def test_follows_adds_replacements_and_cascaded_deletes(catalog: Catalog, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 101))))
    indexes = VectorIndexes(catalog, tmp_path / "indexes")
    index = await indexes.index(ORDERED, DIM)
    assert len(index) == 100

    await catalog.write(partial(add_items, vectors=vectors(rng, range(101, 151))))  # new items
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 11))))  # re-embedded: replaced
    await catalog.write(partial(delete_items, item_ids=list(range(20, 40))))  # embeddings go by cascade
    await catalog.write(lambda c: c.execute("UPDATE items SET missing_since = 1 WHERE id = 50"))
    await catalog.write(partial(forget_missing, older_than=2))
    index = await indexes.index(ORDERED, DIM)
    assert len(index) == 150 - 20 - 1
    assert_same(index, await catalog.read(catalog_vectors))

    # An item id freed at the top is reused by a new item: the index holds the new vector only.
    await catalog.write(partial(delete_items, item_ids=[150]))
    fresh = vectors(rng, range(150, 151))
    await catalog.write(partial(add_items, vectors=fresh))
    index = await indexes.index(ORDERED, DIM)
    np.testing.assert_allclose(index.vector(vector_id(150, 0)), fresh[150], atol=1e-6)
    assert_same(index, await catalog.read(catalog_vectors))


async def test_saved_index_reloads_and_catches_up_after_a_crash(catalog: Catalog, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 201))))
    first = VectorIndexes(catalog, tmp_path / "indexes")
    await first.index(ORDERED, DIM)
    await catalog.write(partial(add_items, vectors=vectors(rng, range(201, 221))))
    await first.save_changed()
    assert await journal_size(catalog) == 0  # what the saved index holds is pruned from the journal

    # Changes after the last save, then the daemon dies without saving again.
    await catalog.write(partial(add_items, vectors=vectors(rng, range(221, 241))))
    await catalog.write(partial(delete_items, item_ids=[1, 2, 3]))
    saved_meta = json.loads(next((tmp_path / "indexes").iterdir()).joinpath("meta.json").read_text())
    assert saved_meta["count"] == 220

    second = VectorIndexes(catalog, tmp_path / "indexes")
    index = await second.index(ORDERED, DIM)
    assert_same(index, await catalog.read(catalog_vectors))
    assert second.describe()[0]["unsaved_changes"] is True  # caught up from the journal, not rebuilt


async def test_unreadable_or_inconsistent_index_is_rebuilt(catalog: Catalog, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 101))))
    await VectorIndexes(catalog, tmp_path / "indexes").index(ORDERED, DIM)
    (folder,) = (tmp_path / "indexes").iterdir()

    (folder / "full.npy").write_bytes(b"not numpy")
    index = await VectorIndexes(catalog, tmp_path / "indexes").index(ORDERED, DIM)
    assert_same(index, await catalog.read(catalog_vectors))

    # Vectors removed behind the journal's back (its entries lost): the count check catches it.
    def lose(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM embeddings WHERE item_id <= 5")
        conn.execute("DELETE FROM vector_changes")

    await catalog.write(lose)
    index = await VectorIndexes(catalog, tmp_path / "indexes").index(ORDERED, DIM)
    assert len(index) == 95
    assert_same(index, await catalog.read(catalog_vectors))


async def test_models_have_separate_indexes_and_stale_ones_are_deleted(catalog: Catalog, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 51))))
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 51)), model_id=PLAIN))
    indexes = VectorIndexes(catalog, tmp_path / "indexes")
    ordered, plain = await indexes.index(ORDERED, DIM), await indexes.index(PLAIN, DIM)
    assert ordered is not plain and len(ordered) == len(plain) == 50
    assert {d["model_id"]: d["mode"] for d in indexes.describe()} == {ORDERED: "funnel", PLAIN: "exact"}
    assert len(list((tmp_path / "indexes").iterdir())) == 2

    # The model is replaced (e.g. a new adapter): its vectors go, and so does its index.
    await catalog.write(lambda c: c.execute("DELETE FROM embeddings WHERE model_id = ?", (PLAIN,)))
    fresh = VectorIndexes(catalog, tmp_path / "indexes")
    await fresh.save_changed()
    (left,) = (tmp_path / "indexes").iterdir()
    assert json.loads((left / "meta.json").read_text())["model_id"] == ORDERED


async def test_settings_change_rebuilds(catalog: Catalog, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    await catalog.write(partial(add_items, vectors=vectors(rng, range(1, 31))))
    assert (await VectorIndexes(catalog, tmp_path / "i").index(ORDERED, DIM)).prefix_len == DIM // 8
    index = await VectorIndexes(catalog, tmp_path / "i", IndexSettings(prefix_length=16)).index(ORDERED, DIM)
    assert index.prefix_len == 16
    assert_same(index, await catalog.read(catalog_vectors))


def test_a_sample_of_stored_vectors_holds_distinct_vectors_of_that_model_only(tmp_path: Path) -> None:
    from peerlight.node.catalog.embeddings import sample_vectors
    from peerlight.node.catalog.migrations import migrate

    conn = sqlite3.connect(tmp_path / "catalog.sqlite3", isolation_level=None)
    migrate(conn)
    register_model(conn, ORDERED, "test", "test", DIM)
    register_model(conn, PLAIN, "test", "test", DIM)
    rng = np.random.default_rng(0)
    stored = vectors(rng, range(1, 301))
    add_items(conn, stored)
    add_items(conn, vectors(rng, range(1, 51)), model_id=PLAIN)
    sample = sample_vectors(conn, ORDERED, 120)
    known = {v.tobytes() for v in stored.values()}
    assert sample.shape == (120, DIM) and len({row.tobytes() for row in sample}) == 120
    assert all(row.tobytes() in known for row in sample)
    assert sample_vectors(conn, ORDERED, 1000).shape == (300, DIM)
    assert sample_vectors(conn, "ordered:none:0000000000000000", 10).shape == (0, 0)
