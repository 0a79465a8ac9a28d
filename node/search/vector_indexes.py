"""The node's vector indexes: one persisted prefix index per model id, kept current by the catalog's journal.

Every vector the catalog stores or deletes is journalled by triggers (``vector_changes``).
An index remembers, in its saved metadata, the journal position it reflects; before a search
(and periodically in the background) it replays what came after, so it is current without
the writers having to know it exists — cascaded deletes included — and after a crash it
catches up from its last save instead of rebuilding. Saved journal entries are pruned.

An index is rebuilt from the catalog when none is saved for its model id (a new model or a
new adapter means a new model id, hence a new index), when its files cannot be read, or when
after catching up it does not hold exactly the catalog's vectors. Indexes of model ids that
no longer have vectors are deleted.

Ordered vectors (model ids of an ordering adapter) are searched through the funnel: the
prefix shortlist, then an exact rerank. Vectors of an unordered model have no meaningful
prefix, so their index answers exactly.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import trio

from peerlight.embeddings.model_ids import is_ordered
from peerlight.embeddings.ordering_fit import FUNNEL_SAMPLE, MIN_VECTORS, FunnelFit, funnel_fit
from peerlight.embeddings.prefix_index import PrefixIndex
from peerlight.embeddings.vectors import from_blob

from ..catalog.database import Catalog, DiskFull
from ..files import replace_dir_atomic
from ..catalog import embeddings as store
from ..catalog.embeddings import MAX_SEGMENTS, split_vector_id, vector_id
from .hits import VectorHit

log = logging.getLogger("peerlight.search.indexes")

BUILD_BATCH = 65536
MAX_SHORTLIST = 50_000  # a fitted shortlist is cut here
SHUTDOWN_SAVE_SECONDS = 10.0


@dataclass(frozen=True)
class IndexSettings:
    prefix_length: int = 0  # 0: an eighth of the dimension
    shortlist: int = 0  # 0: fitted to each library (FunnelFit), else this many
    save_interval_seconds: float = 30.0

    def prefix_for(self, dimension: int) -> int:
        return min(dimension, self.prefix_length or max(1, dimension // 8))


@dataclass
class _Live:
    index: PrefixIndex
    applied: int  # journal position the index reflects
    saved: int  # journal position of the copy on disk
    verified: bool = False  # its size matched the catalog's at ``applied`` (then only changes can break that)
    generation: int = -1  # the catalog's write generation at the last catch-up
    lock: trio.Lock = field(default_factory=trio.Lock)
    funnel: FunnelFit | None = None  # the shortlist this library needs, and the size it was fitted at
    fitting: trio.Lock = field(default_factory=trio.Lock)

    @property
    def dirty(self) -> bool:
        return self.applied != self.saved


@dataclass(frozen=True)
class _Changes:
    last_seq: int
    present: list[tuple[int, np.ndarray]]  # vector id -> its current vector
    gone: list[int]  # vector ids no longer stored
    catalog_count: int | None  # None: not counted (nothing changed since a verified position)


class VectorIndexes:
    def __init__(self, catalog: Catalog, folder: Path, settings: IndexSettings = IndexSettings()) -> None:
        self._catalog = catalog
        self._folder = folder
        self._settings = settings
        self._live: dict[str, _Live] = {}
        self._opening: dict[str, trio.Lock] = {}
        self._saves_running = 0  # staging folders of running saves must not be taken for leftovers
        self.save_failure: str | None = None  # why the last save failed, until one succeeds

    def prefix_for(self, dimension: int) -> int:
        """The prefix length searches use for vectors of ``dimension`` (``search.prefix_length``)."""
        return self._settings.prefix_for(dimension)

    # --- searching ---

    async def search(
        self,
        model_id: str,
        dimension: int,
        query: np.ndarray,
        k: int,
        allowed: Sequence[int] | None = None,
        *,
        exact: bool = False,
    ) -> list[VectorHit]:
        """The ``k`` items of ``model_id`` most like ``query``, each by its best vector (segment), best first.

        ``allowed`` (item ids) restricts the search inside the index. ``exact`` scores every
        allowed vector in full (to score a few given items) instead of the prefix funnel.
        """
        live = await self._current(model_id, dimension)
        mode = "funnel" if is_ordered(model_id) and not exact else "exact"
        shortlist = await self._shortlist(live, k) if mode == "funnel" else k
        hits = await trio.to_thread.run_sync(
            partial(
                live.index.search,
                query,
                k,
                shortlist=shortlist,
                mode=mode,
                group_size=MAX_SEGMENTS,
                allowed=np.asarray(allowed, dtype=np.int64) if allowed is not None else None,
            )
        )
        return [VectorHit(*split_vector_id(vid), float(score)) for vid, score in zip(hits.ids, hits.scores)]

    async def _shortlist(self, live: _Live, k: int) -> int:
        """The funnel's shortlist: the configured one, or the one fitted to this library, fitted
        again when the library has doubled or halved since (a fit reads a sample, under a second)."""
        if self._settings.shortlist:
            return max(self._settings.shortlist, k)
        size = len(live.index)
        if size < MIN_VECTORS:
            return max(size, k)  # too few to fit: every vector is reranked
        async with live.fitting:
            fitted = live.funnel
            if fitted is None or not fitted.vectors / 2 <= size <= fitted.vectors * 2:
                sample = await trio.to_thread.run_sync(live.index.sample, FUNNEL_SAMPLE + 200)
                live.funnel = fitted = await trio.to_thread.run_sync(partial(funnel_fit, sample, live.index.prefix_len, library_size=size))
                log.info("funnel shortlist fitted", extra={"model_id": live.index.model_id, "vectors": size, "shortlist": fitted.shortlist})
        # Never more than the library, nor than MAX_SHORTLIST: a library far from the ordering's
        # text would otherwise rerank most of itself on every query, a peer's included.
        return min(size, max(min(fitted.shortlist, MAX_SHORTLIST), 2 * k))

    async def spread(self, model_id: str, dimension: int, query: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of ``query``'s cosine over the model's vectors (see PrefixIndex)."""
        live = await self._current(model_id, dimension)
        return await trio.to_thread.run_sync(live.index.similarity_spread, query)

    async def index(self, model_id: str, dimension: int) -> PrefixIndex:
        """The index of ``model_id``, current with the catalog (loaded or built on first use)."""
        return (await self._current(model_id, dimension)).index

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "model_id": model_id,
                "vectors": len(live.index),
                "prefix_length": live.index.prefix_len,
                "mode": "funnel" if is_ordered(model_id) else "exact",
                **({"shortlist": live.funnel.shortlist, "shortlist_keeps": live.funnel.target} if live.funnel is not None else {}),
                "unsaved_changes": live.dirty,
            }
            for model_id, live in sorted(self._live.items())
        ]

    # --- keeping current ---

    async def _current(self, model_id: str, dimension: int) -> _Live:
        live = self._live.get(model_id)
        if live is None:
            live = await self._open(model_id, dimension)
        async with live.lock:
            await self._catch_up(model_id, live)
        return live

    async def _open(self, model_id: str, dimension: int) -> _Live:
        async with self._opening.setdefault(model_id, trio.Lock()):
            live = self._live.get(model_id)
            if live is not None:
                return live
            live = await self._load(model_id, dimension)
            if live is not None:
                async with live.lock:
                    if not await self._catch_up(model_id, live):
                        live = None
            if live is None:
                live = await self._build(model_id, dimension)
                await self._save(model_id, live)
            self._live[model_id] = live
            return live

    async def _load(self, model_id: str, dimension: int) -> _Live | None:
        folder = self._folder_of(model_id)
        for candidate in (folder, folder.with_name(folder.name + ".old")):  # .old: a save interrupted mid-swap
            if not await trio.to_thread.run_sync((candidate / "meta.json").exists):
                continue
            try:
                index = await trio.to_thread.run_sync(PrefixIndex.load, candidate)
            except Exception as exc:  # corrupt or truncated files: rebuilt from the catalog
                log.warning("vector index unreadable, rebuilding", extra={"model_id": model_id, "error": str(exc)})
                return None
            expected = self._settings.prefix_for(dimension)
            if index.model_id != model_id or index.dimension != dimension or index.prefix_len != expected:
                log.info("vector index settings changed, rebuilding", extra={"model_id": model_id})
                return None
            position = int(index.annotations.get("journal", 0))
            return _Live(index, applied=position, saved=position)
        return None

    async def _build(self, model_id: str, dimension: int) -> _Live:
        started = time.perf_counter()
        index = PrefixIndex(model_id, dimension, self._settings.prefix_for(dimension))
        position = await self._catalog.read(partial(_fill_index, index=index))
        log.info(
            "vector index built",
            extra={"model_id": model_id, "vectors": len(index), "seconds": round(time.perf_counter() - started, 3)},
        )
        return _Live(index, applied=position, saved=-1)

    async def _catch_up(self, model_id: str, live: _Live) -> bool:
        """Replay the journal past ``live.applied``; False if the index then disagrees with the catalog."""
        generation = self._catalog.generation  # read before the journal: a write meanwhile is seen next time
        if live.verified and live.generation == generation:
            return True  # no write since the last catch-up: nothing to replay (and no trip to a thread)
        changes = await self._catalog.read(
            partial(_changes_since, model_id=model_id, after=live.applied, verify=not live.verified)
        )
        if changes.present or changes.gone:
            ids = np.array([vid for vid, _ in changes.present], dtype=np.int64)
            vectors = np.stack([v for _, v in changes.present]) if changes.present else None

            def apply() -> None:
                live.index.remove(np.array(changes.gone, dtype=np.int64))
                if vectors is not None:
                    live.index.add(model_id, ids, vectors)

            await trio.to_thread.run_sync(apply)
        live.applied = changes.last_seq
        live.generation = generation
        if changes.catalog_count is None:
            return True  # every vector stored or deleted is journalled: no entry, no change
        live.verified = len(live.index) == changes.catalog_count
        if not live.verified:
            log.warning(
                "vector index out of step with the catalog, rebuilding",
                extra={"model_id": model_id, "index": len(live.index), "catalog": changes.catalog_count},
            )
            return False
        return True

    # --- persistence ---

    async def save_changed(self) -> None:
        """Bring every open index up to date, write those that changed, prune the journal, drop stale indexes."""
        for model_id, live in list(self._live.items()):
            async with live.lock:
                if not await self._catch_up(model_id, live):
                    del self._live[model_id]  # rebuilt at its next use
                    continue
            if live.dirty:
                await self._save(model_id, live)
        try:
            await self._forget_unindexed()
        except DiskFull:
            pass  # pruning can wait for space

    async def maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background task: saves changed indexes every ``save_interval_seconds``, and once more when cancelled."""
        task_status.started()
        try:
            while True:
                await trio.sleep(self._settings.save_interval_seconds)
                await self.save_changed()
        finally:
            # Bounded: a stalled disk must not hold up shutdown; what is not saved is replayed from the journal.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + SHUTDOWN_SAVE_SECONDS):
                try:
                    await self.save_changed()
                except Exception:
                    log.exception("saving vector indexes at shutdown failed; they catch up from the journal at next start")

    async def _save(self, model_id: str, live: _Live) -> None:
        """Write one index; on failure (a full disk) it stays unsaved and the next round tries again."""
        async with live.lock:
            position = live.applied
            live.index.annotations = {"journal": position}
            self._saves_running += 1
            try:
                await trio.to_thread.run_sync(
                    replace_dir_atomic, self._folder_of(model_id), live.index.write_files, abandon_on_cancel=True
                )
            except (OSError, RuntimeError) as exc:  # a full disk; RuntimeError is how FAISS reports one
                if self.save_failure is None:
                    log.warning("cannot save a vector index; retrying later", extra={"model_id": model_id, "error": str(exc)})
                self.save_failure = str(exc)
                return
            finally:
                self._saves_running -= 1
            live.saved = position
        if self.save_failure is not None:
            log.info("vector indexes are saved again")
            self.save_failure = None
        try:
            await self._catalog.write(partial(_prune_journal, model_id=model_id, up_to=position))
        except DiskFull:
            pass  # the saved index simply replays a few more entries next time

    async def _forget_unindexed(self) -> None:
        """Journal entries of models without an index are not needed (a build reads the catalog);
        saved indexes of models that no longer have any vector, and leftovers of interrupted
        saves, are deleted."""
        saved = await trio.to_thread.run_sync(self._saved_indexes, self._saves_running == 0)
        in_use = set(self._live) | set(self._opening)
        with_vectors = await self._catalog.write(partial(_prune_unindexed, keep=sorted(in_use | set(saved))))
        for model_id, folder in saved.items():
            if model_id not in with_vectors and model_id not in in_use:
                log.info("deleting the vector index of a model without vectors", extra={"model_id": model_id})
                await trio.to_thread.run_sync(partial(shutil.rmtree, folder, ignore_errors=True))

    def _saved_indexes(self, remove_leftovers: bool) -> dict[str, Path]:
        """model id -> folder of each saved index; optionally removes leftovers of saves that never finished."""
        found: dict[str, Path] = {}
        if not self._folder.exists():
            return found
        for folder in self._folder.iterdir():
            try:
                model_id = str(json.loads((folder / "meta.json").read_text())["model_id"])
            except (OSError, ValueError, KeyError):
                model_id = None
            if model_id is not None and folder == self._folder_of(model_id):
                found[model_id] = folder
            elif remove_leftovers and folder.is_dir() and not folder.name.endswith(".old"):
                shutil.rmtree(folder, ignore_errors=True)
        return found

    def _folder_of(self, model_id: str) -> Path:
        return self._folder / re.sub(r"[^A-Za-z0-9._-]", "_", model_id)


# --- catalog queries (run on a catalog connection, in a worker thread) ---


def _journal_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_changes'").fetchone()
    return int(row[0]) if row else 0


def _fill_index(conn: sqlite3.Connection, index: PrefixIndex) -> int:
    """Add every stored vector of the index's model (one snapshot); returns the journal position it reflects."""
    position = _journal_position(conn)
    ids: list[int] = []
    vectors: list[np.ndarray] = []
    rows = conn.execute("SELECT item_id, segment, vector FROM embeddings WHERE model_id = ?", (index.model_id,))
    for item_id, segment, blob in rows:
        ids.append(vector_id(item_id, segment))
        vectors.append(from_blob(blob))
        if len(ids) >= BUILD_BATCH:
            index.add(index.model_id, np.array(ids), np.stack(vectors))
            ids, vectors = [], []
    if ids:
        index.add(index.model_id, np.array(ids), np.stack(vectors))
    return position


