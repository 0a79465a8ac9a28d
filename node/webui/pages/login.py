"""Logging in and out. On loopback a one-time URL from ``peerlight ui`` opens a session; at the
door for other machines, the password ``peerlight ui password`` set."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import forms
from ..connections import client_key
from ..guard import Door
from ..passwords import Throttled, UiPassword
from ..rendering import Renderer
from ..sessions import Sessions
from .base import Api, Pages


class LoginPages(Pages):
    def __init__(self, api: Api, renderer: Renderer, sessions: Sessions, session_seconds: float, password: UiPassword | None) -> None:
        super().__init__(api, renderer)
        self._sessions = sessions
        self._session_seconds = session_seconds
        self._password = password

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.login),
            Route("/login", self.password_login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    async def login(self, request: Request) -> Response:
        door: Door = request.scope["state"]["door"]
        if door.password_login:
            return self._form(request)
        opened = self._sessions.redeem(request.query_params.get("token", ""))
        if opened is None:
            return self.render(request, "error.html", 401, message="This login link was used already or has expired: run `peerlight ui` again.")
        return self._logged_in(door, opened[0])

    async def password_login(self, request: Request) -> Response:
        door: Door = request.scope["state"]["door"]
        if not door.password_login or self._password is None:
            return Response(status_code=405)
        form = await forms.small_form(request)
        client = client_key(request.client.host) if request.client else "?"
        try:
            right = await self._password.check(str(form.get("password", "")), client)
        except Throttled as exc:
            return self._form(request, 429, str(exc), {"retry-after": str(int(exc.retry_after) + 1)})
        if not right:
            return self._form(request, 401, "Wrong password.")
        return self._logged_in(door, self._sessions.open(door.name)[0])

    async def logout(self, request: Request) -> Response:
        door: Door = request.scope["state"]["door"]
        session_id = request.scope["state"].get("session_id")
        if session_id:
            self._sessions.end(session_id)
        again = '<a href="/login">Log in again</a>.' if door.password_login else "<code>peerlight ui</code> logs you in again."
        response = HTMLResponse(f"<p>Logged out. {again}</p>")
        response.delete_cookie(door.cookie(), path="/")
        return response

    def _form(self, request: Request, code: int = 200, problem: str | None = None, headers: dict[str, str] | None = None) -> Response:
        door: Door = request.scope["state"]["door"]
        response = self.render(
            request,
            "login.html",
            code,
            problem=problem,
            password_set=self._password is not None and self._password.is_set(),
            encrypted=door.scheme == "https",
        )
        response.headers.update(headers or {})
        return response

    def _logged_in(self, door: Door, session_id: str) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            door.cookie(),
            session_id,
            max_age=int(self._session_seconds),
            httponly=True,
            samesite="strict",
            secure=door.scheme == "https",
            path="/",
        )
        return response
