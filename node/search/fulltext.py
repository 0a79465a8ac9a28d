"""Full-text search over file names, paths and metadata with SQLite FTS5, and how strong a match is.

Only informative words count: English stop words ("in", "the", "how") and words found in a
large share of the catalog (a folder name every path shares) are dropped from the query, so
they can neither find an item nor lift it above a better one. What remains is weighed by
inverse document frequency (BM25's idf, from the ``items_fts_vocab`` table): an item's
*text evidence* is the share of the query's idf mass that it matches, 0 to 1, comparable
across queries and computed for any item, not only for those the full-text ranking returned.
Words no item contains stay in that mass: otherwise the one word of "avoiding getting sick
in winter" that some file name contains ("winter") would count as the whole query.
"""

from __future__ import annotations

import math
import re
import sqlite3
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Column weights for bm25(): a match in the file name counts most, then metadata, then path.
_WEIGHTS = (10.0, 2.0, 5.0)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits: unicode61 splits at "_" too
PREFIX_MIN_CHARS = 3  # the last word of a query also matches longer words (as typed: "holi" finds holiday)
ALL_COLUMNS = ("name", "path", "metadata")
COMMON_SHARE = 0.2  # a word in more than this share of the items says little about any of them
COMMON_MIN_ITEMS = 20  # ... unless it is in so few items that the share means nothing
MAX_QUERY_WORDS = 32  # informative words weighed per query (a 1,000-character query could hold ~150)

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves
    get got getting s t""".split()
)


@dataclass(frozen=True)
class TextQuery:
    """The informative words of a query (as FTS5 terms: ``"word"``, or ``"word"*`` for the
    last, typed-as-you-go one), each with its idf weight, and the columns they may match."""

    terms: dict[str, float] = field(default_factory=dict)
    found: frozenset[str] = frozenset()  # the terms some item contains
    columns: tuple[str, ...] = ALL_COLUMNS

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    def match_expression(self) -> str | None:
        """The FTS5 query: any informative word that some item contains may match."""
        return self.restrict(" OR ".join(term for term in self.terms if term in self.found) or None)

    def restrict(self, expression: str | None) -> str | None:
        if expression is None or self.columns == ALL_COLUMNS:
            return expression
        return f"{{{' '.join(self.columns)}}} : ({expression})"


def words(text: str) -> list[str]:
    """The words FTS5's ``unicode61 remove_diacritics 2`` tokenizer makes of ``text``, lower-cased."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return _TOKEN.findall(plain)


def plan_query(
    conn: sqlite3.Connection, text: str, columns: tuple[str, ...] = ALL_COLUMNS, visible: tuple[str, list[Any]] | None = None
) -> TextQuery:
    """Drop stop words and common words from ``text``; weigh the rest by idf.

    With ``visible`` (SQL conditions on ``items AS i`` and their arguments: a peer's scope),
    document frequencies count the items it may see only, so no weight, and no evidence score
    made of weights, depends on items outside that scope."""
    all_words = words(text)
    candidates = list(dict.fromkeys(w for w in all_words if w not in STOP_WORDS))[:MAX_QUERY_WORDS]
    if not candidates:
        return TextQuery(columns=columns)
    if visible is not None:
        return _plan_within(conn, all_words, candidates, columns, *visible)
    (total,) = conn.execute("SELECT COALESCE(SUM(n), 0) FROM item_counts").fetchone()
    marks = ",".join("?" * len(candidates))
    frequency = {
        f'"{term}"': doc
        for term, doc in conn.execute(f"SELECT term, doc FROM items_fts_vocab WHERE term IN ({marks})", candidates)
    }
    expressions = _expressions(all_words, candidates)
    if expressions[-1].endswith("*"):
        # The items holding some word that starts so: at most the sum of those words' counts.
        prefix = candidates[-1]
        (frequency[expressions[-1]],) = conn.execute(
            "SELECT COALESCE(SUM(doc), 0) FROM items_fts_vocab WHERE term >= ? AND term < ?", (prefix, prefix + "\U0010ffff")
        ).fetchone()
    return _weighed(expressions, frequency, total, columns)


