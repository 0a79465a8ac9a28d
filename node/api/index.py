"""``index.*`` and ``models.*``: keeping the index current, and the models behind it."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..catalog import libraries
from ..catalog.database import Catalog
from ..catalog.items import item_counts
from ..control.params import Params
from ..control.protocol import NotFound
from ..control.server import Emit, Handler, Streaming

if TYPE_CHECKING:
    from ..index.embedder import Embedder
    from ..index.indexer import Indexer
    from ..models import ModelManager


class IndexMethods:
    def __init__(self, catalog: Catalog, indexer: Indexer, embedder: Embedder) -> None:
        self._catalog = catalog
        self._indexer = indexer
        self._embedder = embedder

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"index.run": self.run, "index.status": self.status, "index.wait": Streaming(self.wait)}

    async def wait(self, raw: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Stream the index status as progress events until scanning and embedding are done."""
        params = Params(raw)
        interval = params.number("interval", 0.25, min=0.05, max=10)
        params.done()
        while True:
            status = await self.status({})
            if not status["busy"]:
                return status
            await emit(status)
            await trio.sleep(interval)

    async def run(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Ask for a rescan of one library (id, path or name) or all; returns at once."""
        params = Params(raw)
        key = params.text("library", None)
        params.done()
        library_id = None
        if key is not None:
            try:
                library_id = (await self._catalog.read(partial(libraries.find_library, key=key))).id
            except libraries.LibraryNotFound as exc:
                raise NotFound(str(exc)) from None
        self._indexer.request_scan(library_id)
        return {"requested": True, "library_id": library_id}

    async def status(self, raw: dict[str, Any]) -> dict[str, Any]:
        Params(raw).done()
        counts = await self._catalog.read(item_counts)
        scanning = self._indexer.progress.busy or self._indexer.scan_requested
        embedding = self._embedder.pass_running or self._embedder.pass_requested
        return {
            "busy": scanning or embedding,
            "scanning": scanning,
            "embedding": embedding,
            "libraries": self._indexer.progress.to_wire(),
            "embeddings": self._embedder.progress.to_wire(),
            **counts,
        }


class ModelMethods:
    def __init__(self, models: ModelManager, embedder: Embedder) -> None:
        self._models = models
        self._embedder = embedder

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"models.list": self.list}

    async def list(self, raw: dict[str, Any]) -> list[dict[str, Any]]:
        """Every configured model, loaded now if it can be; pending items are retried at once."""
        params = Params(raw)
        check = params.flag("check", True)
        params.done()
        infos = await self._models.check_all() if check else self._models.describe()
        self._embedder.wake()
        return [info.to_wire() for info in infos]
