"""Full-text matching that only counts informative words, on a real catalog (node/search/fulltext.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from peerlight.node.catalog.migrations import migrate
from peerlight.node.search.fulltext import TextQuery, fulltext_ranking, plan_query, text_evidence, words


@pytest.fixture
def catalog(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "c.sqlite3", isolation_level=None)
    migrate(conn)
    names = ["bread in winter", "influenza note", "holiday photos"] + [f"photos from trip {i}" for i in range(40)]
    for item_id, name in enumerate(names, start=1):
        conn.execute(
            "INSERT INTO items (id, content_hash, size, modality, first_seen, updated_at) VALUES (?, ?, 1, 'text', 0, 0)",
            (item_id, f"h{item_id}"),
        )
        conn.execute("INSERT INTO items_fts (rowid, name, path, metadata) VALUES (?, ?, '', '')", (item_id, name))
    return conn


def test_words_are_split_as_fts5_splits_them() -> None:
    assert words("Café  crème, NAÏVE-test IMG_1234") == ["cafe", "creme", "naive", "test", "img", "1234"]


def test_a_peer_query_matches_names_and_metadata_not_paths(catalog: sqlite3.Connection) -> None:
    catalog.execute("UPDATE items_fts SET path = '/home/me/secret-project/x' WHERE rowid = 3")
    assert fulltext_ranking(catalog, plan_query(catalog, "secret"), 10) == [(3, 1.0)]
    assert fulltext_ranking(catalog, plan_query(catalog, "secret", ("name", "metadata")), 10) == []
    assert fulltext_ranking(catalog, plan_query(catalog, "holiday", ("name", "metadata")), 10) == [(3, 1.0)]


def test_stop_words_and_common_words_carry_no_match(catalog: sqlite3.Connection) -> None:
    query = plan_query(catalog, "avoiding getting sick in winter photos")
    # "in", "getting": stop words; "photos": in 41 of 43 items; "avoiding", "sick": in none, but
    # they still weigh: matching "winter" alone is not matching the query.
    assert set(query.terms) == {'"avoiding"', '"sick"', '"winter"'} and query.found == {'"winter"'}
    assert query.match_expression() == '"winter"'
    assert text_evidence(catalog, query, [1]) == {1: pytest.approx(query.terms['"winter"'] / query.total)}
    assert text_evidence(catalog, query, [1])[1] < 0.4
    assert plan_query(catalog, "in the of").terms == {}


def test_evidence_is_the_share_of_informative_weight_matched(catalog: sqlite3.Connection) -> None:
    query = plan_query(catalog, "influenza wint")  # the last word as typed so far: a prefix
    assert set(query.terms) == {'"influenza"', '"wint"*'}
    evidence = text_evidence(catalog, query, [1, 2, 3])
    assert evidence[1] == pytest.approx(query.terms['"wint"*'] / query.total)
    assert evidence[2] == pytest.approx(query.terms['"influenza"'] / query.total)
    assert 3 not in evidence
    ranked = fulltext_ranking(catalog, query, 10)
    assert {item for item, _ in ranked} == {1, 2}
    assert fulltext_ranking(catalog, query, 10, "i.id != ?", [1]) == [(2, evidence[2])]  # restricted in the SQL
    assert fulltext_ranking(catalog, TextQuery(), 10) == []
