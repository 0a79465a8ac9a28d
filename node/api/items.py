"""``items.page`` and ``items.get``: the library browsed page by page, and one item by content hash (the web UI's grid and item view)."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from ..catalog.browse import MODALITIES, item_by_hash, items_page, remote_page
from ..catalog.shares import ShareNotFound, get_remote
from ..catalog.database import Catalog
from ..catalog.items import document_text
from ..callers import Caller
from ..control.params import Params
from ..control.protocol import InvalidParams, NotFound
from ..control.server import Handler, Streaming, local_only

HASH = re.compile(r"[0-9a-f]{64}")
EXCERPT_CHARS = 2000


class ItemMethods:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"items.page": local_only(self.page), "items.get": local_only(self.get), "items.remote": local_only(self.remote)}

    async def page(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        before = params.number("before", None, min=1, integer=True)
        limit = params.number("limit", 60, min=1, max=500, integer=True)
        modalities = tuple(params.choices("modality", MODALITIES) or MODALITIES)
        params.done()
        return await self._catalog.read(partial(items_page, before=before, limit=limit, modalities=modalities))

    async def get(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """One item by its content hash, with a document's opening."""
        params = Params(raw)
        content_hash = params.text("hash", max_length=64)
        params.done()
        if not HASH.fullmatch(content_hash):
            raise InvalidParams("hash must be 64 lowercase hex digits", data={"param": "hash"})
        item = await self._catalog.read(partial(item_by_hash, content_hash=content_hash))
        if item is None:
            raise NotFound(f"no item {content_hash} on this node")
        if item["modality"] == "text":
            text = await self._catalog.read(partial(document_text, item_id=item["item_id"])) or ""
            item["excerpt"] = text[:EXCERPT_CHARS]
        return item

    async def remote(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """A page of a peer share's catalog as this node keeps a copy of it (no request to the peer)."""
        params = Params(raw)
        key = params.text("share", max_length=200)
        after = params.text("after", None, max_length=8192)
        limit = params.number("limit", 60, min=1, max=500, integer=True)
        params.done()
        try:
            remote = await self._catalog.read(partial(get_remote, key=key))
        except ShareNotFound as exc:
            raise NotFound(str(exc)) from None
        page = await self._catalog.read(partial(remote_page, peer_id=remote.peer_id, after=after, limit=limit))
        return {"share": remote.to_wire(), **page}
