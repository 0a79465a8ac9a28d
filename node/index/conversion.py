"""Converting stored base vectors into an adapter's ordered vectors, instead of encoding the media again.

An ordering adapter maps base vectors to ordered ones, so when a model gains an adapter
(the node trained one, or the user switched ``adapter`` from "none"), the vectors already
stored for its base model are converted in the catalog: no file is decoded, no encoder runs.
"""

from __future__ import annotations

import sqlite3
from functools import partial

import numpy as np

from peerlight.embeddings.adapters import Adapter
from peerlight.embeddings.vectors import from_blob, to_blob

from ..catalog import embeddings as store
from ..catalog.database import Catalog

BATCH_ITEMS = 2000


async def convert_base_vectors(catalog: Catalog, base_id: str, adapter: Adapter) -> int:
    """Replace every stored vector of ``base_id`` by its ordered form; returns how many were converted."""
    if not await catalog.read(partial(_has_vectors, model_id=base_id)):
        return 0
    await catalog.write_when_space(partial(_register_ordered_model, base_id=base_id, adapter=adapter))
    converted, after = 0, 0
    while True:
        done, after = await catalog.write_when_space(partial(_convert_batch, base_id=base_id, adapter=adapter, after_item=after))
        if not done:
            return converted
        converted += done


def _has_vectors(conn: sqlite3.Connection, model_id: str) -> bool:
    return conn.execute("SELECT 1 FROM embeddings WHERE model_id = ? LIMIT 1", (model_id,)).fetchone() is not None


def _register_ordered_model(conn: sqlite3.Connection, base_id: str, adapter: Adapter) -> None:
    name, space = conn.execute("SELECT name, space FROM models WHERE id = ?", (base_id,)).fetchone()
    store.register_model(conn, adapter.model_id, name, space, adapter.dimension)


def _convert_batch(
    conn: sqlite3.Connection, base_id: str, adapter: Adapter, after_item: int, items: int = BATCH_ITEMS
) -> tuple[int, int]:
    """Replace the base vectors of the next ``items`` items by their ordered form; (vectors done, last item id)."""
    item_ids = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT item_id FROM embeddings WHERE model_id = ? AND item_id > ? ORDER BY item_id LIMIT ?",
            (base_id, after_item, items),
        )
    ]
    if not item_ids:
        return 0, after_item
    marks = ",".join("?" * len(item_ids))
    rows = conn.execute(
        f"""SELECT item_id, segment, start, end, source, vector FROM embeddings
            WHERE model_id = ? AND item_id IN ({marks}) ORDER BY item_id, segment""",
        (base_id, *item_ids),
    ).fetchall()
    ordered = adapter.apply(np.stack([from_blob(r[5]) for r in rows]))
    # An item the embedder already stored under the new model id keeps those vectors (OR IGNORE).
    conn.executemany(
        "INSERT OR IGNORE INTO embeddings (item_id, model_id, segment, start, end, dimension, vector, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(r[0], adapter.model_id, r[1], r[2], r[3], adapter.dimension, to_blob(v), r[4]) for r, v in zip(rows, ordered)],
    )
    conn.execute(f"DELETE FROM embeddings WHERE model_id = ? AND item_id IN ({marks})", (base_id, *item_ids))
    return len(rows), item_ids[-1]
