"""Search quality by mode, through a real daemon: semantic, full text and hybrid, on labelled sets.

Two labelled retrieval sets (``retrieval_sets.py``): Python docstrings, on which the hybrid
parameters were tuned, and English man pages, held out (a different source, never tuned
on). For each, 2,000 documents are written as files into a library of a fresh node, the
real daemon indexes them (real all-MiniLM-L6-v2 and the shipped adapter), and 200 queries
(a one-line summary; the document is the text it summarises) go through the control
socket exactly as ``peerlight search QUERY --mode M`` sends them. Reported per set and
mode: success@10 (the document is among the first 10) and MRR@10. One JSON line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402
from retrieval_sets import RetrievalSet, docstring_set, manpage_set  # noqa: E402

from peerlight.cli.client import ControlClient, DaemonNotRunning  # noqa: E402
from peerlight.node.paths import NodePaths  # noqa: E402
from peerlight.node.setup import init_node  # noqa: E402

MODES = ("semantic", "text", "hybrid")


def evaluate(dataset: RetrievalSet, base: Path) -> dict[str, dict[str, float]]:
    library = base / "library"
    library.mkdir(parents=True)
    for document in dataset.documents:
        (library / document.name).write_text(document.text)
    paths = NodePaths(base / "node")
    init_node(paths)
    (paths.config).write_text("[index]\nwatch = false\n")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "peerlight.node", "--data-dir", str(paths.root), "--no-console-log"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = connect(paths)
        client.call("library.add", path=str(library))
        client.call("index.run")
        status = client.call("index.wait")
        assert status["items"] == len(dataset.documents), status
        figures = {}
        for mode in MODES:
            found, reciprocal = 0, 0.0
            for query, target in dataset.queries:
                reply = client.call("search.query", query=query, mode=mode, limit=10)
                names = [result["name"] for result in reply["results"]]
                if dataset.documents[target].name in names:
                    found += 1
                    reciprocal += 1 / (names.index(dataset.documents[target].name) + 1)
            figures[mode] = {
                "success_at_10": round(found / len(dataset.queries), 3),
                "mrr_at_10": round(reciprocal / len(dataset.queries), 3),
            }
        client.close()
        return figures
    finally:
        daemon.terminate()
        daemon.wait(60)


def connect(paths: NodePaths, timeout: float = 120) -> ControlClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ControlClient(paths.control_socket, timeout=None)
        except DaemonNotRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    results = {}
    for name, build in (("docstrings (tuned on)", docstring_set), ("man pages (held out)", manpage_set)):
        base = Path(tempfile.mkdtemp(prefix="pl-bench-", dir="/tmp"))
        try:
            results[name] = evaluate(build(documents=args.documents, queries=args.queries), base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    emit("hybrid_quality", documents=args.documents, queries=args.queries, **results)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
