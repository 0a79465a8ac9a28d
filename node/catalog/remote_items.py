"""Peers' catalogs, cached: the items of each remote share and their K-prefixes.

Kept current by the catalog protocol's pages (``PeerClient.sync``); searched locally, so a
search can rank a peer's items from their prefixes before asking the peer, and can still
show them when the peer does not answer in time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import numpy as np

from .peer_examples import keep_rated_prefixes


MAX_NAME = 255
MAX_METADATA_BYTES = 4096


def store_page(conn: sqlite3.Connection, peer_id: str, items: list[dict[str, Any]], k: int, cursor: int | None = None) -> int:
    """Store a page of a peer's catalog: ``items`` as the catalog protocol's schema keeps them
    (``schema.CATALOG``: each field of its type and range, checked as the page arrived), the
    metadata then bounded as JSON and the prefixes to ``k`` finite values. Items stored. With
    ``cursor``, where the page ended, in the same transaction: a sync cut short resumes after
    the last page stored."""
    if cursor is not None:
        conn.execute("UPDATE remote_shares SET sync_cursor = ? WHERE peer_id = ?", (cursor, peer_id))
    now = time.time()
    stored = 0
    for item in items:
        content_hash, modality, name, size = item["content_hash"], item["modality"], item["name"], item["size"]
        metadata = item["metadata"]
        encoded = json.dumps(metadata, allow_nan=False)
        while len(encoded) > MAX_METADATA_BYTES:  # bounded entry by entry, never cut into invalid JSON
            metadata.popitem()
            encoded = json.dumps(metadata, allow_nan=False)
        conn.execute(
            """INSERT INTO remote_items (peer_id, content_hash, name, size, modality, mime, metadata, synced_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (peer_id, content_hash) DO UPDATE SET name = excluded.name, size = excluded.size,
                   modality = excluded.modality, mime = excluded.mime, metadata = excluded.metadata, synced_at = excluded.synced_at""",
            (peer_id, content_hash, name, size, modality, item.get("mime"), encoded, now),
        )
        for model_id, prefix in item["vectors"].items():
            if len(prefix) == 2 * k:
                values = np.frombuffer(prefix, dtype="<f2")
                if np.isfinite(values).all() and np.any(values):
                    conn.execute(
                        """INSERT INTO remote_vectors (peer_id, content_hash, model_id, prefix) VALUES (?, ?, ?, ?)
                           ON CONFLICT (peer_id, content_hash, model_id) DO UPDATE SET prefix = excluded.prefix""",
                        (peer_id, content_hash, model_id, prefix),
                    )
        stored += 1
    return stored


def cached_item(conn: sqlite3.Connection, peer_id: str, content_hash: str) -> tuple[str, int] | None:
    """(name, size) of an item in our copy of a share's catalog."""
    return conn.execute("SELECT name, size FROM remote_items WHERE peer_id = ? AND content_hash = ?", (peer_id, content_hash)).fetchone()


def held_items(conn: sqlite3.Connection, peer_id: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM remote_items WHERE peer_id = ?", (peer_id,)).fetchone()[0]


def finish_sync(conn: sqlite3.Connection, peer_id: str, cursor: int, total: int | None) -> bool:
    """Record where the sync got to; False when our copy's size disagrees with the peer's (resync from scratch)."""
    held = held_items(conn, peer_id)
    if total is not None and held != total:
        return False
    conn.execute("UPDATE remote_shares SET sync_cursor = ?, synced_at = ? WHERE peer_id = ?", (cursor, time.time(), peer_id))
    return True


def forget_catalog(conn: sqlite3.Connection, peer_id: str) -> None:
    """Drop our copy of a share's catalog; the prefixes of its items the user rated are kept."""
    keep_rated_prefixes(conn, peer_id)
    conn.execute("DELETE FROM remote_vectors WHERE peer_id = ?", (peer_id,))
    conn.execute("DELETE FROM remote_items WHERE peer_id = ?", (peer_id,))
    conn.execute("UPDATE remote_shares SET sync_cursor = 0 WHERE peer_id = ?", (peer_id,))


def sync_cursor(conn: sqlite3.Connection, peer_id: str) -> int:
    row = conn.execute("SELECT sync_cursor FROM remote_shares WHERE peer_id = ?", (peer_id,)).fetchone()
    return row[0] if row else 0


def cached_prefixes(
    conn: sqlite3.Connection, model_id: str, peer_id: str | None = None, limit: int | None = None
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Every cached K-prefix of ``model_id`` (of one peer's share, if given; at most ``limit``
    rows): the (peer id, content hash) of each row, and the rows (float32)."""
    if peer_id is None:
        rows = conn.execute(
            "SELECT peer_id, content_hash, prefix FROM remote_vectors WHERE model_id = ? LIMIT ?", (model_id, -1 if limit is None else limit)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT peer_id, content_hash, prefix FROM remote_vectors WHERE model_id = ? AND peer_id = ?", (model_id, peer_id)
        ).fetchall()
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    width = min(len(r[2]) for r in rows) // 2
    matrix = np.stack([np.frombuffer(r[2][: 2 * width], dtype="<f2") for r in rows]).astype(np.float32)
    return [(r[0], r[1]) for r in rows], matrix


def cached_items(conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for peer_id, content_hash in keys:
        row = conn.execute(
            "SELECT name, size, modality, mime, metadata FROM remote_items WHERE peer_id = ? AND content_hash = ?", (peer_id, content_hash)
        ).fetchone()
        if row:
            name, size, modality, mime, metadata = row
            try:
                details = json.loads(metadata)
            except ValueError:  # cut into invalid JSON by an older version: the item stays, without its metadata
                details = {}
            found[(peer_id, content_hash)] = {
                "content_hash": content_hash, "name": name, "size": size, "modality": modality, "mime": mime, "metadata": details
            }
    return found


def catalog_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT peer_id, COUNT(*) FROM remote_items GROUP BY peer_id").fetchall())
