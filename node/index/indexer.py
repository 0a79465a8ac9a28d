"""The indexing service: keeps the catalog in step with the libraries on disk.

It rescans every library periodically and, between those full rescans, just the paths the
filesystem reports as changed (watchfiles, which runs on trio through anyio): one changed
file costs one file's work, not a walk of the whole library. A rescan ``stat``s files but
reads only new or changed ones; their inspection (hash, type, metadata) runs in worker
threads under a time limit and is written in batches, each batch one transaction. A daemon
killed mid-scan therefore resumes with the next scan: what was written is known and
skipped, nothing is duplicated.

Hostile files never stop a scan: each one ends as a recorded skip with its reason (see
:mod:`.scanner` and :mod:`.inspect`). A file that changes while it is read is tried again
once it settles. If the watcher itself fails (watchfiles cannot decode a file name that is
not UTF-8, inotify limits), the periodic rescans go on, a full rescan catches what it
missed, and watching resumes after a backoff.
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
from ..catalog.items import PROBLEM_KINDS, IndexedFile, SkippedFile
from ..config import IndexOptions
from ..pathnames import display, is_within
from ..supervisor import describe_error
from ..decoders import DecoderPool
from ..threads import IOTimeout, run_io
from .inspect import Changing, Inspected, Vanished, inspect_file
from .progress import IndexProgress, LibraryProgress
from .scanner import FileStat, ScanPlan, plan_scan, walk_paths

log = logging.getLogger("peerlight.index")

BATCH_SIZE = 64
MAX_CHANGED_PATHS = 256  # more changed paths than this in one library: rescan it whole
RETRY_CHANGING_SECONDS = 5.0  # a file written to while it was read is tried again this much later,
RETRY_CHANGING_MAX_SECONDS = 300.0  # ... twice as late each time it is still changing
WALK_TIMEOUT_SECONDS = 600.0  # a walk that takes longer is a stalled mount: the scan is given up
INSPECT_BASE_SECONDS = 60.0  # time allowed to inspect a file: this, plus its size at INSPECT_MIN_RATE
INSPECT_MIN_RATE = 10 << 20  # bytes/s
WATCH_RETRY_FIRST, WATCH_RETRY_MAX = 30.0, 3600.0

ALL = None  # a library's pending paths when all of it is to be scanned


class Indexer:
    def __init__(
        self,
        catalog: Catalog,
        options: IndexOptions,
        *,
        exclude: tuple[Path, ...] = (),
        on_items_recorded: Callable[[], None] = lambda: None,
        decoders: DecoderPool | None = None,
    ) -> None:
        self._catalog = catalog
        self._decoders = decoders  # native parsers in worker processes (None: in this process)
        self._options = options
        self._exclude = exclude
        self._on_items_recorded = on_items_recorded
        self.progress = IndexProgress()
        self._everything = False  # every library is to be scanned whole
        self._pending: dict[int, set[str] | None] = {}  # library id -> paths to scan (ALL: the whole library)
        self._scanning = False  # between taking the pending work and finishing it
        self._wake = trio.Event()
        self._libraries_changed = trio.Event()
        self._workers = trio.CapacityLimiter(options.workers)
        self._inspection_threads = trio.CapacityLimiter(options.workers * 8)
        self._retry_delays: dict[str, float] = {}  # path -> wait before the next look at a changing file
        self._watch_stop: Any = None  # anyio.Event of the running watcher
        self._nursery: trio.Nursery | None = None
        self.watching: str = "off" if not options.watch else "starting"  # for status: watching | failed: … | off

    def request_scan(self, library_id: int | None = None, paths: set[str] | None = None) -> None:
        """Scan one library (or all), or only ``paths`` in one library, soon; returns at once."""
        if library_id is None:
            self._everything = True
        elif paths is None:
            self._pending[library_id] = ALL
        else:
            pending = self._pending.setdefault(library_id, set())
            if pending is not ALL:
                pending.update(paths)
                if len(pending) > MAX_CHANGED_PATHS:
                    self._pending[library_id] = ALL
        self._wake.set()

    @property
    def scan_requested(self) -> bool:
        """A scan was asked for and has not finished yet (no gap between asking and a library's progress)."""
        return self._everything or bool(self._pending) or self._scanning

    def libraries_changed(self) -> None:
        """A library was added or removed: rescan and re-arm the filesystem watcher."""
        self._libraries_changed.set()
        self.request_scan()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._options.watch:
                nursery.start_soon(self._watch)
            task_status.started()
            self.request_scan()
            next_full_scan = trio.current_time()
            while True:
                # The periodic full rescan keeps its own deadline: events do not postpone it.
                with trio.move_on_at(next_full_scan):
                    await self._wake.wait()
                if trio.current_time() >= next_full_scan:
                    self._everything = True
                if self._everything:
                    next_full_scan = trio.current_time() + self._options.rescan_interval_seconds
                self._wake = trio.Event()
                self._scanning = True
                try:
                    everything, pending = self._everything, self._pending
                    self._everything, self._pending = False, {}
                    for library in await self._catalog.read(libraries.list_libraries):
                        if not everything and library.id not in pending:
                            continue
                        paths = None if everything else pending[library.id]
                        try:
                            await self.scan_library(library, sorted(paths) if paths is not None else None)
                        except Exception:
                            # e.g. the library was removed mid-scan: the next scan starts afresh.
                            log.exception("library scan failed", extra={"library": display(library.path)})
                finally:
                    self._scanning = False
                await self._forget_long_missing()

    async def scan_library(self, library: libraries.Library, paths: list[str] | None = None) -> LibraryProgress:
        """Bring the catalog in step with the library, or only with ``paths`` in it (and what lies under them)."""
        progress = self.progress.library(library.id, library.name)
        progress.begin()
        root = Path(library.path)
        try:
            reachable = await run_io(root.is_dir, what=f"checking {display(library.path)}")
            if not reachable:
                log.warning("library folder is not reachable; skipping its scan", extra={"library": display(library.path)})
                return progress
            known = await self._catalog.read(partial(items.known_locations, library_id=library.id, under=paths))
            skipped = await self._catalog.read(partial(items.known_skips, library_id=library.id, under=paths))
            walk = partial(walk_paths, root, paths if paths is not None else [str(root)])
            entries = await run_io(
                lambda: list(walk(skip_hidden=self._options.skip_hidden, exclude=self._exclude)),
                timeout=WALK_TIMEOUT_SECONDS,
                what=f"walking {display(library.path)}",
            )
            plan = plan_scan(entries, known, skipped)
            progress.unchanged, progress.deleted = plan.unchanged + plan.known_bad, len(plan.deleted)
            progress.files_total = len(plan.changed)
            progress.refused = len(plan.skips)
            progress.phase = "indexing"
            await self._record_walk(library.id, plan)
            for start in range(0, len(plan.changed), BATCH_SIZE):
                await self._index_batch(library.id, plan.changed[start : start + BATCH_SIZE], progress)
            if paths is None:
                await self._catalog.write_when_space(partial(_mark_scanned, library_id=library.id))
            log.info(
                "library scanned" if paths is None else "changed paths scanned",
                extra={
                    "library": display(library.path),
                    "paths": len(paths) if paths is not None else None,
                    "indexed": progress.files_done - progress.files_skipped,
                    "skipped": progress.files_skipped + progress.refused,
                    "unchanged": progress.unchanged,
                    "deleted": progress.deleted,
                    "seconds": round(time.time() - (progress.started_at or time.time()), 3),
                },
            )
        except IOTimeout as exc:
            log.warning("library folder does not answer; its scan is skipped until the next: %s", exc)
        finally:
            progress.finish()
        return progress

    async def _record_walk(self, library_id: int, plan: ScanPlan) -> None:
        """What the walk alone decided: files gone, and entries refused without reading them."""
        if plan.deleted or plan.vanished_skips:
            await self._catalog.write_when_space(partial(_remove, deleted=plan.deleted, vanished=plan.vanished_skips))
        if plan.skips:
            _log_skips(plan.skips)
            await self._catalog.write_when_space(partial(items.record_skipped, library_id=library_id, skipped=plan.skips))

    async def _index_batch(self, library_id: int, batch: list[FileStat], progress: LibraryProgress) -> None:
        results: list[Inspected] = []

        async def inspect(file: FileStat) -> None:
            results.append(await self._inspect(file))
            progress.files_done += 1
            progress.bytes_done += file.size

        async with trio.open_nursery() as nursery:
            for file in batch:
                nursery.start_soon(inspect, file)
        indexed = [r for r in results if isinstance(r, IndexedFile)]
        skipped = [r for r in results if isinstance(r, SkippedFile)]
        vanished = [r.path for r in results if isinstance(r, Vanished)]
        progress.files_skipped += len(skipped)
        _log_skips(skipped)
        await self._catalog.write_when_space(
            partial(_record, library_id=library_id, indexed=indexed, skipped=skipped, vanished=vanished)
        )
        for result in results:
            if not isinstance(result, Changing):
                self._retry_delays.pop(result.path, None)
        changing = {r.path for r in results if isinstance(r, Changing)}
        if changing and self._nursery is not None:
            self._nursery.start_soon(self._retry_later, library_id, changing)
        if indexed:
            self._on_items_recorded()

    async def _inspect(self, file: FileStat) -> Inspected:
        """Inspect one file in a worker thread; one that takes too long (a stalled mount) is skipped.

        Inspection threads have their own limiter: one abandoned on a stalled mount keeps its
        token until it returns, and must not starve the threads the rest of the daemon uses.
        """
        limit = INSPECT_BASE_SECONDS + file.size / INSPECT_MIN_RATE
        async with self._workers:
            with trio.move_on_after(limit):
                # Abandoned on timeout or shutdown: it only reads, so its thread may finish on its own.
                return await trio.to_thread.run_sync(
                    partial(inspect_file, file, store_gps=self._options.store_gps, decoders=self._decoders),
                    abandon_on_cancel=True,
                    limiter=self._inspection_threads,
                )
        # Recorded with an impossible mtime, so the next scan tries again (the mount may be back).
        return SkippedFile(file.path, file.size, -1, "unreadable", f"reading took longer than {limit:.0f} s (a stalled disk?)")

    async def _retry_later(self, library_id: int, paths: set[str]) -> None:
        """Look again at files that were being written, backing off while they keep changing."""
        delays = {path: self._retry_delays.get(path, RETRY_CHANGING_SECONDS) for path in paths}
        await trio.sleep(min(delays.values()))
        for path, delay in delays.items():
            self._retry_delays[path] = min(delay * 2, RETRY_CHANGING_MAX_SECONDS)
        self.request_scan(library_id, paths)

    async def _forget_long_missing(self) -> None:
        cutoff = time.time() - self._options.forget_missing_after_seconds
        forgotten = await self._catalog.write_when_space(partial(items.forget_missing, older_than=cutoff))
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
        backoff = WATCH_RETRY_FIRST
        while True:
            self._libraries_changed = trio.Event()
            roots = await self._watchable_roots()
            if not roots:
                self.watching = "nothing to watch"
                await self._libraries_changed.wait()
                continue
            try:
                await self._watch_roots(roots)
                backoff = WATCH_RETRY_FIRST
            except Exception as exc:  # watchfiles' own failures: an undecodable name, inotify limits, ...
                self.watching = f"failed: {describe_error(exc)}"
                log.warning(
                    "filesystem notifications failed; periodic rescans go on, watching resumes in %.0f s",
                    backoff,
                    exc_info=True,
                )
                self.request_scan()  # changes may have been missed
                with trio.move_on_after(backoff):
                    await self._libraries_changed.wait()
                backoff = min(backoff * 2, WATCH_RETRY_MAX)

    async def _watchable_roots(self) -> dict[str, int]:
        roots = {}
        for library in await self._catalog.read(libraries.list_libraries):
            try:
                if await run_io(Path(library.path).is_dir):
                    roots[library.path] = library.id
            except IOTimeout:
                pass  # a stalled mount is not watched; periodic rescans still visit it
        return roots

    async def _watch_roots(self, roots: dict[str, int]) -> None:
        """Watch until the libraries change (returns) or the watcher fails (raises)."""
        import anyio
        import watchfiles

        async with trio.open_nursery() as nursery:
            self._watch_stop = stop = anyio.Event()
            nursery.start_soon(self._stop_on_library_change, stop, nursery.cancel_scope)
            self.watching = "watching"
            async for changes in watchfiles.awatch(*roots, debounce=500, recursive=True, stop_event=stop):
                touched: dict[int, set[str]] = {}
                for _, path in changes:
                    library_id = _library_of(path, roots)
                    if library_id is not None:
                        touched.setdefault(library_id, set()).add(path)
                for library_id, paths in touched.items():
                    self.request_scan(library_id, paths)
            nursery.cancel_scope.cancel()

    async def _stop_on_library_change(self, stop: Any, watching: trio.CancelScope) -> None:
        await self._libraries_changed.wait()
        stop.set()
        watching.cancel()


def _log_skips(skips: list[SkippedFile]) -> None:
    for skip in skips:
        if skip.kind in PROBLEM_KINDS:
            log.warning("skipped a file", extra={"path": display(skip.path), "kind": skip.kind, "reason": skip.reason})


def _library_of(path: str, roots: dict[str, int]) -> int | None:
    return next((library_id for root, library_id in roots.items() if is_within(path, root)), None)


def _remove(conn, deleted: list[str], vanished: list[str]) -> None:  # type: ignore[no-untyped-def]
    items.remove_locations(conn, deleted)
    items.forget_skipped(conn, vanished)


def _record(  # type: ignore[no-untyped-def]
    conn, library_id: int, indexed: list[IndexedFile], skipped: list[SkippedFile], vanished: list[str]
) -> None:
    items.record_files(conn, library_id, indexed)
    items.record_skipped(conn, library_id, skipped)
    _remove(conn, vanished, vanished)


def _mark_scanned(conn, library_id: int) -> None:  # type: ignore[no-untyped-def]
    conn.execute("UPDATE libraries SET last_scan = ? WHERE id = ?", (time.time(), library_id))
