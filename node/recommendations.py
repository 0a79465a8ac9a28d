"""Recommendations: the preference model kept trained, and ranked lists of local and peers' items.

The model (:mod:`peerlight.recommender`) retrains in the background a moment after new
feedback (a burst of ratings costs one training), in a worker thread; each trained model is
stored as a new version in the catalog and the previous ones are kept, so a bad model can be
rolled back. Nothing here is ever given to the Data Servers: ratings never leave the machine.

Ranking 100,000 candidates stays fast by scoring in two stages. Every candidate's predicted
mean is one matrix product (over the vector index's full vectors for local items, over the
cached K-prefixes for peers' items, which the model was trained to score); only a shortlist
of the best means gets the rest: its uncertainty, novelty, de-duplication and diversity.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import trio

from peerlight.recommender import feedback as labels_of
from peerlight.recommender.model import Example, PreferenceModel, train
from peerlight.recommender.ranking import Candidates, RankingSettings, rank

from .catalog import feedback as store
from .catalog.database import Catalog
from .catalog.peer_examples import keep_rated_prefixes, labelled_hashes, labelled_vectors, space_dimensions
from .catalog.embeddings import MAX_SEGMENTS, vector_id
from .pathnames import decode_path, path_fields, readable
from .search.vector_indexes import VectorIndexes

log = logging.getLogger("peerlight.recommendations")

RETRAIN_DELAY_SECONDS = 0.5  # feedback arriving within this is trained on together
SHORTLIST = 2000  # candidates that get the full ranking
SEEN_KINDS = ("opened", "finished", "skipped", "watched")
SOURCES = ("all", "local", "peers")


@dataclass(frozen=True)
class RecommendRequest:
    limit: int = 20
    modalities: tuple[str, ...] = ()
    source: str = "all"
    explain: bool = False
    include_rated: bool = False
    ranking: RankingSettings = field(default_factory=RankingSettings)


@dataclass
class _RemoteSpace:
    """A peer-catalog cache of one space: every cached prefix, as rows."""

    key: tuple[int, int, int]  # the remote key (see _remote_key) when read: a sync changes it
    owners: list[tuple[str, str]]  # (peer id, content hash) per row
    prefixes: np.ndarray
    modalities: np.ndarray
    row_of_hash: dict[str, list[int]]


@dataclass
class _Shortlisted:
    space: str
    mean: float
    local_item: int | None = None  # item id, or None for a peer's item
    owner: tuple[str, str] | None = None  # (peer id, content hash)
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class RecommenderSettings:
    model: str = "bayesian"  # see recommender.model.MODELS
    retrain_delay_seconds: float = RETRAIN_DELAY_SECONDS
    ranking: RankingSettings = field(default_factory=RankingSettings)  # the defaults of `recommend`


class Recommendations:
    def __init__(self, catalog: Catalog, indexes: VectorIndexes, settings: RecommenderSettings = RecommenderSettings()) -> None:
        self._catalog = catalog
        self._indexes = indexes
        self.settings = settings
        self.model = PreferenceModel()
        self._wanted = trio.Event()
        self._training = trio.Lock()
        self._remote: dict[str, _RemoteSpace] = {}
        self._remote_checked = -1  # the catalog generation the remote key was read at
        self._remote_state = (0, 0, 0)
        self._unscored_cache: tuple[object, int] | None = None
        self._not_here: set[str] = set()  # labelled items with no vector of this node's own (peers' items)
        self.last_training_seconds: float | None = None
        self.trained: Callable[[], None] = lambda: None  # tests and status watch retraining through it

    # --- keeping the model trained ---

    def changed(self) -> None:
        """New feedback: retrain soon (many changes in a row cost one training)."""
        self._wanted.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        stored = await self._catalog.read(store.active_model)
        if stored is not None:
            self.model = PreferenceModel.from_bytes(stored[1], stored[0])
        labelled = await self._catalog.read(lambda conn: conn.execute("SELECT MAX(at) FROM feedback_events").fetchone()[0])
        if labelled is not None and labelled > self.model.trained_at:
            self._wanted.set()  # feedback came in while the daemon was not running
        self._not_here = await self._catalog.read(_labelled_not_here)
        task_status.started()
        while True:
            await self._wanted.wait()
            await trio.sleep(self.settings.retrain_delay_seconds)
            self._wanted = trio.Event()
            await self.retrain()

    async def retrain(self) -> dict[str, Any]:
        """Train on all feedback now and make the result the active version."""
        async with self._training:
            started = time.perf_counter()
            # A peer's item rated before its share's catalog arrived, or just before it goes away.
            await self._catalog.write_when_space(keep_rated_prefixes)
            by_space, dimensions = await self._catalog.read(_training_set)
            self._not_here = await self._catalog.read(_labelled_not_here)
            model = await trio.to_thread.run_sync(partial(train, by_space, dimensions, kind=self.settings.model), abandon_on_cancel=True)
            data = model.to_bytes()
            model.version = await self._catalog.write(
                partial(store.store_model, data=data, examples=model.examples, info=json.dumps(model.describe()))
            )
            self.model = model
            self.last_training_seconds = time.perf_counter() - started
            log.info("preference model trained", extra={"version": model.version, "examples": model.examples, "seconds": round(self.last_training_seconds, 3)})
            self.trained()
            return self.describe()

    async def roll_back(self) -> dict[str, Any]:
        async with self._training:
            version = await self._catalog.write(store.roll_back)
            stored = await self._catalog.read(store.active_model)
            assert stored is not None and stored[0] == version
            self.model = PreferenceModel.from_bytes(stored[1], version)
            return self.describe()

    async def embedded(self, item_ids: list[int]) -> None:
        """Items just got vectors here. One the user gave feedback on as a peer's item (known by a
        K-prefix, or not at all), fetched since, now teaches by its whole vector: retrain soon."""
        if self._not_here and set((await self._catalog.read(partial(_hashes_of_items, item_ids=item_ids))).values()) & self._not_here:
            self.changed()

    def describe(self) -> dict[str, Any]:
        return self.model.describe() | {
            "last_training_seconds": None if self.last_training_seconds is None else round(self.last_training_seconds, 3)
        }

    async def status(self) -> dict[str, Any]:
        return self.describe() | {"versions": await self._catalog.read(store.model_versions)}

    # --- ranking ---

    async def recommend(self, request: RecommendRequest) -> dict[str, Any]:
        started = time.perf_counter()
        model = self.model
        dimensions = await self._catalog.read(space_dimensions)
        rated = {key: rating for key, rating, _, _ in await self._catalog.read(store.ratings)}
        excluded = set(rated) if not request.include_rated else {k for k, r in rated.items() if r <= labels_of.DISLIKE_RATING}
        spaces, local_spaces = await self._catalog.read(_spaces_with_vectors)
        # A space only peers' items are in is ranked once the user's feedback has given it a head:
        # before that its items would all score the bias alone (they are counted as unscored).
        spaces = [space for space in spaces if space in dimensions and (space in local_spaces or space in model.heads)]
        banned: set[int] = set()
        if request.source in ("all", "local"):
            banned = await self._catalog.read(partial(_rated_item_ids, disliked_only=request.include_rated))
        pool: list[_Shortlisted] = []
        unscored = 0
        for space in spaces:
            dimension = dimensions[space]
            if request.source in ("all", "local") and space in local_spaces:
                pool += await self._local_means(model, space, dimension, request, banned)
            if request.source in ("all", "peers"):
                pool += await self._remote_means(model, space, dimension, request, excluded)
        if request.source in ("all", "peers"):
            unscored = await self._unscored(spaces)
        pool.sort(key=lambda c: c.mean, reverse=True)
        shortlist = await self._complete(pool[: _shortlist_size(request.limit)], dimensions)
        if not shortlist:
            return {"results": [], "model": model.describe(), "unscored_peer_items": unscored, "took_ms": _ms(started)}
        means, spreads = np.zeros(len(shortlist)), np.zeros(len(shortlist))
        groups: dict[tuple[str, int], list[int]] = {}  # a space's full vectors and peers' prefixes apart
        for i, c in enumerate(shortlist):
            groups.setdefault((c.space, len(c.vector)), []).append(i)  # type: ignore[arg-type]
        for (space, _), rows in groups.items():
            mean, spread = await trio.to_thread.run_sync(model.predict, space, np.stack([shortlist[i].vector for i in rows]))
            means[rows], spreads[rows] = mean, spread
        hashes = [c.owner[1] for c in shortlist]  # type: ignore[index]
        seen = await self._catalog.read(partial(store.last_seen, hashes=hashes, kinds=SEEN_KINDS))
        now = time.time()
        space_numbers = {space: n for n, space in enumerate(sorted({c.space for c in shortlist}))}
        candidates = Candidates(
            predicted=means,
            spread=spreads,
            seen_days_ago=np.array([(now - seen[h]) / 86400 if h in seen else math.inf for h in hashes]),
            spaces=np.array([space_numbers[c.space] for c in shortlist]),
            vectors=[c.vector for c in shortlist],  # type: ignore[misc]
        )
        order = rank(candidates, request.limit, request.ranking)
        results = await self._catalog.read(partial(_present, chosen=[shortlist[i] for i in order]))
        for result, i in zip(results, order):
            result |= {
                "predicted": round(float(means[i]), 3),
                "uncertainty": round(float(spreads[i]), 3),
                "last_seen": seen.get(hashes[i]),
            }
            if request.explain:
                drivers = model.explain(shortlist[i].space, shortlist[i].vector)  # type: ignore[arg-type]
                names = await self._catalog.read(lambda conn, keys=[k for k, _ in drivers]: {k: store.describe_hash(conn, k) for k in keys})
                result["because"] = [
                    {"content_hash": key, "name": names[key], "rating": rated.get(key), "moved": round(moved, 3)} for key, moved in drivers
                ]
        return {"results": results, "model": model.describe(), "unscored_peer_items": unscored, "took_ms": _ms(started)}

    async def _local_means(
        self, model: PreferenceModel, space: str, dimension: int, request: RecommendRequest, banned: set[int]
    ) -> list[_Shortlisted]:
        """The best head means among this space's local items, less the ``banned`` (rated) ones."""
        index = await self._indexes.index(space, dimension)
        if not len(index):
            return []
        ids, prefixes = await trio.to_thread.run_sync(index.leading_prefixes, MAX_SEGMENTS)
        means = await trio.to_thread.run_sync(model.mean, space, prefixes)
        items = ids // MAX_SEGMENTS
        keep = np.ones(len(items), dtype=bool)
        if banned:
            keep &= ~np.isin(items, np.fromiter(banned, dtype=np.int64))
        if request.modalities:
            allowed = await self._catalog.read(partial(_items_of_kinds, modalities=request.modalities))
            keep &= np.isin(items, np.fromiter(allowed, dtype=np.int64))
        return [_Shortlisted(space, float(means[i]), local_item=int(items[i])) for i in _best(means, keep, request.limit)]

    async def _remote_means(
        self, model: PreferenceModel, space: str, dimension: int, request: RecommendRequest, excluded: set[str]
    ) -> list[_Shortlisted]:
        cached = await self._remote_space(space)
        if cached is None:
            return []
        means = await trio.to_thread.run_sync(model.mean, space, cached.prefixes)
        keep = np.ones(len(means), dtype=bool)
        for key in excluded:
            keep[cached.row_of_hash.get(key, [])] = False
        if request.modalities:
            keep &= np.isin(cached.modalities, list(request.modalities))
        return [_Shortlisted(space, float(means[i]), owner=cached.owners[i], vector=cached.prefixes[i]) for i in _best(means, keep, request.limit)]

    async def _remote_key(self) -> tuple[int, int, int]:
        """What identifies the cached peers' catalogs: (prefixes, newest prefix row, items). Read
        again only after a write (any write: the catalog counts them, not what they touched)."""
        if self._remote_checked != self._catalog.generation:
            self._remote_checked = self._catalog.generation
            self._remote_state = await self._catalog.read(_remote_key)
        return self._remote_state

    async def _remote_space(self, space: str) -> _RemoteSpace | None:
        key = await self._remote_key()
        if key[0] == 0:
            self._remote.clear()
            return None
        cached = self._remote.get(space)
        if cached is None or cached.key != key:
            cached = await self._catalog.read(partial(_read_remote_space, space=space, key=key))
            self._remote[space] = cached
        return cached if len(cached.owners) else None

    async def _unscored(self, spaces: list[str]) -> int:
        key = (await self._remote_key(), tuple(spaces))
        if self._unscored_cache is None or self._unscored_cache[0] != key:
            self._unscored_cache = (key, await self._catalog.read(partial(_unscorable, spaces=spaces)))
        return self._unscored_cache[1]

    async def _complete(self, shortlist: list[_Shortlisted], dimensions: dict[str, int]) -> list[_Shortlisted]:
        """Give local candidates their full vectors and content hashes; drop peers' items that are
        already here, and the copies of an item that several peers share."""
        local_ids = [c.local_item for c in shortlist if c.local_item is not None]
        hashes = await self._catalog.read(partial(_hashes_of_items, item_ids=local_ids))
        remote_hashes = sorted({c.owner[1] for c in shortlist if c.owner is not None})
        here = await self._catalog.read(partial(_held_hashes, hashes=remote_hashes))
        by_space: dict[str, list[_Shortlisted]] = {}
        kept, taken = [], set()
        for c in shortlist:
            if c.local_item is not None:
                if c.local_item not in hashes:
                    continue
                c.owner = ("", hashes[c.local_item])
                by_space.setdefault(c.space, []).append(c)
            elif c.owner is None or c.owner[1] in here:
                continue
            if c.owner[1] in taken:
                continue
            taken.add(c.owner[1])
            kept.append(c)
        for space, group in by_space.items():
            index = await self._indexes.index(space, dimensions[space])
            vectors = await trio.to_thread.run_sync(index.vectors, np.array([vector_id(c.local_item, 0) for c in group]))  # type: ignore[arg-type]
            for c, vector in zip(group, vectors):
                c.vector = vector
        return [c for c in kept if c.vector is not None]


