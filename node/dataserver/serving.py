"""What a Data Server answers: the handlers of its protocols, for one share.

Every handler sees the requesting peer as a :class:`~peerlight.node.callers.Caller` whose
scope is the share, and goes through the same request path as the local API: the search
engine applies the scope inside retrieval and presents results without this machine's
paths, ratings or private metadata. Any field a peer sends is checked here before use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import blake3
import numpy as np
import trio

from peerlight.embeddings.errors import DecodeError
from peerlight.embeddings.prefix_index import prefix_of
from peerlight.embeddings.vectors import from_blob
from peerlight.p2p.errors import Changed, Forbidden, Malformed, NotFound, Unavailable
from peerlight.p2p.server import Protocol, Request, require

from ..callers import Caller, Scope
from ..catalog.database import Catalog
from ..catalog.shares import Share
from ..decoders import DecoderPool
from ..files import FileChanged, IndexedFile, check_unchanged, open_indexed
from ..pathnames import decode_path, readable
from ..search.engine import MODES, PRIVATE_METADATA, SearchEngine, SearchError, SearchRequest
from ..search.filters import MODALITIES, Filters, location_in_scope, parse_date, where_clause
from ..catalog.items import document_text
from ..threads import IOTimeout, run_io
from .adapters import AdapterFiles
from .previews import media_preview, text_preview
from . import protocol_ids as ids

log = logging.getLogger("peerlight.dataserver")

CAPABILITIES = ("manifest", "query.text", "query.vector", "fetch.range", "catalog", "preview", "adapter")
PREVIEW_SECONDS = 30.0  # a preview that takes longer to make (a huge or hostile file) is refused


class ShareService:
    """The protocols of one share, answered from this node's catalog and search engine."""

    def __init__(
        self,
        share: Share,
        catalog: Catalog,
        engine: SearchEngine,
        adapters: AdapterFiles | None = None,
        on_changed: Callable[[int, str], None] = lambda library_id, path: None,
        decoders: DecoderPool | None = None,
    ) -> None:
        self._decoders = decoders  # previews decoded in worker processes (None: in this process)
        # No node name here: a share must not tell which node (or which other shares) it belongs to.
        self.share = share
        self._catalog = catalog
        self._engine = engine
        self._adapters = adapters
        self._on_changed = on_changed  # a file found changed since indexing: the indexer looks at it again
        self._contents_cache: dict[Scope, tuple[int, tuple[dict[str, int], list[dict[str, Any]]]]] = {}

    def protocols(self) -> list[Protocol]:
        return [
            Protocol(ids.MANIFEST, self.manifest, max_request_bytes=1024),
            Protocol(ids.QUERY, self.query, max_request_bytes=64 * 1024, costly=True),  # an encoder pass, a scan
            Protocol(ids.FETCH, self.fetch, max_request_bytes=4 * 1024, buffer_bytes=READ_AHEAD_BYTES),
            Protocol(ids.CATALOG, self.catalog, max_request_bytes=1024, costly=True),  # a page of items and their vectors
            Protocol(ids.PREVIEW, self.preview, max_request_bytes=1024, costly=True),  # a decode
            Protocol(ids.ADAPTER, self.adapter, max_request_bytes=1024),
        ]

    def caller(self, peer_id: str) -> Caller:
        return Caller("peer", peer_id, self.share.item_scope)

    def _check_open(self) -> None:
        if self.share.paused:
            raise Unavailable(f"the share {self.share.name!r} is paused")

    # --- manifest ---

    async def manifest(self, request: Request) -> dict[str, Any]:
        self._check_open()
        scope = self.caller(request.peer_id).scope
        counts, models = await self._contents(scope)
        return {
            "name": self.share.name,
            "scope": self.share.scope,
            "permission": self.share.permission,
            "items": sum(counts.values()),
            "counts": counts,
            "models": models,
            "capabilities": list(CAPABILITIES),
            "protocols": [ids.MANIFEST, ids.QUERY, ids.FETCH, ids.CATALOG, ids.PREVIEW, ids.ADAPTER, ids.REDEEM],
            "chunk_bytes": ids.CHUNK_BYTES,
        }

    async def _contents(self, scope: Scope) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Counts per kind and models of the items in ``scope``, recomputed only after the catalog
        changed: they are queries over every item, and clients ask for the manifest often."""
        generation = self._catalog.generation
        cached = self._contents_cache.get(scope)
        if cached is not None and cached[0] == generation:
            return cached[1]
        contents = await self._catalog.read(partial(_contents, scope=scope))
        self._contents_cache = {scope: (generation, contents)}  # one scope per share today: no growth
        return contents

    # --- query ---

    async def query(self, request: Request) -> dict[str, Any]:
        self._check_open()
        body = request.body
        k = require(body, "k", int, 20)
        if not 1 <= k <= ids.MAX_QUERY_K:
            raise Malformed(f"k must be within 1..{ids.MAX_QUERY_K}", {"field": "k"})
        filters = _filters(require(body, "filters", dict, {}))
        caller = self.caller(request.peer_id)
        started = time.perf_counter()
        if "vector" in body:
            vector = _vector(require(body, "vector", bytes, max_length=4 * ids.MAX_VECTOR_VALUES))
            model_id = require(body, "model_id", str, max_length=200)
            try:
                results = await self._engine.search_vector(model_id, vector, k, filters, caller)
            except SearchError as exc:
                raise NotFound(str(exc)) from None
            return {"results": results, "warnings": [], "took_ms": round((time.perf_counter() - started) * 1000, 2)}
        text = require(body, "text", str, max_length=1000)
        if not text.strip():
            raise Malformed("the query text is empty", {"field": "text"})
        mode = require(body, "mode", str, "hybrid")
        if mode not in MODES:
            raise Malformed(f"mode must be one of {', '.join(MODES)}", {"field": "mode"})
        try:
            answer = await self._engine.search(SearchRequest(text, mode, k, filters), caller)
        except SearchError as exc:
            raise Unavailable(str(exc)) from None
        return {"results": answer["results"], "warnings": answer["warnings"], "took_ms": answer["took_ms"]}

    # --- catalog ---

    async def catalog(self, request: Request) -> dict[str, Any]:
        """A page of the items changed since ``cursor``, with their K-prefixes (float16)."""
        self._check_open()
        body = request.body
        cursor = require(body, "cursor", int, 0)
        limit = require(body, "limit", int, 500)
        k = require(body, "k", int, 48)
        if cursor < 0 or not 1 <= limit <= ids.MAX_CATALOG_PAGE or not 1 <= k <= ids.MAX_PREFIX_K:
            raise Malformed(f"cursor >= 0, limit within 1..{ids.MAX_CATALOG_PAGE} and k within 1..{ids.MAX_PREFIX_K}", {"field": "limit"})
        return await self._catalog.read(partial(_catalog_page, scope=self.caller(request.peer_id).scope, cursor=cursor, limit=limit, k=k))

    # --- adapter ---

    async def adapter(self, request: Request) -> dict[str, Any]:
        """The ordering adapter that produces ``model_id`` (an .npz file), for a model whose vectors the share holds."""
        self._check_open()
        model_id = require(request.body, "model_id", str, max_length=200)
        models = await self._catalog.read(partial(_models, scope=self.caller(request.peer_id).scope))
        if model_id not in {model["id"] for model in models}:
            raise NotFound(f"this share holds no vectors of {model_id!r}")
        data = await run_io(self._adapters.find, model_id, what="reading an adapter") if self._adapters is not None else None
        if data is None:
            raise NotFound(f"{model_id!r} is not made by an ordering adapter here")
        return {"model_id": model_id, "adapter": data}

    # --- preview ---

    async def preview(self, request: Request) -> dict[str, Any]:
        """A thumbnail, an audio snippet or a document's opening: ``{mime, data}`` or ``{mime, text}``."""
        self._check_open()
        content_hash = require(request.body, "hash", str, max_length=64)
        found = await self._catalog.read(partial(_item_in_scope, content_hash=content_hash, caller=self.caller(request.peer_id)))
        if found is None:
            raise NotFound(f"this share has no item {content_hash}")
        item_id, modality, files = found
        if modality == "text":
            text = await self._catalog.read(partial(document_text, item_id=item_id))
            if not text:
                raise Unavailable("no text was extracted from this document")
            return text_preview(text)
        handle, _ = await self._open_first(files)
        try:
            if self._decoders is not None:  # the worker decodes the very file opened and checked above
                # Its deadline goes along: a thread abandoned here ends soon after, not 120 s later.
                return await run_io(self._decoders.preview, handle.fileno(), modality, PREVIEW_SECONDS, timeout=PREVIEW_SECONDS + 5, what="making a preview")
            # The decoders open by path: /proc/self/fd/N names the very file opened and checked
            # above, so a file swapped meanwhile is not what they read.
            return await run_io(media_preview, f"/proc/self/fd/{handle.fileno()}", modality, timeout=PREVIEW_SECONDS, what="making a preview")
        except (DecodeError, OSError) as exc:
            log.info("no preview", extra={"reason": str(exc)})
            raise Unavailable("no preview can be made of this item") from None
        except IOTimeout:
            raise Unavailable(f"the preview took longer than {PREVIEW_SECONDS:g} s") from None
        finally:
            with trio.CancelScope(shield=True):  # closed even when the request is cancelled
                await run_io(handle.close)

    # --- fetch ---

    async def fetch(self, request: Request) -> AsyncIterator[dict[str, Any]]:
        """Header ``{size, offset, length}``, then ``{data, hash}`` frames of at most CHUNK_BYTES, then ``{done}``."""
        self._check_open()
        body = request.body
        content_hash = require(body, "hash", str, max_length=64)
        offset = require(body, "offset", int, 0)
        length = require(body, "length", (int, type(None)), None)
        if offset < 0 or (length is not None and length < 0):
            raise Malformed("offset and length must not be negative", {"field": "offset"})
        found = await self._catalog.read(partial(_item_in_scope, content_hash=content_hash, caller=self.caller(request.peer_id)))
        if found is None or not found[2]:
            raise NotFound(f"this share has no item {content_hash}")
        handle, indexed = await self._open_first(found[2])
        size = indexed.size
        try:
            if offset > size:
                raise Malformed(f"offset {offset} is beyond the end ({size} bytes)", {"field": "offset"})
            end = size if length is None else min(size, offset + length)
            yield {"hash": content_hash, "size": size, "offset": offset, "length": end - offset, "chunk_bytes": ids.CHUNK_BYTES}
            position = offset
            await run_io(handle.seek, offset)
            while position < end:
                # A block of several chunks per trip to a worker thread, read by one system call:
                # each return from a thread waits for the GIL (up to 5 ms while the event loop is
                # busy sending), so trips are few and hashing is done here, on the loop.
                try:
                    block = await run_io(_read_block, handle, end - position, indexed, what="reading a shared file")
                except FileChanged:  # rewritten in place while it is sent (an editor, a sync client)
                    self._on_changed(indexed.library_id, indexed.path)
                    raise Changed("the item's file changed while it was sent; it is being indexed again") from None
                if not block:
                    raise Unavailable("the file became shorter while it was sent; try again after it is re-indexed")
                for start in range(0, len(block), ids.CHUNK_BYTES):
                    data = block[start : start + ids.CHUNK_BYTES]
                    yield {"data": data, "hash": blake3.blake3(data).digest()}
                    position += len(data)
            yield {"done": True}
        finally:
            with trio.CancelScope(shield=True):  # closed even when the transfer is cancelled
                await run_io(handle.close)

    async def _open_first(self, files: list[IndexedFile]) -> tuple[Any, IndexedFile]:
        """The first of an item's files that is still the file indexed, opened without following
        links, and what was indexed of it.

        A file that changed since it was indexed is never served as the old item: it is refused
        (``changed``) and handed to the indexer to look at again."""
        changed = False
        for indexed in files:
            try:
                return await run_io(open_indexed, indexed, what="opening a shared file"), indexed
            except FileChanged as exc:
                log.warning("a shared file changed since it was indexed", extra={"share": self.share.name, "reason": str(exc)})
                changed = True
                self._on_changed(indexed.library_id, indexed.path)
            except OSError as exc:
                log.info("a shared file cannot be opened", extra={"share": self.share.name, "reason": str(exc)})
        if changed:
            raise Changed("the item's file changed since it was indexed; it is being indexed again")
        raise NotFound("the item's files are gone from this machine; try again after it is re-indexed")


