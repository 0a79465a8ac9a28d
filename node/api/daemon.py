"""``daemon.*``: status and stop."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..callers import Caller
from ..control.params import Params
from ..control.server import Handler, Streaming, local_only

if TYPE_CHECKING:
    from ..daemon import Daemon


class DaemonMethods:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"daemon.status": local_only(self.status), "daemon.stop": local_only(self.stop)}

    async def status(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        return await self._daemon.status()

    async def stop(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        self._daemon.request_stop("control request")
        return {"stopping": True, "pid": os.getpid()}
