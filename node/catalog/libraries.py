"""Libraries: the folders whose media the node indexes.

Plain functions over a connection, run by ``Catalog.write``/``Catalog.read``. Overlapping
libraries are refused: a file inside two libraries would belong to both, and rescans of one
would fight the other over its location rows.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class LibraryError(Exception):
    """A library operation that contradicts the catalog."""


class LibraryExists(LibraryError):
    pass


class LibraryOverlaps(LibraryError):
    pass


class LibraryNotFound(LibraryError):
    pass


@dataclass(frozen=True)
class Library:
    id: int
    path: str
    name: str
    added_at: float
    last_scan: float | None
    items: int = 0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


_SELECT = """
    SELECT l.id, l.path, l.name, l.added_at, l.last_scan,
           (SELECT COUNT(DISTINCT item_id) FROM locations WHERE library_id = l.id)
    FROM libraries AS l
"""


def add_library(conn: sqlite3.Connection, path: Path, name: str | None = None) -> Library:
    """Register ``path`` (absolute, resolved) as a library."""
    text = str(path)
    for (existing,) in conn.execute("SELECT path FROM libraries"):
        if existing == text:
            raise LibraryExists(f"{text} is already a library")
        if _contains(existing, text) or _contains(text, existing):
            raise LibraryOverlaps(f"{text} overlaps the library {existing}; libraries must not nest")
    cursor = conn.execute(
        "INSERT INTO libraries (path, name, added_at) VALUES (?, ?, ?)",
        (text, name or path.name or text, time.time()),
    )
    return get_library(conn, cursor.lastrowid)


def get_library(conn: sqlite3.Connection, library_id: int) -> Library:
    row = conn.execute(_SELECT + " WHERE l.id = ?", (library_id,)).fetchone()
    if row is None:
        raise LibraryNotFound(f"no library with id {library_id}")
    return Library(*row)


def find_library(conn: sqlite3.Connection, key: str) -> Library:
    """A library by id (digits), path or name."""
    if key.isdigit():
        row = conn.execute(_SELECT + " WHERE l.id = ?", (int(key),)).fetchone()
    else:
        row = conn.execute(_SELECT + " WHERE l.path = ? OR l.name = ? ORDER BY l.id", (key, key)).fetchone()
    if row is None:
        raise LibraryNotFound(f"no library {key!r}")
    return Library(*row)


def list_libraries(conn: sqlite3.Connection) -> list[Library]:
    return [Library(*row) for row in conn.execute(_SELECT + " ORDER BY l.id")]


def remove_library(conn: sqlite3.Connection, key: str) -> Library:
    """Forget a library and its file locations.

    Its items become missing like deleted files (out of search results, forgotten after
    ``index.forget_missing_after_seconds``), so re-adding the folder soon costs no
    recomputation; ratings are keyed by content hash and stay regardless.
    """
    from .items import remove_locations

    library = find_library(conn, key)
    paths = [path for (path,) in conn.execute("SELECT path FROM locations WHERE library_id = ?", (library.id,))]
    remove_locations(conn, paths)
    conn.execute("DELETE FROM index_failures WHERE substr(path, 1, ?) = ?", (len(library.path) + 1, library.path.rstrip("/") + "/"))
    conn.execute("DELETE FROM libraries WHERE id = ?", (library.id,))
    return library


def _contains(outer: str, inner: str) -> bool:
    return inner.startswith(outer.rstrip("/") + "/")
