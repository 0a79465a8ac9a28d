"""What every page group shares: the daemon's API methods, called in process as the local user,
and the renderer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ...callers import Caller
from ...control.protocol import ControlError
from ...control.server import Handler, Streaming
from ..rendering import Renderer

HASH = re.compile(r"[0-9a-f]{64}")
PAGE_ITEMS = 60
MODALITIES = ("image", "video", "audio", "text")


class Api:
    """The daemon's API methods, as the local user calls them (the CLI calls the same ones)."""

    def __init__(self, methods: Mapping[str, Handler | Streaming]) -> None:
        self.methods = methods

    def offers(self, method: str) -> bool:
        """Whether the daemon has ``method`` (network methods are absent with networking off)."""
        return method in self.methods

    async def call(self, method: str, **params: Any) -> Any:
        handler = self.methods[method]
        assert not isinstance(handler, Streaming)
        return await handler({k: v for k, v in params.items() if v is not None}, Caller.local())


class Pages:
    """A group of pages over the API; subclasses list theirs in :meth:`routes`."""

    def __init__(self, api: Api, renderer: Renderer) -> None:
        self.api = api
        self.render = renderer.page

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError


class NotAnItem(ControlError):
    code = "not_found"

    def __init__(self) -> None:
        super().__init__("not an item: items are named by their 64-digit content hash")


class OnlyOnTheNode(ControlError):
    code = "forbidden"


def only_on_the_node(request: Request, what: str) -> None:
    """Refuse ``what`` at the door for other machines: a password typed on another machine must
    not be enough to hand the library on for good (a paired device, a share, an invite outlive
    a changed password). On the node, ``peerlight ui`` does it."""
    door = request.scope.get("state", {}).get("door")
    if door is not None and door.password_login:
        raise OnlyOnTheNode(f"{what} only on the node itself: open the UI there (`peerlight ui`)")


def content_hash(request: Request) -> str:
    """The item a URL names (by content hash: never a path)."""
    value = request.path_params["content_hash"]
    if not HASH.fullmatch(value):
        raise NotAnItem()
    return value


def refresh() -> Response:
    """The answer to a change that the whole page shows (htmx reloads it)."""
    return Response(status_code=204, headers={"HX-Refresh": "true"})