READ_AHEAD_BYTES = 8 * ids.CHUNK_BYTES


def _read_block(handle: Any, left: int, indexed: IndexedFile) -> memoryview:
    """Up to READ_AHEAD_BYTES (and at most ``left``) of the file, read at once; empty at its end.
    Then, in the same trip to the thread, :class:`FileChanged` if the file is no longer the one
    indexed (written to in place while it is sent): what was read is not sent."""
    buffer = bytearray(min(READ_AHEAD_BYTES, left))
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        got = handle.readinto(view[filled:])
        if not got:
            break
        filled += got
    check_unchanged(handle, indexed)
    return view[:filled]


def _catalog_page(conn, scope, cursor: int, limit: int, k: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    where, args = where_clause(Filters(), scope)
    rows = conn.execute(
        f"""SELECT i.id, i.content_hash, i.modality, i.mime, i.size, i.changed_seq FROM items AS i
            WHERE {where} AND i.changed_seq > ? ORDER BY i.changed_seq LIMIT ?""",
        (*args, cursor, limit),
    ).fetchall()
    visible, visible_args = location_in_scope(scope)
    items = []
    for item_id, content_hash, modality, mime, size, _ in rows:
        path = conn.execute(f"SELECT path FROM locations WHERE item_id = ? AND {visible} ORDER BY id LIMIT 1", (item_id, *visible_args)).fetchone()
        if path is None:
            continue
        metadata = {key: value for key, value in conn.execute("SELECT key, value FROM item_metadata WHERE item_id = ?", (item_id,)) if key not in PRIVATE_METADATA}
        vectors = {
            model_id: prefix_of(from_blob(blob), k).astype("<f2").tobytes()
            for model_id, blob in conn.execute("SELECT model_id, vector FROM embeddings WHERE item_id = ? AND segment = 0", (item_id,))
        }
        name = readable(decode_path(path[0]).rsplit("/", 1)[-1])
        items.append({"content_hash": content_hash, "name": name, "modality": modality, "mime": mime, "size": size, "metadata": metadata, "vectors": vectors})
    last_page = len(rows) < limit
    if last_page:
        # The newest change the caller may see (not the node's change counter: how fast that
        # grows would tell how much changes outside the scope). The next sync starts there.
        next_cursor = rows[-1][5] if rows else cursor
        total = conn.execute(f"SELECT COUNT(*) FROM items AS i WHERE {where}", args).fetchone()[0]
    else:
        next_cursor, total = rows[-1][5], None
    return {"items": items, "cursor": next_cursor, "last_page": last_page, "total": total, "k": k}


def _contents(conn, scope) -> tuple[dict[str, int], list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    return _counts(conn, scope), _models(conn, scope)


def _counts(conn, scope) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Items per kind of media in the scope."""
    where, args = where_clause(Filters(), scope)
    counts = {modality: 0 for modality in MODALITIES}
    for modality, n in conn.execute(f"SELECT i.modality, COUNT(*) FROM items AS i WHERE {where} GROUP BY 1", args):
        counts[modality] = n
    return counts


def _models(conn, scope) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The models whose vectors items in the scope have (not those of items outside it)."""
    where, args = where_clause(Filters(), scope)
    return [
        {"id": model_id, "dimension": dimension, "space": space}
        for model_id, dimension, space in conn.execute(
            f"""SELECT id, dimension, space FROM models WHERE EXISTS (
                    SELECT 1 FROM embeddings AS e JOIN items AS i ON i.id = e.item_id WHERE e.model_id = models.id AND {where})
                ORDER BY id""",
            args,
        )
    ]


def _item_in_scope(conn, content_hash: str, caller: Caller) -> tuple[int, str, list[IndexedFile]] | None:  # type: ignore[no-untyped-def]
    """(id, kind, files as indexed) of the item with ``content_hash``, if the caller's scope lets it see it."""
    where, args = where_clause(Filters(), caller.scope)
    row = conn.execute(f"SELECT i.id, i.modality FROM items AS i WHERE i.content_hash = ? AND {where}", (content_hash, *args)).fetchone()
    if row is None:
        return None
    visible, visible_args = location_in_scope(caller.scope)
    rows = conn.execute(
        f"""SELECT path, library_id, (SELECT libraries.path FROM libraries WHERE libraries.id = library_id), size, mtime_ns, inode, device
            FROM locations WHERE item_id = ? AND {visible} ORDER BY id""",
        (row[0], *visible_args),
    )
    files = [IndexedFile(decode_path(path), library_id, decode_path(root), *signature) for path, library_id, root, *signature in rows]
    return row[0], row[1], files


def _vector(data: bytes) -> np.ndarray:
    if not data or len(data) % 4:
        raise Malformed("a vector is float32 values, little-endian (a multiple of 4 bytes)", {"field": "vector"})
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all() or not np.any(vector):
        raise Malformed("a vector must be finite and not all zero", {"field": "vector"})
    return vector


def _filters(raw: dict[str, Any]) -> Filters:
    """A peer's filters: kinds, dates and sizes only (no rating or folder: not a peer's business)."""
    known = {"modality", "date_from", "date_to", "size_min", "size_max"}
    unknown = set(raw) - known
    if {"rating_min", "rating_max", "folder"} & unknown:
        raise Forbidden("rating and folder filters are for the node's own user only")
    if unknown:
        raise Malformed(f"unknown filters: {', '.join(sorted(map(str, unknown)))[:200]}", {"field": "filters"})
    modalities = require(raw, "modality", list, [], max_length=len(MODALITIES))
    if any(m not in MODALITIES for m in modalities):
        raise Malformed(f"modality must be among {', '.join(MODALITIES)}", {"field": "filters.modality"})

    def date(key: str) -> str | None:
        value = require(raw, key, (str, type(None)), None, max_length=40)
        try:
            return parse_date(value) if value is not None else None
        except ValueError as exc:
            raise Malformed(str(exc), {"field": f"filters.{key}"}) from None

    def size(key: str) -> int | None:
        value = require(raw, key, (int, type(None)), None)
        if value is not None and value < 0:
            raise Malformed(f"{key} must not be negative", {"field": f"filters.{key}"})
        return value

    return Filters(
        modalities=tuple(modalities),
        date_from=date("date_from"),
        date_to=date("date_to"),
        size_min=size("size_min"),
        size_max=size("size_max"),
    )
