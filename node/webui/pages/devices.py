"""The user's devices: the list, unpairing, and a pairing offer whose code the page shows live
(and can withdraw)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...catalog.shares import SCOPES
from .. import forms
from ..jobs import Jobs
from ..rendering import Renderer
from .base import Api, Pages, only_on_the_node, refresh


class DevicePages(Pages):
    def __init__(self, api: Api, renderer: Renderer, jobs: Jobs) -> None:
        super().__init__(api, renderer)
        self._jobs = jobs

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/devices", self.devices),
            Route("/devices/pair", self.pair, methods=["POST"]),
            Route("/devices/{device}/unpair", self.unpair, methods=["POST"]),
        ]

    async def devices(self, request: Request) -> Response:
        return self.render(request, "devices.html", devices=await self.api.call("devices.list"))

    async def pair(self, request: Request) -> Response:
        """Offer pairing: the page shows the code and the join arguments, then the device paired."""
        only_on_the_node(request, "Pairing a device is done")
        form = await forms.small_form(request)
        scope = form.get("scope") if form.get("scope") in SCOPES else "lan"
        return self.render(request, "pairing.html", job=self._jobs.start("devices.pair", {"scope": scope}))

    async def unpair(self, request: Request) -> Response:
        await self.api.call("devices.unpair", device=request.path_params["device"])
        return refresh()
