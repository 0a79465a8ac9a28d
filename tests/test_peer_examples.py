"""Peers' items as training examples, in the catalog: kept when their share goes away, forgotten
when unrated, and sized by what is known of them, never by what a peer announces."""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from peerlight.node.catalog import feedback, peer_examples, remote_items, shares
from peerlight.node.catalog.migrations import migrate

MODEL = "ordered:all-MiniLM-L6-v2:8142582d383b4144"


def _catalog_with_a_peer(dimension_announced: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")  # as the node's catalog runs
    migrate(conn)
    manifest = {"models": [{"id": MODEL, "dimension": dimension_announced, "space": "text"}]}
    conn.execute("INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen, manifest) VALUES ('p', '[]', 'manual', 0, ?)", (json.dumps(manifest),))
    rng = np.random.default_rng(2)
    items = [
        {"content_hash": f"{n:064x}", "name": f"note{n}.txt", "modality": "text", "size": 10, "metadata": {},
         "vectors": {MODEL: rng.normal(size=48).astype("<f2").tobytes()}}
        for n in range(6)
    ]
    assert remote_items.store_page(conn, "p", items, 48) == 6
    return conn


def test_rated_peers_prefixes_outlive_their_share_and_go_when_unrated() -> None:
    conn = _catalog_with_a_peer(384)
    feedback.set_rating(conn, f"{1:064x}", 9)
    feedback.record_event(conn, f"{2:064x}", "finished", None)
    feedback.record_event(conn, f"{3:064x}", "unrated", None)  # history, not a label
    assert peer_examples.keep_rated_prefixes(conn) == 2
    shares.forget_remote(conn, "p")  # the share goes away: its cached catalog with it
    assert conn.execute("SELECT COUNT(*) FROM remote_vectors").fetchone()[0] == 0
    vectors = peer_examples.labelled_vectors(conn, [f"{n:064x}" for n in range(6)])
    assert sorted(vectors) == [f"{1:064x}", f"{2:064x}"] and all(len(v) == 48 for [(_, v)] in vectors.values())
    assert feedback.describe_hash(conn, f"{1:064x}") == "note1.txt"  # explanations still name it
    feedback.clear_rating(conn, f"{1:064x}")
    peer_examples.keep_rated_prefixes(conn)
    assert [h for (h,) in conn.execute("SELECT content_hash FROM kept_prefixes")] == [f"{2:064x}"]


def test_a_peer_only_space_is_as_wide_as_its_prefixes_whatever_a_manifest_says() -> None:
    for announced in (8, 384, 4096):  # too narrow (would cut what is known), honest, absurdly wide (slow training)
        conn = _catalog_with_a_peer(announced)
        assert peer_examples.space_dimensions(conn) == {MODEL: 48}
        conn.execute("INSERT INTO models (id, name, space, dimension, created_at) VALUES (?, 'minilm', 'text', 384, 0)", (MODEL,))
        assert peer_examples.space_dimensions(conn) == {MODEL: 384}  # once the node has the model itself
