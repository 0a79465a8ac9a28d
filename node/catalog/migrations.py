"""Versioned schema migrations of the catalog.

The schema version is SQLite's ``PRAGMA user_version``. Each migration moves the schema from
version N-1 to N inside one transaction together with the version bump, so a crash mid-way
leaves the previous version intact. Migrations are append-only: once released, a step is
never edited; changes go into a new step (tests build old versions from these same steps).

Design notes that later features rely on:
- Items are keyed by **content hash**: a moved or renamed file is the same item and keeps
  its embeddings and ratings. Where a file lives is a separate ``locations`` row.
- Ratings and feedback are keyed by content hash too, not by item row, so the user can rate
  a peer's item they have not fetched, and a rating survives the file leaving the disk.
- Embeddings carry their model id and dimension; vectors of different model ids are never
  compared. ``segment`` 0 is the whole item; higher segments are chunks or video moments.
  ``source`` says whether the media itself or only its metadata text was embedded.
- An item whose last file disappeared gets ``missing_since`` instead of being deleted, so a
  file moved in two steps (delete, then create) keeps its embeddings and ratings.
- ``items_fts`` (rowid = item id) holds the searchable text: file name, path, metadata.
- ``documents`` keeps the extracted text of text documents (zlib), from which chunks are
  embedded and the passage matching a query is highlighted without re-parsing the file.
- ``vector_changes`` is a journal of every stored or deleted vector, written by triggers (so
  cascaded deletes are journalled too). Vector indexes outside the database replay it to stay
  current — also after a crash — and prune what they have saved. ``AUTOINCREMENT`` keeps
  sequence numbers from being reused once the journal is pruned empty.
- Paths (``libraries.path``, ``locations.path``, ``skipped_files.path``) are TEXT when the
  name is valid UTF-8 and a BLOB of its exact bytes otherwise (:mod:`peerlight.node.pathnames`).
- ``skipped_files`` (``index_failures`` before version 5) lists every file the indexer
  skipped, with its library, a ``kind`` (why, as a category) and a readable ``reason``;
  rescans pass it until its size or mtime changes.
- ``item_counts`` and ``skipped_counts`` are kept by triggers, so status and progress read a
  few rows instead of counting the whole catalog on every poll.
- ``shares`` are the node's Data Servers: a name, a scope (where it listens), a permission
  level, its collections (``share_collections``: folders or whole libraries; none means
  everything the node indexes) and the kinds of media it serves. A share's libp2p key lives in
  its own file (``shares/<id>.key``), not in the catalog. ``remote_shares`` are other nodes'
  shares this node has seen or been given, with their last manifest.
- ``items.changed_seq`` is the value of ``change_clock`` when the item last changed in a way a
  peer's copy of the catalog cares about (kind, size, embedding, vanishing, a file added or
  removed), kept by triggers: the catalog protocol pages through items by it. Peers' shares are
  cached in ``remote_items`` and ``remote_vectors`` (K-prefixes, float16).
- ``shares.public_can`` lists what a ``public`` share lets anyone do (its owner may keep
  ``fetch``, say, for members). ``grants`` are what a share allows one peer (``grantee``; NULL while an open invite is not
  redeemed): capabilities, limits, expiry, and when it was revoked or last used. The signed
  token a grantee presents names the grant's id; revocation is this row, so it holds at once
  and across restarts. ``remote_shares.token`` is our own grant for another node's share.
- ``access_log`` is each share's audit trail: who asked for what (protocol, capability, item),
  allowed or denied and why; written in batches, the oldest rows pruned past a bound per share.
- ``devices`` are the user's other nodes, paired by a short code: their node peer IDs (what
  ``devices`` shares admit) and the addresses of their automatic devices share. That share is
  ``shares.automatic = 2`` (the local automatic share is 1).
- ``items_fts_vocab`` gives each full-text word's document frequency, from which search weighs
  words (common ones carry no match).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "local catalog: libraries, items, locations, metadata, models, embeddings",
        """
        CREATE TABLE libraries (
            id          INTEGER PRIMARY KEY,
            path        TEXT NOT NULL UNIQUE,
            name        TEXT NOT NULL,
            added_at    REAL NOT NULL,
            last_scan   REAL
        );
        CREATE TABLE items (
            id            INTEGER PRIMARY KEY,
            content_hash  TEXT NOT NULL UNIQUE,
            size          INTEGER NOT NULL,
            modality      TEXT NOT NULL CHECK (modality IN ('image', 'audio', 'video', 'text', 'other')),
            mime          TEXT,
            first_seen    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            embedding_state TEXT NOT NULL DEFAULT 'pending'
                CHECK (embedding_state IN ('pending', 'done', 'failed', 'unsupported'))
        );
        CREATE INDEX items_modality ON items (modality);
        CREATE TABLE locations (
            id          INTEGER PRIMARY KEY,
            item_id     INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            library_id  INTEGER NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
            path        TEXT NOT NULL UNIQUE,
            size        INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            inode       INTEGER NOT NULL,
            device      INTEGER NOT NULL,
            last_seen   REAL NOT NULL
        );
        CREATE INDEX locations_item ON locations (item_id);
        CREATE INDEX locations_library ON locations (library_id);
        CREATE TABLE item_metadata (
            item_id  INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            key      TEXT NOT NULL,
            value,
            PRIMARY KEY (item_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX item_metadata_key_value ON item_metadata (key, value);
        CREATE TABLE models (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            space       TEXT NOT NULL,
            dimension   INTEGER NOT NULL CHECK (dimension > 0),
            created_at  REAL NOT NULL
        );
        CREATE TABLE embeddings (
            item_id     INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            model_id    TEXT NOT NULL REFERENCES models (id),
            segment     INTEGER NOT NULL DEFAULT 0,
            start       REAL,
            end         REAL,
            dimension   INTEGER NOT NULL,
            vector      BLOB NOT NULL CHECK (length(vector) = 4 * dimension),
            PRIMARY KEY (item_id, model_id, segment)
        ) WITHOUT ROWID;
        CREATE INDEX embeddings_model ON embeddings (model_id);
        """,
    ),
    Migration(
        2,
        "preferences and sharing: ratings, feedback, shares, peers, remote items",
        """
        CREATE TABLE ratings (
            content_hash TEXT PRIMARY KEY,
            rating       REAL NOT NULL CHECK (rating BETWEEN 0 AND 10),
            updated_at   REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE feedback_events (
            id            INTEGER PRIMARY KEY,
            content_hash  TEXT NOT NULL,
            kind          TEXT NOT NULL,
            value         REAL,
            at            REAL NOT NULL
        );
        CREATE INDEX feedback_events_hash ON feedback_events (content_hash);
        CREATE TABLE shares (
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            scope       TEXT NOT NULL CHECK (scope IN ('localhost', 'lan', 'global')),
            permission  TEXT NOT NULL CHECK (permission IN ('search', 'browse', 'fetch')),
            created_at  REAL NOT NULL,
            enabled     INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE share_libraries (
            share_id    INTEGER NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
            library_id  INTEGER NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
            PRIMARY KEY (share_id, library_id)
        ) WITHOUT ROWID;
        CREATE TABLE peers (
            peer_id     TEXT PRIMARY KEY,
            name        TEXT,
            addresses   TEXT NOT NULL DEFAULT '[]',
            own_device  INTEGER NOT NULL DEFAULT 0,
            first_seen  REAL NOT NULL,
            last_seen   REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE remote_items (
            peer_id       TEXT NOT NULL REFERENCES peers (peer_id) ON DELETE CASCADE,
            share_name    TEXT NOT NULL,
            content_hash  TEXT NOT NULL,
            name          TEXT NOT NULL,
            size          INTEGER NOT NULL,
            modality      TEXT NOT NULL,
            metadata      BLOB,
            model_id      TEXT,
            prefix        BLOB,
            seen_at       REAL NOT NULL,
            PRIMARY KEY (peer_id, share_name, content_hash)
        ) WITHOUT ROWID;
        CREATE INDEX remote_items_hash ON remote_items (content_hash);
        """,
    ),
    Migration(
        3,
        "indexing: full-text search, embedding provenance, failures, missing items",
        """
        CREATE VIRTUAL TABLE items_fts USING fts5 (
            name, path, metadata, tokenize = 'unicode61 remove_diacritics 2'
        );
        ALTER TABLE embeddings ADD COLUMN source TEXT NOT NULL DEFAULT 'content'
            CHECK (source IN ('content', 'metadata'));
        ALTER TABLE items ADD COLUMN missing_since REAL;
        CREATE TABLE embedding_failures (
            item_id   INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            model_id  TEXT NOT NULL,
            error     TEXT NOT NULL,
            at        REAL NOT NULL,
            PRIMARY KEY (item_id, model_id)
        ) WITHOUT ROWID;
        CREATE TABLE documents (
            item_id  INTEGER PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
            text     BLOB NOT NULL
        );
        CREATE TABLE index_failures (
            path    TEXT PRIMARY KEY,
            size    INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            kind    TEXT NOT NULL CHECK (kind IN ('unsupported', 'error')),
            error   TEXT NOT NULL,
            at      REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        4,
        "journal of vector changes, replayed by the persisted vector indexes",
        """
        CREATE TABLE vector_changes (
            seq       INTEGER PRIMARY KEY AUTOINCREMENT,
            model_id  TEXT NOT NULL,
            item_id   INTEGER NOT NULL,
            segment   INTEGER NOT NULL
        );
        CREATE INDEX vector_changes_model ON vector_changes (model_id, seq);
        CREATE TRIGGER embeddings_journal_insert AFTER INSERT ON embeddings BEGIN
            INSERT INTO vector_changes (model_id, item_id, segment) VALUES (NEW.model_id, NEW.item_id, NEW.segment);
        END;
        CREATE TRIGGER embeddings_journal_update AFTER UPDATE ON embeddings BEGIN
            INSERT INTO vector_changes (model_id, item_id, segment) VALUES (OLD.model_id, OLD.item_id, OLD.segment);
            INSERT INTO vector_changes (model_id, item_id, segment) VALUES (NEW.model_id, NEW.item_id, NEW.segment);
        END;
        CREATE TRIGGER embeddings_journal_delete AFTER DELETE ON embeddings BEGIN
            INSERT INTO vector_changes (model_id, item_id, segment) VALUES (OLD.model_id, OLD.item_id, OLD.segment);
        END;
        """,
    ),
    Migration(
        5,
        "hardening: skipped files by kind and library, item and problem counters kept by triggers, FTS vocabulary",
        """
        CREATE VIRTUAL TABLE items_fts_vocab USING fts5vocab (items_fts, 'row');

        CREATE TABLE skipped_files (
            path        NOT NULL PRIMARY KEY,
            library_id  INTEGER REFERENCES libraries (id) ON DELETE CASCADE,
            size        INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN (
                            'unsupported', 'unreadable', 'corrupt', 'special', 'link', 'too_large', 'sparse', 'path')),
            reason      TEXT NOT NULL,
            at          REAL NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO skipped_files (path, library_id, size, mtime_ns, kind, reason, at)
            SELECT f.path,
                   (SELECT l.id FROM libraries AS l WHERE substr(f.path, 1, length(l.path) + 1) = l.path || '/'),
                   f.size, f.mtime_ns,
                   CASE WHEN f.kind = 'unsupported' THEN 'unsupported'
                        WHEN f.error LIKE 'cannot read%' THEN 'unreadable' ELSE 'corrupt' END,
                   f.error, f.at
            FROM index_failures AS f;
        DROP TABLE index_failures;
        CREATE INDEX skipped_files_library ON skipped_files (library_id);

        CREATE TABLE item_counts (
            modality  TEXT NOT NULL,
            state     TEXT NOT NULL,
            live      INTEGER NOT NULL,
            n         INTEGER NOT NULL,
            PRIMARY KEY (modality, state, live)
        ) WITHOUT ROWID;
        INSERT INTO item_counts
            SELECT modality, embedding_state, missing_since IS NULL, COUNT(*) FROM items GROUP BY 1, 2, 3;
        CREATE TRIGGER items_count_insert AFTER INSERT ON items BEGIN
            INSERT INTO item_counts VALUES (NEW.modality, NEW.embedding_state, NEW.missing_since IS NULL, 1)
                ON CONFLICT DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER items_count_delete AFTER DELETE ON items BEGIN
            UPDATE item_counts SET n = n - 1
                WHERE modality = OLD.modality AND state = OLD.embedding_state AND live = (OLD.missing_since IS NULL);
        END;
        CREATE TRIGGER items_count_update AFTER UPDATE OF modality, embedding_state, missing_since ON items
            WHEN OLD.modality IS NOT NEW.modality OR OLD.embedding_state IS NOT NEW.embedding_state
                 OR (OLD.missing_since IS NULL) != (NEW.missing_since IS NULL)
        BEGIN
            UPDATE item_counts SET n = n - 1
                WHERE modality = OLD.modality AND state = OLD.embedding_state AND live = (OLD.missing_since IS NULL);
            INSERT INTO item_counts VALUES (NEW.modality, NEW.embedding_state, NEW.missing_since IS NULL, 1)
                ON CONFLICT DO UPDATE SET n = n + 1;
        END;

        CREATE TABLE skipped_counts (
            kind  TEXT PRIMARY KEY,
            n     INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO skipped_counts SELECT kind, COUNT(*) FROM skipped_files GROUP BY kind;
        CREATE TRIGGER skipped_count_insert AFTER INSERT ON skipped_files BEGIN
            INSERT INTO skipped_counts VALUES (NEW.kind, 1) ON CONFLICT DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER skipped_count_delete AFTER DELETE ON skipped_files BEGIN
            UPDATE skipped_counts SET n = n - 1 WHERE kind = OLD.kind;
        END;
        CREATE TRIGGER skipped_count_update AFTER UPDATE OF kind ON skipped_files WHEN OLD.kind != NEW.kind BEGIN
            UPDATE skipped_counts SET n = n - 1 WHERE kind = OLD.kind;
            INSERT INTO skipped_counts VALUES (NEW.kind, 1) ON CONFLICT DO UPDATE SET n = n + 1;
        END;
        """,
    ),
    Migration(
        6,
        "data servers: shares with their collections and ports, remote shares seen",
        """
        DROP TABLE share_libraries;
        DROP TABLE shares;
        DROP TABLE peers;
        CREATE TABLE shares (
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            scope       TEXT NOT NULL CHECK (scope IN ('local', 'lan', 'global')),
            permission  TEXT NOT NULL CHECK (permission IN ('public', 'members', 'devices')),
            modalities  TEXT NOT NULL DEFAULT '[]',
            port        INTEGER CHECK (port BETWEEN 0 AND 65535),
            automatic   INTEGER NOT NULL DEFAULT 0,
            paused      INTEGER NOT NULL DEFAULT 0,
            created_at  REAL NOT NULL
        );
        CREATE TABLE share_collections (
            share_id  INTEGER NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
            path      TEXT NOT NULL,
            PRIMARY KEY (share_id, path)
        ) WITHOUT ROWID;
        CREATE TABLE remote_shares (
            peer_id     TEXT PRIMARY KEY,
            name        TEXT,
            addresses   TEXT NOT NULL DEFAULT '[]',
            manifest    TEXT,
            found_by    TEXT NOT NULL CHECK (found_by IN ('manual', 'mdns', 'dht')),
            first_seen  REAL NOT NULL,
            last_seen   REAL,
            last_error  TEXT
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        7,
        "catalog sync: a change sequence on items, cached remote catalogs",
        """
        CREATE TABLE change_clock (n INTEGER NOT NULL);
        INSERT INTO change_clock SELECT COALESCE(MAX(id), 0) FROM items;
        ALTER TABLE items ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;
        UPDATE items SET changed_seq = id;
        CREATE INDEX items_changed ON items (changed_seq);
        CREATE TRIGGER items_changed_insert AFTER INSERT ON items BEGIN
            UPDATE change_clock SET n = n + 1;
            UPDATE items SET changed_seq = (SELECT n FROM change_clock) WHERE id = NEW.id;
        END;
        CREATE TRIGGER items_changed_update AFTER UPDATE OF size, modality, mime, embedding_state, missing_since ON items BEGIN
            UPDATE change_clock SET n = n + 1;
            UPDATE items SET changed_seq = (SELECT n FROM change_clock) WHERE id = NEW.id;
        END;
        CREATE TRIGGER locations_changed_insert AFTER INSERT ON locations BEGIN
            UPDATE change_clock SET n = n + 1;
            UPDATE items SET changed_seq = (SELECT n FROM change_clock) WHERE id = NEW.item_id;
        END;
        CREATE TRIGGER locations_changed_delete AFTER DELETE ON locations BEGIN
            UPDATE change_clock SET n = n + 1;
            UPDATE items SET changed_seq = (SELECT n FROM change_clock) WHERE id = OLD.item_id;
        END;
        CREATE TRIGGER embeddings_changed_insert AFTER INSERT ON embeddings WHEN NEW.segment = 0 BEGIN
            UPDATE change_clock SET n = n + 1;
            UPDATE items SET changed_seq = (SELECT n FROM change_clock) WHERE id = NEW.item_id;
        END;

        DROP TABLE remote_items;
        CREATE TABLE remote_items (
            peer_id       TEXT NOT NULL REFERENCES remote_shares (peer_id) ON DELETE CASCADE,
            content_hash  TEXT NOT NULL,
            name          TEXT NOT NULL,
            size          INTEGER NOT NULL,
            modality      TEXT NOT NULL,
            mime          TEXT,
            metadata      TEXT NOT NULL DEFAULT '{}',
            synced_at     REAL NOT NULL,
            PRIMARY KEY (peer_id, content_hash)
        ) WITHOUT ROWID;
        CREATE TABLE remote_vectors (
            id            INTEGER PRIMARY KEY,
            peer_id       TEXT NOT NULL,
            content_hash  TEXT NOT NULL,
            model_id      TEXT NOT NULL,
            prefix        BLOB NOT NULL,
            UNIQUE (peer_id, content_hash, model_id),
            FOREIGN KEY (peer_id, content_hash) REFERENCES remote_items (peer_id, content_hash) ON DELETE CASCADE
        );
        CREATE INDEX remote_vectors_model ON remote_vectors (model_id);
        ALTER TABLE remote_shares ADD COLUMN sync_cursor INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE remote_shares ADD COLUMN synced_at REAL;
        """,
    ),
    Migration(
        8,
        "permissions: grants of a share's capabilities to peers, our own grants for others' shares",
        """
        CREATE TABLE grants (
            id             TEXT PRIMARY KEY,
            share_id       INTEGER NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
            grantee        TEXT,
            capabilities   TEXT NOT NULL,
            rpm            INTEGER NOT NULL DEFAULT 0 CHECK (rpm >= 0),
            bytes_per_day  INTEGER NOT NULL DEFAULT 0 CHECK (bytes_per_day >= 0),
            expires_at     REAL,
            created_at     REAL NOT NULL,
            invite         INTEGER NOT NULL DEFAULT 0,
            redeemed_at    REAL,
            revoked_at     REAL,
            last_used_at   REAL
        ) WITHOUT ROWID;
        CREATE INDEX grants_share ON grants (share_id);
        ALTER TABLE remote_shares ADD COLUMN token BLOB;
        ALTER TABLE shares ADD COLUMN public_can TEXT NOT NULL DEFAULT '["search", "browse", "fetch"]';
        CREATE TABLE access_log (
            id          INTEGER PRIMARY KEY,
            share_id    INTEGER NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
            at          REAL NOT NULL,
            peer_id     TEXT NOT NULL,
            protocol    TEXT NOT NULL,
            capability  TEXT,
            item        TEXT,
            allowed     INTEGER NOT NULL,
            reason      TEXT,
            grant_id    TEXT
        );
        CREATE INDEX access_log_share ON access_log (share_id, id);
        CREATE TABLE devices (
            peer_id          TEXT PRIMARY KEY,
            name             TEXT NOT NULL,
            paired_at        REAL NOT NULL,
            share_addresses  TEXT NOT NULL DEFAULT '[]'
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        9,
        "preferences: where a rating came from, the events' time index, the preference model's versions; "
        "the access log rotated by kind (allowed, refused)",
        """
        CREATE INDEX access_log_kind ON access_log (share_id, allowed, id);
        ALTER TABLE ratings ADD COLUMN source TEXT NOT NULL DEFAULT 'rating';
        CREATE INDEX feedback_events_at ON feedback_events (at);
        CREATE TABLE preference_models (
            version     INTEGER PRIMARY KEY,
            created_at  REAL NOT NULL,
            examples    INTEGER NOT NULL,
            info        TEXT NOT NULL,
            data        BLOB NOT NULL,
            active      INTEGER NOT NULL DEFAULT 0
        );
        """,
    ),
    Migration(
        10,
        "permissions: a grant's bytes of the day survive a restart (the day, and the bytes served in it)",
        """
        ALTER TABLE grants ADD COLUMN usage_day INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE grants ADD COLUMN bytes_today INTEGER NOT NULL DEFAULT 0 CHECK (bytes_today >= 0);
        """,
    ),
    Migration(
        11,
        "security: the automatic local share serves its owner and paired devices only (every local user could reach it as public)",
        """
        UPDATE shares SET permission = 'devices' WHERE automatic = 1 AND scope = 'local' AND permission = 'public';
        """,
    ),
    Migration(
        12,
        "preferences: the K-prefixes of peers' items the user rated, kept when the share goes away",
        """
        CREATE TABLE kept_prefixes (
            content_hash  TEXT NOT NULL,
            model_id      TEXT NOT NULL,
            prefix        BLOB NOT NULL,
            name          TEXT,
            modality      TEXT,
            kept_at       REAL NOT NULL,
            PRIMARY KEY (content_hash, model_id)
        ) WITHOUT ROWID;
        CREATE INDEX remote_vectors_hash ON remote_vectors (content_hash);
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


class SchemaVersionError(Exception):
    """The database was written by a newer Peerlight than this one."""


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(
    conn: sqlite3.Connection, target: int = LATEST_VERSION, steps: Sequence[Migration] = MIGRATIONS
) -> list[Migration]:
    """Apply every step above the database's version up to ``target``; return those applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each step manages its
    own transaction so that it commits together with its version bump.
    """
    current = schema_version(conn)
    newest = steps[-1].version
    if current > newest:
        raise SchemaVersionError(
            f"the catalog has schema version {current}, newer than this Peerlight "
            f"understands ({newest}); upgrade Peerlight"
        )
    applied = []
    for step in steps:
        if current < step.version <= target:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(step.sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step.version:d}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            applied.append(step)
    return applied


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (``executescript`` would commit on its own)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")
    return statements
