"""Serving the web UI as one of the daemon's services: hypercorn's HTTP/1.1 and HTTP/2 protocol
code on the daemon's trio loop, at one or two doors.

- **Loopback** (always): 127.0.0.1 and ::1 at one port.
- **Other machines** (``ui.remote_listen``, off by default): that address at ``ui.remote_port``,
  over TLS when ``ui.tls_certificate`` is set, logged into with the UI's password.

What a connection may cost (who may connect, how many, how long it may stall the UI) is
bounded in ``connections.py``: hypercorn bounds none of it.

A port that is taken does not stop the daemon: the door logs it and tries again every
``RETRY_SECONDS`` (``peerlight ui`` says it is not serving meanwhile).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr
from starlette.types import ASGIApp

from .app import WebUi
from .connections import ConnectionCap, GuardedListener

log = logging.getLogger("peerlight.webui")

RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class RemoteDoor:
    """Where and how the UI is served to other machines."""

    listen: str  # an IP address of this machine, or 0.0.0.0 / :: for all
    port: int
    certificate: str | None = None  # PEM files: HTTPS with them
    key: str | None = None

    @property
    def host(self) -> str:
        """The listen address as a URL writes it (an IPv6 one in brackets)."""
        return f"[{self.listen}]" if ":" in self.listen else self.listen


class UiServer:
    def __init__(
        self, ui: WebUi, port: int, remote: RemoteDoor | None = None, max_connections: int = 64, loopback_other_users: bool = False
    ) -> None:
        self._ui = ui
        self._loopback_other_users = loopback_other_users
        self._port = port
        self._remote = remote
        self._max_connections = max_connections
        self.address: str | None = None  # http://…:PORT while serving on loopback
        self.remote_address: str | None = None  # http(s)://LISTEN:PORT while serving other machines

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as fetches:  # what pages started runs here, and ends with the UI
            self._ui.jobs.attach(fetches)
            task_status.started()
            try:
                async with trio.open_nursery() as doors:
                    doors.start_soon(self._keep_serving, "loopback", self._loopback_config, self._ui.app, self._on_loopback)
                    if self._remote is not None:
                        doors.start_soon(self._keep_serving, "remote", self._remote_config, self._ui.remote_app, self._on_remote)
            finally:
                self._ui.jobs.attach(None)

    def _on_loopback(self, port: int | None) -> None:
        self._ui.serving_at(port)
        self.address = self._ui.address if port else None

    def _on_remote(self, port: int | None) -> None:
        assert self._remote is not None
        self._ui.remote_serving_at(port)
        scheme = "https" if self._remote.certificate else "http"
        self.remote_address = f"{scheme}://{self._remote.host}:{port}" if port else None

    def _loopback_config(self) -> Config:
        config = ui_config()
        port = self._port or _free_port()
        # Both loopbacks on one port: a browser may try ::1 first for a .localhost name, and
        # another local user must not be able to answer there with our cookie in hand.
        config.bind = [f"127.0.0.1:{port}"] + ([f"[::1]:{port}"] if _has_ipv6_loopback() else [])
        return config

    def _remote_config(self) -> Config:
        assert self._remote is not None
        config = ui_config()
        config.bind = [f"{self._remote.host}:{self._remote.port}"]
        config.certfile, config.keyfile = self._remote.certificate, self._remote.key
        return config

    async def _keep_serving(self, door: str, configure: Callable[[], Config], app: ASGIApp, serving: Callable[[int | None], None]) -> None:
        while True:
            try:
                own_user_only = door == "loopback" and not self._loopback_other_users
                cap = ConnectionCap(self._max_connections, door, own_user_only=own_user_only, per_client=door == "remote")
                await serve_door(app, configure(), cap, serving)
            except* OSError as failed:  # the port is taken, the address is not this machine's, the certificate unreadable
                log.warning("the web UI cannot listen; trying again later", extra={"door": door, "reason": str(failed.exceptions[0])})
            finally:
                serving(None)
            await trio.sleep(RETRY_SECONDS)


async def serve_door(app: ASGIApp, config: Config, cap: ConnectionCap, serving: Callable[[int | None], None]) -> None:
    """Serve ``app`` at ``config.bind`` until cancelled: what hypercorn's ``worker_serve`` does,
    less the lifespan (the UI has none), with every connection guarded and admitted by ``cap``
    (``connections.py``). ``serving`` hears the port once listening."""
    config.set_statsd_logger_class(StatsdLogger)
    sockets = config.create_sockets()
    listening = sockets.secure_sockets + sockets.insecure_sockets
    try:
        ssl_context = config.create_ssl_context()
        listeners: list[trio.abc.Listener[Any]] = []
        for sock in listening:
            sock.listen(config.backlog)
            listener = GuardedListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            listeners.append(trio.SSLListener(listener, ssl_context, https_compatible=True) if ssl_context else listener)
    except BaseException:
        for sock in listening:
            sock.close()
        raise
    bound = [repr_socket_addr(sock.family, sock.getsockname()) for sock in listening]
    serving(int(bound[0].rsplit(":", 1)[1]))
    log.info("web UI serving", extra={"at": bound, "tls": ssl_context is not None})
    handler = partial(TCPServer, ASGIWrapper(app), config, WorkerContext(None), ConnectionState({}))
    async with trio.open_nursery() as connections:
        await trio.serve_listeners(partial(cap.handle, handler), listeners, handler_nursery=connections)


def ui_config() -> Config:
    config = Config()
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 5.0  # hypercorn's default; a connection the client closed holds its slot this long
    # No read_timeout: hypercorn applies it to every read, also while a long answer (a video, the
    # live status) streams and the client rightly sends nothing. Slow requests: guard.BODY_SECONDS.
    config.read_timeout = None
    config.ssl_handshake_timeout = 10  # hypercorn's 60 s would let a client hold a slot a minute for nothing
    config.h2_max_concurrent_streams = 16  # a browser opens a few; each may queue a request body
    config.h11_max_incomplete_size = 16 * 1024  # request line and headers
    config.max_app_queue_size = 10
    return config


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False
