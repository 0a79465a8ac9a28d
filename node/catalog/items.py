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

from ..pathnames import decode_path, display, encode_path, path_fields, prefix_bytes, readable, storable


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


# Why a file is not indexed. Only ``unsupported`` (not media at all) is not a problem.
SKIP_KINDS = ("unsupported", "unreadable", "corrupt", "special", "link", "too_large", "sparse", "path")
PROBLEM_KINDS = SKIP_KINDS[1:]


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not indexed, with why: ``kind`` (one of SKIP_KINDS) and a readable ``reason``."""

    path: str
    size: int
    mtime_ns: int
    kind: str
    reason: str


def _under(paths: list[str] | None) -> tuple[str, list[object]]:
    """SQL restricting ``path`` to these paths and everything under them (None: no restriction)."""
    if paths is None:
        return "1", []
    clauses, args = [], []
    for path in paths:
        clauses.append("(path = ? OR substr(CAST(path AS BLOB), 1, ?) = ?)")
        prefix = prefix_bytes(path)
        args += [encode_path(path), len(prefix), prefix]
    return "(" + " OR ".join(clauses or ["0"]) + ")", args


def known_locations(
    conn: sqlite3.Connection, library_id: int, under: list[str] | None = None
) -> dict[str, tuple[int, int, int, int]]:
    """path -> (size, mtime, inode, device) of the library's files (only those at or under ``under``)."""
    where, args = _under(under)
    return {
        decode_path(path): (size, mtime_ns, inode, device)
        for path, size, mtime_ns, inode, device in conn.execute(
            f"SELECT path, size, mtime_ns, inode, device FROM locations WHERE library_id = ? AND {where}",
            (library_id, *args),
        )
    }


