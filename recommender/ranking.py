"""Turning predictions into a list worth showing: exploration, novelty, diversity, shuffle.

The order of a recommendation list is not the order of predicted ratings alone:

- **exploration**: an item the model knows little about gets a bonus proportional to its
  predicted standard deviation (an upper confidence bound), so new kinds of content get a
  chance to be rated instead of the model only confirming what it knows;
- **novelty**: an item opened or played recently is pushed down, recovering over days;
- **diversity**: items are picked by maximal marginal relevance, each one's value reduced by
  its similarity to those already picked (in the same vector space), so ten near-duplicates do
  not fill the list;
- **temperature**: a smart shuffle draws the list from a Plackett-Luce distribution over the
  scores (Gumbel noise scaled by the temperature); 0 is the strict order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOVELTY_RECOVERY_DAYS = 7.0  # a played item is back to full novelty after a few times this


@dataclass(frozen=True)
class RankingSettings:
    exploration: float = 0.5  # rating units per predicted standard deviation
    novelty: float = 1.5  # rating units taken from an item seen just now
    diversity: float = 0.3  # 0: pure relevance; 1: pure dissimilarity
    temperature: float = 0.0  # rating units of Gumbel noise; 0: strict order
    seed: int | None = None


@dataclass(frozen=True)
class Candidates:
    """What the ranking needs of each candidate: predictions, when it was last seen, its vector."""

    predicted: np.ndarray  # (n,) rating 0..10
    spread: np.ndarray  # (n,) standard deviation of the prediction
    seen_days_ago: np.ndarray  # (n,) days since last opened/played; inf: never
    spaces: np.ndarray  # (n,) int: which vector space the vector lives in
    vectors: list[np.ndarray]  # unit vectors (or renormalised prefixes), for diversity within a space


def novelty_penalty(days_ago: np.ndarray, weight: float) -> np.ndarray:
    return weight * np.exp(-np.asarray(days_ago, dtype=np.float64) / NOVELTY_RECOVERY_DAYS)


def scores(candidates: Candidates, settings: RankingSettings) -> np.ndarray:
    """Each candidate's value before diversity: prediction + exploration - staleness."""
    return (
        candidates.predicted
        + settings.exploration * candidates.spread
        - novelty_penalty(candidates.seen_days_ago, settings.novelty)
    )


def rank(candidates: Candidates, limit: int, settings: RankingSettings) -> list[int]:
    """Indices of the ``limit`` candidates to show, in order."""
    value = scores(candidates, settings)
    if settings.temperature > 0:
        rng = np.random.default_rng(settings.seed)
        value = value + settings.temperature * rng.gumbel(size=len(value))
    if len(value) == 0 or limit <= 0:
        return []
    pool = np.argsort(-value)[: max(limit * 10, 50)]  # MMR looks only among the strongest
    if settings.diversity <= 0:
        return [int(i) for i in pool[:limit]]
    return _maximal_marginal_relevance(candidates, value, pool, limit, settings.diversity)


def _maximal_marginal_relevance(
    candidates: Candidates, value: np.ndarray, pool: np.ndarray, limit: int, diversity: float
) -> list[int]:
    """Greedy MMR: repeatedly take the item with the best ``(1-d) * value - d * s * max_similarity``,
    where ``s`` scales similarity (0..1) into the value's units (the pool's spread of values)."""
    scale = max(float(np.ptp(value[pool])), 1.0)
    chosen: list[int] = []
    closest = np.zeros(len(pool))  # each pooled item's highest similarity to a chosen one
    remaining = np.ones(len(pool), dtype=bool)
    width = min(len(v) for v in candidates.vectors) if candidates.vectors else 0
    matrix = np.stack([candidates.vectors[i][:width] for i in pool]).astype(np.float32) if width else None
    if matrix is not None:
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    spaces = candidates.spaces[pool]
    for _ in range(min(limit, len(pool))):
        objective = (1 - diversity) * value[pool] - diversity * scale * closest
        objective[~remaining] = -np.inf
        pick = int(np.argmax(objective))
        chosen.append(int(pool[pick]))
        remaining[pick] = False
        if matrix is not None:
            similarity = np.clip(matrix @ matrix[pick], 0.0, 1.0) * (spaces == spaces[pick])
            closest = np.maximum(closest, similarity)
    return chosen
