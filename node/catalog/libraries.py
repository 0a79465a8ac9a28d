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

from ..pathnames import decode_path, display, encode_path, is_utf8, is_within, path_fields, readable


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
        return asdict(self) | path_fields(self.path)


_SELECT = """
    SELECT l.id, l.path, l.name, l.added_at, l.last_scan,
           (SELECT COUNT(DISTINCT item_id) FROM locations WHERE library_id = l.id)
    FROM libraries AS l
"""


def _library(row: tuple[Any, ...]) -> Library:
    library_id, path, *rest = row
    return Library(library_id, decode_path(path), *rest)


def add_library(conn: sqlite3.Connection, path: Path, name: str | None = None) -> Library:
    """Register ``path`` (absolute, resolved) as a library."""
    text = str(path)
    for (stored,) in conn.execute("SELECT path FROM libraries"):
        existing = decode_path(stored)
        if existing == text:
            raise LibraryExists(f"{display(text)} is already a library")
        if is_within(text, existing) or is_within(existing, text):
            raise LibraryOverlaps(f"{display(text)} overlaps the library {display(existing)}; libraries must not nest")
    cursor = conn.execute(
        "INSERT INTO libraries (path, name, added_at) VALUES (?, ?, ?)",
        (encode_path(text), name or readable(path.name or text), time.time()),
    )
    return get_library(conn, cursor.lastrowid)


def get_library(conn: sqlite3.Connection, library_id: int) -> Library:
    row = conn.execute(_SELECT + " WHERE l.id = ?", (library_id,)).fetchone()
    if row is None:
        raise LibraryNotFound(f"no library with id {library_id}")
    return _library(row)


def find_library(conn: sqlite3.Connection, key: str) -> Library:
    """A library by id (digits), path or name."""
    if key.isdigit():
        row = conn.execute(_SELECT + " WHERE l.id = ?", (int(key),)).fetchone()
    else:
        row = conn.execute(_SELECT + " WHERE l.path = ? OR l.name = ? ORDER BY l.id", (encode_path(key), key if is_utf8(key) else None)).fetchone()
    if row is None:
        raise LibraryNotFound(f"no library {display(key)!r}")
    return _library(row)


def list_libraries(conn: sqlite3.Connection) -> list[Library]:
    return [_library(row) for row in conn.execute(_SELECT + " ORDER BY l.id")]


def remove_library(conn: sqlite3.Connection, key: str) -> Library:
    """Forget a library and its file locations.

    Its items become missing like deleted files (out of search results, forgotten after
    ``index.forget_missing_after_seconds``), so re-adding the folder soon costs no
    recomputation; ratings are keyed by content hash and stay regardless.
    """
    from .items import remove_locations

    library = find_library(conn, key)
    paths = [decode_path(path) for (path,) in conn.execute("SELECT path FROM locations WHERE library_id = ?", (library.id,))]
    remove_locations(conn, paths)
    conn.execute("DELETE FROM libraries WHERE id = ?", (library.id,))  # its skipped files go with it (cascade)
    return library

