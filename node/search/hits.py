"""What a vector search returns: hits on items' vectors (whole items or their segments)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VectorHit:
    item_id: int
    segment: int  # 0: the whole item; otherwise a document chunk or a video moment
    score: float  # cosine similarity


def best_per_item(hits: list[VectorHit]) -> list[VectorHit]:
    """Collapse segment hits to one per item (its best segment), keeping the order."""
    seen: dict[int, VectorHit] = {}
    for hit in hits:
        if hit.item_id not in seen:
            seen[hit.item_id] = hit
    return list(seen.values())
