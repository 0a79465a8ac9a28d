"""Shared helpers for the benchmarks: each prints one JSON line of figures."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from typing import Any


def emit(name: str, **figures: Any) -> None:
    figures = {"bench": name, **figures, "cpus": os.cpu_count(), "python": platform.python_version()}
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()


def cached_encoding(model, texts: list[str], name: str, batch_size: int = 64):  # type: ignore[no-untyped-def]
    """``model.encode(texts)``, kept under ``PEERLIGHT_BENCH_CACHE`` (default ~/.cache/peerlight-bench)
    by a hash of the texts and the model id, so reruns skip the encoder."""
    import hashlib
    import time
    from pathlib import Path

    import numpy as np

    folder = Path(os.environ.get("PEERLIGHT_BENCH_CACHE", Path.home() / ".cache" / "peerlight-bench"))
    key = hashlib.sha256(("\n".join(texts) + model.model_id).encode()).hexdigest()[:16]
    cached = folder / f"{name}-{key}.npy"
    if not cached.exists():
        started = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        np.save(cached, model.encode(texts, batch_size=batch_size))
        print(f"embedded {len(texts)} texts ({name}) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return np.load(cached)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def make_note_library(root, files: int) -> None:  # type: ignore[no-untyped-def]
    """``files`` tiny text notes in folders of 500: a large library that is cheap to build."""
    for i in range(files):
        folder = root / f"d{i // 500:03d}"
        if i % 500 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note{i:05d}.txt").write_text(f"note {i}\n")


async def indexed_note_library(base, files: int):  # type: ignore[no-untyped-def]
    """A catalog in ``base`` that has indexed a fresh note library: (catalog, indexer, library, seconds)."""
    import time
    from dataclasses import replace

    from peerlight.node.catalog import Catalog, libraries
    from peerlight.node.config import Config
    from peerlight.node.index.indexer import Indexer

    root = base / "library"
    make_note_library(root, files)
    catalog = await Catalog.open(base / "catalog.sqlite3")
    indexer = Indexer(catalog, replace(Config().index, watch=False))
    library = await catalog.write(lambda conn: libraries.add_library(conn, root))
    started = time.perf_counter()
    progress = await indexer.scan_library(library)
    assert progress.files_done == files, progress
    return catalog, indexer, library, time.perf_counter() - started


async def time_pipeline(config, base, library_root, count: int, role: str, warm_up) -> float:  # type: ignore[no-untyped-def]
    """Seconds the real indexer and embedder take to scan, inspect, embed and store ``count`` files.

    The ``role``'s model is loaded and ``warm_up(model)`` run before the clock starts, as for
    the bare-encoder baselines.
    """
    import time

    import trio

    from peerlight.node.catalog import Catalog, libraries
    from peerlight.node.index.embedder import Embedder
    from peerlight.node.index.indexer import Indexer
    from peerlight.node.models import ModelManager

    from peerlight.node.decoders import DecoderLimits, DecoderPool

    catalog = await Catalog.open(base / "catalog.sqlite3")
    models = ModelManager(config)
    warm_up(await models.get(role))
    # As the daemon does: native decoders in worker processes unless the config says otherwise.
    decoders = DecoderPool(DecoderLimits(workers=config.index.workers + 1)) if config.index.isolate_decoders else None
    if decoders is not None:  # started with the daemon, long before any file: warmed like the model
        await trio.to_thread.run_sync(decoders.warm)
    embedder = Embedder(catalog, models, config, decoders)
    indexer = Indexer(catalog, config.index, on_items_recorded=embedder.wake, decoders=decoders)
    library = await catalog.write(lambda conn: libraries.add_library(conn, library_root))
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(embedder.run)
        await indexer.scan_library(library)
        while True:
            done = await catalog.read(lambda c: c.execute("SELECT COUNT(*) FROM items WHERE embedding_state = 'done'").fetchone()[0])
            if done == count:
                break
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    await catalog.aclose()
    if decoders is not None:
        decoders.close()
    return elapsed


def note_library_main(run, description: str, *, files: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    """The command line of the note-library benchmarks: ``run(files, rounds)`` under trio."""
    import argparse

    import trio

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--files", type=int, default=files)
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    trio.run(run, args.files, args.rounds)
