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
from peerlight.p2p import schema, wire
from peerlight.p2p.errors import Changed, Forbidden, Malformed, NotFound, Unavailable
from peerlight.p2p.server import Permit, Protocol, Request

from ..callers import Caller, Scope
from ..catalog.database import Catalog
from ..catalog.items import document_text
from ..catalog.shares import Share
from ..decoders import DecoderPool
from ..files import FileChanged, IndexedFile, check_unchanged, open_indexed
from ..search.engine import SearchEngine, SearchError, SearchRequest
from ..search.filters import Filters, parse_date
from ..threads import IOTimeout, run_io
from . import share_queries as queries
from .access import USED_UP
from .adapter_files import AdapterFiles
from .previews import media_preview, text_preview

log = logging.getLogger("peerlight.serving")

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
        """The share's protocols with their handlers (``redeem`` is the invite desk's)."""
        return [
            Protocol(schema.MANIFEST, self.manifest),
            Protocol(schema.QUERY, self.query),
            Protocol(schema.FETCH, self.fetch),
            Protocol(schema.CATALOG, self.catalog),
            Protocol(schema.PREVIEW, self.preview),
            Protocol(schema.ADAPTER, self.adapter),
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
            "public_can": list(self.share.public_can) if self.share.permission == "public" else [],
            "items": sum(counts.values()),
            "counts": counts,
            "models": models,
            "capabilities": list(schema.FEATURES),
            "protocols": [spec.id for spec in schema.SHARE_PROTOCOLS],
            "chunk_bytes": schema.CHUNK_BYTES,
        }

    async def _contents(self, scope: Scope) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Counts per kind and models of the items in ``scope``, recomputed only after the catalog
        changed: they are queries over every item, and clients ask for the manifest often."""
        generation = self._catalog.generation
        cached = self._contents_cache.get(scope)
        if cached is not None and cached[0] == generation:
            return cached[1]
        contents = await self._catalog.read(partial(queries.contents, scope=scope))
        self._contents_cache = {scope: (generation, contents)}  # one scope per share today: no growth
        return contents

    # --- query ---

    async def query(self, request: Request) -> dict[str, Any]:
        """By text (embedded here) or by a K-prefix of an ordered vector, exactly one of the two."""
        self._check_open()
        body = request.body
        if ("text" in body) == ("vector" in body):
            raise Malformed("a query has exactly one of text and vector", {"field": "text"})
        filters = _filters(body["filters"])
        caller = self.caller(request.peer_id)
        started = time.perf_counter()
        if "vector" in body:
            vector = await self._query_vector(body, caller.scope)
            try:
                results = await self._engine.search_vector(body["model_id"], vector, body["k"], filters, caller)
            except SearchError as exc:
                raise NotFound(str(exc)) from None
            return {"results": results, "warnings": [], "took_ms": round((time.perf_counter() - started) * 1000, 2)}
        if not body["text"].strip():
            raise Malformed("text: the query text is empty", {"field": "text"})
        try:
            answer = await self._engine.search(SearchRequest(body["text"], body["mode"], body["k"], filters), caller)
        except SearchError as exc:
            raise Unavailable(str(exc)) from None
        return {"results": answer["results"], "warnings": answer["warnings"], "took_ms": answer["took_ms"]}

    async def _query_vector(self, body: dict[str, Any], scope: Scope) -> np.ndarray:
        """The query's K-prefix: of a model whose vectors the share holds (else ``not_found``), no
        longer than that model's vectors, finite and not zero (else ``malformed``)."""
        if "model_id" not in body:
            raise Malformed("model_id: required with vector", {"field": "model_id"})
        model = next((m for m in (await self._contents(scope))[1] if m["id"] == body["model_id"]), None)
        if model is None:
            raise NotFound(f"this share holds no vectors of {body['model_id']!r}")
        vector = _vector(body["vector"])
        if len(vector) > model["dimension"]:
            raise Malformed(f"vector: {len(vector)} values; the model's vectors have {model['dimension']}", {"field": "vector"})
        return vector

    # --- catalog ---

    async def catalog(self, request: Request) -> dict[str, Any]:
        """A page of the items changed since ``cursor``, with their K-prefixes (float16)."""
        self._check_open()
        body = request.body
        scope = self.caller(request.peer_id).scope
        return await self._catalog.read(partial(queries.catalog_page, scope=scope, cursor=body["cursor"], limit=body["limit"], k=body["k"]))

    # --- adapter ---

    async def adapter(self, request: Request) -> dict[str, Any]:
        """The ordering adapter that produces ``model_id`` (an .npz file), for a model whose vectors the share holds."""
        self._check_open()
        model_id = request.body["model_id"]
        models = await self._catalog.read(partial(queries.models, scope=self.caller(request.peer_id).scope))
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
        content_hash = request.body["hash"]
        found = await self._catalog.read(partial(queries.item_in_scope, content_hash=content_hash, caller=self.caller(request.peer_id)))
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
        """Header ``{size, offset, length}``, then ``{data, hash}`` frames of at most CHUNK_BYTES, then ``{done}``.

        A range past the end is shortened to the end; ``offset`` equal to the size, or ``length``
        0, is a header and then ``done``; ``offset`` past the size is ``malformed``. A grant's
        bytes of the day are served up to the limit exactly: the last data frame is cut to fit
        what is left, and the next is refused with ``forbidden`` (``data.limit``)."""
        self._check_open()
        body = request.body
        content_hash, offset, length = body["hash"], body["offset"], body["length"]
        found = await self._catalog.read(partial(queries.item_in_scope, content_hash=content_hash, caller=self.caller(request.peer_id)))
        if found is None or not found[2]:
            raise NotFound(f"this share has no item {content_hash}")
        handle, indexed = await self._open_first(found[2])
        size = indexed.size
        try:
            if offset > size:
                raise Malformed(f"offset: {offset} is beyond the end ({size} bytes)", {"field": "offset"})
            end = size if length is None else min(size, offset + length)
            header = {"hash": content_hash, "size": size, "offset": offset, "length": end - offset, "chunk_bytes": schema.CHUNK_BYTES}
            allowance = _Allowance(request.permit)
            allowance.sent(header)
            yield header
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
                for start in range(0, len(block), schema.CHUNK_BYTES):
                    chunk = block[start : start + schema.CHUNK_BYTES]
                    data, last = allowance.cut(chunk, finishing=position + len(chunk) == end)
                    frame = {"data": data, "hash": blake3.blake3(data).digest()}
                    allowance.sent(frame, len(data))
                    yield frame
                    if last:  # the day's bytes end on this frame: the next is refused, not read
                        raise Forbidden("the grant's bytes for today are used up", USED_UP)
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


