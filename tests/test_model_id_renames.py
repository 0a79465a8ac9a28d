"""Ids stored under version 1 of the adapter id recipe are renamed at start; nothing else changes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from peerlight.embeddings.adapters import pca_adapter
from peerlight.embeddings.vectors import to_blob
from peerlight.node.catalog.migrations import migrate
from peerlight.node.model_id_renames import adapter_renames, rename_adapter_files, rename_in_catalog, stored_under_old_ids


def test_a_node_s_stored_ids_of_version_1_take_their_version_2_names(tmp_path: Path) -> None:
    adapter = pca_adapter("st:tiny:0011223344556677", np.random.default_rng(3).standard_normal((64, 8)))
    old_id, new_id = adapter.legacy_adapter_id, adapter.adapter_id
    old_model, new_model = adapter.model_id_for(old_id), adapter.model_id
    assert old_id != new_id and old_model != new_model
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / f"{old_id}.npz").write_bytes(adapter.to_bytes())
    (folder / "defaults.json").write_text(json.dumps({"st:tiny:0011223344556677": old_id, "other": "x" * 64}))

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    vector = to_blob(np.ones(8, np.float32))
    conn.execute("INSERT INTO models (id, name, space, dimension, created_at) VALUES (?, 'tiny', 'text', 8, 0)", (old_model,))
    conn.execute("INSERT INTO models (id, name, space, dimension, created_at) VALUES ('st:other:1', 'other', 'text', 8, 0)")
    for item_id, model in ((1, old_model), (2, old_model), (2, "st:other:1")):
        conn.execute("INSERT INTO embeddings (item_id, model_id, segment, dimension, vector) VALUES (?, ?, 0, 8, ?)", (item_id, model, vector))
    conn.execute("INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen) VALUES ('p', '[]', 'manual', 0)")
    conn.execute("INSERT INTO remote_items (peer_id, content_hash, name, size, modality, synced_at) VALUES ('p', ?, 'x', 1, 'text', 0)", ("a" * 64,))
    conn.execute("INSERT INTO remote_vectors (peer_id, content_hash, model_id, prefix) VALUES ('p', ?, ?, ?)", ("a" * 64, old_model, bytes(16)))

    renames = adapter_renames([folder])
    assert [(r.old_model_id, r.new_model_id) for r in renames] == [(old_model, new_model)]
    assert stored_under_old_ids(conn, renames) == renames
    conn.execute("BEGIN")
    assert rename_in_catalog(conn, renames) == 3
    conn.execute("COMMIT")
    rename_adapter_files(folder, renames)

    assert [row[0] for row in conn.execute("SELECT id FROM models ORDER BY id")] == sorted([new_model, "st:other:1"])
    assert conn.execute("SELECT model_id, COUNT(*) FROM embeddings GROUP BY 1 ORDER BY 1").fetchall() == sorted([(new_model, 2), ("st:other:1", 1)])
    assert conn.execute("SELECT model_id FROM remote_vectors").fetchall() == [(new_model,)]
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{new_id}.npz", "defaults.json"])
    assert json.loads((folder / "defaults.json").read_text()) == {"st:tiny:0011223344556677": new_id, "other": "x" * 64}
    assert stored_under_old_ids(conn, adapter_renames([folder])) == []  # a second start writes nothing
