"""Browsing the library page by page, newest first, and one item by its content hash: what the web UI's grid and item view read."""

from __future__ import annotations

import sqlite3
import zlib
from typing import Any

from ..pathnames import decode_path, path_fields, readable

MODALITIES = ("image", "audio", "video", "text", "other")
EXCERPT_CHARS = 240  # a document's opening on its grid card


def _name(stored_path: str | bytes) -> str:
    return readable(decode_path(stored_path).rsplit("/", 1)[-1])


def items_page(conn: sqlite3.Connection, before: int | None, limit: int, modalities: tuple[str, ...] = MODALITIES) -> dict[str, Any]:
    """Up to ``limit`` present items older than the item id ``before`` (None: the newest), each
    with its first file's name; ``next`` continues after the last (None at the end). A keyset
    page: as fast at the ten-thousandth item as at the first."""
    marks = ",".join("?" * len(modalities))
    rows = conn.execute(
        f"""SELECT i.id, i.content_hash, i.modality, i.mime, i.size, i.embedding_state,
                   (SELECT path FROM locations WHERE item_id = i.id ORDER BY id LIMIT 1),
                   (SELECT rating FROM ratings WHERE content_hash = i.content_hash)
            FROM items AS i
            WHERE i.missing_since IS NULL AND i.modality IN ({marks}) AND i.id < ?
              AND EXISTS (SELECT 1 FROM locations WHERE item_id = i.id)
            ORDER BY i.id DESC LIMIT ?""",
        (*modalities, before if before is not None else 2**62, limit + 1),
    ).fetchall()
    items = [
        {"item_id": item_id, "content_hash": h, "modality": m, "mime": mime, "size": size, "embedding": state, "name": _name(path), "rating": rating}
        for item_id, h, m, mime, size, state, path, rating in rows[:limit]
    ]
    _add_excerpts(conn, items)
    return {"items": items, "next": items[-1]["item_id"] if len(rows) > limit else None}


def _add_excerpts(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
    """Each document's opening, for its card: only the first bytes of its stored text are
    inflated, so a card of a book costs no more than one of a note."""
    documents = {item["item_id"]: item for item in items if item["modality"] == "text"}
    if not documents:
        return
    marks = ",".join("?" * len(documents))
    for item_id, compressed in conn.execute(f"SELECT item_id, text FROM documents WHERE item_id IN ({marks})", tuple(documents)):
        try:
            opening = zlib.decompressobj().decompress(compressed, EXCERPT_CHARS * 4).decode("utf-8", "ignore")
        except zlib.error:
            continue
        documents[item_id]["excerpt"] = " ".join(opening.split())[:EXCERPT_CHARS]


def item_by_hash(conn: sqlite3.Connection, content_hash: str) -> dict[str, Any] | None:
    """What the catalog knows of one present item (None: no such item here)."""
    row = conn.execute(
        """SELECT i.id, i.content_hash, i.modality, i.mime, i.size, i.embedding_state, i.first_seen,
                  (SELECT rating FROM ratings WHERE content_hash = i.content_hash)
           FROM items AS i WHERE i.content_hash = ? AND i.missing_since IS NULL""",
        (content_hash,),
    ).fetchone()
    if row is None:
        return None
    item_id, content_hash, modality, mime, size, state, first_seen, rating = row
    paths = [decode_path(p) for (p,) in conn.execute("SELECT path FROM locations WHERE item_id = ? ORDER BY id", (item_id,))]
    if not paths:
        return None
    return {
        "item_id": item_id,
        "content_hash": content_hash,
        "modality": modality,
        "mime": mime,
        "size": size,
        "embedding": state,
        "first_seen": first_seen,
        "rating": rating,
        "name": _name(paths[0]),
        "paths": [path_fields(p) for p in paths],
        "metadata": dict(conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)).fetchall()),
    }


def remote_page(conn: sqlite3.Connection, peer_id: str, after: str | None, limit: int) -> dict[str, Any]:
    """A page of a peer share's cached catalog, by name: each item, and whether it is here too
    (fetched or indexed); ``next`` continues after the last."""
    last_name, last_hash = (after.split("\0", 1) + [""])[:2] if after else ("", "")
    rows = conn.execute(
        """SELECT r.content_hash, r.name, r.size, r.modality, r.mime,
                  EXISTS (SELECT 1 FROM items AS i WHERE i.content_hash = r.content_hash AND i.missing_since IS NULL)
           FROM remote_items AS r WHERE r.peer_id = ? AND (r.name, r.content_hash) > (?, ?)
           ORDER BY r.name, r.content_hash LIMIT ?""",
        (peer_id, last_name, last_hash, limit + 1),
    ).fetchall()
    items = [{"content_hash": h, "name": name, "size": size, "modality": m, "mime": mime, "here": bool(here)} for h, name, size, m, mime, here in rows[:limit]]
    return {"items": items, "next": f"{items[-1]['name']}\0{items[-1]['content_hash']}" if len(rows) > limit else None}
