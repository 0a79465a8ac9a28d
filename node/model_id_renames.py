"""Stored ids of ordered models, renamed when the adapter id recipe changed (version 1 to 2).

Version 1 hashed each array's shape as Python writes a tuple (``(384, 384)``), which another
implementation had to imitate; version 2 writes dimensions as little-endian u32 (see
``docs/protocol.md``). The adapters are the same, and so are their vectors: only the names
change. At start, each adapter file the node has (shipped and its own) gives the model id it
produced under version 1 and the one it produces now; the catalog's rows under an old id are
renamed in one transaction, and the node's own adapter files and its record of defaults take
the new adapter ids. A node that has nothing under an old id does nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from peerlight.embeddings.adapters import Adapter, AdapterError

from .adapter_registry import FILE as DEFAULTS_FILE
from .files import write_atomic

log = logging.getLogger("peerlight.models")

# Every table that names a model by its id (the preference model's heads are rebuilt from these).
MODEL_ID_COLUMNS = (("embeddings", "model_id"), ("embedding_failures", "model_id"), ("remote_vectors", "model_id"))


@dataclass(frozen=True)
class Rename:
    old_model_id: str
    new_model_id: str
    old_adapter_id: str
    new_adapter_id: str
    path: Path


def adapter_renames(folders: list[Path]) -> list[Rename]:
    """The adapters in ``folders`` whose ids differ between the two recipes."""
    found = []
    for folder in folders:
        for path in sorted(folder.glob("*.npz")) if folder.is_dir() else ():
            try:
                adapter = Adapter.load(path)
            except (OSError, AdapterError):
                continue
            old_adapter_id = adapter.legacy_adapter_id
            if old_adapter_id != adapter.adapter_id:
                found.append(Rename(adapter.model_id_for(old_adapter_id), adapter.model_id, old_adapter_id, adapter.adapter_id, path))
    return found


def stored_under_old_ids(conn: sqlite3.Connection, renames: list[Rename]) -> list[Rename]:
    """The renames with something stored under their old model id (a node past the migration has
    none: it then writes nothing at start). Models, embeddings and peers' prefixes are found by
    their model id index; embedding failures (few) by a scan."""
    return [
        rename
        for rename in renames
        if any(
            conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1", (rename.old_model_id,)).fetchone()
            for table, column in (("models", "id"), *MODEL_ID_COLUMNS)
        )
    ]


def rename_in_catalog(conn: sqlite3.Connection, renames: list[Rename]) -> int:
    """Rename every row under an old model id (one transaction: the caller's write); rows renamed."""
    changed = 0
    for rename in renames:
        old, new = rename.old_model_id, rename.new_model_id
        if conn.execute("SELECT 1 FROM models WHERE id = ?", (old,)).fetchone() is not None:
            conn.execute(
                "INSERT OR IGNORE INTO models (id, name, space, dimension, created_at) SELECT ?, name, space, dimension, created_at FROM models WHERE id = ?",
                (new, old),
            )
        for table, column in MODEL_ID_COLUMNS:
            changed += conn.execute(f"UPDATE OR IGNORE {table} SET {column} = ? WHERE {column} = ?", (new, old)).rowcount
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (old,))  # a row the new id had already
        conn.execute("DELETE FROM models WHERE id = ?", (old,))
    return changed


def rename_adapter_files(adapters_dir: Path, renames: list[Rename]) -> None:
    """The node's own adapter files (named by adapter id) and its defaults take the new ids."""
    by_old = {r.old_adapter_id: r for r in renames}
    for rename in renames:
        if rename.path.parent == adapters_dir and rename.path.stem == rename.old_adapter_id:
            rename.path.rename(adapters_dir / f"{rename.new_adapter_id}.npz")
    defaults_path = adapters_dir / DEFAULTS_FILE
    try:
        defaults = json.loads(defaults_path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(defaults, dict) and any(v in by_old for v in defaults.values()):
        renamed = {k: by_old[v].new_adapter_id if v in by_old else v for k, v in defaults.items()}
        write_atomic(defaults_path, json.dumps(renamed, indent=1, sort_keys=True).encode())


def log_renames(renames: list[Rename], rows: int) -> None:
    if rows:
        log.info("stored model ids renamed to the adapter id recipe of version 2", extra={"models": len(renames), "rows": rows})
