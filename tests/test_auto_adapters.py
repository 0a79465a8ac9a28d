"""A node trains the ordering adapter of a model that has none shipped, then converts its vectors (real daemon)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from peerlight.node.paths import NodePaths

from . import media
from .helpers import DaemonProcess, cli_json, index_and_wait, write_config

IMAGES = 72


def image_model(data_dir: Path) -> dict:
    return {m["role"]: m for m in cli_json(data_dir, "models", "--no-load")}["image"]


def wait_for_adapter(data_dir: Path, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = image_model(data_dir)
        if model["adapter_id"] and model["state"] == "loaded" and not model["adapter_training"]:
            return model
        time.sleep(0.5)
    raise AssertionError(f"no adapter was trained within {timeout} s: {model}")


def vectors_by_model(catalog: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT model_id, count(*) FROM embeddings GROUP BY model_id").fetchall())


def test_node_trains_an_adapter_converts_stored_vectors_and_keeps_it(node: NodePaths, tmp_path: Path) -> None:
    library = tmp_path / "photos"
    for i in range(IMAGES // 2):
        colour = ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)
        media.image(library / f"a{i:02d}.png", colour, size=(64 + i, 48), pattern=i % 3 == 0)
        media.image(library / f"b{i:02d}.png", tuple(min(255, c + 2) for c in colour), size=(70 + i, 50), pattern=i % 3 == 0)
    write_config(node.root, "[models]\nadapter_training_vectors = 64\nadapter_training_steps = 30\n")

    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    try:
        cli_json(node.root, "library", "add", str(library))
        index_and_wait(node.root)
        model = wait_for_adapter(node.root)
        assert model["model_id"].startswith("ordered:ViT-S-32:")
        assert model["base_model_id"].startswith("clip:ViT-S-32:")

        # Stored base vectors were converted by the adapter (no image encoded twice), none are left over.
        stored = vectors_by_model(node.catalog)
        assert stored.get(model["base_model_id"], 0) == 0
        assert stored[model["model_id"]] == IMAGES

        # Ordered vectors are searched through the prefix funnel, and still find the near-copy.
        similar = cli_json(node.root, "similar", str(library / "a05.png"), "--modality", "image")["results"]
        assert similar[0]["name"] == "b05.png"
        indexes = {i["model_id"]: i for i in cli_json(node.root, "status")["vector_indexes"]}
        assert indexes[model["model_id"]] | {"unsaved_changes": None} == {
            "model_id": model["model_id"],
            "vectors": IMAGES,
            "prefix_length": 384 // 8,
            "mode": "funnel",
            "unsaved_changes": None,
        }
        # A new image is embedded with the adapter straight away.
        media.image(library / "new.png", (1, 2, 3))
        index_and_wait(node.root)
        assert vectors_by_model(node.catalog) == {model["model_id"]: IMAGES + 1}
    finally:
        assert daemon.stop() == 0

    # After a restart the node uses the adapter it trained; it does not train another.
    adapters = sorted(p.name for p in node.adapters.glob("*.npz"))
    assert adapters == [f"{model['adapter_id']}.npz"]
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    try:
        again = {m["role"]: m for m in cli_json(node.root, "models")}["image"]
        assert again["adapter_id"] == model["adapter_id"] and again["model_id"] == model["model_id"]
        assert index_and_wait(node.root)
        assert sorted(p.name for p in node.adapters.glob("*.npz")) == adapters
        assert sum(vectors_by_model(node.catalog).values()) == IMAGES + 1
    finally:
        assert daemon.stop() == 0
