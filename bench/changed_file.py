"""Handling one changed file in a large library: the incremental rescan against a full rescan.

Builds a library of N small files (default 100,000), indexes it with the real indexer and
catalog, then repeatedly changes one file and times (a) the rescan of just that path — what
a filesystem event now triggers — and (b) a full rescan of the library, the same process,
the same change each round.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, indexed_note_library, median, note_library_main  # noqa: E402


async def run(files: int, rounds: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        catalog, indexer, library, first_seconds = await indexed_note_library(base, files)
        folder = files // 1000  # a folder in the middle of the library
        changed = base / "library" / f"d{folder:03d}" / f"note{folder * 500:05d}.txt"
        incremental, full = [], []
        for round_ in range(rounds):
            changed.write_text(f"changed in round {round_}\n")
            started = time.perf_counter()
            progress = await indexer.scan_library(library, [str(changed)])
            incremental.append(time.perf_counter() - started)
            assert progress.files_done == 1, progress
            changed.write_text(f"changed again in round {round_}\n")
            started = time.perf_counter()
            progress = await indexer.scan_library(library)
            full.append(time.perf_counter() - started)
            assert progress.files_done == 1 and progress.unchanged == files - 1, progress
        await catalog.aclose()
        emit(
            "changed_file",
            files=files,
            first_index_seconds=round(first_seconds, 1),
            changed_path_rescan_ms=round(1000 * median(incremental), 2),
            full_rescan_ms=round(1000 * median(full), 1),
            speedup=round(median(full) / median(incremental), 1),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    note_library_main(run, __doc__, files=100_000, rounds=5)
