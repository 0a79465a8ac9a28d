"""The web UI's front door, before any page: host, session, CSRF, and the security headers.

Each way in is a :class:`Door`: the loopback one (logged into through a one-time URL) and,
when ``ui.remote_listen`` is set, one for other machines (logged into with a password).

- **Host.** Only the door's own host names and port: a page of another site whose name an
  attacker re-points at the UI's address (DNS rebinding) is refused, whatever cookies the
  browser holds.
- **Session.** Every path but ``/login`` and ``/static/`` needs the session cookie that the
  door's login set (``sessions.py``); a session opened at one door is not valid at another.
- **CSRF.** A request that changes anything (not GET or HEAD) must carry the session's token
  in ``X-CSRF-Token``, which only the UI's own pages know, and come from the UI's own origin
  (``Origin`` and ``Sec-Fetch-Site``, when the browser sends them). The one change made
  without a session, the password login, still needs the same origin.
- **Headers.** A strict Content-Security-Policy (scripts, styles, media only from the UI
  itself, no inline script, no framing), ``nosniff``, no referrer, and no caching of pages.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .sessions import Sessions

log = logging.getLogger("peerlight.webui")

OPEN_PATHS = ("/login", "/static/")
BODY_SECONDS = 60.0
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


@dataclass(frozen=True)
class Door:
    """One way into the UI: where it answers and how one logs in there."""

    name: str  # "loopback" or "remote"
    accepts: Callable[[str], bool]  # whether it answers a Host value (name:port)
    cookie: Callable[[], str]  # the session cookie's name (one per node and port)
    scheme: str = "http"  # "https" where the door has a certificate
    password_login: bool = False  # a password opens a session here (not a one-time URL)


class Guard:
    """ASGI middleware: refuses what the module doc says, and puts the door and the session in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, sessions: Sessions, door: Door) -> None:
        self.app = app
        self.sessions = sessions
        self.door = door
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
        if not self.door.accepts(host):
            if time.monotonic() - self._last_warning > 60:  # any page may cause these: one line a minute
                self._last_warning = time.monotonic()
                log.warning("web UI: a request for another host refused", extra={"host": host[:100]})
            await _refuse(send, 421, "This UI answers only at the address `peerlight ui` opens.")
            return
        path = scope["path"]
        session_id = cookie_parser(headers.get("cookie", "")).get(self.door.cookie())
        session = self.sessions.get(session_id, self.door.name)
        if session is None and not path.startswith(OPEN_PATHS):
            how = '<a href="/login">Log in</a> with the UI\'s password.' if self.door.password_login else "Run `peerlight ui` to open the UI logged in."
            await _refuse(send, 401, "Not logged in. " + how)
            return
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            fetch_site = headers.get("sec-fetch-site")
            if (origin is not None and origin != f"{self.door.scheme}://{host}") or fetch_site not in (None, "same-origin"):
                await _refuse(send, 403, "A change must come from the UI's own pages.")
                return
            password_login = self.door.password_login and path == "/login" and session is None
            if not password_login and (session is None or not secrets.compare_digest(headers.get("x-csrf-token", "").encode(), session.csrf.encode())):
                await _refuse(send, 403, "This change lacks the page's CSRF token: reload the page.")
                return
        state = scope.setdefault("state", {})
        state.update(session=session, session_id=session_id, door=self.door)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, body_in_time(receive), with_headers)


def body_in_time(receive: Receive) -> Receive:
    """``receive``, but a request body not arrived whole ``BODY_SECONDS`` after the request began
    reads as a disconnect: a client sending it a byte at a time cannot hold the connection (and a
    stream of HTTP/2) for ever. Once the body is whole, waiting is unbounded (a streamed answer
    listens for the client's disconnect all along)."""
    deadline = trio.current_time() + BODY_SECONDS
    whole = False

    async def receive_in_time() -> Message:
        nonlocal whole
        if whole:
            return await receive()
        with trio.move_on_at(deadline):
            message = await receive()
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message
        return {"type": "http.disconnect"}

    return receive_in_time


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