READ_AHEAD_BYTES = schema.FETCH.buffer_bytes


class _Allowance:
    """A grant's bytes for today as a fetch's frames use them (no limit: the permit says None).

    Asked before each data frame, so other transfers under the grant and a new UTC day count
    too. The server sends a frame once the next one is made (to mark it ``more``), so the frame
    made last is not charged yet and is taken off what the permit says is left. The data frame
    that would pass the limit is cut to end exactly on it, and the transfer ends there with
    ``forbidden``; the permit still checks every frame as it is sent."""

    DATA_FRAME = {"ok": True, "data": b"", "hash": bytes(32), "more": True}
    DONE_FRAME = len(wire.pack({"ok": True, "done": True}))

    def __init__(self, permit: Permit) -> None:
        self._permit = permit
        self._uncharged = 0  # the size of the frame made last, which the server has not sent yet

    def sent(self, frame: dict[str, Any], data_bytes: int | None = None) -> None:
        if data_bytes is None:
            self._uncharged = len(wire.pack({"ok": True, **frame, "more": True}))
        else:
            self._uncharged = wire.packed_size(self.DATA_FRAME, "data", data_bytes)

    def cut(self, chunk: memoryview, finishing: bool) -> tuple[memoryview, bool]:
        """The data to send of ``chunk`` and whether the day's bytes end with it (with room for
        ``done`` when it would end the range: a range that cannot end is cut on the limit)."""
        left = self._permit.remaining()
        if left is None:
            return chunk, False
        left -= self._uncharged
        whole = wire.packed_size(self.DATA_FRAME, "data", len(chunk))
        if whole + (self.DONE_FRAME if finishing else 0) <= left:
            return chunk, False
        room = wire.data_fitting(left, self.DATA_FRAME, "data")
        if room <= 0:
            raise Forbidden("the grant's bytes for today are used up", USED_UP)
        return chunk[:room], True


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


def _vector(data: bytes) -> np.ndarray:
    if not data or len(data) % 4:
        raise Malformed("vector: float32 values, little-endian (a multiple of 4 bytes)", {"field": "vector"})
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all() or not np.any(vector):
        raise Malformed("vector: finite values, not all zero", {"field": "vector"})
    return vector


def _filters(checked: dict[str, Any]) -> Filters:
    """A peer's filters (checked against the schema: kinds, dates and sizes only) as the engine's."""

    def date(key: str) -> str | None:
        value = checked.get(key)
        try:
            return parse_date(value) if value is not None else None
        except ValueError as exc:
            raise Malformed(f"filters.{key}: {exc}", {"field": f"filters.{key}"}) from None

    return Filters(
        modalities=tuple(checked["modality"]),
        date_from=date("date_from"),
        date_to=date("date_to"),
        size_min=checked.get("size_min"),
        size_max=checked.get("size_max"),
    )
