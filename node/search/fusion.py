"""Reciprocal rank fusion: merging rankings whose scores are not comparable.

BM25 scores and cosine similarities (from different vector spaces, too) live on different
scales; RRF uses only each item's rank in each list, ``sum(1 / (k + rank))``, which is
robust and needs no tuning beyond ``k`` (60, as in Cormack et al. 2009).
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Item ids with fused scores, best first; ties keep first-seen order."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item_id in enumerate(ranking, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
