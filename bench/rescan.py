"""Rescan rate of an unchanged library (files/s), against a bare os.scandir + stat walk.

Builds a library of N small files (default 20,000), indexes it once with the real indexer
and catalog, then times rescans that find nothing to do. The baseline, in the same process
and on the same tree, is the bare walk that any rescan must do at least.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, indexed_note_library, median, note_library_main  # noqa: E402

from peerlight.node.index.scanner import walk_library  # noqa: E402


async def run(files: int, rounds: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        library_root = base / "library"
        catalog, indexer, library, first_seconds = await indexed_note_library(base, files)

        rescans, walks = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            progress = await indexer.scan_library(library)
            rescans.append(time.perf_counter() - started)
            assert progress.files_total == 0 and progress.unchanged == files
            started = time.perf_counter()
            count = sum(1 for _ in walk_library(library_root, skip_hidden=True))
            walks.append(time.perf_counter() - started)
            assert count == files
        await catalog.aclose()
        rescan, walk = median(rescans), median(walks)
        emit(
            "rescan_unchanged_library",
            files=files,
            first_index_files_per_s=round(files / first_seconds, 1),
            rescan_seconds=round(rescan, 3),
            rescan_files_per_s=round(files / rescan, 1),
            bare_walk_files_per_s=round(files / walk, 1),
            rescan_vs_bare_walk=round(walk / rescan, 3),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    note_library_main(run, __doc__, files=20_000, rounds=5)
