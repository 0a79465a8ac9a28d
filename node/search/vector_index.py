"""In-memory FAISS indexes of the stored vectors, one per model id.

Vectors of different model ids live in different indexes and are never compared. An index
is built from the catalog on first use and then kept current by the embedder, which adds
every vector it stores; vectors of items that have since disappeared are filtered out when
results are matched with the catalog, and dropped at the next rebuild.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..catalog.embeddings import split_vector_id


@dataclass(frozen=True)
class VectorHit:
    item_id: int
    segment: int
    score: float


class VectorIndex:
    def __init__(self, model_id: str, dimension: int) -> None:
        import faiss

        self.model_id = model_id
        self.dimension = dimension
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._lock = threading.Lock()  # FAISS indexes are not safe for concurrent add + search

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            self._index.remove_ids(ids)  # re-embedded vectors replace the old ones
            self._index.add_with_ids(vectors, ids)

    def search(self, query: np.ndarray, k: int) -> list[VectorHit]:
        """The best ``k`` vectors, as (item, segment, cosine score), best first."""
        if not len(self):
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dimension)
        with self._lock:
            scores, ids = self._index.search(query, min(k, len(self)))
        return [
            VectorHit(*split_vector_id(vid), float(score)) for vid, score in zip(ids[0], scores[0]) if vid >= 0
        ]


def best_per_item(hits: list[VectorHit]) -> list[VectorHit]:
    """Collapse segment hits to one per item (its best segment), keeping the order."""
    seen: dict[int, VectorHit] = {}
    for hit in hits:
        if hit.item_id not in seen:
            seen[hit.item_id] = hit
    return list(seen.values())
