"""The web UI's pages: each one a call of the daemon's own API methods, as the local user, rendered.

Routes address items by content hash only: no path ever appears in a URL. Everything shown
passes through Jinja2's autoescaping, peers' names and metadata included.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from urllib.parse import parse_qs, quote
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import trio
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..callers import Caller
from ..catalog.database import Catalog
from ..control.protocol import ControlError
from ..control.server import Handler, Streaming
from .guard import Guard
from .media import MEDIA_CSP, NoMedia, Thumbnails, media_response, open_item
from .sessions import Sessions
from .jobs import Jobs

log = logging.getLogger("peerlight.webui")

HASH = re.compile(r"[0-9a-f]{64}")
PAGE_ITEMS = 60
MODALITIES = ("image", "video", "audio", "text")
SCOPES = ("local", "lan", "global")
PERMISSIONS = ("devices", "members", "public")
STATUS_EVERY = 1.0  # seconds between live status events
ERROR_STATUS = {"invalid_params": 400, "not_found": 404, "forbidden": 403, "conflict": 409, "unavailable": 503}


class WebUi:
    """The ASGI application: ``app`` (guarded) over the daemon's API ``methods``."""

    def __init__(
        self,
        methods: Mapping[str, Handler | Streaming],
        catalog: Catalog,
        sessions: Sessions,
        thumbnails_dir: Path,
        decoders: Any,
        session_seconds: float,
        downloads: Path,
        host_label: str | None = None,
    ) -> None:
        self._methods = methods
        self._catalog = catalog
        self._sessions = sessions
        self._session_seconds = session_seconds
        self._thumbnails = Thumbnails(catalog, thumbnails_dir, decoders)
        self.jobs = Jobs(methods)
        self._downloads = downloads
        self._templates = Environment(loader=PackageLoader("peerlight.node.webui", "templates"), autoescape=select_autoescape(default=True))
        self._templates.filters["size"] = _human_size
        self._templates.filters["stars"] = lambda rating: "" if rating is None else "★" * round(rating / 2) + "☆" * (5 - round(rating / 2))
        self._templates.filters["highlight"] = _highlight
        self._templates.filters["segment"] = lambda text: quote(str(text), safe="")  # a name as one URL path segment
        self._templates.filters["combine_match"] = _as_card
        routes = [
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
            Route("/peers", self.peers),
            Route("/peers/{share}", self.peer_share),
            Route("/peers/{share}/preview/{content_hash}", self.peer_preview),
            Route("/peers/{share}/fetch/{content_hash}", self.fetch, methods=["POST"]),
            Route("/events/jobs/{job}", self.job_events),
            Route("/devices", self.devices),
            Route("/devices/pair", self.pair, methods=["POST"]),
            Route("/devices/{device}/unpair", self.unpair, methods=["POST"]),
            Route("/shares", self.shares),
            Route("/shares", self.create_share, methods=["POST"]),
            Route("/shares/{name}", self.share),
            Route("/shares/{name}/invite", self.invite, methods=["POST"]),
            Route("/shares/{name}/grants/{grant}/revoke", self.revoke, methods=["POST"]),
            Route("/status", self.status),
            Route("/events/status", self.status_events),
            Route("/login", self.login),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("peerlight.node.webui", "static")]), name="static"),
        ]
        self._host_label = host_label  # the secret part of the UI's host name, if it has one
        self._port: int | None = None
        self.app = Guard(
            Starlette(routes=routes, exception_handlers={ControlError: self._api_error, 404: self._not_found}), sessions, self.hosts, self.cookie_name
        )

    # --- where it answers ---

    def serving_at(self, port: int) -> None:
        self._port = port

    @property
    def host(self) -> str:
        """``p-<label>.localhost:PORT`` (browsers resolve any .localhost name to this machine; only
        this node's user learns the label, so no other program on 127.0.0.1 is sent the UI's
        cookie), or ``127.0.0.1:PORT`` without a label."""
        return f"p-{self._host_label}.localhost:{self._port}" if self._host_label else f"127.0.0.1:{self._port}"

    @property
    def address(self) -> str:
        return f"http://{self.host}"

    def hosts(self) -> frozenset[str]:
        if self._port is None:
            return frozenset()
        if self._host_label:
            return frozenset({self.host})
        return frozenset(f"{name}:{self._port}" for name in ("127.0.0.1", "localhost", "[::1]"))

    def cookie_name(self) -> str:
        return f"peerlight_session_{self._port}"  # two nodes' UIs on one machine keep their sessions apart

    # --- plumbing ---

    async def _call(self, method: str, **params: Any) -> Any:
        handler = self._methods[method]
        assert not isinstance(handler, Streaming)
        return await handler({k: v for k, v in params.items() if v is not None}, Caller.local())

    def _page(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        session = request.scope.get("state", {}).get("session")
        body = self._templates.get_template(template).render(csrf=session.csrf if session else "", path=request.url.path, **context)
        return HTMLResponse(body, status_code=code)

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ControlError)
        return self._page(request, "error.html", ERROR_STATUS.get(exc.code, 500), message=str(exc))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._page(request, "error.html", 404, message="No such page.")

    @staticmethod
    def _hash(request: Request) -> str:
        content_hash = request.path_params["content_hash"]
        if not HASH.fullmatch(content_hash):
            raise _NotAnItem()
        return content_hash

    # --- pages ---

    async def library(self, request: Request) -> Response:
        modality = _modality(request)
        page = await self._call("items.page", limit=PAGE_ITEMS, modality=[modality] if modality else None)
        counts = await self._call("index.status")
        return self._page(request, "library.html", page=page, modality=modality, modalities=MODALITIES, counts=counts)

    async def items(self, request: Request) -> Response:
        """The next page of the grid (htmx swaps it in when its sentinel scrolls into view)."""
        modality = _modality(request)
        before = _int(request.query_params.get("before"))
        page = await self._call("items.page", before=before, limit=PAGE_ITEMS, modality=[modality] if modality else None)
        return self._page(request, "grid.html", page=page, modality=modality)

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:1000]
        mode = request.query_params.get("mode", "hybrid")
        mode = mode if mode in ("hybrid", "semantic", "text") else "hybrid"
        modality = _modality(request)
        reply = None
        if query:
            reply = await self._call("search.query", query=query, mode=mode, limit=60, modality=[modality] if modality else None)
        return self._page(request, "search.html", query=query, mode=mode, modality=modality, modalities=MODALITIES, reply=reply)

    async def similar(self, request: Request) -> Response:
        """More like this item: the search by example, from the item's own file (its path stays in the daemon)."""
        item = await self._call("items.get", hash=self._hash(request))
        reply = await self._call("search.similar", path=item["paths"][0]["path"], limit=60)
        reply["results"] = [r for r in reply.get("results", []) if r.get("content_hash") != item["content_hash"]]
        return self._page(request, "search.html", query="", similar_to=item, mode="semantic", modality=None, modalities=MODALITIES, reply=reply)

    async def item(self, request: Request) -> Response:
        item = await self._call("items.get", hash=self._hash(request))
        start = _float(request.query_params.get("t"))
        return self._page(request, "item.html", item=item, start=start, passage=request.query_params.get("passage", "")[:2000])

    async def rate(self, request: Request) -> Response:
        content_hash = self._hash(request)
        form = await _small_form(request)
        action = form.get("action", "")
        if action == "like":
            await self._call("feedback.like", item=content_hash)
        elif action == "dislike":
            await self._call("feedback.dislike", item=content_hash)
        elif action == "clear":
            await self._call("feedback.unrate", item=content_hash)
        else:
            rating = _float(form.get("rating"))
            if rating is None:
                return Response("a rating from 0 to 10 is expected", status_code=400)
            await self._call("feedback.rate", item=content_hash, rating=rating)
        item = await self._call("items.get", hash=content_hash)
        return self._page(request, "rating.html", item=item)

    async def feedback_event(self, request: Request) -> Response:
        """What the player saw: opened, finished, skipped, or the fraction watched."""
        try:
            body = json.loads(await _limited_body(request, 4096))
        except ValueError:
            return Response("a JSON object is expected", status_code=400)
        if not isinstance(body, dict) or not HASH.fullmatch(str(body.get("hash", ""))):
            return Response("hash, kind and value are expected", status_code=400)
        await self._call("feedback.event", item=body["hash"], kind=body.get("kind"), value=body.get("value"))
        return Response(status_code=204)

    async def media(self, request: Request) -> Response:
        try:
            handle, size, _, mime = await open_item(self._catalog, self._hash(request))
        except NoMedia as exc:
            return self._page(request, "error.html", 404, message=str(exc))
        return media_response(handle, size, mime, request.headers.get("range"), head=request.method == "HEAD")

    async def thumbnail(self, request: Request) -> Response:
        data = await self._thumbnails.get(self._hash(request))
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    async def recommend(self, request: Request) -> Response:
        source = request.query_params.get("source", "all")
        source = source if source in ("all", "local", "peers") else "all"
        reply = await self._call("recommend.query", limit=40, explain=True, source=source)
        return self._page(request, "recommend.html", reply=reply, source=source)

    async def peers(self, request: Request) -> Response:
        reply = await self._call("peers.list") if "peers.list" in self._methods else []
        return self._page(request, "peers.html", peers=reply)

    async def peer_share(self, request: Request) -> Response:
        """A peer's share: its catalog as this node keeps a copy of it, with previews and fetching."""
        share = request.path_params["share"]
        page = await self._call("items.remote", share=share, after=request.query_params.get("after"), limit=PAGE_ITEMS)
        return self._page(request, "peer_share.html", key=share, page=page)

    async def peer_preview(self, request: Request) -> Response:
        """The share's own preview of an item (a small JPEG, or seconds of audio), asked for now."""
        preview = await self._call("peers.preview", share=request.path_params["share"], item=self._hash(request), data=True)
        if "data" not in preview or preview.get("mime") not in ("image/jpeg", "audio/wav"):
            return Response(status_code=404)
        return Response(preview["data"], media_type=preview["mime"], headers={"content-security-policy": MEDIA_CSP, "cache-control": "private, max-age=3600"})

    async def fetch(self, request: Request) -> Response:
        """Start fetching an item from a peer's share into the downloads folder; the fragment
        returned follows its progress (server-sent events)."""
        params = {"share": request.path_params["share"], "item": self._hash(request), "to": str(self._downloads)}
        return self._page(request, "transfer.html", job=self.jobs.start("peers.fetch", params))

    async def pair(self, request: Request) -> Response:
        """Offer pairing: the page shows the code and the join arguments, then the device paired."""
        form = await _small_form(request)
        scope = form.get("scope") if form.get("scope") in SCOPES else "lan"
        return self._page(request, "pairing.html", job=self.jobs.start("devices.pair", {"scope": scope}))

    async def devices(self, request: Request) -> Response:
        return self._page(request, "devices.html", devices=await self._call("devices.list"), scopes=SCOPES)

    async def unpair(self, request: Request) -> Response:
        await self._call("devices.unpair", device=request.path_params["device"])
        response = Response(status_code=204)
        response.headers["HX-Refresh"] = "true"
        return response

    async def job_events(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            return Response(status_code=404)

        async def events() -> AsyncIterator[bytes]:
            sent = -1
            while True:
                version = job.version
                yield f"data: {json.dumps(job.to_wire())}\n\n".encode()
                if job.finished:
                    return
                sent = version
                await job.changed_since(sent)  # no change missed while the last one was being sent

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def shares(self, request: Request) -> Response:
        listed = await self._call("share.list") if "share.list" in self._methods else []
        libraries = await self._call("library.list")
        return self._page(request, "shares.html", shares=listed, libraries=libraries, scopes=SCOPES, permissions=PERMISSIONS)

    async def create_share(self, request: Request) -> Response:
        """A new share of the libraries ticked (named by id: their paths stay in the daemon)."""
        form = await _small_form(request, multiple=("library",))
        libraries = {str(lib["id"]): lib["path"] for lib in await self._call("library.list")}
        chosen = [libraries[i] for i in form.get("library", []) if i in libraries]
        created = await self._call(
            "share.create", name=form.get("name", ""), scope=form.get("scope"), permission=form.get("permission"), collection=chosen
        )
        response = Response(status_code=204)
        response.headers["HX-Redirect"] = f"/shares/{quote(created['name'], safe='')}"
        return response

    async def share(self, request: Request) -> Response:
        name = request.path_params["name"]
        shown = await self._call("share.show", name=name)
        granted = await self._call("share.grants", name=name)
        log_rows = await self._call("share.log", name=name, limit=50)
        return self._page(request, "share.html", share=shown, grants=granted, log=log_rows)

    async def invite(self, request: Request) -> Response:
        """An open invite (text and QR code) for whoever uses it first, or a grant to a peer id."""
        name = request.path_params["name"]
        form = await _small_form(request, multiple=("can",))
        to = form.get("to", "").strip() or None
        days = _float(form.get("days"))
        granted = await self._call(
            "share.grant", name=name, to=to, invite=to is None, can=form.get("can") or None, expires_in=days * 86400 if days else None
        )
        qr = _qr_data_uri(granted["invite"]) if granted.get("invite") else None
        return self._page(request, "invite.html", granted=granted, qr=qr)

    async def revoke(self, request: Request) -> Response:
        await self._call("share.revoke", name=request.path_params["name"], grant=request.path_params["grant"])
        response = Response(status_code=204)
        response.headers["HX-Refresh"] = "true"
        return response

    async def status(self, request: Request) -> Response:
        status = await self._call("daemon.status")
        index = await self._call("index.status")
        problems = await self._call("index.problems", limit=50)
        shares = await self._call("share.list") if "share.list" in self._methods else []
        models = await self._call("models.list", check=False) if "models.list" in self._methods else []
        return self._page(request, "status.html", status=status, index=index, models=models, problems=problems, shares=shares)

    async def status_events(self, request: Request) -> Response:
        """Server-sent events: the indexing progress every second while the page is open."""

        async def events() -> AsyncIterator[bytes]:
            while True:
                index = await self._call("index.status")
                yield f"data: {json.dumps(_progress(index))}\n\n".encode()
                await trio.sleep(STATUS_EVERY)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    # --- session ---

    async def login(self, request: Request) -> Response:
        opened = self._sessions.redeem(request.query_params.get("token", ""))
        if opened is None:
            return self._page(request, "error.html", 401, message="This login link was used already or has expired: run `peerlight ui` again.")
        session_id, _ = opened
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(self.cookie_name(), session_id, max_age=int(self._session_seconds), httponly=True, samesite="strict", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        session_id = request.scope["state"].get("session_id")
        if session_id:
            self._sessions.end(session_id)
        response = HTMLResponse("<p>Logged out. <code>peerlight ui</code> logs you in again.</p>")
        response.delete_cookie(self.cookie_name(), path="/")
        return response


class _NotAnItem(ControlError):
    code = "not_found"

    def __init__(self) -> None:
        super().__init__("not an item: items are named by their 64-digit content hash")


def _highlight(text: str | None, passage: str) -> Markup:
    """The document's text, escaped, with the matching passage marked."""
    text = text or ""
    at = text.find(passage) if passage else -1
    if at < 0:
        return Markup("{}").format(text)
    return Markup("{}<mark>{}</mark>{}").format(text[:at], passage, text[at + len(passage) :])


def _as_card(result: dict[str, Any], match: dict[str, Any]) -> dict[str, Any]:
    """A search result as a grid card: a document's passage, a video's moment."""
    timed = result.get("modality") in ("video", "audio") and isinstance(match.get("start"), (int, float))
    return {**result, "passage": match.get("passage"), "start": round(match["start"], 1) if timed else None}


def _modality(request: Request) -> str | None:
    modality = request.query_params.get("modality")
    return modality if modality in MODALITIES else None


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdecimal() and len(text) < 19 else None


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < 1e9 else None


async def _limited_body(request: Request, limit: int) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValueError("too large")
    return body


async def _small_form(request: Request, multiple: tuple[str, ...] = ()) -> dict[str, Any]:
    """A URL-encoded form of a few fields (what htmx posts): the first value of each, every value
    of those in ``multiple``; without Starlette's multipart machinery (a dependency for file
    uploads, which this UI never takes)."""
    try:
        body = await _limited_body(request, 16384)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=64)
    except ValueError:  # too large, or more fields than any form of the UI has
        return {}
    return {key: values if key in multiple else values[0] for key, values in fields.items()}


def _qr_data_uri(text: str) -> str:
    """The invite as a QR code: an SVG data URI (the page's policy allows data: images, no other origin)."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=4, border=2, dark="#000", light="#fff")
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode()


def _progress(index: dict[str, Any]) -> dict[str, Any]:
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


def _human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
