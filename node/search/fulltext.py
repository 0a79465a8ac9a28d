"""Full-text search over file names, paths and metadata with SQLite FTS5 (BM25 ranking)."""

from __future__ import annotations

import re
import sqlite3

# Column weights for bm25(): a match in the file name counts most, then metadata, then path.
_WEIGHTS = (10.0, 2.0, 5.0)
_TOKEN = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """The user's words as an FTS5 query: any word may match, the last one as a prefix."""
    tokens = _TOKEN.findall(text.lower())
    if not tokens:
        return None
    quoted = [f'"{t}"' for t in tokens[:-1]] + [f'"{tokens[-1]}"*']
    return " OR ".join(quoted)


def fulltext_ranking(conn: sqlite3.Connection, text: str, limit: int) -> list[int]:
    """Item ids matching ``text``, best first."""
    query = fts_query(text)
    if query is None:
        return []
    rows = conn.execute(
        f"SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY bm25(items_fts, {', '.join(map(str, _WEIGHTS))}) LIMIT ?",
        (query, limit),
    )
    return [row[0] for row in rows]
