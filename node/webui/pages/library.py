"""The user's own media: the grid, search with its filters, an item with its player and rating,
the item's bytes and thumbnail, and recommendations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...catalog.database import Catalog
from .. import forms
from ..media import NoMedia, Thumbnails, media_response, open_item
from ..rendering import Renderer
from .base import HASH, MODALITIES, PAGE_ITEMS, Api, Pages, content_hash

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MODES = ("hybrid", "semantic", "text")
MB = 1024 * 1024


@dataclass(frozen=True)
class SearchFilters:
    """The search page's filters as the form has them (what the page shows back)."""

    modality: str | None = None
    date_from: str | None = None  # YYYY-MM-DD, inclusive
    date_to: str | None = None
    stars: int | None = None  # at least this many of five
    size_min_mb: float | None = None
    size_max_mb: float | None = None
    library: str | None = None  # a library's id: its path stays in the daemon
    within: str | None = None  # a folder inside that library, relative to it

    @classmethod
    def of(cls, request: Request) -> SearchFilters:
        query = request.query_params
        date_from, date_to = (query.get(key, "") for key in ("date_from", "date_to"))
        stars = forms.whole_number(query.get("stars"))
        within = query.get("within", "").strip().strip("/")[:500]
        parts = PurePosixPath(within).parts
        return cls(
            modality=forms.choice(request, "modality", MODALITIES),
            date_from=date_from if DATE.fullmatch(date_from) else None,
            date_to=date_to if DATE.fullmatch(date_to) else None,
            stars=stars if stars is not None and 1 <= stars <= 5 else None,
            size_min_mb=forms.number(query.get("size_min")),
            size_max_mb=forms.number(query.get("size_max")),
            library=query["library"] if forms.whole_number(query.get("library")) is not None else None,
            within=within if within and ".." not in parts else None,
        )

    @property
    def any(self) -> bool:
        return self != SearchFilters(modality=self.modality)

    def to_params(self, libraries: list[dict[str, Any]]) -> dict[str, Any]:
        """The API's filter parameters (a star rating as the 0–10 scale's lower bound, MB as bytes)."""
        folder = None
        paths = {str(lib["id"]): lib["path"] for lib in libraries}
        if self.library in paths:
            folder = str(PurePosixPath(paths[self.library], self.within or ""))
        return {
            "modality": [self.modality] if self.modality else None,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "rating_min": 2 * self.stars - 1 if self.stars else None,  # what shows as that many stars or more
            "size_min": round(self.size_min_mb * MB) if self.size_min_mb is not None else None,
            "size_max": round(self.size_max_mb * MB) if self.size_max_mb is not None else None,
            "folder": folder,
        }


class LibraryPages(Pages):
    def __init__(self, api: Api, renderer: Renderer, catalog: Catalog, thumbnails: Thumbnails) -> None:
        super().__init__(api, renderer)
        self._catalog = catalog
        self._thumbnails = thumbnails

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.library),
            Route("/items", self.items),
            Route("/search", self.search),
            Route("/similar/{content_hash}", self.similar),
            Route("/item/{content_hash}", self.item),
            Route("/item/{content_hash}/rating", self.rate, methods=["POST"]),
            Route("/events/feedback", self.feedback_event, methods=["POST"]),
            Route("/media/{content_hash}", self.media),
            Route("/thumb/{content_hash}", self.thumbnail),
            Route("/recommend", self.recommend),
        ]

    async def library(self, request: Request) -> Response:
        modality = forms.choice(request, "modality", MODALITIES)
        page = await self.api.call("items.page", limit=PAGE_ITEMS, modality=[modality] if modality else None)
        counts = await self.api.call("index.status")
        return self.render(request, "library.html", page=page, modality=modality, modalities=MODALITIES, counts=counts)

    async def items(self, request: Request) -> Response:
        """The next page of the grid (htmx swaps it in when its sentinel scrolls into view)."""
        modality = forms.choice(request, "modality", MODALITIES)
        before = forms.whole_number(request.query_params.get("before"))
        page = await self.api.call("items.page", before=before, limit=PAGE_ITEMS, modality=[modality] if modality else None)
        return self.render(request, "grid.html", page=page, modality=modality)

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:1000]
        mode = forms.choice(request, "mode", MODES, "hybrid")
        filters = SearchFilters.of(request)
        libraries = await self.api.call("library.list")
        reply = None
        if query:
            reply = await self.api.call("search.query", query=query, mode=mode, limit=60, **filters.to_params(libraries))
        return self.render(
            request, "search.html", query=query, mode=mode, filters=filters, modalities=MODALITIES, libraries=libraries, reply=reply
        )

    async def similar(self, request: Request) -> Response:
        """More like this item: the search by example, from the item's own file (its path stays in the daemon)."""
        item = await self.api.call("items.get", hash=content_hash(request))
        reply = await self.api.call("search.similar", path=item["paths"][0]["path"], limit=60)
        reply["results"] = [r for r in reply.get("results", []) if r.get("content_hash") != item["content_hash"]]
        return self.render(request, "search.html", query="", similar_to=item, reply=reply)

    async def item(self, request: Request) -> Response:
        item = await self.api.call("items.get", hash=content_hash(request))
        start = forms.number(request.query_params.get("t"))
        return self.render(request, "item.html", item=item, start=start, passage=request.query_params.get("passage", "")[:2000])

    async def rate(self, request: Request) -> Response:
        item = content_hash(request)
        form = await forms.small_form(request)
        action = form.get("action", "")
        if action == "like":
            await self.api.call("feedback.like", item=item)
        elif action == "dislike":
            await self.api.call("feedback.dislike", item=item)
        elif action == "clear":
            await self.api.call("feedback.unrate", item=item)
        else:
            rating = forms.number(form.get("rating"))
            if rating is None:
                return Response("a rating from 0 to 10 is expected", status_code=400)
            await self.api.call("feedback.rate", item=item, rating=rating)
        return self.render(request, "rating.html", item=await self.api.call("items.get", hash=item))

    async def feedback_event(self, request: Request) -> Response:
        """What the player saw: opened, finished, skipped, or the fraction watched."""
        try:
            body = json.loads(await forms.limited_body(request, 4096))
        except ValueError:
            return Response("a JSON object is expected", status_code=400)
        if not isinstance(body, dict) or not HASH.fullmatch(str(body.get("hash", ""))):
            return Response("hash, kind and value are expected", status_code=400)
        await self.api.call("feedback.event", item=body["hash"], kind=body.get("kind"), value=body.get("value"))
        return Response(status_code=204)

    async def media(self, request: Request) -> Response:
        try:
            handle, size, _, mime = await open_item(self._catalog, content_hash(request))
        except NoMedia as exc:
            return self.render(request, "error.html", 404, message=str(exc))
        return media_response(handle, size, mime, request.headers.get("range"), head=request.method == "HEAD")

    async def thumbnail(self, request: Request) -> Response:
        data = await self._thumbnails.get(content_hash(request))
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    async def recommend(self, request: Request) -> Response:
        source = forms.choice(request, "source", ("all", "local", "peers"), "all")
        reply = await self.api.call("recommend.query", limit=40, explain=True, source=source)
        return self.render(request, "recommend.html", reply=reply, source=source)
