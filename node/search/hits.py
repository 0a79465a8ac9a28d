"""What a vector search returns: hits on items' vectors (whole items or their segments)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VectorHit:
    item_id: int
    segment: int  # 0: the whole item; otherwise a document chunk or a video moment
    score: float  # cosine similarity
