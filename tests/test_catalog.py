from __future__ import annotations

import sqlite3
import struct
from functools import partial
from pathlib import Path

import pytest
import trio

from peerlight.node.catalog import Catalog, CatalogError, SchemaVersionError
from peerlight.node.catalog.database import DiskFull
from peerlight.node.catalog import libraries
from peerlight.node.catalog.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate, schema_version


def old_catalog(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn, target=version)
    assert schema_version(conn) == version
    return conn


FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Catalogs frozen at released schema versions, made with the steps as released (build_catalogs.py).
FROZEN = {1: FIXTURES / "catalog-v1.sqlite3", 3: FIXTURES / "catalog-v3.sqlite3"}


def frozen_catalog(version: int, folder: Path) -> Path:
    copy = folder / f"catalog-v{version}.sqlite3"
    copy.write_bytes(FROZEN[version].read_bytes())
    return copy


async def test_migration_from_version_1_keeps_data(tmp_path: Path) -> None:
    db = frozen_catalog(1, tmp_path)
    catalog = await Catalog.open(db)
    try:
        def check(conn: sqlite3.Connection) -> None:
            assert schema_version(conn) == LATEST_VERSION
            assert conn.execute("SELECT path FROM locations WHERE item_id = 7").fetchone() == ("/media/photos/a.jpg",)
            assert conn.execute("SELECT value FROM item_metadata WHERE key = 'camera'").fetchone() == ("X100",)
            blob = conn.execute("SELECT vector FROM embeddings").fetchone()[0]
            assert struct.unpack("<2f", blob) == pytest.approx((0.6, 0.8))

        await catalog.read(check)
        # The tables added by the new version work alongside the old data.
        await catalog.write(
            lambda conn: conn.execute("INSERT INTO ratings (content_hash, rating, updated_at) VALUES ('b3:abc', 8, 1.0)")
        )
        libs = await catalog.read(libraries.list_libraries)
        assert [(lib.name, lib.items) for lib in libs] == [("photos", 1)]
    finally:
        await catalog.aclose()


@pytest.mark.parametrize("version", sorted(FROZEN))
def test_a_released_catalog_migrates_to_the_schema_of_a_new_one(tmp_path: Path, version: int) -> None:
    # A released step edited since its release makes a fresh catalog differ from a migrated one.
    fresh = old_catalog(tmp_path / "fresh.sqlite3", LATEST_VERSION)
    expected = fresh.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn = sqlite3.connect(frozen_catalog(version, tmp_path), isolation_level=None)
    assert schema_version(conn) == version
    migrate(conn)
    assert conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == expected
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    conn = old_catalog(tmp_path / "c.sqlite3", 1)
    broken = Migration(2, "broken", "CREATE TABLE half_done (x);\nINSERT INTO no_such_table VALUES (1);")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, steps=(MIGRATIONS[0], broken))
    assert schema_version(conn) == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None


async def test_a_catalog_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite3"
    conn = old_catalog(db, LATEST_VERSION)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match="upgrade Peerlight"):
        await Catalog.open(db)


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite3"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="cannot open the catalog"):
        await Catalog.open(db)
    assert db.read_bytes() == b"this is not sqlite" * 100


async def test_catalog_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3")
    try:
        assert await catalog.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        with pytest.raises(sqlite3.IntegrityError):
            await catalog.write(
                lambda c: c.execute(
                    "INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen)"
                    " VALUES (99, 99, '/x', 1, 1, 1, 1, 1)"
                )
            )
    finally:
        await catalog.aclose()


