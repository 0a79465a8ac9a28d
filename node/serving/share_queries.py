"""What a share's protocols read from the catalog: pages of its items, its counts and models,
and one item by hash. Every query is limited to the caller's scope (the share's collections
and kinds); nothing outside it is named, counted or hinted at."""

from __future__ import annotations

from typing import Any

import numpy as np

from peerlight.embeddings.prefix_index import prefix_of
from peerlight.embeddings.vectors import from_blob

from ..callers import Caller
from ..files import IndexedFile
from ..pathnames import decode_path, readable
from ..search.engine import PRIVATE_METADATA
from ..search.filters import MODALITIES, Filters, location_in_scope, where_clause


def catalog_page(conn, scope, cursor: int, limit: int, k: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    where, args = where_clause(Filters(), scope)
    rows = conn.execute(
        f"""SELECT i.id, i.content_hash, i.modality, i.mime, i.size, i.changed_seq FROM items AS i
            WHERE {where} AND i.changed_seq > ? ORDER BY i.changed_seq LIMIT ?""",
        (*args, cursor, limit),
    ).fetchall()
    visible, visible_args = location_in_scope(scope)
    items = []
    for item_id, content_hash, modality, mime, size, _ in rows:
        path = conn.execute(f"SELECT path FROM locations WHERE item_id = ? AND {visible} ORDER BY id LIMIT 1", (item_id, *visible_args)).fetchone()
        if path is None:
            continue
        metadata = {key: value for key, value in conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)) if key not in PRIVATE_METADATA}
        vectors = {
            model_id: prefix_of(from_blob(blob), k).astype("<f2").tobytes()
            for model_id, blob in conn.execute("SELECT model_id, vector FROM embeddings WHERE item_id = ? AND segment = 0", (item_id,))
        }
        name = readable(decode_path(path[0]).rsplit("/", 1)[-1])
        items.append({"content_hash": content_hash, "name": name, "modality": modality, "mime": mime, "size": size, "metadata": metadata, "vectors": vectors})
    last_page = len(rows) < limit
    if last_page:
        # The newest change the caller may see (not the node's change counter: how fast that
        # grows would tell how much changes outside the scope). The next sync starts there.
        next_cursor = rows[-1][5] if rows else cursor
        total = conn.execute(f"SELECT COUNT(*) FROM items AS i WHERE {where}", args).fetchone()[0]
    else:
        next_cursor, total = rows[-1][5], None
    return {"items": items, "cursor": next_cursor, "last_page": last_page, "total": total, "k": k}


def contents(conn, scope) -> tuple[dict[str, int], list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    return counts(conn, scope), models(conn, scope)


def counts(conn, scope) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Items per kind of media in the scope."""
    where, args = where_clause(Filters(), scope)
    counts = {modality: 0 for modality in MODALITIES}
    for modality, n in conn.execute(f"SELECT i.modality, COUNT(*) FROM items AS i WHERE {where} GROUP BY 1", args):
        counts[modality] = n
    return counts


def models(conn, scope) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The models whose vectors items in the scope have (not those of items outside it)."""
    where, args = where_clause(Filters(), scope)
    return [
        {"id": model_id, "dimension": dimension, "space": space}
        for model_id, dimension, space in conn.execute(
            f"""SELECT id, dimension, space FROM models WHERE EXISTS (
                    SELECT 1 FROM embeddings AS e JOIN items AS i ON i.id = e.item_id WHERE e.model_id = models.id AND {where})
                ORDER BY id""",
            args,
        )
    ]


def item_in_scope(conn, content_hash: str, caller: Caller) -> tuple[int, str, list[IndexedFile]] | None:  # type: ignore[no-untyped-def]
    """(id, kind, files as indexed) of the item with ``content_hash``, if the caller's scope lets it see it."""
    where, args = where_clause(Filters(), caller.scope)
    row = conn.execute(f"SELECT i.id, i.modality FROM items AS i WHERE i.content_hash = ? AND {where}", (content_hash, *args)).fetchone()
    if row is None:
        return None
    visible, visible_args = location_in_scope(caller.scope)
    rows = conn.execute(
        f"""SELECT path, library_id, (SELECT libraries.path FROM libraries WHERE libraries.id = library_id), size, mtime_ns, inode, device
            FROM locations WHERE item_id = ? AND {visible} ORDER BY id""",
        (row[0], *visible_args),
    )
    files = [IndexedFile(decode_path(path), library_id, decode_path(root), *signature) for path, library_id, root, *signature in rows]
    return row[0], row[1], files


def scope_prefixes(conn, scope, model_id: str, k: int):  # type: ignore[no-untyped-def]
    """The K-prefixes of the whole-item vectors of ``model_id`` in the scope, (n, k) float32: what a
    share's topics are computed from (documents' and videos' first segment stands for the item)."""
    where, args = where_clause(Filters(), scope)
    rows = conn.execute(
        f"SELECT e.vector FROM embeddings AS e JOIN items AS i ON i.id = e.item_id WHERE e.model_id = ? AND e.segment = 0 AND {where}",
        (model_id, *args),
    )
    prefixes = [prefix_of(from_blob(blob), k) for (blob,) in rows]
    return np.stack(prefixes).astype(np.float32) if prefixes else np.zeros((0, k), np.float32)
