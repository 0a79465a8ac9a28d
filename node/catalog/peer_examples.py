"""What the preference model learns from peers' items: their K-prefixes, and their spaces.

A peer's item is known by the K-prefix its share's catalog gave (float16, renormalised). Once
the user rates it, likes it, or plays it, that prefix is a training example of the space it
lies in, and is copied to ``kept_prefixes``: the rating keeps teaching after the share goes
away (removed, refused, offline for good). When the item is fetched and embedded here, its
whole vector takes the prefix's place (:func:`labelled_vectors` prefers it), under the same
content hash.

A space the node has no local model for (a node with no library of its own) is still a space,
as wide as the prefixes known of it: nothing a peer announces (a manifest's dimension) sets
how much the model pads or truncates, so a peer cannot make training slow or cut what is known.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np

from peerlight.embeddings.vectors import from_blob
from peerlight.recommender.feedback import EVENT_KINDS

# The items the model learns from: rated, or with an event it reads as a label (an "unrated"
# mark, kept as history, is none).
_LABELLED = f"""SELECT content_hash FROM ratings
    UNION SELECT content_hash FROM feedback_events WHERE kind IN ({",".join("'" + kind + "'" for kind in EVENT_KINDS)})"""


def labelled_hashes(conn: sqlite3.Connection) -> set[str]:
    return {h for (h,) in conn.execute(_LABELLED)}


def space_dimensions(conn: sqlite3.Connection) -> dict[str, int]:
    """Every space the model may have a head for: this node's models (their dimension), then the
    spaces known only from peers (the widest prefix held of each)."""
    local = dict(conn.execute("SELECT id, dimension FROM models").fetchall())
    peers: dict[str, int] = {}
    for (model_id,) in conn.execute("SELECT DISTINCT model_id FROM remote_vectors"):
        if model_id not in local:  # one row says the width: a sync stores one K for a whole catalog
            (width,) = conn.execute("SELECT length(prefix) FROM remote_vectors WHERE model_id = ? LIMIT 1", (model_id,)).fetchone()
            peers[model_id] = width // 2
    for model_id, width in conn.execute("SELECT model_id, MAX(length(prefix)) / 2 FROM kept_prefixes GROUP BY model_id"):
        if model_id not in local:
            peers[model_id] = max(peers.get(model_id, 0), width)
    return peers | local


def keep_rated_prefixes(conn: sqlite3.Connection, peer_id: str | None = None) -> int:
    """Copy the cached prefixes of the items the user gave feedback on (of one peer's share, or of
    all) into ``kept_prefixes``, a longer prefix replacing a shorter one; forget the kept prefixes
    of items no longer labelled. Rows written."""
    where = "AND v.peer_id = ?" if peer_id is not None else ""
    written = conn.execute(
        f"""INSERT INTO kept_prefixes (content_hash, model_id, prefix, name, modality, kept_at)
            SELECT v.content_hash, v.model_id, v.prefix, r.name, r.modality, ? FROM remote_vectors AS v
            JOIN remote_items AS r ON r.peer_id = v.peer_id AND r.content_hash = v.content_hash
            WHERE v.content_hash IN ({_LABELLED}) {where}
            ON CONFLICT (content_hash, model_id) DO UPDATE SET prefix = excluded.prefix, name = excluded.name,
                modality = excluded.modality, kept_at = excluded.kept_at
            WHERE length(excluded.prefix) > length(kept_prefixes.prefix)""",
        (time.time(), peer_id) if peer_id is not None else (time.time(),),
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
