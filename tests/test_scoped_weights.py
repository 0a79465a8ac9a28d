"""A peer's scores never depend on items outside its scope.

Words are weighed by how rare they are (idf). Counted over the whole library, a peer whose
scope is one shared folder could read, from the score of a result it may see, how many
private items mention a word. Counted over its scope, its scores are the same whatever the
private folders hold (real SQLite catalog, real search engine).
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

from peerlight.node.callers import Caller, Scope
from peerlight.node.catalog import Catalog
from peerlight.node.catalog.items import IndexedFile, record_files
from peerlight.node.config import Config
from peerlight.node.models import ModelManager
from peerlight.node.search.engine import SearchEngine, SearchRequest
from peerlight.node.search.vector_indexes import VectorIndexes


def fill(conn: sqlite3.Connection, private_tulips: int) -> None:
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (1, '/media/shared', 'shared', 0)")
    conn.execute("INSERT INTO libraries (id, path, name, added_at) VALUES (2, '/media/private', 'private', 0)")
    shared = ["tulip.txt", "garden shed.txt", "rose garden.txt"] + [f"note{i}.txt" for i in range(30)]
    private = [f"tulip letter {i}.txt" for i in range(private_tulips)] + [f"bill{i}.txt" for i in range(60 - private_tulips)]
    for library, folder, names in ((1, "/media/shared", shared), (2, "/media/private", private)):
        for n, name in enumerate(names):
            record_files(conn, library, [IndexedFile(f"{folder}/{name}", 1, 1, n + 1000 * library, 1, f"{library}{n:063x}", "text", "text/plain", {})])


async def scores(base: Path, private_tulips: int, caller: Caller) -> dict[str, float]:
    catalog = await Catalog.open(base / f"catalog-{private_tulips}.sqlite3")
    try:
        await catalog.write(partial(fill, private_tulips=private_tulips))
        engine = SearchEngine(catalog, ModelManager(Config()), VectorIndexes(catalog, base / f"indexes-{private_tulips}"))
        answer = await engine.search(SearchRequest("tulip garden", "text", 10), caller)
        return {result["name"]: result["score"] for result in answer["results"]}
    finally:
        await catalog.aclose()


async def test_a_peer_s_scores_are_the_same_whatever_the_private_folders_hold(tmp_path: Path) -> None:
    peer = Caller("peer", "12D3KooWPeer", Scope(libraries=frozenset({1})))
    few, many = await scores(tmp_path, 0, peer), await scores(tmp_path, 10, peer)
    assert set(few) == {"tulip.txt", "garden shed.txt", "rose garden.txt"}
    assert few == many
    # The owner's own search weighs words over everything: there the private tulips count.
    owner = Caller.local()
    (tmp_path / "o").mkdir()
    assert (await scores(tmp_path / "o", 0, owner))["tulip.txt"] != (await scores(tmp_path / "o", 10, owner))["tulip.txt"]


def test_a_catalog_page_s_cursor_does_not_count_changes_outside_the_scope(tmp_path: Path) -> None:
    from peerlight.node.catalog.migrations import migrate
    from peerlight.node.serving.share_queries import catalog_page as _catalog_page

    conn = sqlite3.connect(tmp_path / "catalog.sqlite3")
    migrate(conn)
    fill(conn, 5)
    scope = Scope(libraries=frozenset({1}))
    first = _catalog_page(conn, scope, cursor=0, limit=1000, k=8)
    assert first["last_page"] and first["total"] == 33
    for n in range(20):  # the private folder changes; the shared one does not
        record_files(conn, 2, [IndexedFile(f"/media/private/new{n}.txt", 1, 1, 5000 + n, 1, f"f{n:063x}", "text", "text/plain", {})])
    again = _catalog_page(conn, scope, cursor=first["cursor"], limit=1000, k=8)
    assert again["items"] == [] and again["cursor"] == first["cursor"]