def known_skips(conn: sqlite3.Connection, library_id: int, under: list[str] | None = None) -> dict[str, tuple[int, int, str]]:
    """path -> (size, mtime, kind) of the library's skipped files (only those at or under ``under``)."""
    where, args = _under(under)
    return {
        decode_path(path): (size, mtime_ns, kind)
        for path, size, mtime_ns, kind in conn.execute(
            f"SELECT path, size, mtime_ns, kind FROM skipped_files WHERE library_id = ? AND {where}", (library_id, *args)
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
        stored_path = encode_path(file.path)
        previous = conn.execute("SELECT item_id FROM locations WHERE path = ?", (stored_path,)).fetchone()
        conn.execute(
            """INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (path) DO UPDATE SET item_id = excluded.item_id, library_id = excluded.library_id,
                   size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode,
                   device = excluded.device, last_seen = excluded.last_seen""",
            (item_id, library_id, stored_path, file.size, file.mtime_ns, file.inode, file.device, now),
        )
        conn.executemany(
            "INSERT INTO item_metadata (item_id, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (item_id, key) DO UPDATE SET value = excluded.value",
            [(item_id, key, storable(value)) for key, value in file.metadata.items()],
        )
        if file.document_text is not None:
            conn.execute(
                "INSERT OR REPLACE INTO documents (item_id, text) VALUES (?, ?)",
                (item_id, zlib.compress(file.document_text.encode("utf-8"), 6)),
            )
        conn.execute("DELETE FROM skipped_files WHERE path = ?", (stored_path,))
        _refresh_search_text(conn, item_id)
        if previous and previous[0] != item_id:
            _mark_if_missing(conn, [previous[0]], now)  # the file's old content may live on nowhere
    return item_ids


def record_skipped(conn: sqlite3.Connection, library_id: int, skipped: list[SkippedFile]) -> None:
    """Remember skipped files with their size and mtime, so rescans pass them until they change."""
    now = time.time()
    # An upsert, not INSERT OR REPLACE: a replacement's implicit delete would not reach the counting triggers.
    conn.executemany(
        """INSERT INTO skipped_files (path, library_id, size, mtime_ns, kind, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (path) DO UPDATE SET library_id = excluded.library_id, size = excluded.size,
               mtime_ns = excluded.mtime_ns, kind = excluded.kind, reason = excluded.reason, at = excluded.at""",
        [(encode_path(f.path), library_id, f.size, f.mtime_ns, f.kind, readable(f.reason), now) for f in skipped],
    )
    remove_locations(conn, [f.path for f in skipped])  # a file that became unreadable


def forget_skipped(conn: sqlite3.Connection, paths: list[str]) -> None:
    conn.executemany("DELETE FROM skipped_files WHERE path = ?", [(encode_path(p),) for p in paths])


def remove_locations(conn: sqlite3.Connection, paths: list[str]) -> int:
    """Forget files that left the disk; their items become missing (not deleted) if nowhere else."""
    now = time.time()
    affected = []
    for path in paths:
        row = conn.execute("DELETE FROM locations WHERE path = ? RETURNING item_id", (encode_path(path),)).fetchone()
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
    paths = [readable(decode_path(row[0])) for row in conn.execute("SELECT path FROM locations WHERE item_id = ?", (item_id,))]
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
    """Live items by kind and embedding state, and skipped files by kind: from the trigger-kept counters."""
    by_modality: dict[str, int] = {}
    by_state: dict[str, int] = {}
    for modality, state, n in conn.execute("SELECT modality, state, n FROM item_counts WHERE live AND n > 0"):
        by_modality[modality] = by_modality.get(modality, 0) + n
        by_state[state] = by_state.get(state, 0) + n
    skipped = dict(conn.execute("SELECT kind, n FROM skipped_counts WHERE n > 0").fetchall())
    return {
        "items": sum(by_modality.values()),
        "by_modality": by_modality,
        "embeddings_pending": by_state.get("pending", 0),
        "embeddings_failed": by_state.get("failed", 0),
        "skipped": skipped,
        "problems": sum(n for kind, n in skipped.items() if kind in PROBLEM_KINDS),
    }


def item_info(conn: sqlite3.Connection, path: str) -> dict[str, Any]:
    """Everything the catalog knows about the item stored at ``path``."""
    row = conn.execute(
        """SELECT i.id, i.content_hash, i.modality, i.mime, i.size, i.embedding_state, i.first_seen,
                  (SELECT rating FROM ratings WHERE content_hash = i.content_hash)
           FROM locations AS l JOIN items AS i ON i.id = l.item_id WHERE l.path = ?""",
        (encode_path(path),),
    ).fetchone()
    if row is None:
        skipped = conn.execute("SELECT kind, reason FROM skipped_files WHERE path = ?", (encode_path(path),)).fetchone()
        if skipped:
            raise LookupError(f"{display(path)} is not indexed: {skipped[1]}")
        raise LookupError(f"{display(path)} is not an indexed item")
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
        "paths": [
            path_fields(decode_path(p)) for (p,) in conn.execute("SELECT path FROM locations WHERE item_id = ? ORDER BY id", (item_id,))
        ],
        "metadata": dict(conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)).fetchall()),
        "embedding_state": state,
        "embeddings": embeddings,
        "embedding_failures": failures,
    }


def list_problems(conn: sqlite3.Connection, include_unsupported: bool, limit: int) -> dict[str, Any]:
    """Files the node could not index (newest first), and items whose embedding failed."""
    kinds = SKIP_KINDS if include_unsupported else PROBLEM_KINDS
    marks = ",".join("?" * len(kinds))
    skipped = [
        {**path_fields(decode_path(path)), "library_id": library_id, "kind": kind, "reason": reason, "size": size, "at": at}
        for path, library_id, kind, reason, size, at in conn.execute(
            f"""SELECT path, library_id, kind, reason, size, at FROM skipped_files
                WHERE kind IN ({marks}) ORDER BY at DESC, path LIMIT ?""",
            (*kinds, limit),
        )
    ]
    failed = [
        {**path_fields(decode_path(path)), "content_hash": content_hash, "model_id": model_id, "reason": error, "at": at}
        for path, content_hash, model_id, error, at in conn.execute(
            """SELECT (SELECT path FROM locations WHERE item_id = i.id ORDER BY id LIMIT 1), i.content_hash,
                      f.model_id, f.error, f.at
               FROM embedding_failures AS f JOIN items AS i ON i.id = f.item_id
               WHERE i.missing_since IS NULL ORDER BY f.at DESC LIMIT ?""",
            (limit,),
        )
        if path is not None
    ]
    counts = dict(conn.execute("SELECT kind, n FROM skipped_counts WHERE n > 0").fetchall())
    return {"skipped": skipped, "embedding_failures": failed, "counts": counts}