def _changes_since(conn: sqlite3.Connection, model_id: str, after: int, verify: bool) -> _Changes:
    """Vectors changed after journal position ``after``, and the catalog's vector count when
    anything changed or ``verify`` asks for it (counting costs milliseconds per search at 100k)."""
    rows = conn.execute(
        "SELECT seq, item_id, segment FROM vector_changes WHERE model_id = ? AND seq > ? ORDER BY seq", (model_id, after)
    ).fetchall()
    touched = dict.fromkeys((item_id, segment) for _, item_id, segment in rows)
    present, gone = [], []
    for item_id, segment in touched:
        row = conn.execute(
            "SELECT vector FROM embeddings WHERE item_id = ? AND model_id = ? AND segment = ?", (item_id, model_id, segment)
        ).fetchone()
        if row is None:
            gone.append(vector_id(item_id, segment))
        else:
            present.append((vector_id(item_id, segment), from_blob(row[0])))
    count = store.vector_count(conn, model_id) if rows or verify else None
    return _Changes(max([after, *(seq for seq, _, _ in rows)]), present, gone, count)


def _prune_journal(conn: sqlite3.Connection, model_id: str, up_to: int) -> None:
    conn.execute("DELETE FROM vector_changes WHERE model_id = ? AND seq <= ?", (model_id, up_to))


def _prune_unindexed(conn: sqlite3.Connection, keep: list[str]) -> set[str]:
    """Drop journal entries of models not in ``keep``; return the model ids that still have vectors."""
    marks = ",".join("?" * len(keep))
    conn.execute(f"DELETE FROM vector_changes WHERE model_id NOT IN ({marks})", keep)
    rows = conn.execute("SELECT id FROM models WHERE EXISTS (SELECT 1 FROM embeddings WHERE model_id = models.id)")
    return {model_id for (model_id,) in rows}
