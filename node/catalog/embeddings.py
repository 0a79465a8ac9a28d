"""Stored vectors: which items still need one from a model, and recording them.

An item needs a vector from model M when it has none from M and M has not already failed
on it. This is derived from the tables rather than kept as a flag, so switching models (or
weights appearing) automatically makes the affected items pending again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peerlight.embeddings.vectors import from_blob, to_blob

from ..pathnames import decode_path, readable

MAX_SEGMENTS = 1 << 16  # vector ids are item_id * MAX_SEGMENTS + segment


@dataclass(frozen=True)
class PendingItem:
    item_id: int
    modality: str
    path: str


@dataclass(frozen=True)
class Segment:
    """One vector of an item: segment 0 stands for the whole item; others for chunks or moments."""

    segment: int
    vector: np.ndarray
    start: float | None = None
    end: float | None = None


def vector_id(item_id: int, segment: int) -> int:
    return item_id * MAX_SEGMENTS + segment


def split_vector_id(vid: int) -> tuple[int, int]:
    return divmod(int(vid), MAX_SEGMENTS)


def register_model(conn: sqlite3.Connection, model_id: str, name: str, space: str, dimension: int) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO models (id, name, space, dimension, created_at) VALUES (?, ?, ?, ?, ?)",
        (model_id, name, space, dimension, time.time()),
    )


def pending_items(
    conn: sqlite3.Connection, modalities: Sequence[str], model_id: str, after_id: int, limit: int
) -> list[PendingItem]:
    marks = ",".join("?" * len(modalities))
    rows = conn.execute(
        f"""SELECT i.id, i.modality, (SELECT path FROM locations WHERE item_id = i.id ORDER BY id LIMIT 1)
            FROM items AS i
            WHERE i.modality IN ({marks}) AND i.missing_since IS NULL AND i.id > ?
              AND NOT EXISTS (SELECT 1 FROM embeddings AS e WHERE e.item_id = i.id AND e.model_id = ?)
              AND NOT EXISTS (SELECT 1 FROM embedding_failures AS f WHERE f.item_id = i.id AND f.model_id = ?)
            ORDER BY i.id LIMIT ?""",
        (*modalities, after_id, model_id, model_id, limit),
    ).fetchall()
    return [PendingItem(item_id, modality, decode_path(path)) for item_id, modality, path in rows if path]


def may_have_pending(conn: sqlite3.Connection, modalities: Sequence[str], model_id: str | None) -> bool:
    """Whether loading a model could find work: any live item of these kinds lacks its vectors.

    With ``model_id`` unknown (the model was never loaded), any live item of these kinds counts.
    """
    marks = ",".join("?" * len(modalities))
    if model_id is None:
        query = f"SELECT 1 FROM items WHERE modality IN ({marks}) AND missing_since IS NULL LIMIT 1"
        return conn.execute(query, tuple(modalities)).fetchone() is not None
    return bool(pending_items(conn, modalities, model_id, 0, 1))


def store_vectors(
    conn: sqlite3.Connection, item_id: int, model_id: str, segments: Sequence[Segment], source: str = "content"
) -> None:
    if not segments or len(segments) >= MAX_SEGMENTS:
        raise ValueError(f"an item needs 1 to {MAX_SEGMENTS - 1} segments, got {len(segments)}")
    if not conn.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone():
        return  # the item was removed while it was being embedded
    conn.execute("DELETE FROM embeddings WHERE item_id = ? AND model_id = ?", (item_id, model_id))
    conn.executemany(
        "INSERT INTO embeddings (item_id, model_id, segment, start, end, dimension, vector, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (item_id, model_id, s.segment, s.start, s.end, int(s.vector.shape[-1]), to_blob(s.vector), source)
            for s in segments
        ],
    )
    if source == "content":
        # Real content vectors supersede vectors made from tags only (audio before CLAP was there).
        conn.execute(
            "DELETE FROM embeddings WHERE item_id = ? AND model_id != ? AND source = 'metadata'", (item_id, model_id)
        )
    conn.execute("DELETE FROM embedding_failures WHERE item_id = ? AND model_id = ?", (item_id, model_id))
    conn.execute("UPDATE items SET embedding_state = 'done' WHERE id = ?", (item_id,))


def record_failure(conn: sqlite3.Connection, item_id: int, model_id: str, error: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO embedding_failures (item_id, model_id, error, at) VALUES (?, ?, ?, ?)",
        (item_id, model_id, error[:1000], time.time()),
    )
    conn.execute(
        "UPDATE items SET embedding_state = 'failed' WHERE id = ?"
        " AND NOT EXISTS (SELECT 1 FROM embeddings WHERE item_id = ?)",
        (item_id, item_id),
    )


def describe_text(conn: sqlite3.Connection, item_id: int) -> str:
    """The text that stands for an item without content embeddings: its tags and file name."""
    meta = dict(conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)).fetchall())
    (stored,) = conn.execute("SELECT path FROM locations WHERE item_id = ? ORDER BY id LIMIT 1", (item_id,)).fetchone() or ("",)
    path = readable(decode_path(stored))
    parts = [str(meta[k]) for k in ("title", "artist", "album", "albumartist", "genre", "year") if meta.get(k)]
    name = Path(path).stem.replace("_", " ").replace("-", " ")
    return ". ".join(parts + [name]) if parts else name


def vector_count(conn: sqlite3.Connection, model_id: str) -> int:
    return conn.execute("SELECT count(*) FROM embeddings WHERE model_id = ?", (model_id,)).fetchone()[0]


def sample_vectors(conn: sqlite3.Connection, model_id: str, limit: int) -> np.ndarray:
    """Up to ``limit`` stored vectors of a model drawn at random (a document's chunks are not
    all neighbours of each other in the sample, as they would be in the stored order). The keys
    are drawn from the model's index alone, so only the chosen vectors are read; one statement,
    so one snapshot: a vector deleted meanwhile cannot leave a chosen key without its row."""
    chosen = "SELECT item_id, segment FROM embeddings WHERE model_id = ? ORDER BY random() LIMIT ?"
    query = f"SELECT vector FROM embeddings WHERE model_id = ? AND (item_id, segment) IN ({chosen})"
    return _stacked(conn.execute(query, (model_id, model_id, limit)))


def model_vectors(conn: sqlite3.Connection, model_id: str, limit: int) -> np.ndarray:
    """Up to ``limit`` stored vectors of a model (whole items and their segments), in a stable order."""
    return _stacked(conn.execute("SELECT vector FROM embeddings WHERE model_id = ? ORDER BY item_id, segment LIMIT ?", (model_id, limit)))


def _stacked(rows: Iterable[tuple[bytes]]) -> np.ndarray:
    blobs = [from_blob(blob) for (blob,) in rows]
    return np.stack(blobs) if blobs else np.zeros((0, 0), np.float32)
