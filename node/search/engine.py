"""Answering searches: semantic, full-text or hybrid, with filters, highlights and moments.

Retrieval and presentation are separate steps. Retrieval finds items (by id and content
hash) with their scores and where they matched, within the caller's scope and the request's
filters — both applied *inside* the searches: in the full-text SQL, and as the allowed set
of the vector search (:mod:`.vector_indexes`), so a restrictive filter gets its true best
items. Results are per item (its best chunk or moment), never per vector. Presentation then
describes each item for its caller: paths and ratings for the local user only.

A text query is embedded by each available model whose space holds the requested kinds of
media — open_clip's text tower for images and videos, sentence-transformers for documents
(and audio tags), CLAP for audio. Within each space, hybrid search scores every candidate
(from either side) on both signals — its cosine and its text evidence, the share of the
query's informative words it matches (:mod:`.fulltext`) — as ``cosine + TEXT_WEIGHT * evidence``,
so a weak full-text match (one common word) cannot outrank a clear semantic winner. Spaces
are merged on z-scores: each score measured against the spread of the query's cosines over
its own space (CLIP's and MiniLM's cosines live on different scales), so the strongest
evidence wins, wherever it was found.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import trio

from peerlight.embeddings.chunking import Span, sentence_windows
from peerlight.embeddings.vectors import from_blob

from ..callers import Caller, Scope
from ..catalog.database import Catalog
from ..catalog.items import document_text, item_counts
from ..models import ModelManager, ModelUnavailable
from ..pathnames import decode_path, display, encode_path, path_fields, readable
from ..threads import IOTimeout
from .filters import MODALITIES, Filters, allowed_among, allowed_items, location_in_scope, where_clause
from .fulltext import ALL_COLUMNS, TextQuery, fulltext_ranking, plan_query, text_evidence
from .hits import VectorHit
from .vector_indexes import VectorIndexes

log = logging.getLogger("peerlight.search")

# role -> the kinds of media its vector space holds
ROLE_MODALITIES = {"image": ("image", "video"), "text": ("text", "audio"), "audio": ("audio",)}
MODES = ("semantic", "text", "hybrid")
TEXT_WEIGHT = 0.4  # hybrid: what matching all of a query's informative words adds to a cosine (tuned on docstrings)
UNEMBEDDED_MIN_EVIDENCE = 0.5  # hybrid: an item without vectors is listed on at least this much text evidence
TYPICAL_SPREAD = 0.1  # standard deviation of a query's cosines, for items no searched space holds
EXAMPLE_TIMEOUT_SECONDS = 120.0  # embedding a file given as an example (a stalled mount fails the request)
PASSAGES_PER_SEARCH = 10  # each passage costs an encoding of the chunk's sentences
PRIVATE_METADATA = ("gps_lat", "gps_lon")  # never shown to peers
PEER_COLUMNS = ("name", "metadata")  # what a peer's words may match (not this machine's paths)


class SearchError(Exception):
    """A search that cannot be answered as asked (e.g. no model can embed the query)."""


@dataclass(frozen=True)
class SearchRequest:
    query: str
    mode: str = "hybrid"
    limit: int = 20
    filters: Filters = field(default_factory=Filters)


@dataclass
class Hit:
    """An item retrieval found: why and how well, before it is described to anyone."""

    item_id: int
    score: float  # what it was ranked by
    vector: VectorHit | None = None  # its best vector in the space that matched
    role: str | None = None
    evidence: float | None = None  # full-text evidence, 0 to 1


@dataclass
class Retrieved:
    hits: list[Hit]
    warnings: list[str]
    query_vectors: dict[str, np.ndarray]  # role -> the query's vector in that space


@dataclass
class QueryVectors:
    """A text query embedded once, in every form a search with peers needs."""

    # model id -> (vector, mean, spread): the mean and standard deviation of the query's cosine
    # over this node's items of that model (None when it has none), to turn a peer's cosines
    # into z-scores comparable with local results (as :meth:`SearchEngine.retrieve` does across spaces)
    by_model: dict[str, tuple[np.ndarray, float | None, float | None]]
    # base model id -> the base encoder's vector, before any ordering adapter: a peer's adapter
    # for the same base model brings it into the peer's space
    bases: dict[str, np.ndarray]
    by_role: dict[str, np.ndarray]  # role -> the vector local search uses


class SearchEngine:
    def __init__(self, catalog: Catalog, models: ModelManager, indexes: VectorIndexes) -> None:
        self._catalog = catalog
        self._models = models
        self.indexes = indexes
        self.embed_example: Callable[[str], Awaitable[tuple[str, np.ndarray]]] | None = None

    # --- queries ---

    async def search(self, request: SearchRequest, caller: Caller, embedded: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """``embedded``: the query's vector per role, where the caller has them already (a search
        with peers embeds the query once for both)."""
        started = time.perf_counter()
        found = await self.retrieve(request, caller, embedded)
        results = await self.present(found.hits[: request.limit], caller, found.query_vectors)
        return {
            "query": request.query,
            "mode": request.mode,
            "results": results,
            "warnings": found.warnings,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def retrieve(self, request: SearchRequest, caller: Caller, embedded: dict[str, np.ndarray] | None = None) -> Retrieved:
        """The best items for ``request`` within the caller's scope, ranked (more than ``limit`` of them).

        A peer's words match names and metadata only: the words of this machine's folder names
        are not for it to probe.
        """
        scope = caller.scope
        modalities = request.filters.modalities or MODALITIES
        fetch = max(request.limit * 10, 200)
        found = Retrieved([], [], {})
        text_query = TextQuery()
        text_hits: dict[int, float] = {}
        if request.mode in ("text", "hybrid"):
            columns = ALL_COLUMNS if caller.is_local else PEER_COLUMNS
            # A caller with a scope weighs words by what it may see: idf over every item would tell
            # how many items outside its scope hold a word.
            seen = None if scope.is_everything else where_clause(Filters(), scope)
            text_query = await self._catalog.read(partial(plan_query, text=request.query, columns=columns, visible=seen))
            where, args = (None, []) if request.filters.is_empty() and scope.is_everything else where_clause(request.filters, scope)
            ranked = await self._catalog.read(partial(fulltext_ranking, query=text_query, limit=fetch, where=where, args=args))
            text_hits = dict(ranked)
            if request.mode == "text":
                found.hits = [Hit(item_id, evidence, evidence=evidence) for item_id, evidence in ranked]
                return found
        ranked: list[Hit] = []
        spreads: list[float] = []
        present_kinds = {kind for kind, n in (await self._catalog.read(item_counts))["by_modality"].items() if n}
        for role, held in ROLE_MODALITIES.items():
            wanted = tuple(m for m in held if m in modalities)
            if not wanted:
                continue
            try:
                model = await self._models.get(role)
            except ModelUnavailable as exc:
                if role != "audio":  # audio falls back to the text model's space
                    found.warnings.append(f"{role} model unavailable, its media are searched by text only: {exc}")
                continue
            vector = (embedded or {}).get(role)
            if vector is None:
                vector = (await trio.to_thread.run_sync(model.encode_queries, [request.query], abandon_on_cancel=True))[0]
            found.query_vectors[role] = vector
            restricted = dataclasses.replace(request.filters, modalities=wanted)
            # Restricting costs a pass over the allowed items: skip it when it could exclude nothing
            # (the only restriction is the kind, and no item of the other kinds this space holds exists).
            unrestricted = (
                dataclasses.replace(request.filters, modalities=()).is_empty()
                and scope.is_everything
                and not (set(held) - set(wanted)) & present_kinds
            )
            allowed = None if unrestricted else await self._catalog.read(partial(allowed_items, filters=restricted, scope=scope))
            hits = await self.indexes.search(model.model_id, model.dimension, vector, fetch, allowed)
            by_item = {hit.item_id: hit for hit in hits}
            if text_hits:
                # Candidates found by their words alone are scored on their vectors too.
                others = [item_id for item_id in text_hits if item_id not in by_item]
                if others:
                    others = sorted(await self._catalog.read(partial(allowed_among, item_ids=others, filters=restricted, scope=scope)))
                    for hit in await self.indexes.search(model.model_id, model.dimension, vector, len(others), others, exact=True):
                        by_item[hit.item_id] = hit
                missing = [item_id for item_id in by_item if item_id not in text_hits]
                evidence = text_hits | await self._catalog.read(partial(text_evidence, query=text_query, item_ids=missing))
            else:
                evidence = {}
            mean, spread = await self.indexes.spread(model.model_id, model.dimension, vector)
            spread = max(spread, 1e-3)
            spreads.append(spread)
            for item_id, hit in by_item.items():
                score = (hit.score + TEXT_WEIGHT * evidence.get(item_id, 0.0) - mean) / spread
                ranked.append(Hit(item_id, score, hit, role, evidence.get(item_id)))
        if request.mode == "semantic" and not spreads:
            raise SearchError("no embedding model is available for a semantic search: " + "; ".join(found.warnings))
        # Items found by their words that no searched space holds (not embedded yet, or no model):
        # listed only on strong evidence, so that one common word cannot bring them up.
        embedded = {hit.item_id for hit in ranked}
        spread = float(np.median(spreads)) if spreads else TYPICAL_SPREAD
        ranked += [
            Hit(item_id, TEXT_WEIGHT * evidence / spread, evidence=evidence)
            for item_id, evidence in text_hits.items()
            if item_id not in embedded and evidence >= UNEMBEDDED_MIN_EVIDENCE
        ]
        found.hits = _best_first(ranked)
        return found

    async def query_vectors(self, query: str) -> QueryVectors:
        """The query embedded by every available model that embeds text queries (see :class:`QueryVectors`)."""
        vectors: dict[str, tuple[np.ndarray, float | None, float | None]] = {}
        bases: dict[str, np.ndarray] = {}
        by_role: dict[str, np.ndarray] = {}
        for role in ROLE_MODALITIES:
            try:
                model = await self._models.get(role)
            except ModelUnavailable:
                continue
            base = getattr(model, "base", None)
            if base is not None:
                base_vector = (await trio.to_thread.run_sync(base.encode_queries, [query], abandon_on_cancel=True))[0]
                bases[base.model_id] = base_vector
                vector = model.adapter.apply(base_vector.reshape(1, -1))[0]
            else:
                vector = (await trio.to_thread.run_sync(model.encode_queries, [query], abandon_on_cancel=True))[0]
                bases[model.model_id] = vector
            by_role[role] = vector
            if not len(await self.indexes.index(model.model_id, model.dimension)):
                vectors[model.model_id] = (vector, None, None)
                continue
            mean, spread = await self.indexes.spread(model.model_id, model.dimension, vector)
            vectors[model.model_id] = (vector, mean, max(spread, 1e-3))
        return QueryVectors(vectors, bases, by_role)

    async def search_vector(self, model_id: str, vector: np.ndarray, limit: int, filters: Filters, caller: Caller) -> list[dict[str, Any]]:
        """Items nearest to ``vector`` in ``model_id``'s space, which may be a K-prefix (a peer's query)."""
        scoped = not filters.is_empty() or not caller.scope.is_everything
        # One trip to a reader thread for both: each trip costs a peer's query ~0.3 ms.
        dimension, allowed = await self._catalog.read(
            partial(_dimension_and_allowed, model_id=model_id, filters=filters, scope=caller.scope if scoped else None)
        )
        if dimension is None:
            raise SearchError(f"no vectors of model {model_id!r} here")
        if len(vector) > dimension:
            raise SearchError(f"model {model_id!r} has {dimension} dimensions, the query {len(vector)}")
        vector_hits = await self.indexes.search(model_id, dimension, vector, limit, allowed)
        return await self.present([Hit(h.item_id, h.score, h) for h in vector_hits], caller, {})

    async def similar(self, path: str, limit: int, filters: Filters, caller: Caller) -> dict[str, Any]:
        """Items like the file at ``path``, in its model's space; the file need not be indexed."""
        started = time.perf_counter()
        found = await self._catalog.read(partial(_item_vector_at, path=path))
        if found is not None:
            item_id, model_id, vector = found
        else:
            item_id = None
            model_id, vector = await self._vector_of_example(path)
        allowed = None
        if not filters.is_empty() or not caller.scope.is_everything:
            allowed = await self._catalog.read(partial(allowed_items, filters=filters, scope=caller.scope))
        vector_hits = await self.indexes.search(model_id, len(vector), vector, limit + 1, allowed)
        hits = [Hit(h.item_id, h.score, h) for h in vector_hits if h.item_id != item_id][:limit]
        results = await self.present(hits, caller, {})
        return {**path_fields(path), "results": results, "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def _vector_of_example(self, path: str) -> tuple[str, np.ndarray]:
        from peerlight.embeddings.errors import DecodeError

        if self.embed_example is None:
            raise SearchError(f"{display(path)} is not indexed")
        shown = display(path)
        try:
            with trio.move_on_after(EXAMPLE_TIMEOUT_SECONDS):
                return await self.embed_example(path)
        except IOTimeout:
            raise
        except FileNotFoundError:
            raise SearchError(f"{shown} does not exist") from None
        except (DecodeError, OSError) as exc:
            raise SearchError(f"{shown} cannot be used as an example: {exc}") from None
        except ModelUnavailable as exc:
            raise SearchError(f"no model can embed {shown}: {exc}") from None
        raise IOTimeout(f"embedding {shown} took longer than {EXAMPLE_TIMEOUT_SECONDS:g} s")

    # --- presentation ---

    async def present(self, hits: Sequence[Hit], caller: Caller, query_vectors: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Describe found items for ``caller``: local paths and ratings for the local user only."""
        details = await self._catalog.read(partial(_item_details, item_ids=[hit.item_id for hit in hits], scope=caller.scope))
        results = []
        passages_left = PASSAGES_PER_SEARCH
        for hit in hits:
            item = details.get(hit.item_id)
            if item is None:
                continue  # gone since it was found
            result = item | {"score": round(hit.score, 6)}
            if hit.evidence is not None:
                result["text_evidence"] = round(hit.evidence, 4)
            if hit.vector is not None:
                result["similarity"] = round(hit.vector.score, 4)
                match = await self._match(result, hit.vector, hit.role, query_vectors.get(hit.role or ""), passages_left > 0)
                if match:
                    passages_left -= "passage" in match
                    result["match"] = match
            results.append(result if caller.is_local else _for_peer(result))
        return results

    async def _match(
        self, result: dict[str, Any], hit: VectorHit, role: str | None, query_vector: np.ndarray | None, with_passage: bool
    ) -> dict[str, Any] | None:
        """Where in the item the query matched: a video moment, or a document's passage."""
        if hit.segment == 0 and result["modality"] != "text":
            return None
        span = await self._catalog.read(partial(_segment_span, item_id=hit.item_id, segment=hit.segment))
        if span is None:
            return None
        start, end = span
        if result["modality"] == "video":
            return {"segment": hit.segment, "start": start, "end": end}
        if with_passage and result["modality"] == "text" and role == "text" and query_vector is not None:
            passage = await self._passage(hit.item_id, hit.segment, Span(int(start), int(end)), query_vector)
            if passage:
                return {"segment": hit.segment, "chunk_start": int(start), "chunk_end": int(end), **passage}
        return None

    async def _passage(self, item_id: int, segment: int, chunk: Span, query_vector: np.ndarray) -> dict[str, Any] | None:
        text = await self._catalog.read(partial(document_text, item_id=item_id))
        if not text:
            return None
        if segment == 0:
            # A one-chunk document, or a match on the whole: use its best chunk.
            chunk = await self._catalog.read(partial(_best_chunk, item_id=item_id, query_vector=query_vector)) or chunk
        windows = sentence_windows(text, chunk)
        model = await self._models.get("text")
        vectors = await trio.to_thread.run_sync(model.encode, [text[w.start : w.end] for w in windows], abandon_on_cancel=True)
        best = windows[int(np.argmax(vectors @ query_vector))]
        return {"passage": text[best.start : best.end].strip(), "start": best.start, "end": best.end}


def _item_details(conn, item_ids: list[int], scope: Scope) -> dict[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """What the catalog holds about each item; its file is one the scope lets the caller see."""
    visible, visible_args = location_in_scope(scope)
    details: dict[int, dict[str, Any]] = {}
    for item_id in item_ids:
        row = conn.execute(
            f"""SELECT i.content_hash, i.modality, i.mime, i.size, i.embedding_state,
                       (SELECT path FROM locations WHERE item_id = i.id AND {visible} ORDER BY id LIMIT 1),
                       (SELECT rating FROM ratings WHERE content_hash = i.content_hash)
                FROM items AS i WHERE i.id = ? AND i.missing_since IS NULL""",
            (*visible_args, item_id),
        ).fetchone()
        if row is None or row[5] is None:
            continue
        content_hash, modality, mime, size, state, stored_path, rating = row
        path = decode_path(stored_path)
        metadata = dict(conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)).fetchall())
        details[item_id] = {
            "item_id": item_id,
            "content_hash": content_hash,
            **path_fields(path),
            "name": readable(path.rsplit("/", 1)[-1]),
            "modality": modality,
            "mime": mime,
            "size": size,
            "embedding": state,
            "rating": rating,
            "metadata": metadata,
        }
    return details


def _segment_span(conn, item_id: int, segment: int) -> tuple[float, float] | None:  # type: ignore[no-untyped-def]
    row = conn.execute(
        "SELECT start, end FROM embeddings WHERE item_id = ? AND segment = ? AND start IS NOT NULL LIMIT 1",
        (item_id, segment),
    ).fetchone()
    return (row[0], row[1]) if row else None


def _best_chunk(conn, item_id: int, query_vector: np.ndarray) -> Span | None:  # type: ignore[no-untyped-def]
    best, best_score = None, -np.inf
    for start, end, blob in conn.execute(
        # Chunks only: segment 0 spans the whole document, whose every sentence would then be encoded.
        "SELECT start, end, vector FROM embeddings WHERE item_id = ? AND segment > 0 AND start IS NOT NULL AND end IS NOT NULL",
        (item_id,),
    ):
        vector = from_blob(blob)
        if len(vector) != len(query_vector):
            continue
        score = float(vector @ query_vector)
        if score > best_score:
            best, best_score = Span(int(start), int(end)), score
    return best


def _dimension_and_allowed(conn, model_id: str, filters: Filters, scope: Scope | None) -> tuple[int | None, list[int] | None]:  # type: ignore[no-untyped-def]
    """The model's dimension, and the items the filters and scope allow (None: no restriction)."""
    dimension = _model_dimension(conn, model_id)
    if dimension is None or scope is None:
        return dimension, None
    return dimension, allowed_items(conn, filters=filters, scope=scope)


def _model_dimension(conn, model_id: str) -> int | None:  # type: ignore[no-untyped-def]
    row = conn.execute("SELECT dimension FROM models WHERE id = ?", (model_id,)).fetchone()
    return row[0] if row else None


def _item_vector_at(conn, path: str) -> tuple[int, str, np.ndarray] | None:  # type: ignore[no-untyped-def]
    row = conn.execute(
        """SELECT e.item_id, e.model_id, e.vector FROM locations AS l JOIN embeddings AS e ON e.item_id = l.item_id
           WHERE l.path = ? AND e.segment = 0 ORDER BY e.source = 'content' DESC LIMIT 1""",
        (encode_path(path),),
    ).fetchone()
    return (row[0], row[1], from_blob(row[2])) if row else None


def _best_first(hits: list[Hit]) -> list[Hit]:
    """Hits by score, each item once (an audio file may match in two spaces: its best counts)."""
    best: dict[int, Hit] = {}
    for hit in hits:
        if hit.item_id not in best or hit.score > best[hit.item_id].score:
            best[hit.item_id] = hit
    return sorted(best.values(), key=lambda hit: -hit.score)


def _for_peer(result: dict[str, Any]) -> dict[str, Any]:
    """What a peer may see of a result: no local path or item id, no rating, no private metadata."""
    hidden = {"item_id", "path", "path_bytes", "rating", "embedding"}
    shown = {key: value for key, value in result.items() if key not in hidden}
    shown["metadata"] = {k: v for k, v in result["metadata"].items() if k not in PRIVATE_METADATA}
    return shown
