"""Incremental, resumable indexing with a real daemon: moves, deletions, kills, missing weights."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import numpy as np

from peerlight.cli.client import ControlClient
from peerlight.embeddings import default_adapters
from peerlight.embeddings.adapters import Adapter
from peerlight.node.paths import NodePaths

from . import media
from .helpers import DaemonProcess, cli_json, index_and_wait, write_config


def rows(paths: NodePaths, query: str, *args: object) -> list[tuple]:
    conn = sqlite3.connect(f"file:{paths.catalog}?mode=ro", uri=True)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def item_of(paths: NodePaths, path: Path) -> tuple[int, str]:
    return rows(paths, "SELECT i.id, i.content_hash FROM locations l JOIN items i ON i.id = l.item_id WHERE l.path = ?", str(path))[0]


def embedding_rows(paths: NodePaths, item_id: int) -> list[tuple]:
    return rows(paths, "SELECT model_id, segment, vector FROM embeddings WHERE item_id = ? ORDER BY model_id, segment", item_id)


def started(node: NodePaths, extra: str = "") -> DaemonProcess:
    write_config(node.root, extra)
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    return daemon


def test_moves_deletions_and_changes_keep_identity_where_they_should(node: NodePaths, tmp_path: Path) -> None:
    photos, archive = tmp_path / "photos", tmp_path / "archive"
    media.image(photos / "a.jpg", (10, 120, 200))
    (photos / "notes.txt").write_text("Notes about the summer holiday by the sea.")
    archive.mkdir()
    daemon = started(node)
    try:
        cli_json(node.root, "library", "add", str(photos))
        cli_json(node.root, "library", "add", str(archive))
        # The daemon streams progress events while it works, then the final status.
        events: list[dict] = []
        with ControlClient(node.control_socket, timeout=120) as client:
            final = client.call("index.wait", on_event=events.append)
        assert events and all(e["busy"] for e in events) and not final["busy"]
        assert final["embeddings_pending"] == 0
        item_id, content_hash = item_of(node, photos / "a.jpg")
        vectors = embedding_rows(node, item_id)
        assert vectors
        cli_json(node.root, "rate", str(photos / "a.jpg"), "7")
        embedded = cli_json(node.root, "index", "--wait")["embeddings"]["images"]["embedded"]

        # Unchanged: nothing is read again.
        summary = index_and_wait(node.root)
        assert all(lib["files_total"] == 0 for lib in summary["libraries"])

        # Moved into another library and renamed: same item, same vectors, same rating.
        (photos / "a.jpg").rename(archive / "renamed.jpg")
        summary = index_and_wait(node.root)
        assert item_of(node, archive / "renamed.jpg") == (item_id, content_hash)
        assert embedding_rows(node, item_id) == vectors
        assert summary["embeddings"]["images"]["embedded"] == embedded  # nothing recomputed
        found = cli_json(node.root, "search", "renamed", "--mode", "text")["results"]
        assert [(r["name"], r["rating"]) for r in found] == [("renamed.jpg", 7)]

        # Deleted: the item leaves search results but keeps its vectors for a while...
        (archive / "renamed.jpg").unlink()
        index_and_wait(node.root)
        assert cli_json(node.root, "search", "renamed", "--mode", "text")["results"] == []
        assert rows(node, "SELECT missing_since IS NOT NULL FROM items WHERE id = ?", item_id) == [(1,)]
        # ...so when the file comes back, it is the same item again with nothing recomputed.
        media.image(photos / "back.jpg", (10, 120, 200))
        summary = index_and_wait(node.root)
        assert item_of(node, photos / "back.jpg") == (item_id, content_hash)
        assert summary["embeddings"]["images"]["embedded"] == embedded

        # Changed content is a different item.
        (photos / "notes.txt").write_text("Completely different notes about winter skiing.")
        old_id = rows(node, "SELECT item_id FROM locations WHERE path LIKE '%notes.txt'")[0][0]
        summary = index_and_wait(node.root)
        new_id = rows(node, "SELECT item_id FROM locations WHERE path LIKE '%notes.txt'")[0][0]
        assert new_id != old_id and summary["embeddings_pending"] == 0
        assert rows(node, "SELECT COUNT(*) FROM items WHERE missing_since IS NULL") == [(2,)]

        # Removing a library takes its items out of search; adding it back recomputes nothing.
        cli_json(node.root, "library", "remove", str(photos))
        assert cli_json(node.root, "search", "back", "--mode", "text")["results"] == []
        assert cli_json(node.root, "status")["catalog"]["items"] == 0
        cli_json(node.root, "library", "add", str(photos))
        summary = index_and_wait(node.root)
        assert item_of(node, photos / "back.jpg") == (item_id, content_hash)
        assert summary["embeddings"]["images"]["embedded"] == embedded
        assert [r["rating"] for r in cli_json(node.root, "search", "back", "--mode", "text")["results"]] == [7]
    finally:
        assert daemon.stop() == 0


def test_a_killed_daemon_resumes_without_duplicates_or_recomputation(node: NodePaths, tmp_path: Path) -> None:
    library = tmp_path / "texts"
    library.mkdir()
    total = 200
    for i in range(total):
        (library / f"doc{i:03d}.txt").write_text(f"Document number {i}. " + f"Some words about topic {i % 17}. " * 8)
    daemon = started(node)
    cli_json(node.root, "library", "add", str(library))
    cli_json(node.root, "index")
    deadline = time.monotonic() + 120
    while True:
        embedded = rows(node, "SELECT COUNT(DISTINCT item_id) FROM embeddings")[0][0] if node.catalog.exists() else 0
        if embedded > 0:
            break
        assert time.monotonic() < deadline, "indexing never started"
        time.sleep(0.02)
    daemon.stop(signal.SIGKILL)
    items_before = rows(node, "SELECT COUNT(*) FROM items")[0][0]
    embedded_before = rows(node, "SELECT COUNT(DISTINCT item_id) FROM embeddings")[0][0]
    assert 0 < embedded_before < total, "the kill should land mid-way"

    daemon = started(node)
    try:
        summary = index_and_wait(node.root)
        assert rows(node, "SELECT COUNT(*) FROM items") == [(total,)]
        assert rows(node, "SELECT COUNT(*) FROM locations") == [(total,)]
        assert summary["embeddings_pending"] == 0
        # Exactly the items not embedded before the kill were embedded now.
        assert summary["embeddings"]["documents"]["embedded"] == total - embedded_before
        assert rows(node, "PRAGMA integrity_check") == [("ok",)]
        assert items_before <= total
    finally:
        assert daemon.stop() == 0


def test_missing_weights_leave_items_pending_until_the_weights_appear(node: NodePaths, tmp_path: Path) -> None:
    import open_clip
    import torch

    checkpoint = tmp_path / "weights" / "vit-s-32.pt"
    library = tmp_path / "pictures"
    media.image(library / "sunset.jpg", (250, 120, 40))
    media.image(library / "forest.png", (20, 120, 40))
    daemon = started(node, f'[image_model]\ncheckpoint = "{checkpoint}"\n')
    try:
        cli_json(node.root, "library", "add", str(library))
        summary = index_and_wait(node.root)
        assert summary["by_modality"] == {"image": 2} and summary["embeddings_pending"] == 2
        assert "does not exist" in summary["embeddings"]["images"]["reason"]
        models = {m["role"]: m for m in cli_json(node.root, "models")}
        assert models["image"]["state"] == "missing"
        # Still searchable by name and metadata, and semantic search says why it cannot help.
        reply = cli_json(node.root, "search", "sunset")
        assert [r["name"] for r in reply["results"]] == ["sunset.jpg"]
        assert any("image model unavailable" in w for w in reply["warnings"])
        assert reply["results"][0]["embedding"] == "pending"

        checkpoint.parent.mkdir()
        torch.manual_seed(1)
        torch.save(open_clip.create_model("ViT-S-32", pretrained=None).state_dict(), checkpoint)
        models = {m["role"]: m for m in cli_json(node.root, "models")}
        assert models["image"]["state"] == "loaded" and str(checkpoint) in models["image"]["weights"]
        summary = index_and_wait(node.root)
        assert summary["embeddings_pending"] == 0 and summary["embeddings"]["images"]["embedded"] == 2
        similar = cli_json(node.root, "similar", str(library / "sunset.jpg"))["results"]
        assert [r["name"] for r in similar] == ["forest.png"]
    finally:
        assert daemon.stop() == 0


def test_the_watcher_picks_up_new_files_without_a_rescan_request(node: NodePaths, tmp_path: Path) -> None:
    library = tmp_path / "inbox"
    library.mkdir()
    daemon = started(node, "[index]\nwatch = true\nrescan_interval_seconds = 3600\n")
    try:
        cli_json(node.root, "library", "add", str(library))
        index_and_wait(node.root)
        (library / "arrived.md").write_text("# Arrival\nA file that appeared while the daemon was running.")
        deadline = time.monotonic() + 30
        while not cli_json(node.root, "search", "arrival", "--mode", "text")["results"]:
            assert time.monotonic() < deadline, "the new file was never indexed"
            time.sleep(0.2)
        (library / "arrived.md").unlink()
        while cli_json(node.root, "search", "arrival", "--mode", "text")["results"]:
            assert time.monotonic() < deadline + 30, "the deleted file stayed in the index"
            time.sleep(0.2)
    finally:
        assert daemon.stop() == 0


def test_audio_moves_from_tag_vectors_to_clap_when_its_weights_appear(node: NodePaths, tmp_path: Path) -> None:
    checkpoint = tmp_path / "clap"
    music = tmp_path / "music"
    media.tone(music / "low.flac", frequency=220, seconds=2, tags={"title": "Low Hum", "artist": "Drone Band"})
    media.tone(music / "high.mp3", frequency=1760, seconds=12, tags={"title": "High Whistle", "artist": "Kettle"})
    media.tone(music / "low-again.ogg", frequency=221, seconds=2)
    daemon = started(node, f'[audio_model]\ncheckpoint = "{checkpoint}"\n')
    try:
        cli_json(node.root, "library", "add", str(music))
        summary = index_and_wait(node.root)
        assert summary["embeddings_pending"] == 0 and "embedding tags instead" in summary["embeddings"]["audio"]["reason"]
        info = cli_json(node.root, "info", str(music / "low.flac"))
        assert [e["source"] for e in info["embeddings"]] == ["metadata"]

        media.tiny_clap(checkpoint)
        models = {m["role"]: m for m in cli_json(node.root, "models")}
        assert models["audio"]["state"] == "loaded" and models["audio"]["model_id"].startswith("clap:")
        summary = index_and_wait(node.root)
        # 3 from tags before, 3 from CLAP now.
        assert summary["embeddings"]["audio"]["embedded"] == 6 and summary["embeddings"]["audio"]["reason"] is None
        info = cli_json(node.root, "info", str(music / "low.flac"))
        assert [(e["source"], e["model_id"]) for e in info["embeddings"]] == [("content", models["audio"]["model_id"])]
        # Query by example in the CLAP space: the other low tone is nearer than the whistle.
        similar = cli_json(node.root, "similar", str(music / "low.flac"))["results"]
        assert [r["name"] for r in similar] == ["low-again.ogg", "high.mp3"]
        # Text queries reach audio through CLAP's text tower too.
        reply = cli_json(node.root, "search", "humming drone", "--modality", "audio", "--mode", "semantic")
        assert len(reply["results"]) == 3 and not reply["warnings"]
    finally:
        assert daemon.stop() == 0


def test_changing_the_adapter_converts_or_re_embeds_under_the_new_model_id(node: NodePaths, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"Paragraph {i} about rivers, mountains and the weather in spring.")
    daemon = started(node, '[text_model]\nadapter = "none"\n')
    try:
        cli_json(node.root, "library", "add", str(docs))
        index_and_wait(node.root)
        base = {m["role"]: m for m in cli_json(node.root, "models")}["text"]["model_id"]
        assert base.startswith("st:")
        base_vectors = rows(node, "SELECT item_id, segment, vector FROM embeddings ORDER BY item_id, segment")
    finally:
        assert daemon.stop() == 0
    # Base vectors -> the default (shipped) adapter: stored vectors are converted, no document is encoded again.
    daemon = started(node)
    try:
        summary = index_and_wait(node.root)
        text = {m["role"]: m for m in cli_json(node.root, "models")}["text"]
        ordered = text["model_id"]
        assert ordered.startswith("ordered:") and text["base_model_id"] == base
        assert summary["embeddings"]["documents"]["embedded"] == 0
        assert rows(node, "SELECT DISTINCT model_id FROM embeddings") == [(ordered,)]
        adapter = Adapter.load(default_adapters.file_for(base))
        converted = rows(node, "SELECT item_id, segment, vector FROM embeddings ORDER BY item_id, segment")
        assert [r[:2] for r in converted] == [r[:2] for r in base_vectors]
        expected = adapter.apply(np.stack([np.frombuffer(r[2], dtype="<f4") for r in base_vectors]))
        np.testing.assert_allclose(np.stack([np.frombuffer(r[2], dtype="<f4") for r in converted]), expected, atol=1e-6)
        assert len(cli_json(node.root, "search", "alpine streams", "--mode", "semantic")["results"]) == 3
    finally:
        assert daemon.stop() == 0
    # Ordered -> base: an adapter cannot be undone, so the documents are encoded again.
    daemon = started(node, '[text_model]\nadapter = "none"\n')
    try:
        summary = index_and_wait(node.root)
        assert summary["embeddings"]["documents"]["embedded"] == 3
        assert {r[0] for r in rows(node, "SELECT DISTINCT model_id FROM embeddings")} == {ordered, base}
        assert len(cli_json(node.root, "search", "alpine streams", "--mode", "semantic")["results"]) == 3
    finally:
        assert daemon.stop() == 0
    daemon = started(node, '[text_model]\nadapter = "no-such-adapter"\n')
    try:
        models = {m["role"]: m for m in cli_json(node.root, "models")}
        assert models["text"]["state"] == "failed" and "does not exist" in models["text"]["reason"]
        assert daemon.call("daemon.status")["running"]
    finally:
        assert daemon.stop() == 0
