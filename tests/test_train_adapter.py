"""``peerlight models train-adapter`` against a real daemon, with the real text model."""

from __future__ import annotations

import itertools
from pathlib import Path

from peerlight.cli.client import ControlClient
from peerlight.embeddings.adapters import Adapter
from peerlight.node.paths import NodePaths

from .helpers import DaemonProcess, cli, cli_json, index_and_wait, write_config

SUBJECTS = ["The river", "An old library", "My neighbour", "The orchestra", "A small robot", "The harbour", "Our garden"]
VERBS = ["hums quietly", "opens early", "collects stamps", "plays loudly", "repairs clocks", "floods in spring"]
TIMES = ["every morning", "after the storm", "during winter", "on Sundays", "at midnight", "before the exam", "in July"]


def write_corpus(path: Path) -> Path:
    lines = [f"{s} {v} {t}." for s, v, t in itertools.product(SUBJECTS, VERBS, TIMES)]
    path.write_text("\n".join(lines))
    return path


def test_train_adapter_from_a_corpus_is_deterministic_and_saved(node: NodePaths, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt")
    write_config(node.root, "[search]\nprefix_length = 32\n")  # `models ordering` judges the prefix searches use
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    try:
        events: list[dict] = []
        with ControlClient(daemon.socket_path, timeout=300) as client:
            first = client.call("models.train_adapter", encoder="text", corpus=str(corpus), steps=20, on_event=events.append)
        assert {e["phase"] for e in events} <= {"preparing", "embedding corpus", "training", "done"} and events
        assert first["model_id"].startswith("ordered:") and first["base_model_id"].startswith("st:")
        saved = Adapter.load(Path(first["path"]))
        assert saved.adapter_id == first["adapter_id"] and saved.dimension == 384
        assert Path(first["path"]).parent == node.root / "adapters"
        again = cli_json(node.root, "models", "train-adapter", "--encoder", "text", "--corpus", str(corpus), "--steps", "20")
        assert again["adapter_id"] == first["adapter_id"]
        other = cli_json(node.root, "models", "train-adapter", "--encoder", "text", "--corpus", str(corpus), "--steps", "20", "--seed", "3")
        assert other["adapter_id"] != first["adapter_id"]
        human = cli(node.root, "models", "train-adapter", "--encoder", "text", "--corpus", str(corpus), "--steps", "5")
        assert human.returncode == 0 and "Trained adapter" in human.stdout

        small = tmp_path / "small.txt"
        small.write_text("just one line\\n")
        error = cli_json(node.root, "models", "train-adapter", "--encoder", "text", "--corpus", str(small), expect_rc=2)
        assert error["error"]["code"] == "invalid_params" and "at least" in error["error"]["message"]
        error = cli_json(node.root, "models", "train-adapter", "--encoder", "text", expect_rc=2)
        assert "stored text vectors" in error["error"]["message"]

        # How well the shipped ordering suits this library: refused before there is one, then judged.
        error = cli_json(node.root, "models", "ordering", expect_rc=2)
        assert error["error"]["code"] == "invalid_params" and "not enough stored text vectors" in error["error"]["message"]
        library = tmp_path / "notes"
        library.mkdir()
        lines = corpus.read_text().splitlines()
        for i in range(0, len(lines), 2):
            (library / f"note{i:03d}.txt").write_text(" ".join(lines[i : i + 2]))
        cli_json(node.root, "library", "add", str(library))
        index_and_wait(node.root)
        fit = cli_json(node.root, "models", "ordering", "--encoder", "text")
        models = {m["role"]: m for m in cli_json(node.root, "models", "--no-load")}
        assert fit["model_id"] == models["text"]["model_id"] and fit["adapter_id"] == models["text"]["adapter_id"]
        assert fit["vectors"] + fit["queries"] == len(lines) // 2 and fit["prefix_len"] == 32
        assert 0.0 < fit["prefix_recall"] <= 1.0 and 0.0 < fit["own_pca_recall"] <= 1.0
        assert fit["ratio"] == round(fit["prefix_recall"] / fit["own_pca_recall"], 3)
        human = cli(node.root, "models", "ordering")
        assert human.returncode == 0 and "nearest" in human.stdout and "PCA fit to this library" in human.stdout
        assert daemon.call("daemon.status")["running"]
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-4000:]


def test_align_an_encoder_to_another_space_from_the_cli(node: NodePaths, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt")
    write_config(node.root)
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    try:
        models = {m["role"]: m for m in cli_json(node.root, "models")}
        result = cli_json(
            node.root, "models", "train-adapter", "--encoder", "image", "--align-to", "text", "--corpus", str(corpus), "--steps", "10"
        )
        assert result["base_model_id"] == models["image"]["model_id"]
        assert result["space"] == models["text"]["model_id"] != result["model_id"]
        assert 0.5 < result["matched"] <= 1.0
        saved = Adapter.load(Path(result["path"]))
        assert saved.info["kind"] == "alignment" and saved.space_id == models["text"]["model_id"]
        assert saved.dimension == models["text"]["dimension"]

        error = cli_json(node.root, "models", "train-adapter", "--encoder", "image", "--align-to", "text", expect_rc=2)
        assert error["error"]["code"] == "invalid_params" and "--corpus" in error["error"]["message"]
        error = cli_json(
            node.root, "models", "train-adapter", "--encoder", "text", "--align-to", "text", "--corpus", str(corpus), expect_rc=2
        )
        assert "its own space" in error["error"]["message"]
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-4000:]
