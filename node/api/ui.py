"""The web UI's methods: ``ui.login``, a one-time URL that logs a browser in on loopback (what
``peerlight ui`` opens), and ``ui.password``, the password of the UI served to other machines.

Only the node's own user reaches the control socket, so only they can call either."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..callers import Caller
from ..control.params import Params
from ..control.protocol import InvalidParams, Unavailable
from ..control.server import Handler, Streaming, local_only
from ..threads import run_io
from ..webui.passwords import PasswordError, UiPassword
from ..webui.server import UiServer
from ..webui.sessions import Sessions


class UiMethods:
    def __init__(self, sessions: Sessions, password: UiPassword, server: Callable[[], UiServer | None]) -> None:
        self._sessions = sessions
        self._password = password
        self._server = server  # None with ui.enabled = false

    def methods(self) -> dict[str, Handler | Streaming]:
        return {"ui.login": local_only(self.login), "ui.password": local_only(self.set_password)}

    async def login(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        Params(raw).done()
        server = self._server()
        if server is None or server.address is None:
            raise Unavailable("the web UI is not serving (ui.enabled = false, or its port is taken: see `peerlight status`)")
        return {"url": f"{server.address}/login?token={self._sessions.login_token()}", "address": server.address, "remote": server.remote_address}

    async def set_password(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Set (``password``) or remove (``clear``) the password; either way every browser logged
        in from another machine is logged out."""
        params = Params(raw)
        clear = params.flag("clear", False)
        password = None if clear else params.text("password", max_length=4096)
        params.done()
        try:
            if password is None:
                await run_io(self._password.clear, what="removing the UI's password")
            else:
                await run_io(self._password.set, password, what="setting the UI's password")
        except PasswordError as exc:
            raise InvalidParams(str(exc), data={"param": "password"}) from None
        self._sessions.end_all("remote")
        return {"password": not clear}
