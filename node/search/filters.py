"""Search filters (modality, rating, date, size, folder), applied in SQL to candidate items."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..callers import Scope
from ..pathnames import prefix_bytes

MODALITIES = ("image", "audio", "video", "text")


@dataclass(frozen=True)
class Filters:
    modalities: tuple[str, ...] = ()
    rating_min: float | None = None
    rating_max: float | None = None
    date_from: str | None = None  # ISO date or datetime, inclusive
    date_to: str | None = None
    size_min: int | None = None
    size_max: int | None = None
    folder: str | None = None  # absolute folder: items with a file under it

    def is_empty(self) -> bool:
        return self == Filters(modalities=self.modalities) and not self.modalities


def _item_date_sql() -> str:
    # The date an item was made: EXIF/metadata date when known, else its file's modification time.
    return """COALESCE(
        (SELECT value FROM item_metadata WHERE item_id = i.id AND key = 'date'),
        (SELECT strftime('%Y-%m-%dT%H:%M:%S', MAX(mtime_ns) / 1e9, 'unixepoch') FROM locations WHERE item_id = i.id)
    )"""


def location_in_scope(scope: Scope) -> tuple[str, list[Any]]:
    """SQL conditions on a ``locations`` row (unqualified columns) for a file the scope lets a caller see."""
    clauses: list[str] = []
    args: list[Any] = []
    if scope.libraries is not None:
        libraries = sorted(scope.libraries) or [-1]
        clauses.append(f"library_id IN ({','.join('?' * len(libraries))})")
        args += libraries
    if scope.folders:
        under = []
        for folder in scope.folders:
            prefix = prefix_bytes(folder)
            under.append("substr(CAST(path AS BLOB), 1, ?) = ?")
            args += [len(prefix), prefix]
        clauses.append(f"({' OR '.join(under)})")
    return " AND ".join(clauses) or "1", args


def where_clause(filters: Filters, scope: Scope = Scope()) -> tuple[str, list[Any]]:
    """SQL conditions on ``items AS i`` for these filters within this scope (always excluding vanished items)."""
    clauses, args = ["i.missing_since IS NULL"], []
    if scope.libraries is not None or scope.folders:
        visible, visible_args = location_in_scope(scope)
        clauses.append(f"EXISTS (SELECT 1 FROM locations WHERE item_id = i.id AND {visible})")
        args += visible_args
    if scope.modalities:
        clauses.append(f"i.modality IN ({','.join('?' * len(scope.modalities))})")
        args += list(scope.modalities)
    if filters.modalities:
        clauses.append(f"i.modality IN ({','.join('?' * len(filters.modalities))})")
        args += list(filters.modalities)
    if filters.rating_min is not None or filters.rating_max is not None:
        clauses.append("(SELECT rating FROM ratings WHERE content_hash = i.content_hash) BETWEEN ? AND ?")
        args += [filters.rating_min if filters.rating_min is not None else 0, filters.rating_max if filters.rating_max is not None else 10]
    if filters.date_from:
        clauses.append(f"{_item_date_sql()} >= ?")
        args.append(filters.date_from)
    if filters.date_to:
        clauses.append(f"{_item_date_sql()} <= ?")
        # A bare date includes the whole day.
        args.append(filters.date_to + ("T23:59:59" if len(filters.date_to) == 10 else ""))
    if filters.size_min is not None:
        clauses.append("i.size >= ?")
        args.append(filters.size_min)
    if filters.size_max is not None:
        clauses.append("i.size <= ?")
        args.append(filters.size_max)
    if filters.folder:
        prefix = prefix_bytes(filters.folder)
        clauses.append("EXISTS (SELECT 1 FROM locations WHERE item_id = i.id AND substr(CAST(path AS BLOB), 1, ?) = ?)")
        args += [len(prefix), prefix]
    return " AND ".join(clauses), args


def allowed_items(conn: sqlite3.Connection, filters: Filters, scope: Scope = Scope()) -> list[int]:
    """Every item id these filters and this scope allow (for a search restricted inside its index)."""
    where, args = where_clause(filters, scope)
    return [row[0] for row in conn.execute(f"SELECT i.id FROM items AS i WHERE {where}", args)]


def allowed_among(conn: sqlite3.Connection, item_ids: Sequence[int], filters: Filters, scope: Scope = Scope()) -> set[int]:
    """Which of ``item_ids`` these filters and this scope allow."""
    if not item_ids:
        return set()
    where, args = where_clause(filters, scope)
    allowed: set[int] = set()
    for start in range(0, len(item_ids), 500):
        chunk = list(item_ids[start : start + 500])
        rows = conn.execute(
            f"SELECT i.id FROM items AS i WHERE i.id IN ({','.join('?' * len(chunk))}) AND {where}", [*chunk, *args]
        )
        allowed.update(row[0] for row in rows)
    return allowed


def parse_date(text: str) -> str:
    """Validate a user-given date; returns it in the ISO form the catalog compares against."""
    try:
        return datetime.datetime.fromisoformat(text).isoformat() if "T" in text else datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None
