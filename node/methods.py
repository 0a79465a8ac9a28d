"""The control API's methods: what the CLI can ask of the daemon.

Each group is a small class over the state it needs, exposing ``methods()``, a name →
handler table that the daemon merges and hands to the control server. Handlers validate
their params and raise the protocol's typed errors; anything else becomes an internal error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .catalog import libraries
from .catalog.items import item_counts
from .catalog.database import Catalog
from .control.params import Params
from .control.protocol import Conflict, InvalidParams, NotFound, Unavailable
from .control.server import Emit, Handler, Streaming

if TYPE_CHECKING:
    from .daemon import Daemon
    from .index.embedder import Embedder
    from .index.indexer import Indexer
    from .models import ModelManager
    from .search.engine import SearchEngine
    from .search.filters import Filters


class DaemonMethods:
    def __init__(self, daemon: "Daemon") -> None:
        self._daemon = daemon

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"daemon.status": self.status, "daemon.stop": self.stop}

    async def status(self, raw: dict[str, Any]) -> dict[str, Any]:
        Params(raw).done()
        return await self._daemon.status()

    async def stop(self, raw: dict[str, Any]) -> dict[str, Any]:
        Params(raw).done()
        self._daemon.request_stop("control request")
        return {"stopping": True, "pid": os.getpid()}


class LibraryMethods:
    def __init__(self, catalog: Catalog, data_dir: Path, on_change: Callable[[], None] = lambda: None) -> None:
        self._catalog = catalog
        self._data_dir = data_dir
        self._on_change = on_change

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"library.add": self.add, "library.list": self.list, "library.remove": self.remove}

    async def add(self, raw: dict[str, Any]) -> dict[str, Any]:
        params = Params(raw)
        path = _library_path(params.text("path"), self._data_dir)
        name = params.text("name", None, max_length=200)
        params.done()
        try:
            library = await self._catalog.write(partial(libraries.add_library, path=path, name=name))
        except libraries.LibraryError as exc:
            raise Conflict(str(exc)) from None
        self._on_change()
        return library.to_wire()

    async def list(self, raw: dict[str, Any]) -> list[dict[str, Any]]:
        Params(raw).done()
        return [lib.to_wire() for lib in await self._catalog.read(libraries.list_libraries)]

    async def remove(self, raw: dict[str, Any]) -> dict[str, Any]:
        params = Params(raw)
        key = params.text("library")
        params.done()
        try:
            library = await self._catalog.write(partial(libraries.remove_library, key=key))
        except libraries.LibraryNotFound as exc:
            raise NotFound(str(exc)) from None
        self._on_change()
        return library.to_wire()


class IndexMethods:
    def __init__(self, catalog: Catalog, indexer: "Indexer", embedder: "Embedder") -> None:
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
    def __init__(self, models: "ModelManager", embedder: "Embedder") -> None:
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


def _library_path(text: str, data_dir: Path) -> Path:
    """The canonical form of a requested library folder, or a typed error saying why not."""
    path = Path(text)
    if not path.is_absolute():
        raise InvalidParams(f"library path must be absolute, got {text!r}", data={"param": "path"})
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise NotFound(f"{text} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise InvalidParams(f"{text} cannot be resolved: {exc}", data={"param": "path"}) from None
    if not resolved.is_dir():
        raise InvalidParams(f"{text} is not a directory", data={"param": "path"})
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise InvalidParams(f"{text} is not readable by the daemon", data={"param": "path"})
    data_dir = data_dir.resolve()
    if resolved == data_dir or data_dir in resolved.parents:
        raise InvalidParams(f"{text} is inside the node's data directory {data_dir}", data={"param": "path"})
    return resolved


class SearchMethods:
    def __init__(self, catalog: Catalog, engine: "SearchEngine") -> None:
        self._catalog = catalog
        self._engine = engine

    def methods(self) -> dict[str, Handler | Streaming]:
        return {
            "search.query": self.query,
            "search.similar": self.similar,
            "search.duplicates": self.duplicates,
            "items.rate": self.rate,
            "items.info": self.info,
        }

    async def info(self, raw: dict[str, Any]) -> dict[str, Any]:
        from .catalog.items import item_info

        params = Params(raw)
        path = params.text("path")
        params.done()
        try:
            return await self._catalog.read(partial(item_info, path=path))
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    async def rate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The user's rating of an item (0-10). It stays on this machine, keyed by content hash."""
        from .catalog.items import rate

        params = Params(raw)
        path = params.text("path")
        rating = params.number("rating", min=0, max=10)
        params.done()
        try:
            return await self._catalog.write(partial(rate, path=path, rating=float(rating)))
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    async def query(self, raw: dict[str, Any]) -> dict[str, Any]:
        from .search.engine import MODES, SearchError, SearchRequest

        params = Params(raw)
        query = params.text("query", max_length=1000)
        if not query.strip():
            raise InvalidParams("the query is empty", data={"param": "query"})
        mode = params.choice("mode", MODES, "hybrid")
        limit = params.number("limit", 20, min=1, max=1000, integer=True)
        filters = _filters(params)
        params.done()
        try:
            return await self._engine.search(SearchRequest(query, mode, limit, filters))
        except SearchError as exc:
            raise Unavailable(str(exc)) from None

    async def similar(self, raw: dict[str, Any]) -> dict[str, Any]:
        from .search.engine import SearchError

        params = Params(raw)
        path = params.text("path")
        limit = params.number("limit", 20, min=1, max=1000, integer=True)
        filters = _filters(params)
        params.done()
        try:
            return await self._engine.similar(path, limit, filters)
        except SearchError as exc:
            raise NotFound(str(exc)) from None

    async def duplicates(self, raw: dict[str, Any]) -> dict[str, Any]:
        from .search.duplicates import find_duplicates
        from .search.filters import MODALITIES

        params = Params(raw)
        threshold = params.number("threshold", 0.95, min=0.5, max=1.0)
        modalities = params.choices("modality", MODALITIES) or MODALITIES
        params.done()
        return await self._catalog.read(partial(find_duplicates, threshold=threshold, modalities=modalities))


def _filters(params: Params) -> "Filters":
    from .search.filters import MODALITIES, Filters, parse_date

    def date(key: str) -> str | None:
        value = params.text(key, None, max_length=40)
        if value is None:
            return None
        try:
            return parse_date(value)
        except ValueError as exc:
            raise InvalidParams(str(exc), data={"param": key}) from None

    folder = params.text("folder", None)
    if folder is not None and not folder.startswith("/"):
        raise InvalidParams("'folder' must be an absolute path", data={"param": "folder"})
    return Filters(
        modalities=params.choices("modality", MODALITIES),
        rating_min=params.number("rating_min", None, min=0, max=10),
        rating_max=params.number("rating_max", None, min=0, max=10),
        date_from=date("date_from"),
        date_to=date("date_to"),
        size_min=params.number("size_min", None, min=0, integer=True),
        size_max=params.number("size_max", None, min=0, integer=True),
        folder=folder,
    )
