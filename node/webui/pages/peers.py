"""Peers' shares: the list, one share's catalog with its own previews, and fetching from it;
and the long tasks pages start (a fetch, a pairing offer), followed live and cancellable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import forms
from ..jobs import Jobs
from ..media import MEDIA_CSP
from ..rendering import Renderer
from .base import PAGE_ITEMS, Api, Pages, content_hash


class PeerPages(Pages):
    def __init__(self, api: Api, renderer: Renderer, jobs: Jobs, downloads: Path) -> None:
        super().__init__(api, renderer)
        self._jobs = jobs
        self._downloads = downloads

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/peers", self.peers),
            Route("/peers/{share}", self.peer_share),
            Route("/peers/{share}/preview/{content_hash}", self.preview),
            Route("/peers/{share}/fetch/{content_hash}", self.fetch, methods=["POST"]),
            Route("/events/jobs/{job}", self.job_events),
            Route("/jobs/{job}/cancel", self.cancel_job, methods=["POST"]),
        ]

    async def peers(self, request: Request) -> Response:
        listed = await self.api.call("peers.list") if self.api.offers("peers.list") else []
        return self.render(request, "peers.html", peers=listed)

    async def peer_share(self, request: Request) -> Response:
        """A peer's share: its catalog as this node keeps a copy of it, with previews and fetching."""
        share = request.path_params["share"]
        after = request.query_params.get("after")
        page = await self.api.call("items.remote", share=share, after=after, limit=PAGE_ITEMS)
        return self.render(request, "peer_share.html", key=share, page=page)

    async def preview(self, request: Request) -> Response:
        """The share's own preview of an item (a small JPEG, or seconds of audio), asked for now."""
        preview = await self.api.call("peers.preview", share=request.path_params["share"], item=content_hash(request), data=True)
        if "data" not in preview or preview.get("mime") not in ("image/jpeg", "audio/wav"):
            return Response(status_code=404)
        headers = {"content-security-policy": MEDIA_CSP, "cache-control": "private, max-age=3600"}
        return Response(preview["data"], media_type=preview["mime"], headers=headers)

    async def fetch(self, request: Request) -> Response:
        """Start fetching an item from a peer's share into the downloads folder; the fragment
        returned follows its progress (server-sent events)."""
        params = {"share": request.path_params["share"], "item": content_hash(request), "to": str(self._downloads)}
        return self.render(request, "transfer.html", job=self._jobs.start("peers.fetch", params))

    async def job_events(self, request: Request) -> Response:
        job = self._jobs.get(request.path_params["job"])
        if job is None:
            return Response(status_code=404)

        async def events() -> AsyncIterator[bytes]:
            while True:
                version = job.version
                yield f"data: {json.dumps(job.to_wire())}\n\n".encode()
                if job.finished:
                    return
                await job.changed_since(version)  # no change missed while the last one was being sent

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def cancel_job(self, request: Request) -> Response:
        """Stop a fetch, or withdraw a pairing offer (its code stops working at once)."""
        await forms.small_form(request)  # nothing to read; the body is drained
        if not self._jobs.cancel(request.path_params["job"]):
            return Response(status_code=404)
        return Response(status_code=204)
