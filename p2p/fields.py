"""Plain values from a peer, made safe to store, compute with and show.

A peer chooses every number and string it sends. Before one is kept it must be a value our
own code, SQLite, JSON and a terminal can all hold: integers within SQLite's 64 bits and
non-negative where they count something, floats finite (``NaN`` and ``Infinity`` are not
JSON and break arithmetic), text without control or formatting characters (an escape
sequence clears the user's screen, U+202E reverses what follows) and cut to a length.
Each function returns the checked value, or None when there is none to keep.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from typing import Any

INT64_MAX = 2**63 - 1
UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")  # controls, format (bidi), surrogates, private, unassigned


CONTENT_HASH = re.compile(r"^[0-9a-f]{64}$")  # BLAKE3, hex


def content_hash(value: Any) -> str | None:
    """A content hash (64 lowercase hex digits)."""
    return value if isinstance(value, str) and CONTENT_HASH.match(value) else None


def count(value: Any, maximum: int = INT64_MAX) -> int | None:
    """A non-negative integer no larger than ``maximum`` (sizes, offsets, item counts)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return None


def finite(value: Any, low: float = -1e15, high: float = 1e15) -> float | int | None:
    """A finite number within [low, high] (scores, times, similarities); ints are kept as ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return None
    return value if low <= value <= high else None


def plain_text(value: Any, max_chars: int) -> str | None:
    """Text without control, formatting (bidi) or unassigned characters, at most ``max_chars`` long."""
    if not isinstance(value, str):
        return None
    if value.isprintable() and value.isascii():  # the common case, without a look at each character
        return value[:max_chars]
    kept = "".join(
        " " if ch in "\t\n\r" else ch for ch in value[: max_chars * 4] if ch in "\t\n\r" or unicodedata.category(ch) not in UNSAFE_CATEGORIES
    )
    return kept[:max_chars]


def plain_map(value: Any, *, max_entries: int = 32, max_key: int = 40, max_text: int = 1000) -> dict[str, str | int | float]:
    """A small map of plain values (a peer's metadata): other values, and entries past the bounds, are dropped."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, str | int | float] = {}
    for key, item in itertools.islice(value.items(), max_entries * 2):
        name = plain_text(key, max_key)
        if not name:
            continue
        checked = plain_text(item, max_text) if isinstance(item, str) else finite(item, -1e300, 1e300)
        if checked is not None:
            kept[name] = checked
        if len(kept) >= max_entries:
            break
    return kept
