"""Hybrid search is never worse than its better half: a weak full-text match cannot outrank a
clear semantic winner (real daemon, real all-MiniLM-L6-v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerlight.node.paths import NodePaths

from .helpers import DaemonProcess, cli_json, write_config

DOCUMENTS = {
    "bread-in-winter.txt": "Bread in winter: a simple recipe. Mix flour, water, salt and yeast, knead for ten minutes, "
    "let the dough rise by the stove for two hours, shape a loaf and bake it at 220 degrees until the crust is brown.",
    "flu-note.txt": "Influenza: how to avoid catching the flu. Wash your hands often, get vaccinated in autumn, "
    "keep away from crowded places in the cold season and stay home when you have a fever.",
    "garden.txt": "Planting tomatoes: sow the seeds indoors in March, move the seedlings outside after the last frost.",
    "bikes.txt": "Fixing a flat tyre: remove the wheel, find the puncture, patch the inner tube and pump it up again.",
}


@pytest.mark.slow
def test_a_common_word_does_not_outrank_the_meaning(node: NodePaths, tmp_path: Path) -> None:
    library = tmp_path / "notes"
    library.mkdir()
    for name, text in DOCUMENTS.items():
        (library / name).write_text(text)
    write_config(node.root)
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready", daemon.stop() or daemon.stderr()
    try:
        cli_json(node.root, "library", "add", str(library))
        cli_json(node.root, "index", "--wait")

        def first(*args: str) -> str:
            return cli_json(node.root, "search", "avoiding getting sick in winter", "--modality", "text", *args)["results"][0]["name"]

        # The recipe's only full-text match is "winter" in its name; the note matches the meaning.
        assert first("--mode", "text") == "bread-in-winter.txt"
        assert first("--mode", "semantic") == "flu-note.txt"
        assert first() == "flu-note.txt"  # hybrid, the default
        # Words carry where the meaning is weak: a name no sentence paraphrases.
        assert first_of(node, "tomatoes") == "garden.txt"
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-4000:]


def first_of(node: NodePaths, query: str) -> str:
    return cli_json(node.root, "search", query, "--modality", "text")["results"][0]["name"]
