"""The user's shares: create one from libraries, invite (text and QR code), grants, revoke, access log.

Share names may hold any printable character, ``/`` included: the routes take the rest of the
path as the name, the actions being the last segments."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...catalog.shares import PERMISSIONS, SCOPES
from .. import forms
from ..rendering import qr_data_uri
from .base import Pages, only_on_the_node, refresh

PERMISSIONS_SHOWN = tuple(reversed(PERMISSIONS))  # narrowest first: my devices, people I invite, anyone


class SharePages(Pages):
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/shares", self.shares),
            Route("/shares", self.create, methods=["POST"]),
            Route("/shares/{name:path}/invite", self.invite, methods=["POST"]),
            Route("/shares/{name:path}/grants/{grant}/revoke", self.revoke, methods=["POST"]),
            Route("/shares/{name:path}", self.share),
        ]

    async def shares(self, request: Request) -> Response:
        listed = await self.api.call("share.list") if self.api.offers("share.list") else []
        libraries = await self.api.call("library.list")
        return self.render(request, "shares.html", shares=listed, libraries=libraries, scopes=SCOPES, permissions=PERMISSIONS_SHOWN)

    async def create(self, request: Request) -> Response:
        """A new share of the libraries ticked (named by id: their paths stay in the daemon)."""
        only_on_the_node(request, "Shares are made")
        form = await forms.small_form(request, multiple=("library",))
        libraries = {str(lib["id"]): lib["path"] for lib in await self.api.call("library.list")}
        chosen = [libraries[i] for i in form.get("library", []) if i in libraries]
        created = await self.api.call(
            "share.create", name=form.get("name", ""), scope=form.get("scope"), permission=form.get("permission"), collection=chosen
        )
        return Response(status_code=204, headers={"HX-Redirect": f"/shares/{quote(created['name'], safe='')}"})

    async def share(self, request: Request) -> Response:
        name = request.path_params["name"]
        shown = await self.api.call("share.show", name=name)
        granted = await self.api.call("share.grants", name=name)
        log_rows = await self.api.call("share.log", name=name, limit=50)
        return self.render(request, "share.html", share=shown, grants=granted, log=log_rows)

    async def invite(self, request: Request) -> Response:
        """An open invite (text and QR code) for whoever uses it first, or a grant to a peer id."""
        only_on_the_node(request, "Invites are made")
        form = await forms.small_form(request, multiple=("can",))
        to = form.get("to", "").strip() or None
        days = forms.number(form.get("days"))
        granted = await self.api.call(
            "share.grant",
            name=request.path_params["name"],
            to=to,
            invite=to is None,
            can=form.get("can") or None,
            expires_in=days * 86400 if days else None,
        )
        qr = qr_data_uri(granted["invite"]) if granted.get("invite") else None
        return self.render(request, "invite.html", granted=granted, qr=qr)

    async def revoke(self, request: Request) -> Response:
        await self.api.call("share.revoke", name=request.path_params["name"], grant=request.path_params["grant"])
        return refresh()
