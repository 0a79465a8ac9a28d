"""The web UI's front door, before any page: host, session, CSRF, and the security headers.

- **Host.** Only the UI's own host name and port (``WebUi.hosts``): a page of another site
  whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is refused, whatever
  cookies the browser holds.
- **Session.** Every path but ``/login`` and ``/static/`` needs the session cookie that a
  one-time login URL set (``sessions.py``).
- **CSRF.** A request that changes anything (not GET or HEAD) must carry the session's token
  in ``X-CSRF-Token``, which only the UI's own pages know, and come from the UI's own origin
  (``Origin`` and ``Sec-Fetch-Site``, when the browser sends them).
- **Headers.** A strict Content-Security-Policy (scripts, styles, media only from the UI
  itself, no inline script, no framing), ``nosniff``, no referrer, and no caching of pages.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .sessions import Sessions

log = logging.getLogger("peerlight.webui")

OPEN_PATHS = ("/login", "/static/")
SAFE_METHODS = frozenset({"GET", "HEAD"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class Guard:
    """ASGI middleware: refuses what the module doc says, and puts the session in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, sessions: Sessions, hosts: Callable[[], frozenset[str]], cookie: Callable[[], str]) -> None:
        self.app = app
        self.sessions = sessions
        self._hosts = hosts  # the Host values served: the UI's own name and port
        self._cookie = cookie  # the session cookie's name (one per node and port)
        self._last_warning = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket route exists: none is opened past the guard
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        host = headers.get("host", "").lower()
        if host not in self._hosts():
            if time.monotonic() - self._last_warning > 60:  # any page may cause these: one line a minute
                self._last_warning = time.monotonic()
                log.warning("web UI: a request for another host refused", extra={"host": host[:100]})
            await _refuse(send, 421, "This UI answers only at the address `peerlight ui` opens.")
            return
        path = scope["path"]
        session_id = cookie_parser(headers.get("cookie", "")).get(self._cookie())
        session = self.sessions.get(session_id)
        if session is None and not path.startswith(OPEN_PATHS):
            await _refuse(send, 401, "Not logged in: run `peerlight ui` to open the UI logged in.")
            return
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            fetch_site = headers.get("sec-fetch-site")
            if (origin is not None and origin != f"http://{host}") or fetch_site not in (None, "same-origin"):
                await _refuse(send, 403, "A change must come from the UI's own pages.")
                return
            if session is None or not secrets.compare_digest(headers.get("x-csrf-token", "").encode(), session.csrf.encode()):
                await _refuse(send, 403, "This change lacks the page's CSRF token: reload the page.")
                return
        scope.setdefault("state", {})["session"] = session
        scope["state"]["session_id"] = session_id

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, with_headers)


def _with_security_headers(headers: list[Any]) -> list[Any]:
    present = {name.lower() for name, _ in headers}
    extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]  # a media response sets its own CSP
    if b"cache-control" not in present:
        extra.append((b"cache-control", b"no-store"))
    return headers + extra


async def _refuse(send: Send, status: int, text: str) -> None:
    body = f"<!doctype html><title>Peerlight</title><p>{text}</p>".encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": _with_security_headers(headers)})
    await send({"type": "http.response.body", "body": body})