def _shortlist_size(limit: int) -> int:
    return max(SHORTLIST, limit * 20)


def _best(means: np.ndarray, keep: np.ndarray, limit: int) -> np.ndarray:
    """The rows kept with the highest means, at most a shortlist's worth (unordered)."""
    rows = np.flatnonzero(keep)
    size = _shortlist_size(limit)
    if len(rows) <= size:
        return rows
    return rows[np.argpartition(-means[rows], size - 1)[:size]]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# --- catalog reads (run in the catalog's reader threads) ---


def _training_set(conn) -> tuple[dict[str, list[Example]], dict[str, int]]:  # type: ignore[no-untyped-def]
    ratings = [(key, rating) for key, rating, _, _ in store.ratings(conn)]
    events = store.implicit_events(conn, labels_of.EVENT_KINDS)
    labelled = labels_of.labels(ratings, events)
    vectors = labelled_vectors(conn, sorted(labelled))
    dimensions = space_dimensions(conn)
    by_space: dict[str, list[Example]] = {}
    for key, label in labelled.items():
        for space, vector in vectors.get(key, []):
            if space in dimensions:
                by_space.setdefault(space, []).append(Example(key, vector, label.target, label.weight))
    return by_space, dimensions


def _labelled_not_here(conn) -> set[str]:  # type: ignore[no-untyped-def]
    """Labelled items with no whole-item vector here: peers' items, known by a prefix or not yet."""
    labelled = sorted(labelled_hashes(conn))
    here: set[str] = set()
    for start in range(0, len(labelled), 500):
        batch = labelled[start : start + 500]
        here |= {
            h
            for (h,) in conn.execute(
                f"""SELECT i.content_hash FROM items AS i WHERE i.content_hash IN ({",".join("?" * len(batch))})
                    AND EXISTS (SELECT 1 FROM embeddings AS e WHERE e.item_id = i.id AND e.segment = 0)""",
                batch,
            )
        }
    return set(labelled) - here


