"""Answering searches: semantic, full-text or hybrid, with filters, highlights and moments.

A text query is embedded by each available model whose space holds the requested kinds of
media — open_clip's text tower for images and videos, sentence-transformers for documents
(and audio tags), CLAP for audio — and each space is searched in its own persisted prefix
index (:mod:`.vector_indexes`: prefix shortlist, exact rerank). Rankings from different
spaces and from BM25 are merged by reciprocal rank fusion.
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

from ..catalog.database import Catalog
from ..catalog.items import document_text
from ..models import ModelManager, ModelUnavailable
from ..pathnames import decode_path, display, encode_path, path_fields, readable
from ..threads import IOTimeout
from .filters import MODALITIES, Filters, allowed_items
from .fulltext import fulltext_ranking
from .fusion import reciprocal_rank_fusion
from .hits import VectorHit, best_per_item
from .vector_indexes import VectorIndexes

log = logging.getLogger("peerlight.search")

# role -> the kinds of media its vector space holds
ROLE_MODALITIES = {"image": ("image", "video"), "text": ("text", "audio"), "audio": ("audio",)}
MODES = ("semantic", "text", "hybrid")
EXAMPLE_TIMEOUT_SECONDS = 120.0  # embedding a file given as an example (a stalled mount fails the request)
PASSAGES_PER_SEARCH = 10  # each passage costs an encoding of the chunk's sentences


class SearchError(Exception):
    """A search that cannot be answered as asked (e.g. no model can embed the query)."""


@dataclass(frozen=True)
class SearchRequest:
    query: str
    mode: str = "hybrid"
    limit: int = 20
    filters: Filters = field(default_factory=Filters)


@dataclass
class Ranking:
    """One list of candidates, best first, with what made each match."""

    items: list[int]
    hits: dict[int, VectorHit] = field(default_factory=dict)
    role: str | None = None
    query_vector: np.ndarray | None = None


class SearchEngine:
    def __init__(self, catalog: Catalog, models: ModelManager, indexes: VectorIndexes) -> None:
        self._catalog = catalog
        self._models = models
        self.indexes = indexes
        self.embed_example: Callable[[str], Awaitable[tuple[str, np.ndarray]]] | None = None

    # --- queries ---

    async def search(self, request: SearchRequest) -> dict[str, Any]:
        started = time.perf_counter()
        modalities = request.filters.modalities or MODALITIES
        fetch = max(request.limit * 10, 200)
        rankings: list[Ranking] = []
        warnings: list[str] = []
        if request.mode in ("semantic", "hybrid"):
            for role, held in ROLE_MODALITIES.items():
                wanted = tuple(m for m in held if m in modalities)
                if not wanted:
                    continue
                try:
                    rankings.append(await self._semantic(role, request.query, wanted, request.filters, fetch))
                except ModelUnavailable as exc:
                    if role != "audio":  # audio falls back to the text model's space
                        warnings.append(f"{role} model unavailable, its media are searched by text only: {exc}")
            if request.mode == "semantic" and not rankings:
                raise SearchError("no embedding model is available for a semantic search: " + "; ".join(warnings))
        if request.mode in ("text", "hybrid"):
            ids = await self._catalog.read(partial(fulltext_ranking, text=request.query, limit=fetch))
            allowed = await self._catalog.read(partial(allowed_items, item_ids=ids, filters=request.filters))
            rankings.append(Ranking([i for i in ids if i in allowed]))
        fused = reciprocal_rank_fusion([r.items for r in rankings])[: request.limit]
        results = await self._results(fused, rankings)
        return {
            "query": request.query,
            "mode": request.mode,
            "results": results,
            "warnings": warnings,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def _semantic(self, role: str, query: str, modalities: tuple[str, ...], filters: Filters, fetch: int) -> Ranking:
        model = await self._models.get(role)
        vector = (await trio.to_thread.run_sync(model.encode_queries, [query], abandon_on_cancel=True))[0]
        hits = best_per_item(await self.indexes.search(model.model_id, model.dimension, vector, fetch * 4))
        restricted = dataclasses.replace(filters, modalities=modalities)
        allowed = await self._catalog.read(partial(allowed_items, item_ids=[h.item_id for h in hits], filters=restricted))
        kept = [h for h in hits if h.item_id in allowed][:fetch]
        return Ranking([h.item_id for h in kept], {h.item_id: h for h in kept}, role, vector)

    async def similar(self, path: str, limit: int, filters: Filters) -> dict[str, Any]:
        """Items like the file at ``path``, in its model's space; the file need not be indexed."""
        started = time.perf_counter()
        found = await self._catalog.read(partial(_item_vector_at, path=path))
        if found is not None:
            item_id, model_id, vector = found
        else:
            item_id = None
            model_id, vector = await self._vector_of_example(path)
        found_hits = await self.indexes.search(model_id, len(vector), vector, max(limit * 10, 200))
        hits = [h for h in best_per_item(found_hits) if h.item_id != item_id]
        allowed = await self._catalog.read(partial(allowed_items, item_ids=[h.item_id for h in hits], filters=filters))
        kept = [h for h in hits if h.item_id in allowed][:limit]
        ranking = Ranking([h.item_id for h in kept], {h.item_id: h for h in kept})
        results = await self._results([(h.item_id, h.score) for h in kept], [ranking])
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

    async def _results(self, fused: Sequence[tuple[int, float]], rankings: list[Ranking]) -> list[dict[str, Any]]:
        details = await self._catalog.read(partial(_item_details, item_ids=[item_id for item_id, _ in fused]))
        results = []
        passages_left = PASSAGES_PER_SEARCH
        for item_id, score in fused:
            if item_id not in details:
                continue
            result = details[item_id] | {"score": round(score, 6)}
            for ranking in rankings:
                hit = ranking.hits.get(item_id)
                if hit is None:
                    continue
                result["similarity"] = round(hit.score, 4)
                with_passage = passages_left > 0
                match = await self._match(result, hit, ranking, with_passage)
                passages_left -= bool(match and "passage" in match)
                if match:
                    result["match"] = match
                break
            results.append(result)
        return results

    async def _match(
        self, result: dict[str, Any], hit: VectorHit, ranking: Ranking, with_passage: bool
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
        if with_passage and result["modality"] == "text" and ranking.role == "text" and ranking.query_vector is not None:
            passage = await self._passage(hit.item_id, hit.segment, Span(int(start), int(end)), ranking.query_vector)
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


def _item_details(conn, item_ids: list[int]) -> dict[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    details: dict[int, dict[str, Any]] = {}
    for item_id in item_ids:
        row = conn.execute(
            """SELECT i.content_hash, i.modality, i.mime, i.size, i.embedding_state,
                      (SELECT path FROM locations WHERE item_id = i.id ORDER BY id LIMIT 1),
                      (SELECT rating FROM ratings WHERE content_hash = i.content_hash)
               FROM items AS i WHERE i.id = ? AND i.missing_since IS NULL""",
            (item_id,),
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
        "SELECT start, end, vector FROM embeddings WHERE item_id = ? AND start IS NOT NULL AND end IS NOT NULL", (item_id,)
    ):
        vector = from_blob(blob)
        if len(vector) != len(query_vector):
            continue
        score = float(vector @ query_vector)
        if score > best_score:
            best, best_score = Span(int(start), int(end)), score
    return best


def _item_vector_at(conn, path: str) -> tuple[int, str, np.ndarray] | None:  # type: ignore[no-untyped-def]
    row = conn.execute(
        """SELECT e.item_id, e.model_id, e.vector FROM locations AS l JOIN embeddings AS e ON e.item_id = l.item_id
           WHERE l.path = ? AND e.segment = 0 ORDER BY e.source = 'content' DESC LIMIT 1""",
        (encode_path(path),),
    ).fetchone()
    return (row[0], row[1], from_blob(row[2])) if row else None
