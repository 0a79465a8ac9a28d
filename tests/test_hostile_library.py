"""A real daemon on a library of hostile files (tests/hostile.py): it stays up, indexes every good
file — the oddly named ones too — and lists every bad one with its reason, before and after a restart."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from peerlight.node.paths import NodePaths

from .helpers import WITHOUT_ROOT_READS, DaemonProcess, cli_json, write_config
from .hostile import HostileLibrary, make_hostile_library, unlock


def exact_path(row: dict[str, Any]) -> bytes:
    """The exact bytes of a path in a JSON reply (base64 ``path_bytes`` for names that are not UTF-8)."""
    if "path_bytes" in row:
        return base64.b64decode(row["path_bytes"])
    return os.fsencode(row["path"])


def outcomes(node: NodePaths, library: HostileLibrary) -> dict[bytes, tuple[str, str | None]]:
    """Relative path -> (outcome, modality) as the node reports it: indexed items, skipped files, failed embeddings."""
    base = os.fsencode(library.root) + b"/"
    found: dict[bytes, tuple[str, str | None]] = {}
    with sqlite3.connect(f"file:{node.catalog}?mode=ro", uri=True) as conn:
        for path, modality in conn.execute("SELECT l.path, i.modality FROM locations AS l JOIN items AS i ON i.id = l.item_id"):
            exact = path if isinstance(path, bytes) else path.encode()
            found[exact.removeprefix(base)] = ("indexed", modality)
    problems = cli_json(node.root, "index", "--problems", "--all", "--limit", "100000")
    for row in problems["skipped"]:
        found[exact_path(row).removeprefix(base)] = (row["kind"], None)
    for row in problems["embedding_failures"]:  # inspected fine, but its content cannot be decoded
        found[exact_path(row).removeprefix(base)] = ("corrupt", None)
    return found


def check(found: dict[bytes, tuple[str, str | None]], library: HostileLibrary) -> None:
    wrong = {
        path: (expected, found.get(path))
        for path, expected in library.files.items()
        if path not in found or not expected.accepts(*found[path])
    }
    assert not wrong, "\n".join(f"{path!r}: expected {e}, node said {f}" for path, (e, f) in sorted(wrong.items()))
    unexpected = sorted(path for path, (outcome, _) in found.items() if outcome == "indexed" and path not in library.files)
    assert not unexpected, f"indexed files that should not be reachable: {unexpected}"


@pytest.mark.slow
def test_a_daemon_survives_a_library_of_hostile_files(node: NodePaths, tmp_path: Path) -> None:
    library = make_hostile_library(tmp_path / "hostile")
    write_config(node.root)
    try:
        daemon = DaemonProcess(node.root, wrapper=WITHOUT_ROOT_READS)
        assert daemon.wait_ready() == "ready", daemon.stop() or daemon.stderr()
        try:
            cli_json(node.root, "library", "add", str(library.root))
            summary = cli_json(node.root, "index", "--wait")
            first = outcomes(node, library)
            check(first, library)
            problems = sum(1 for outcome, _ in first.values() if outcome not in ("indexed", "unsupported"))
            status = cli_json(node.root, "status")
            assert status["catalog"]["index"]["problems"] + summary["embeddings_failed"] >= problems > 20
            assert status["catalog"]["items"] > 30 and not status["conditions"]
        finally:
            assert daemon.stop() == 0, daemon.stderr()[-4000:]

        # After a restart: nothing is lost, nothing changes, nothing is re-read.
        daemon = DaemonProcess(node.root, wrapper=WITHOUT_ROOT_READS)
        assert daemon.wait_ready() == "ready", daemon.stop() or daemon.stderr()
        try:
            rescan = cli_json(node.root, "index", "--wait")
            assert [lib["files_total"] for lib in rescan["libraries"]] == [0]  # nothing needed reading again
            again = outcomes(node, library)
            check(again, library)
            assert again == first
        finally:
            assert daemon.stop() == 0, daemon.stderr()[-4000:]
    finally:
        unlock(library)
        shutil.rmtree(library.root, ignore_errors=True)


@pytest.mark.slow
def test_watcher_failures_fall_back_to_rescans(node: NodePaths, tmp_path: Path) -> None:
    library = tmp_path / "notes"
    library.mkdir()
    (library / "first.txt").write_text("The first note, indexed at once.")
    write_config(node.root, "[index]\nwatch = true\n")
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready", daemon.stop() or daemon.stderr()
    try:
        cli_json(node.root, "library", "add", str(library))
        cli_json(node.root, "index", "--wait")
        # A name that is not UTF-8 appears while the watcher runs: watchfiles cannot decode it and
        # its watch ends. The node says so, rescans, and indexes the file anyway.
        newcomer = os.fsencode(library) + b"/late-caf\xe9.txt"
        with open(newcomer, "wb") as out:
            out.write(b"A note written after the first scan, under a Latin-1 name.\n")
        deadline = time.monotonic() + 60
        while not any(item for item in indexed_names(node) if item == b"late-caf\xe9.txt"):
            assert time.monotonic() < deadline, "the late file was never indexed"
            time.sleep(0.5)
        conditions = daemon.call("daemon.status")["conditions"]
        assert [c["name"] for c in conditions] == ["watcher"]
        assert "decode" in conditions[0]["message"] and "periodic rescans go on" in conditions[0]["message"]
        # Later changes are still found (the rescan it asked for, then watching again).
        (library / "second.txt").write_text("Another note.")
        cli_json(node.root, "index", "--wait")
        assert b"second.txt" in indexed_names(node)
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-4000:]


def indexed_names(node: NodePaths) -> set[bytes]:
    with sqlite3.connect(f"file:{node.catalog}?mode=ro", uri=True) as conn:
        return {os.path.basename(p if isinstance(p, bytes) else p.encode()) for (p,) in conn.execute("SELECT path FROM locations")}


@pytest.mark.slow
def test_a_library_whose_own_name_is_not_utf8(node: NodePaths, tmp_path: Path) -> None:
    root = os.fsencode(tmp_path) + b"/M\xfasica"  # Latin-1 "Música", as an old archive leaves it
    os.mkdir(root)
    with open(root + b"/notas.txt", "wb") as out:
        out.write(b"Notes on the guitar pieces to practise this week.")
    folder = os.fsdecode(root)
    write_config(node.root)
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready", daemon.stop() or daemon.stderr()
    try:
        added = cli_json(node.root, "library", "add", folder)
        assert added["path"] == os.fsencode(folder).decode("utf-8", "backslashreplace")
        assert base64.b64decode(added["path_bytes"]) == root
        assert cli_json(node.root, "index", folder, "--wait")["items"] == 1
        info = cli_json(node.root, "info", folder + "/notas.txt")
        assert base64.b64decode(info["paths"][0]["path_bytes"]) == root + b"/notas.txt"
        results = cli_json(node.root, "search", "guitar practice", "--folder", folder)["results"]
        assert [r["name"] for r in results] == ["notas.txt"]
        assert cli_json(node.root, "library", "remove", folder)["id"] == added["id"]
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-4000:]
