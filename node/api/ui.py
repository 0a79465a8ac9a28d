"""``ui.login``: a one-time URL that logs a browser into the web UI (what ``peerlight ui`` opens).

Only the node's own user reaches the control socket, so only they can get one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..callers import Caller
from ..control.params import Params
from ..control.protocol import Unavailable
from ..control.server import Handler, Streaming, local_only
from ..webui.sessions import Sessions


class UiMethods:
    def __init__(self, sessions: Sessions, address: Callable[[], str | None]) -> None:
        self._sessions = sessions
        self._address = address  # "http://127.0.0.1:PORT" once the UI serves, else None

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"ui.login": local_only(self.login)}

    async def login(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        address = self._address()
        if address is None:
            raise Unavailable("the web UI is not serving (ui.enabled = false, or its port is taken: see `peerlight status`)")
        return {"url": f"{address}/login?token={self._sessions.login_token()}", "address": address}