def _spaces_with_vectors(conn) -> tuple[list[str], set[str]]:  # type: ignore[no-untyped-def]
    """The spaces with items to rank (this node's, or peers' cached), and those with local items."""
    local = {m for (m,) in conn.execute("SELECT id FROM models WHERE EXISTS (SELECT 1 FROM embeddings WHERE model_id = models.id)")}
    remote = {m for (m,) in conn.execute("SELECT DISTINCT model_id FROM remote_vectors")}
    return sorted(local | remote), local


def _unscorable(conn, spaces: list[str]) -> int:  # type: ignore[no-untyped-def]
    """Peers' items with no vector in any space this node has (another model, no model)."""
    marks = ",".join("?" * len(spaces)) or "''"
    return conn.execute(
        f"SELECT COUNT(*) FROM remote_items AS r WHERE NOT EXISTS (SELECT 1 FROM remote_vectors AS v WHERE v.peer_id = r.peer_id AND v.content_hash = r.content_hash AND v.model_id IN ({marks}))",
        spaces,
    ).fetchone()[0]


def _remote_key(conn) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    vectors, newest = conn.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM remote_vectors").fetchone()
    return vectors, newest, conn.execute("SELECT COUNT(*) FROM remote_items").fetchone()[0]


def _read_remote_space(conn, space: str, key: tuple[int, int, int]) -> _RemoteSpace:  # type: ignore[no-untyped-def]
    rows = conn.execute(
        """SELECT v.peer_id, v.content_hash, v.prefix, r.modality FROM remote_vectors AS v
           JOIN remote_items AS r ON r.peer_id = v.peer_id AND r.content_hash = v.content_hash WHERE v.model_id = ?""",
        (space,),
    ).fetchall()
    width = min((len(r[2]) for r in rows), default=0) // 2
    prefixes = np.frombuffer(b"".join(r[2][: 2 * width] for r in rows), dtype="<f2").reshape(len(rows), width).astype(np.float32)
    row_of_hash: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        row_of_hash.setdefault(r[1], []).append(i)
    return _RemoteSpace(key, [(r[0], r[1]) for r in rows], prefixes, np.array([r[3] for r in rows]), row_of_hash)


