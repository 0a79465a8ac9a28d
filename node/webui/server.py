"""Serving the web UI: hypercorn's trio worker on 127.0.0.1, as one of the daemon's services.

It never binds anything but loopback. A port that is taken does not stop the daemon: the UI
logs it and tries again every ``RETRY_SECONDS`` (``peerlight ui`` says it is not serving
meanwhile)."""

from __future__ import annotations

import logging
import socket
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .app import WebUi

log = logging.getLogger("peerlight.webui")

RETRY_SECONDS = 30.0


class UiServer:
    def __init__(self, ui: WebUi, port: int) -> None:
        self._ui = ui
        self._port = port
        self.address: str | None = None  # http://127.0.0.1:PORT while serving

    def _config(self) -> Config:
        config = Config()
        port = self._port or _free_port()
        # Both loopbacks on one port: a browser may try ::1 first for a .localhost name, and
        # another local user must not be able to answer there with our cookie in hand.
        config.bind = [f"127.0.0.1:{port}"] + ([f"[::1]:{port}"] if _has_ipv6_loopback() else [])
        config.accesslog = None
        config.errorlog = log
        config.include_server_header = False
        config.graceful_timeout = 2.0
        config.keep_alive_timeout = 30.0
        config.h11_max_incomplete_size = 16 * 1024  # request line and headers
        config.max_app_queue_size = 10
        return config

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as fetches:  # what pages started runs here, and ends with the UI
            self._ui.jobs.attach(fetches)
            task_status.started()
            try:
                while True:
                    await self._serve_once()
                    await trio.sleep(RETRY_SECONDS)
            finally:
                self._ui.jobs.attach(None)

    async def _serve_once(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(partial(serve, self._ui.app, self._config(), shutdown_trigger=trio.sleep_forever))
                port = int(binds[0].rsplit(":", 1)[1])
                self._ui.serving_at(port)
                self.address = self._ui.address
                log.info("web UI serving", extra={"address": self.address})
        except* OSError as group:  # the port is taken (another node, another program); hypercorn raises it in a group
            log.warning("the web UI cannot listen; trying again later", extra={"port": self._port, "reason": str(group.exceptions[0])})
        finally:
            self.address = None


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