async def test_a_failed_write_rolls_back_entirely(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3")
    try:
        def half(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO libraries (path, name, added_at) VALUES ('/a', 'a', 1)")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await catalog.write(half)
        assert await catalog.read(libraries.list_libraries) == []
    finally:
        await catalog.aclose()


async def test_reads_run_while_a_write_is_in_progress(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3", readers=2)
    write_started, release_write = trio.Event(), False
    token = trio.lowlevel.current_trio_token()

    def slow_write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO libraries (path, name, added_at) VALUES ('/slow', 'slow', 1)")
        trio.from_thread.run_sync(write_started.set, trio_token=token)
        while not release_write:
            trio.from_thread.run(trio.sleep, 0.01, trio_token=token)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(catalog.write, slow_write)
            await write_started.wait()
            # The uncommitted write is invisible, and reading does not wait for it.
            with trio.fail_after(5):
                assert await catalog.read(libraries.list_libraries) == []
            release_write = True
        assert [lib.path for lib in await catalog.read(libraries.list_libraries)] == ["/slow"]
    finally:
        await catalog.aclose()


async def test_a_cancelled_caller_does_not_abandon_its_write(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3")
    try:
        def write(conn: sqlite3.Connection) -> None:
            import time

            time.sleep(0.2)
            conn.execute("INSERT INTO libraries (path, name, added_at) VALUES ('/late', 'late', 1)")

        with trio.move_on_after(0.01):
            await catalog.write(write)
        assert [lib.path for lib in await catalog.read(libraries.list_libraries)] == ["/late"]
    finally:
        await catalog.aclose()


async def test_concurrent_writes_are_serialised_and_all_committed(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3")
    try:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(catalog.write, partial(libraries.add_library, path=Path(f"/lib/{i:02d}"), name=None))
        libs = await catalog.read(libraries.list_libraries)
        assert sorted(lib.path for lib in libs) == [f"/lib/{i:02d}" for i in range(50)]
    finally:
        await catalog.aclose()
    with pytest.raises(CatalogError, match="closed"):
        await catalog.read(libraries.list_libraries)


def test_libraries_must_not_nest(tmp_path: Path) -> None:
    conn = old_catalog(tmp_path / "c.sqlite3", LATEST_VERSION)
    libraries.add_library(conn, Path("/media/music"))
    with pytest.raises(libraries.LibraryExists):
        libraries.add_library(conn, Path("/media/music"))
    with pytest.raises(libraries.LibraryOverlaps):
        libraries.add_library(conn, Path("/media/music/jazz"))
    with pytest.raises(libraries.LibraryOverlaps):
        libraries.add_library(conn, Path("/media"))
    libraries.add_library(conn, Path("/media/musicals"))  # a shared prefix is not nesting
    assert libraries.find_library(conn, "musicals").path == "/media/musicals"
    removed = libraries.remove_library(conn, "1")
    assert removed.path == "/media/music"
    with pytest.raises(libraries.LibraryNotFound):
        libraries.remove_library(conn, "/media/music")


async def test_a_failed_commit_is_rolled_back_and_the_writer_keeps_working(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3")
    try:
        def violates_at_commit(conn: sqlite3.Connection) -> None:
            # A deferred foreign key is only checked by COMMIT, so COMMIT itself fails.
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute(
                "INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen)"
                " VALUES (999, 999, '/nowhere', 1, 1, 1, 1, 1.0)"
            )

        with pytest.raises(sqlite3.IntegrityError):
            await catalog.write(violates_at_commit)
        library = await catalog.write(partial(libraries.add_library, path=Path("/media/ok")))
        assert library.path == "/media/ok"
        assert await catalog.read(lambda c: c.execute("SELECT COUNT(*) FROM locations").fetchone()[0]) == 0
    finally:
        await catalog.aclose()


async def test_a_full_database_is_a_typed_error_and_writes_resume_when_space_returns(tmp_path: Path) -> None:
    catalog = await Catalog.open(tmp_path / "c.sqlite3")
    try:
        pages = await catalog.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await catalog.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))  # the "disk" is now full

        def big_write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO libraries (path, name, added_at) VALUES ('/media/big', ?, 1.0)", ("x" * 100_000,))

        with pytest.raises(DiskFull):
            await catalog.write(big_write)
        await catalog.write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))  # space returns
        await catalog.write(big_write)
        assert [lib.path for lib in await catalog.read(libraries.list_libraries)] == ["/media/big"]
    finally:
        await catalog.aclose()
