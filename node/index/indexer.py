"""The indexing service: keeps the catalog in step with the libraries on disk.

It rescans every library periodically and whenever the filesystem reports a change in it
(watchfiles, which runs on trio through anyio). A rescan ``stat``s every file but reads only
new or changed ones; their inspection (hash, type, metadata) runs in worker threads and is
written in batches, each batch one transaction. A daemon killed mid-scan therefore resumes
with the next scan: what was written is known and skipped, nothing is duplicated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..catalog import items, libraries
from ..catalog.database import Catalog
from ..catalog.items import IndexedFile, SkippedFile
from ..config import IndexOptions
from .inspect import inspect_file
from .progress import IndexProgress, LibraryProgress
from .scanner import plan_scan, walk_library

log = logging.getLogger("peerlight.index")

BATCH_SIZE = 64


class Indexer:
    def __init__(
        self,
        catalog: Catalog,
        options: IndexOptions,
        *,
        exclude: tuple[Path, ...] = (),
        on_items_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self._catalog = catalog
        self._options = options
        self._exclude = exclude
        self._on_items_recorded = on_items_recorded
        self.progress = IndexProgress()
        self._dirty: set[int] = set()  # libraries to scan at the next wake-up
        self._scanning = False  # between taking the dirty set and finishing its scans
        self._wake = trio.Event()
        self._libraries_changed = trio.Event()
        self._workers = trio.CapacityLimiter(options.workers)
        self._watch_stop: Any = None  # anyio.Event of the running watcher

    def request_scan(self, library_id: int | None = None) -> None:
        """Scan one library (or all) soon; returns at once."""
        if library_id is None:
            self._dirty.add(-1)
        else:
            self._dirty.add(library_id)
        self._wake.set()

    @property
    def scan_requested(self) -> bool:
        """A scan was asked for and has not finished yet (no gap between asking and a library's progress)."""
        return bool(self._dirty) or self._scanning

    def libraries_changed(self) -> None:
        """A library was added or removed: rescan and re-arm the filesystem watcher."""
        self._libraries_changed.set()
        self.request_scan()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self._options.watch:
                nursery.start_soon(self._watch)
            task_status.started()
            self.request_scan()
            while True:
                with trio.move_on_after(self._options.rescan_interval_seconds):
                    await self._wake.wait()
                self._wake = trio.Event()
                self._scanning = True
                try:
                    dirty, self._dirty = self._dirty, set()
                    every = -1 in dirty or not dirty  # a timeout (nothing dirty) means the periodic rescan
                    for library in await self._catalog.read(libraries.list_libraries):
                        if every or library.id in dirty:
                            try:
                                await self.scan_library(library)
                            except Exception:
                                # e.g. the library was removed mid-scan: the next scan starts afresh.
                                log.exception("library scan failed", extra={"library": library.path})
                finally:
                    self._scanning = False
                await self._forget_long_missing()

    async def scan_library(self, library: libraries.Library) -> LibraryProgress:
        progress = self.progress.library(library.id, library.name)
        progress.begin()
        root = Path(library.path)
        try:
            if not root.is_dir():
                log.warning("library folder is not reachable; skipping its scan", extra={"library": library.path})
                return progress
            known = await self._catalog.read(partial(items.known_locations, library_id=library.id))
            failed = await self._catalog.read(partial(items.known_failures, root=library.path))
            files = await trio.to_thread.run_sync(
                lambda: list(walk_library(root, skip_hidden=self._options.skip_hidden, exclude=self._exclude)),
                abandon_on_cancel=True,
            )
            plan = plan_scan(files, known, failed)
            progress.unchanged, progress.deleted = plan.unchanged + plan.known_bad, len(plan.deleted)
            progress.files_total = len(plan.changed)
            progress.phase = "indexing"
            if plan.deleted or plan.vanished_skips:
                await self._catalog.write(partial(_remove, deleted=plan.deleted, vanished=plan.vanished_skips))
            for start in range(0, len(plan.changed), BATCH_SIZE):
                await self._index_batch(library.id, plan.changed[start : start + BATCH_SIZE], progress)
            await self._catalog.write(partial(_mark_scanned, library_id=library.id))
            log.info(
                "library scanned",
                extra={
                    "library": library.path,
                    "indexed": progress.files_done - progress.files_skipped,
                    "skipped": progress.files_skipped,
                    "unchanged": progress.unchanged,
                    "deleted": progress.deleted,
                    "seconds": round(time.time() - (progress.started_at or time.time()), 3),
                },
            )
        finally:
            progress.finish()
        return progress

    async def _index_batch(self, library_id: int, batch: list, progress: LibraryProgress) -> None:
        results: list[IndexedFile | SkippedFile] = []

        async def inspect(file) -> None:  # type: ignore[no-untyped-def]
            result = await trio.to_thread.run_sync(
                partial(inspect_file, file, store_gps=self._options.store_gps),
                limiter=self._workers,
                abandon_on_cancel=True,  # read-only: shutdown need not wait for a large file's hash
            )
            results.append(result)
            progress.files_done += 1
            progress.bytes_done += file.size
            if isinstance(result, SkippedFile):
                progress.files_skipped += 1
                if result.kind == "error":
                    log.warning("skipped a file", extra={"path": result.path, "reason": result.reason})

        async with trio.open_nursery() as nursery:
            for file in batch:
                nursery.start_soon(inspect, file)
        indexed = [r for r in results if isinstance(r, IndexedFile)]
        skipped = [r for r in results if isinstance(r, SkippedFile)]
        await self._catalog.write(partial(_record, library_id=library_id, indexed=indexed, skipped=skipped))
        if indexed:
            self._on_items_recorded()

    async def _forget_long_missing(self) -> None:
        cutoff = time.time() - self._options.forget_missing_after_seconds
        forgotten = await self._catalog.write(partial(items.forget_missing, older_than=cutoff))
        if forgotten:
            log.info("forgot items whose files are gone", extra={"items": forgotten})

    def close(self) -> None:
        """Release the filesystem watcher's thread promptly, ahead of cancellation.

        watchfiles waits in a worker thread that only checks its stop event (every 50 ms),
        so cancelling without setting it would delay shutdown by up to its 5 s timeout.
        """
        if self._watch_stop is not None:
            self._watch_stop.set()

    async def _watch(self) -> None:
        import anyio
        import watchfiles

        while True:
            self._libraries_changed = trio.Event()
            roots = {lib.path: lib.id for lib in await self._catalog.read(libraries.list_libraries)}
            existing = [path for path in roots if Path(path).is_dir()]
            if not existing:
                await self._libraries_changed.wait()
                continue
            async with trio.open_nursery() as nursery:
                self._watch_stop = stop = anyio.Event()
                nursery.start_soon(self._restart_on_change, stop, nursery.cancel_scope)
                try:
                    async for changes in watchfiles.awatch(*existing, debounce=500, recursive=True, stop_event=stop):
                        touched = {_library_of(path, roots) for _, path in changes}
                        for library_id in touched - {None}:
                            self.request_scan(library_id)
                except (OSError, RuntimeError) as exc:
                    # e.g. inotify limits: periodic rescans still keep the catalog in step.
                    log.warning("filesystem notifications unavailable: %s", exc)
                    await self._libraries_changed.wait()

    async def _restart_on_change(self, stop: Any, watching: trio.CancelScope) -> None:
        await self._libraries_changed.wait()
        stop.set()
        watching.cancel()


def _library_of(path: str, roots: dict[str, int]) -> int | None:
    for root, library_id in roots.items():
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return library_id
    return None


def _remove(conn, deleted: list[str], vanished: list[str]) -> None:  # type: ignore[no-untyped-def]
    items.remove_locations(conn, deleted)
    items.forget_skipped(conn, vanished)


def _record(conn, library_id: int, indexed: list[IndexedFile], skipped: list[SkippedFile]) -> None:  # type: ignore[no-untyped-def]
    items.record_files(conn, library_id, indexed)
    items.record_skipped(conn, skipped)


def _mark_scanned(conn, library_id: int) -> None:  # type: ignore[no-untyped-def]
    conn.execute("UPDATE libraries SET last_scan = ? WHERE id = ?", (time.time(), library_id))
