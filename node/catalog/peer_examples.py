"""What the preference model learns from peers' items: their K-prefixes, and their spaces.

A peer's item is known by the K-prefix its share's catalog gave (float16, renormalised). Once
the user rates it, likes it, or plays it, that prefix is a training example of the space it
lies in, and is copied to ``kept_prefixes``: the rating keeps teaching after the share goes
away (removed, refused, offline for good). When the item is fetched and embedded here, its
whole vector takes the prefix's place (:func:`labelled_vectors` prefers it), under the same
content hash.

A space the node has no local model for (a node with no library of its own) is still a space:
its dimension comes from the manifests of the shares that hold it.
"""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np

from peerlight.embeddings.vectors import from_blob

MAX_DIMENSION = 4096

_LABELLED = "SELECT content_hash FROM ratings UNION SELECT content_hash FROM feedback_events"


def peer_spaces(conn: sqlite3.Connection) -> dict[str, int]:
    """Model id -> dimension of the spaces peers' shares announce, and of the kept prefixes."""
    found: dict[str, int] = {}
    for (manifest,) in conn.execute("SELECT manifest FROM remote_shares WHERE manifest IS NOT NULL"):
        try:
            models = json.loads(manifest).get("models") or []
        except (ValueError, AttributeError):
            continue
        for model in models:
            if not isinstance(model, dict):
                continue
            model_id, dimension = model.get("id"), model.get("dimension")
            if isinstance(model_id, str) and isinstance(dimension, int) and 0 < dimension <= MAX_DIMENSION:
                found.setdefault(model_id, dimension)
    for model_id, dimension in conn.execute("SELECT model_id, MAX(dimension) FROM kept_prefixes GROUP BY model_id"):
        found.setdefault(model_id, dimension)
    return found


def space_dimensions(conn: sqlite3.Connection) -> dict[str, int]:
    """Every space the model may have a head for: this node's models, then peers' spaces."""
    local = dict(conn.execute("SELECT id, dimension FROM models").fetchall())
    return peer_spaces(conn) | local


def keep_rated_prefixes(conn: sqlite3.Connection, peer_id: str | None = None) -> int:
    """Copy the cached prefixes of the items the user gave feedback on (of one peer's share, or of
    all) into ``kept_prefixes``, a longer prefix replacing a shorter one; forget the kept prefixes
    of items no longer labelled. Rows written."""
    dimensions = peer_spaces(conn)
    where = "AND v.peer_id = ?" if peer_id is not None else ""
    rows = conn.execute(
        f"""SELECT v.content_hash, v.model_id, v.prefix, r.name, r.modality FROM remote_vectors AS v
            JOIN remote_items AS r ON r.peer_id = v.peer_id AND r.content_hash = v.content_hash
            WHERE v.content_hash IN ({_LABELLED}) {where}""",
        (peer_id,) if peer_id is not None else (),
    ).fetchall()
    now, written = time.time(), 0
    for content_hash, model_id, prefix, name, modality in rows:
        dimension = dimensions.get(model_id)
        if dimension is None or len(prefix) > 2 * dimension:
            continue
        written += conn.execute(
            """INSERT INTO kept_prefixes (content_hash, model_id, prefix, dimension, name, modality, kept_at) VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (content_hash, model_id) DO UPDATE SET prefix = excluded.prefix, dimension = excluded.dimension,
                   name = excluded.name, modality = excluded.modality, kept_at = excluded.kept_at
               WHERE length(excluded.prefix) > length(kept_prefixes.prefix)""",
            (content_hash, model_id, prefix, dimension, name, modality, now),
        ).rowcount
    conn.execute(f"DELETE FROM kept_prefixes WHERE content_hash NOT IN ({_LABELLED})")
    return written


def labelled_vectors(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Content hash -> [(model id, vector)] for training: the item's own whole-item vectors when
    it is here, else the longest K-prefix known of it (kept, or in a peer's cached catalog)."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for start in range(0, len(hashes), 500):
        batch = hashes[start : start + 500]
        marks = ",".join("?" * len(batch))
        for content_hash, model_id, blob in conn.execute(
            f"""SELECT i.content_hash, e.model_id, e.vector FROM items AS i JOIN embeddings AS e ON e.item_id = i.id AND e.segment = 0
                WHERE i.content_hash IN ({marks})""",
            batch,
        ):
            found.setdefault(content_hash, {})[model_id] = from_blob(blob)
        whole = {key: set(spaces) for key, spaces in found.items()}
        for content_hash, model_id, prefix in conn.execute(
            f"""SELECT content_hash, model_id, prefix FROM kept_prefixes WHERE content_hash IN ({marks})
                UNION ALL SELECT content_hash, model_id, prefix FROM remote_vectors WHERE content_hash IN ({marks})""",
            batch + batch,
        ):
            if model_id in whole.get(content_hash, ()):
                continue  # fetched and embedded here: the whole vector teaches, not a prefix
            held = found.setdefault(content_hash, {})
            if model_id not in held or len(prefix) // 2 > len(held[model_id]):
                held[model_id] = np.frombuffer(prefix, dtype="<f2").astype(np.float32)
    return {key: list(spaces.items()) for key, spaces in found.items()}


def kept_name(conn: sqlite3.Connection, content_hash: str) -> str | None:
    row = conn.execute("SELECT name FROM kept_prefixes WHERE content_hash = ? AND name IS NOT NULL LIMIT 1", (content_hash,)).fetchone()
    return row[0] if row else None
