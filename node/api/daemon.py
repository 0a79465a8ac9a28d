"""``daemon.*``: status and stop."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..control.params import Params
from ..control.server import Handler, Streaming

if TYPE_CHECKING:
    from ..daemon import Daemon


class DaemonMethods:
    def __init__(self, daemon: Daemon) -> None:
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
