"""SQLite from trio: one writer, concurrent readers, no second event loop.

SQLite calls block, so they run in worker threads through ``trio.to_thread``. All writes go
through a single connection guarded by a capacity limiter of one, so they are serialised
exactly as SQLite wants them and never fight over the write lock; reads use a small pool of
read-only connections and run concurrently with the writer thanks to WAL mode.

Writes are not abandoned on cancellation: a write that started always commits or rolls back
before its caller sees the cancellation, so a shutdown never leaves a write half-done and
every write a caller was told about is on disk.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from .migrations import LATEST_VERSION, migrate

log = logging.getLogger("peerlight.catalog")

T = TypeVar("T")


class CatalogError(Exception):
    """The catalog database cannot be opened or used."""


class DiskFull(CatalogError):
    """A write failed because the disk (or the database's size limit) is full; it was rolled back.

    Nothing of it was stored, so the caller can keep what it meant to write and try again once
    space returns (background services do: see :meth:`Catalog.write_when_space`).
    """


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    uri = f"{path.absolute().as_uri()}?mode={'ro' if read_only else 'rwc'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def open_writer(path: Path) -> sqlite3.Connection:
    """The writer connection, with WAL mode set and the schema migrated to the latest version."""
    try:
        conn = _connect(path, read_only=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise CatalogError(f"{path}: cannot enable WAL mode (got {mode!r})")
            # NORMAL is durable against process crashes in WAL mode; only power loss can lose
            # the last transactions, and never corrupts the database.
            conn.execute("PRAGMA synchronous = NORMAL")
            applied = migrate(conn)
        except BaseException:
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{path}: cannot open the catalog: {exc}") from None
    for step in applied:
        log.info("catalog migrated to schema version %d: %s", step.version, step.description)
    return conn


class Catalog:
    """The node's catalog database, used from trio."""

    def __init__(self, path: Path, writer: sqlite3.Connection, readers: int) -> None:
        self.path = path
        self._writer = writer
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._idle_readers: list[sqlite3.Connection] = []
        self._all_readers: list[sqlite3.Connection] = []
        self._closed = False
        self.disk_full: str | None = None  # why writes are waiting for space, while they are
        # Bumped by every committed write: what was computed from the catalog at one value is
        # still true while it has not moved (read it *before* the reads it guards).
        self.generation = 0

    @classmethod
    async def open(cls, path: Path, *, readers: int = 4) -> Catalog:
        writer = await trio.to_thread.run_sync(open_writer, path)
        return cls(path, writer, readers)

    @property
    def schema_version(self) -> int:
        return LATEST_VERSION

    async def write(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``transaction(conn)`` in one write transaction on the writer thread.

        It commits if the function returns and rolls back if it raises; the return value is
        only seen after the commit, so whoever reports success reports a durable write.
        """
        self._check_open()
        try:
            result = await trio.to_thread.run_sync(self._run_write, transaction, limiter=self._write_limiter)
        except DiskFull as exc:
            if self.disk_full is None:
                log.warning("catalog: the disk is full; nothing was written", extra={"error": str(exc)})
            self.disk_full = str(exc)
            raise
        if self.disk_full is not None:
            log.info("catalog: writes succeed again")
            self.disk_full = None
        return result

    async def write_when_space(self, transaction: Callable[[sqlite3.Connection], T], *, retry_seconds: float = 2.0) -> T:
        """``write``, but a full disk is waited out: the write is retried until space returns.

        For background work (indexing, embedding), whose results would otherwise be lost or
        recomputed: they stay in memory meanwhile. ``disk_full`` says so in the node's status.
        """
        delay = retry_seconds
        while True:
            try:
                return await self.write(transaction)
            except DiskFull:
                await trio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _run_write(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = transaction(conn)
            conn.execute("COMMIT")  # may fail too (a full disk, a deferred constraint): rolled back below
            self.generation += 1  # before the write is reported: no reader can miss it
        except BaseException as exc:
            _roll_back(conn)
            if isinstance(exc, sqlite3.OperationalError) and _is_disk_full(exc):
                raise DiskFull(f"{self.path}: {exc}") from exc
            raise
        return result

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query(conn)`` on a read-only connection, concurrently with other reads."""
        self._check_open()
        async with self._read_limiter:
            conn = self._idle_readers.pop() if self._idle_readers else None
            try:
                if conn is None:
                    conn = await trio.to_thread.run_sync(partial(_connect, self.path, read_only=True))
                    self._all_readers.append(conn)
                return await trio.to_thread.run_sync(_run_read, conn, query)
            finally:
                if conn is not None:
                    self._idle_readers.append(conn)

    async def aclose(self) -> None:
        """Close every connection; the writer checkpoints the WAL into the main file."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            async with self._write_limiter:
                await trio.to_thread.run_sync(self._close_all)

    def _close_all(self) -> None:
        for conn in self._all_readers:
            conn.close()
        try:
            self._writer.execute("PRAGMA optimize")
        except sqlite3.Error:
            log.warning("catalog: PRAGMA optimize failed at close", exc_info=True)
        self._writer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CatalogError("the catalog is closed")


def _roll_back(conn: sqlite3.Connection) -> None:
    """End a failed write transaction, so the writer connection keeps working."""
    if not conn.in_transaction:
        return  # SQLite already rolled it back (it does on some errors, e.g. SQLITE_FULL)
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("catalog: ROLLBACK failed")


def _is_disk_full(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def _run_read(conn: sqlite3.Connection, query: Callable[[sqlite3.Connection], T]) -> T:
    # Each read is its own snapshot: a deferred transaction keeps multi-query reads consistent.
    conn.execute("BEGIN")
    try:
        return query(conn)
    finally:
        conn.execute("COMMIT")


__all__ = ["Catalog", "CatalogError", "DiskFull", "open_writer"]