def _expressions(all_words: list[str], candidates: list[str]) -> list[str]:
    """FTS5 terms of the candidate words; the last, as typed, also as a prefix."""
    expressions = [f'"{word}"' for word in candidates]
    if all_words[-1] == candidates[-1] and len(candidates[-1]) >= PREFIX_MIN_CHARS:
        expressions[-1] += "*"
    return expressions


def _plan_within(
    conn: sqlite3.Connection, all_words: list[str], candidates: list[str], columns: tuple[str, ...], where: str, args: list[Any]
) -> TextQuery:
    """:func:`plan_query` with frequencies counted among the items ``where`` allows only."""
    (total,) = conn.execute(f"SELECT COUNT(*) FROM items AS i WHERE {where}", args).fetchone()
    frequency = {}
    for expression in _expressions(all_words, candidates):
        (frequency[expression],) = conn.execute(
            f"SELECT COUNT(*) FROM items_fts AS f JOIN items AS i ON i.id = f.rowid WHERE items_fts MATCH ? AND {where}",
            (TextQuery(columns=columns).restrict(expression), *args),
        ).fetchone()
    return _weighed(list(frequency), frequency, total, columns)


def _weighed(expressions: list[str], frequency: dict[str, int], total: int, columns: tuple[str, ...]) -> TextQuery:
    common = max(COMMON_MIN_ITEMS, COMMON_SHARE * total)
    terms = {}
    for expression in expressions:
        df = frequency.get(expression, 0)
        if df <= common:
            terms[expression] = math.log(1 + (total - df + 0.5) / (df + 0.5))
    return TextQuery(terms, frozenset(term for term in terms if frequency.get(term)), columns)


def fulltext_ranking(
    conn: sqlite3.Connection, query: TextQuery, limit: int, where: str | None = None, args: Sequence[Any] = ()
) -> list[tuple[int, float]]:
    """(item id, text evidence) of the best BM25 matches among the items ``where`` allows (on ``items AS i``).

    With no ``where``, every live item is allowed: the ranking then runs on the full-text
    index alone and drops the few items whose files are gone, instead of joining every match.
    """
    expression = query.match_expression()
    if expression is None:
        return []
    order = f"ORDER BY bm25(items_fts, {', '.join(map(str, _WEIGHTS))})"
    if where is None:
        rows = conn.execute(f"SELECT rowid FROM items_fts WHERE items_fts MATCH ? {order} LIMIT ?", (expression, limit * 2))
        candidates = [row[0] for row in rows]
        marks = ",".join("?" * len(candidates))
        gone = {row[0] for row in conn.execute(f"SELECT id FROM items WHERE id IN ({marks}) AND missing_since IS NOT NULL", candidates)}
        ranked = [item_id for item_id in candidates if item_id not in gone][:limit]
    else:
        rows = conn.execute(
            f"""SELECT f.rowid FROM items_fts AS f JOIN items AS i ON i.id = f.rowid
                WHERE items_fts MATCH ? AND {where} {order} LIMIT ?""",
            (expression, *args, limit),
        )
        ranked = [row[0] for row in rows]
    evidence = text_evidence(conn, query, ranked)
    return [(item_id, evidence.get(item_id, 0.0)) for item_id in ranked]


def text_evidence(conn: sqlite3.Connection, query: TextQuery, item_ids: Sequence[int]) -> dict[int, float]:
    """The share of the query's idf mass each item matches (items matching nothing are left out).

    Read from the candidates' own indexed text, split as FTS5 splits it: a MATCH per word
    would walk every item holding that word, however few candidates there are.
    """
    found = {term: idf for term, idf in query.terms.items() if term in query.found}
    if not found or not item_ids:
        return {}
    exact = {term.strip('"'): idf for term, idf in found.items() if not term.endswith("*")}
    prefixes = {term[1:-2]: idf for term, idf in found.items() if term.endswith("*")}
    columns = ", ".join(query.columns)
    evidence: dict[int, float] = {}
    for start in range(0, len(item_ids), 500):
        chunk = list(item_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        for item_id, *texts in conn.execute(f"SELECT rowid, {columns} FROM items_fts WHERE rowid IN ({marks})", chunk):
            held = set(words(" ".join(text or "" for text in texts)))
            weight = sum(idf for word, idf in exact.items() if word in held)
            weight += sum(idf for prefix, idf in prefixes.items() if any(word.startswith(prefix) for word in held))
            if weight:
                evidence[item_id] = weight / query.total
    return evidence
