"""Duplicate detection: identical copies (same content hash) and near-duplicates (vectors)."""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from peerlight.embeddings.vectors import from_blob

from ..pathnames import decode_path, path_fields


def find_duplicates(conn: sqlite3.Connection, threshold: float, modalities: tuple[str, ...]) -> dict[str, Any]:
    marks = ",".join("?" * len(modalities))
    copies: dict[int, dict[str, Any]] = {}
    for item_id, content_hash, modality, path in conn.execute(
        f"""SELECT i.id, i.content_hash, i.modality, l.path FROM items AS i JOIN locations AS l ON l.item_id = i.id
            WHERE i.modality IN ({marks}) AND i.missing_since IS NULL
              AND (SELECT COUNT(*) FROM locations WHERE item_id = i.id) > 1
            ORDER BY i.id, l.id""",
        modalities,
    ):
        group = copies.setdefault(item_id, {"content_hash": content_hash, "modality": modality, "paths": []})
        group["paths"].append(path_fields(decode_path(path)))
    identical = list(copies.values())
    near = []
    model_ids = [row[0] for row in conn.execute("SELECT id FROM models")]
    for model_id in model_ids:
        rows = conn.execute(
            f"""SELECT e.item_id, e.vector FROM embeddings AS e JOIN items AS i ON i.id = e.item_id
                WHERE e.model_id = ? AND e.segment = 0 AND e.source = 'content'
                  AND i.missing_since IS NULL AND i.modality IN ({marks})""",
            (model_id, *modalities),
        ).fetchall()
        if len(rows) < 2:
            continue
        item_ids = [r[0] for r in rows]
        vectors = np.stack([from_blob(r[1]) for r in rows])
        for group in _groups(vectors, threshold):
            members = [item_ids[i] for i in group]
            near.append({"model_id": model_id, "items": _describe(conn, members, vectors[group])})
    return {"threshold": threshold, "identical": identical, "near": near}


def _groups(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected components of the graph "cosine similarity >= threshold" (FAISS range search)."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    limits, _, neighbours = index.range_search(np.ascontiguousarray(vectors, dtype=np.float32), threshold)
    parent = list(range(len(vectors)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(vectors)):
        for j in neighbours[limits[i] : limits[i + 1]]:
            a, b = root(i), root(int(j))
            if a != b:
                parent[b] = a
    components: dict[int, list[int]] = {}
    for i in range(len(vectors)):
        components.setdefault(root(i), []).append(i)
    return [members for members in components.values() if len(members) > 1]


def _describe(conn: sqlite3.Connection, item_ids: list[int], vectors: np.ndarray) -> list[dict[str, Any]]:
    centre = vectors.mean(axis=0)
    out = []
    for item_id, vector in zip(item_ids, vectors):
        (path,) = conn.execute("SELECT path FROM locations WHERE item_id = ? ORDER BY id LIMIT 1", (item_id,)).fetchone()
        out.append({"item_id": item_id, **path_fields(decode_path(path)), "similarity_to_group": round(float(vector @ centre / np.linalg.norm(centre)), 4)})
    return out
