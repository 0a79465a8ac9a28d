"""Items, their file locations, metadata and searchable text.

Items are keyed by content hash; locations by path. Recording a file therefore never
duplicates an item (same bytes elsewhere = same item) and re-recording the same file after
a crash is harmless: everything here is an upsert.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IndexedFile:
    """One file, inspected: ready to be recorded in the catalog."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int
    content_hash: str
    modality: str
    mime: str | None
    metadata: dict[str, Any]
    document_text: str | None = None


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not indexed: not media (``unsupported``) or unreadable (``error``)."""

    path: str
    size: int
    mtime_ns: int
    kind: str
    reason: str


def known_locations(conn: sqlite3.Connection, library_id: int) -> dict[str, tuple[int, int, int, int]]:
    return {
        path: (size, mtime_ns, inode, device)
        for path, size, mtime_ns, inode, device in conn.execute(
            "SELECT path, size, mtime_ns, inode, device FROM locations WHERE library_id = ?", (library_id,)
        )
    }


def known_failures(conn: sqlite3.Connection, root: str) -> dict[str, tuple[int, int]]:
    prefix = root.rstrip("/") + "/"
    return {
        path: (size, mtime_ns)
        for path, size, mtime_ns in conn.execute(
            "SELECT path, size, mtime_ns FROM index_failures WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
        )
    }


def record_files(conn: sqlite3.Connection, library_id: int, files: list[IndexedFile]) -> list[int]:
    """Upsert items, locations, metadata and search text; returns the item ids."""
    now = time.time()
    item_ids = []
    for file in files:
        item_id = conn.execute(
            """INSERT INTO items (content_hash, size, modality, mime, first_seen, updated_at, embedding_state)
               VALUES (?, ?, ?, ?, ?, ?, 'pending')
               ON CONFLICT (content_hash) DO UPDATE SET updated_at = excluded.updated_at, missing_since = NULL
               RETURNING id""",
            (file.content_hash, file.size, file.modality, file.mime, now, now),
        ).fetchone()[0]
        item_ids.append(item_id)
        previous = conn.execute("SELECT item_id FROM locations WHERE path = ?", (file.path,)).fetchone()
        conn.execute(
            """INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (path) DO UPDATE SET item_id = excluded.item_id, library_id = excluded.library_id,
                   size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode,
                   device = excluded.device, last_seen = excluded.last_seen""",
            (item_id, library_id, file.path, file.size, file.mtime_ns, file.inode, file.device, now),
        )
        conn.executemany(
            "INSERT INTO item_metadata (item_id, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (item_id, key) DO UPDATE SET value = excluded.value",
            [(item_id, key, value) for key, value in file.metadata.items()],
        )
        if file.document_text is not None:
            conn.execute(
                "INSERT OR REPLACE INTO documents (item_id, text) VALUES (?, ?)",
                (item_id, zlib.compress(file.document_text.encode("utf-8"), 6)),
            )
        conn.execute("DELETE FROM index_failures WHERE path = ?", (file.path,))
        _refresh_search_text(conn, item_id)
        if previous and previous[0] != item_id:
            _mark_if_missing(conn, [previous[0]], now)  # the file's old content may live on nowhere
    return item_ids


def record_skipped(conn: sqlite3.Connection, skipped: list[SkippedFile]) -> None:
    """Remember skipped files with their size and mtime, so rescans pass them until they change."""
    now = time.time()
    conn.executemany(
        "INSERT OR REPLACE INTO index_failures (path, size, mtime_ns, kind, error, at) VALUES (?, ?, ?, ?, ?, ?)",
        [(f.path, f.size, f.mtime_ns, f.kind, f.reason, now) for f in skipped],
    )
    remove_locations(conn, [f.path for f in skipped])  # a file that became unreadable


def forget_skipped(conn: sqlite3.Connection, paths: list[str]) -> None:
    conn.executemany("DELETE FROM index_failures WHERE path = ?", [(p,) for p in paths])


def remove_locations(conn: sqlite3.Connection, paths: list[str]) -> int:
    """Forget files that left the disk; their items become missing (not deleted) if nowhere else."""
    now = time.time()
    affected = []
    for path in paths:
        row = conn.execute("DELETE FROM locations WHERE path = ? RETURNING item_id", (path,)).fetchone()
        if row:
            affected.append(row[0])
    _mark_if_missing(conn, affected, now)
    return len(affected)


def forget_missing(conn: sqlite3.Connection, older_than: float) -> int:
    """Delete items that have had no file for a while (with their embeddings and metadata)."""
    ids = [row[0] for row in conn.execute("SELECT id FROM items WHERE missing_since < ?", (older_than,))]
    for item_id in ids:
        conn.execute("DELETE FROM items_fts WHERE rowid = ?", (item_id,))
        conn.execute("DELETE FROM items WHERE id = ?", (item_id,))
    return len(ids)


def _mark_if_missing(conn: sqlite3.Connection, item_ids: list[int], now: float) -> None:
    conn.executemany(
        "UPDATE items SET missing_since = ? WHERE id = ? AND missing_since IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM locations WHERE item_id = ?)",
        [(now, item_id, item_id) for item_id in item_ids],
    )


def _refresh_search_text(conn: sqlite3.Connection, item_id: int) -> None:
    paths = [row[0] for row in conn.execute("SELECT path FROM locations WHERE item_id = ?", (item_id,))]
    values = [str(row[0]) for row in conn.execute("SELECT value FROM item_metadata WHERE item_id = ?", (item_id,))]
    names = " ".join(Path(p).stem.replace("_", " ").replace("-", " ") for p in paths)
    conn.execute("DELETE FROM items_fts WHERE rowid = ?", (item_id,))
    conn.execute(
        "INSERT INTO items_fts (rowid, name, path, metadata) VALUES (?, ?, ?, ?)",
        (item_id, names, " ".join(paths), " ".join(values)),
    )


def document_text(conn: sqlite3.Connection, item_id: int) -> str | None:
    row = conn.execute("SELECT text FROM documents WHERE item_id = ?", (item_id,)).fetchone()
    return zlib.decompress(row[0]).decode("utf-8") if row else None


def item_counts(conn: sqlite3.Connection) -> dict[str, Any]:
    by_modality = dict(
        conn.execute("SELECT modality, COUNT(*) FROM items WHERE missing_since IS NULL GROUP BY modality").fetchall()
    )
    pending, failed = conn.execute(
        """SELECT COUNT(*) FILTER (WHERE embedding_state = 'pending'),
                  COUNT(*) FILTER (WHERE embedding_state = 'failed') FROM items WHERE missing_since IS NULL"""
    ).fetchone()
    (index_failures,) = conn.execute("SELECT COUNT(*) FROM index_failures WHERE kind = 'error'").fetchone()
    return {
        "by_modality": by_modality,
        "embeddings_pending": pending,
        "embeddings_failed": failed,
        "index_failures": index_failures,
    }


def rate(conn: sqlite3.Connection, path: str, rating: float) -> dict[str, Any]:
    """Rate the item stored at ``path``; the rating follows its content, wherever it moves."""
    row = conn.execute(
        "SELECT i.content_hash FROM locations AS l JOIN items AS i ON i.id = l.item_id WHERE l.path = ?", (path,)
    ).fetchone()
    if row is None:
        raise LookupError(f"{path} is not an indexed item")
    now = time.time()
    conn.execute(
        "INSERT INTO ratings (content_hash, rating, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (content_hash) DO UPDATE SET rating = excluded.rating, updated_at = excluded.updated_at",
        (row[0], rating, now),
    )
    conn.execute(
        "INSERT INTO feedback_events (content_hash, kind, value, at) VALUES (?, 'rating', ?, ?)", (row[0], rating, now)
    )
    return {"path": path, "content_hash": row[0], "rating": rating}


def item_info(conn: sqlite3.Connection, path: str) -> dict[str, Any]:
    """Everything the catalog knows about the item stored at ``path``."""
    row = conn.execute(
        """SELECT i.id, i.content_hash, i.modality, i.mime, i.size, i.embedding_state, i.first_seen,
                  (SELECT rating FROM ratings WHERE content_hash = i.content_hash)
           FROM locations AS l JOIN items AS i ON i.id = l.item_id WHERE l.path = ?""",
        (path,),
    ).fetchone()
    if row is None:
        skipped = conn.execute("SELECT kind, error FROM index_failures WHERE path = ?", (path,)).fetchone()
        if skipped:
            raise LookupError(f"{path} is not indexed: {skipped[1]}")
        raise LookupError(f"{path} is not an indexed item")
    item_id, content_hash, modality, mime, size, state, first_seen, rating = row
    embeddings = [
        {"model_id": model_id, "source": source, "dimension": dimension, "vectors": count}
        for model_id, source, dimension, count in conn.execute(
            "SELECT model_id, source, dimension, COUNT(*) FROM embeddings WHERE item_id = ? GROUP BY model_id, source",
            (item_id,),
        )
    ]
    failures = dict(conn.execute("SELECT model_id, error FROM embedding_failures WHERE item_id = ?", (item_id,)).fetchall())
    return {
        "item_id": item_id,
        "content_hash": content_hash,
        "modality": modality,
        "mime": mime,
        "size": size,
        "first_seen": first_seen,
        "rating": rating,
        "paths": [p for (p,) in conn.execute("SELECT path FROM locations WHERE item_id = ? ORDER BY id", (item_id,))],
        "metadata": dict(conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)).fetchall()),
        "embedding_state": state,
        "embeddings": embeddings,
        "embedding_failures": failures,
    }
