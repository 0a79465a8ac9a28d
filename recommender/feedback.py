"""What the user's feedback says about an item, as a label for the preference model.

An explicit rating (``rate``, ``like``, ``dislike``, an imported star rating) is the user's
word and replaces everything else about that item. Implicit events are weaker evidence, so
they become labels with a smaller weight: playing to the end says more than opening, and a
skip says the opposite. Several events of one item add up, to at most an explicit rating's
weight.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LIKE_RATING = 8.0
DISLIKE_RATING = 1.0
EXPLICIT_WEIGHT = 1.0
MAX_IMPLICIT_WEIGHT = 0.6

# event kind -> (the rating it suggests, the weight of one such event)
EVENT_LABELS = {
    "opened": (6.0, 0.1),
    "finished": (8.0, 0.3),  # played or read to the end
    "skipped": (2.0, 0.3),
}
WATCHED_WEIGHT = 0.25  # "watched": a fraction in 0..1 of the item's length, rated 2 + 6 * fraction
EVENT_KINDS = (*EVENT_LABELS, "watched")


@dataclass(frozen=True)
class Label:
    target: float  # 0..10
    weight: float
    explicit: bool


def event_label(kind: str, value: float | None) -> tuple[float, float]:
    if kind == "watched":
        fraction = min(max(value or 0.0, 0.0), 1.0)
        return 2.0 + 6.0 * fraction, WATCHED_WEIGHT
    return EVENT_LABELS[kind]


def labels(ratings: Iterable[tuple[str, float]], events: Iterable[tuple[str, str, float | None]]) -> dict[str, Label]:
    """Content hash -> label, from explicit ratings and implicit events (kind, value)."""
    found: dict[str, Label] = {key: Label(float(rating), EXPLICIT_WEIGHT, True) for key, rating in ratings}
    totals: dict[str, tuple[float, float]] = {}
    for key, kind, value in events:
        if key in found or kind not in EVENT_KINDS:
            continue
        target, weight = event_label(kind, value)
        mass, weighted = totals.get(key, (0.0, 0.0))
        totals[key] = (mass + weight, weighted + weight * target)
    for key, (mass, weighted) in totals.items():
        found[key] = Label(weighted / mass, min(mass, MAX_IMPLICIT_WEIGHT), False)
    return found