def _rated_item_ids(conn, disliked_only: bool) -> set[int]:  # type: ignore[no-untyped-def]
    """Local items not to recommend: the rated ones (or only the disliked)."""
    limit = labels_of.DISLIKE_RATING if disliked_only else 10.0
    return {i for (i,) in conn.execute("SELECT i.id FROM items AS i JOIN ratings AS r ON r.content_hash = i.content_hash WHERE r.rating <= ?", (limit,))}


def _items_of_kinds(conn, modalities: tuple[str, ...]) -> set[int]:  # type: ignore[no-untyped-def]
    marks = ",".join("?" * len(modalities))
    return {i for (i,) in conn.execute(f"SELECT id FROM items WHERE modality IN ({marks}) AND missing_since IS NULL", modalities)}


def _hashes_of_items(conn, item_ids: list[int]) -> dict[int, str]:  # type: ignore[no-untyped-def]
    found: dict[int, str] = {}
    for start in range(0, len(item_ids), 500):
        batch = item_ids[start : start + 500]
        found |= dict(
            conn.execute(f"SELECT id, content_hash FROM items WHERE missing_since IS NULL AND id IN ({','.join('?' * len(batch))})", batch).fetchall()
        )
    return found


def _held_hashes(conn, hashes: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
    found: set[str] = set()
    for start in range(0, len(hashes), 500):
        batch = hashes[start : start + 500]
        found |= {h for (h,) in conn.execute(f"SELECT content_hash FROM items WHERE content_hash IN ({','.join('?' * len(batch))})", batch)}
    return found


def _present(conn, chosen: list[_Shortlisted]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    results = []
    for c in chosen:
        assert c.owner is not None
        if c.local_item is not None:
            modality, size = conn.execute("SELECT modality, size FROM items WHERE id = ?", (c.local_item,)).fetchone()
            (path,) = conn.execute("SELECT path FROM locations WHERE item_id = ? ORDER BY id LIMIT 1", (c.local_item,)).fetchone() or (None,)
            shown = path_fields(decode_path(path)) | {"name": os.path.basename(readable(decode_path(path)))} if path is not None else {"path": None, "name": c.owner[1][:12]}
            results.append({"source": "local", "content_hash": c.owner[1], "item_id": c.local_item, "modality": modality, "size": size, **shown})
        else:
            peer_id, content_hash = c.owner
            name, modality, size = conn.execute(
                "SELECT name, modality, size FROM remote_items WHERE peer_id = ? AND content_hash = ?", (peer_id, content_hash)
            ).fetchone()
            (share,) = conn.execute("SELECT name FROM remote_shares WHERE peer_id = ?", (peer_id,)).fetchone() or (None,)
            results.append({"source": "peer", "peer_id": peer_id, "share": share, "content_hash": content_hash, "name": name, "modality": modality, "size": size})
    return results
