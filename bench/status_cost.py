"""What ``status`` and each ``index.wait`` poll cost with 100,000 items in the catalog.

Builds and indexes a library of N small files (default 100,000) with the real indexer and
catalog, then times the index status that ``peerlight status`` and every ``index.wait``
check compute (trigger-kept counters plus in-memory progress), against the same figures
counted from the items table as before schema 5 (the baseline, same process, same catalog).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, indexed_note_library, median, note_library_main, percentile  # noqa: E402

from peerlight.node.api.index import IndexMethods  # noqa: E402
from peerlight.node.callers import Caller  # noqa: E402
from peerlight.node.catalog.items import item_counts  # noqa: E402
from peerlight.node.config import Config  # noqa: E402
from peerlight.node.index.embedder import Embedder  # noqa: E402
from peerlight.node.models import ModelManager  # noqa: E402


def counted(conn):  # type: ignore[no-untyped-def]
    """The same figures counted from the tables (how status was computed before the counters)."""
    by_modality = dict(conn.execute("SELECT modality, COUNT(*) FROM items WHERE missing_since IS NULL GROUP BY modality"))
    pending, failed = conn.execute(
        """SELECT COUNT(*) FILTER (WHERE embedding_state = 'pending'), COUNT(*) FILTER (WHERE embedding_state = 'failed')
           FROM items WHERE missing_since IS NULL"""
    ).fetchone()
    skipped = dict(conn.execute("SELECT kind, COUNT(*) FROM skipped_files GROUP BY kind"))
    return by_modality, pending, failed, skipped


async def timed(call, rounds: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def run(files: int, rounds: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="pl-bench-"))
    try:
        catalog, indexer, library, _ = await indexed_note_library(base, files)
        config = replace(Config(), index=replace(Config().index, watch=False))
        methods = IndexMethods(catalog, indexer, Embedder(catalog, ModelManager(config), config))
        counters = await catalog.read(item_counts)
        assert counters["items"] == files and counters["by_modality"] == (await catalog.read(counted))[0]
        poll = await timed(lambda: methods.status({}, Caller.local()), rounds)
        fast = await timed(lambda: catalog.read(item_counts), rounds)
        slow = await timed(lambda: catalog.read(counted), rounds)
        await catalog.aclose()
        emit(
            "status_cost",
            items=files,
            index_status_p50_ms=round(1000 * median(poll), 3),
            index_status_p99_ms=round(1000 * percentile(poll, 99), 3),
            counters_p50_ms=round(1000 * median(fast), 3),
            counted_from_tables_p50_ms=round(1000 * median(slow), 2),
            counters_speedup=round(median(slow) / median(fast), 1),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    note_library_main(run, __doc__, files=100_000, rounds=200)
