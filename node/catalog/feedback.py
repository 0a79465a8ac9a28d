"""The user's feedback in the catalog: ratings and implicit events, keyed by content hash.

Keyed by content hash, so a moved or renamed file keeps its rating, a duplicate shares it,
and a peer's item can be rated before it is fetched (its hash is what the peer's catalog
names it by). None of this is ever read by the Data Servers: ratings never leave the machine.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any



from ..pathnames import decode_path, display, encode_path, readable
from .peer_examples import kept_name

HASH = re.compile(r"[0-9a-f]{64}")
HASH_PREFIX = re.compile(r"[0-9a-f]{8,64}")
RATING_SOURCES = ("rating", "like", "dislike", "import")


class UnknownItem(LookupError):
    """ITEM names nothing this node knows (no indexed file, no item of a peer's cached catalog)."""


class AmbiguousItem(LookupError):
    """A hash prefix that several items share."""


@dataclass(frozen=True)
class ItemRef:
    content_hash: str
    name: str  # a path for a local item, the peer's name for a remote one
    local: bool


def resolve_item(conn: sqlite3.Connection, item: str) -> ItemRef:
    """An item named by a path of an indexed file, a content hash, or a unique prefix of one
    (at least 8 hex digits, as search results show them), local or in a peer's cached catalog."""
    row = conn.execute(
        "SELECT i.content_hash, l.path FROM locations AS l JOIN items AS i ON i.id = l.item_id WHERE l.path = ?", (encode_path(item),)
    ).fetchone()
    if row:
        return ItemRef(row[0], readable(decode_path(row[1])), True)
    lowered = item.strip().lower()
    if not HASH_PREFIX.fullmatch(lowered):
        raise UnknownItem(f"{display(item)} is neither an indexed file nor a content hash")
    upper = lowered + "g"  # every hash with this prefix sorts between the two
    local = conn.execute(
        "SELECT DISTINCT content_hash FROM items WHERE content_hash >= ? AND content_hash < ? LIMIT 2", (lowered, upper)
    ).fetchall()
    remote = conn.execute(
        "SELECT DISTINCT content_hash FROM remote_items WHERE content_hash >= ? AND content_hash < ? LIMIT 2", (lowered, upper)
    ).fetchall()
    hashes = {h for (h,) in local} | {h for (h,) in remote}
    if len(hashes) > 1:
        raise AmbiguousItem(f"{item} is the start of several items' hashes; give more of it")
    if not hashes:
        if HASH.fullmatch(lowered):
            return ItemRef(lowered, lowered[:12], False)  # rated ahead of knowing it (e.g. an imported list)
        raise UnknownItem(f"no item's hash starts with {item}")
    (content_hash,) = hashes
    return ItemRef(content_hash, describe_hash(conn, content_hash), bool(local))


def describe_hash(conn: sqlite3.Connection, content_hash: str) -> str:
    row = conn.execute(
        "SELECT l.path FROM items AS i JOIN locations AS l ON l.item_id = i.id WHERE i.content_hash = ? ORDER BY l.id LIMIT 1", (content_hash,)
    ).fetchone()
    if row:
        return readable(decode_path(row[0]))
    row = conn.execute("SELECT name FROM remote_items WHERE content_hash = ? LIMIT 1", (content_hash,)).fetchone()
    return row[0] if row else kept_name(conn, content_hash) or content_hash[:12]


def set_rating(conn: sqlite3.Connection, content_hash: str, rating: float, source: str = "rating", at: float | None = None) -> None:
    if source not in RATING_SOURCES:
        raise ValueError(f"unknown rating source {source!r}")
    now = time.time() if at is None else at
    conn.execute(
        """INSERT INTO ratings (content_hash, rating, updated_at, source) VALUES (?, ?, ?, ?)
           ON CONFLICT (content_hash) DO UPDATE SET rating = excluded.rating, updated_at = excluded.updated_at, source = excluded.source""",
        (content_hash, rating, now, source),
    )
    conn.execute("INSERT INTO feedback_events (content_hash, kind, value, at) VALUES (?, ?, ?, ?)", (content_hash, source, rating, now))


def clear_rating(conn: sqlite3.Connection, content_hash: str) -> bool:
    gone = conn.execute("DELETE FROM ratings WHERE content_hash = ?", (content_hash,)).rowcount
    conn.execute("INSERT INTO feedback_events (content_hash, kind, value, at) VALUES (?, 'unrated', NULL, ?)", (content_hash, time.time()))
    return bool(gone)


def record_event(conn: sqlite3.Connection, content_hash: str, kind: str, value: float | None, at: float | None = None) -> None:
    conn.execute(
        "INSERT INTO feedback_events (content_hash, kind, value, at) VALUES (?, ?, ?, ?)", (content_hash, kind, value, time.time() if at is None else at)
    )


def ratings(conn: sqlite3.Connection) -> list[tuple[str, float, float, str]]:
    """Every rating: (content hash, rating, updated_at, source)."""
    return conn.execute("SELECT content_hash, rating, updated_at, source FROM ratings ORDER BY updated_at").fetchall()


def implicit_events(conn: sqlite3.Connection, kinds: tuple[str, ...]) -> list[tuple[str, str, float | None]]:
    marks = ",".join("?" * len(kinds))
    return conn.execute(f"SELECT content_hash, kind, value FROM feedback_events WHERE kind IN ({marks})", kinds).fetchall()


def last_seen(conn: sqlite3.Connection, hashes: list[str], kinds: tuple[str, ...]) -> dict[str, float]:
    """When each item was last opened or played (only those that were)."""
    found: dict[str, float] = {}
    marks = ",".join("?" * len(kinds))
    for start in range(0, len(hashes), 500):
        batch = hashes[start : start + 500]
        found |= dict(
            conn.execute(
                f"SELECT content_hash, MAX(at) FROM feedback_events WHERE kind IN ({marks}) AND content_hash IN ({','.join('?' * len(batch))}) GROUP BY content_hash",
                (*kinds, *batch),
            ).fetchall()
        )
    return found


# --- the preference model's versions ---

KEEP_VERSIONS = 3


def store_model(conn: sqlite3.Connection, data: bytes, examples: int, info: str) -> int:
    """Store a newly trained model as the active one; the previous ones stay for rollback."""
    conn.execute("UPDATE preference_models SET active = 0 WHERE active = 1")
    version = conn.execute(
        "INSERT INTO preference_models (created_at, examples, info, data, active) VALUES (?, ?, ?, ?, 1)", (time.time(), examples, info, data)
    ).lastrowid
    conn.execute(
        "DELETE FROM preference_models WHERE version NOT IN (SELECT version FROM preference_models ORDER BY version DESC LIMIT ?)", (KEEP_VERSIONS,)
    )
    return int(version)


def active_model(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
    return conn.execute("SELECT version, data FROM preference_models WHERE active = 1").fetchone()


def model_versions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        {"version": v, "created_at": at, "examples": n, "active": bool(active)}
        for v, at, n, active in conn.execute("SELECT version, created_at, examples, active FROM preference_models ORDER BY version DESC")
    ]


def roll_back(conn: sqlite3.Connection) -> int:
    """Make the version before the active one active; its number. LookupError when there is none."""
    row = conn.execute("SELECT version FROM preference_models WHERE active = 1").fetchone()
    current = row[0] if row else None
    previous = conn.execute(
        "SELECT version FROM preference_models WHERE version < ? ORDER BY version DESC LIMIT 1", (current if current is not None else 1 << 62,)
    ).fetchone()
    if previous is None:
        raise LookupError("there is no earlier model to roll back to")
    conn.execute("UPDATE preference_models SET active = (version = ?)", (previous[0],))
    return int(previous[0])
