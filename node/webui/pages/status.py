"""The node's state: models, indexing progress (live, over server-sent events), problem files,
and each share's reachability."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .base import Pages

STATUS_EVERY = 1.0  # seconds between live status events


class StatusPages(Pages):
    def routes(self) -> list[BaseRoute]:
        return [Route("/status", self.status), Route("/events/status", self.status_events)]

    async def status(self, request: Request) -> Response:
        return self.render(
            request,
            "status.html",
            status=await self.api.call("daemon.status"),
            index=await self.api.call("index.status"),
            problems=await self.api.call("index.problems", limit=50),
            shares=await self.api.call("share.list") if self.api.offers("share.list") else [],
            models=await self.api.call("models.list", check=False) if self.api.offers("models.list") else [],
        )

    async def status_events(self, request: Request) -> Response:
        """Server-sent events: the indexing progress every second while the page is open."""

        async def events() -> AsyncIterator[bytes]:
            while True:
                index = await self.api.call("index.status")
                yield f"data: {json.dumps(progress(index))}\n\n".encode()
                await trio.sleep(STATUS_EVERY)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})


def progress(index: dict[str, Any]) -> dict[str, Any]:
    """What the status page's live line shows."""
    return {
        "busy": bool(index.get("busy")),
        "scanning": bool(index.get("scanning")),
        "embedding": bool(index.get("embedding")),
        "items": index.get("items", 0),
        "pending": index.get("embeddings_pending", 0),
        "failed": index.get("embeddings_failed", 0),
        "problems": index.get("problems", 0),
        "at": time.time(),
    }
