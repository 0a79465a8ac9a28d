"""The web UI as an ASGI application: the page groups of ``pages/`` over the daemon's own API
methods, called in process as the local user, behind the guard of each door.

Routes address items by content hash only: no path ever appears in a URL. Everything shown
passes through Jinja2's autoescaping, peers' names and metadata included.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ..catalog.database import Catalog
from ..control.protocol import ControlError
from ..control.server import Handler, Streaming
from .guard import Door, Guard
from .jobs import Jobs
from .media import Thumbnails
from .pages.base import Api
from .pages.devices import DevicePages
from .pages.library import LibraryPages
from .pages.login import LoginPages
from .pages.peers import PeerPages
from .pages.shares import SharePages
from .pages.status import StatusPages
from .passwords import UiPassword
from .rendering import Renderer
from .sessions import Sessions

log = logging.getLogger("peerlight.webui")

ERROR_STATUS = {"invalid_params": 400, "not_found": 404, "forbidden": 403, "conflict": 409, "unavailable": 503}


class WebUi:
    """The pages, and the doors they are served at: ``app`` on loopback, ``remote_app`` for other machines."""

    def __init__(
        self,
        methods: Mapping[str, Handler | Streaming],
        catalog: Catalog,
        sessions: Sessions,
        thumbnails_dir: Path,
        decoders: Any,
        session_seconds: float,
        downloads: Path,
        host_label: str | None = None,
        password: UiPassword | None = None,
        remote_hosts: tuple[str, ...] = (),
        remote_tls: bool = False,
    ) -> None:
        api = Api(methods)
        renderer = Renderer()
        self.jobs = Jobs(methods)
        self._render = renderer.page
        groups = [
            LibraryPages(api, renderer, catalog, Thumbnails(catalog, thumbnails_dir, decoders)),
            PeerPages(api, renderer, self.jobs, downloads),
            SharePages(api, renderer),
            DevicePages(api, renderer, self.jobs),
            StatusPages(api, renderer),
            LoginPages(api, renderer, sessions, session_seconds, password),
        ]
        routes: list[BaseRoute] = [route for group in groups for route in group.routes()]
        routes.append(Mount("/static", StaticFiles(packages=[("peerlight.node.webui", "static")]), name="static"))
        pages = Starlette(routes=routes, exception_handlers={ControlError: self._api_error, 404: self._not_found})
        self._host_label = host_label  # the secret part of the UI's host name, if it has one
        self._remote_hosts = frozenset(name.lower() for name in remote_hosts)
        self._port: int | None = None
        self._remote_port: int | None = None
        self.app: ASGIApp = Guard(pages, sessions, Door("loopback", lambda host: host in self.hosts(), self.cookie_name))
        # With TLS a __Host- cookie: Secure, for this host only, no Domain (a browser refuses it otherwise).
        prefix = "__Host-" if remote_tls else ""
        self._remote_tls = remote_tls
        remote_door = Door("remote", self.remote_host, lambda: f"{prefix}peerlight_session_{self._remote_port}", "https" if remote_tls else "http", True)
        self.remote_app: ASGIApp = Guard(pages, sessions, remote_door)

    # --- where it answers ---

    def serving_at(self, port: int | None) -> None:
        self._port = port

    def remote_serving_at(self, port: int | None) -> None:
        self._remote_port = port

    @property
    def host(self) -> str:
        """``p-<label>.localhost:PORT`` (browsers resolve any .localhost name to this machine; only
        this node's user learns the label, so no other program on 127.0.0.1 is sent the UI's
        cookie), or ``127.0.0.1:PORT`` without a label."""
        return f"p-{self._host_label}.localhost:{self._port}" if self._host_label else f"127.0.0.1:{self._port}"

    @property
    def address(self) -> str:
        return f"http://{self.host}"

    def hosts(self) -> frozenset[str]:
        if self._port is None:
            return frozenset()
        if self._host_label:
            return frozenset({self.host})
        return frozenset(f"{name}:{self._port}" for name in ("127.0.0.1", "localhost", "[::1]"))

    def remote_host(self, host: str) -> bool:
        """Whether the door for other machines answers ``host``: an IP address (a name no one can
        re-point, so no DNS rebinding) but a loopback one (a cookie set there would go to every
        program on 127.0.0.1), or a name in ``ui.remote_hosts``; at its port, which browsers
        leave out when it is the scheme's own (443, 80)."""
        if self._remote_port is None:
            return False
        name, _, port = host.rpartition(":")
        if not port.isdecimal() or name.endswith(":"):  # no port: "name", or a bare IPv6 address
            name, port = host, str(443 if self._remote_tls else 80)
        if port != str(self._remote_port):
            return False
        if name in self._remote_hosts:
            return True
        try:
            ip = ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
        except ValueError:
            return False
        return not ip.is_loopback

    def cookie_name(self) -> str:
        return f"peerlight_session_{self._port}"  # two nodes' UIs on one machine keep their sessions apart

    # --- errors ---

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ControlError)
        return self._render(request, "error.html", ERROR_STATUS.get(exc.code, 500), message=str(exc))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._render(request, "error.html", 404, message="No such page.")
