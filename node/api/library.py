"""``library.*``: the folders the node indexes."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..catalog import libraries
from ..catalog.database import Catalog
from ..callers import Caller
from ..control.params import Params
from ..control.protocol import Conflict, InvalidParams, NotFound
from ..control.server import Handler, Streaming, local_only
from ..pathnames import display
from ..threads import run_io


class LibraryMethods:
    def __init__(self, catalog: Catalog, data_dir: Path, on_change: Callable[[], None] = lambda: None) -> None:
        self._catalog = catalog
        self._data_dir = data_dir
        self._on_change = on_change

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"library.add": local_only(self.add), "library.list": local_only(self.list), "library.remove": local_only(self.remove)}

    async def add(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        path = await _library_path(params.path("path"), self._data_dir)
        name = params.text("name", None, max_length=200)
        params.done()
        try:
            library = await self._catalog.write(partial(libraries.add_library, path=path, name=name))
        except libraries.LibraryError as exc:
            raise Conflict(str(exc)) from None
        self._on_change()
        return library.to_wire()

    async def list(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        Params(raw).done()
        return [lib.to_wire() for lib in await self._catalog.read(libraries.list_libraries)]

    async def remove(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        key = params.key("library")
        params.done()
        try:
            library = await self._catalog.write(partial(libraries.remove_library, key=key))
        except libraries.LibraryNotFound as exc:
            raise NotFound(str(exc)) from None
        self._on_change()
        return library.to_wire()


async def _library_path(text: str, data_dir: Path) -> Path:
    """The canonical form of a requested library folder, or a typed error saying why not.

    The checks touch the user's filesystem, so they run in a worker thread under a deadline.
    """
    return await run_io(_check_library_path, text, data_dir, what=f"checking {display(text)}")


def existing_folder(text: str, param: str) -> Path:
    """The canonical path of an existing folder (links resolved), or a typed error naming ``param``. Blocking."""
    shown = display(text)
    try:
        resolved = Path(text).resolve(strict=True)
    except FileNotFoundError:
        raise NotFound(f"{shown} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise InvalidParams(f"{shown} cannot be resolved: {exc}", data={"param": param}) from None
    if not resolved.is_dir():
        raise InvalidParams(f"{shown} is not a directory", data={"param": param})
    return resolved


def _check_library_path(text: str, data_dir: Path) -> Path:
    shown = display(text)
    resolved = existing_folder(text, "path")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise InvalidParams(f"{shown} is not readable by the daemon", data={"param": "path"})
    data_dir = data_dir.resolve()
    if resolved == data_dir or data_dir in resolved.parents:
        raise InvalidParams(f"{shown} is inside the node's data directory {data_dir}", data={"param": "path"})
    return resolved
