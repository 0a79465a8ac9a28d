"""Pages from templates: Jinja2 with autoescaping everywhere (peers' names and metadata
included), and the few filters the templates use."""

from __future__ import annotations

import base64
import io
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse


class Renderer:
    def __init__(self) -> None:
        self._templates = Environment(loader=PackageLoader("peerlight.node.webui", "templates"), autoescape=select_autoescape(default=True))
        self._templates.filters.update(
            size=human_size,
            stars=lambda rating: "" if rating is None else "★" * round(rating / 2) + "☆" * (5 - round(rating / 2)),
            highlight=highlight,
            segment=lambda text: quote(str(text), safe=""),  # a name as one URL path segment
            combine_match=as_card,
        )

    def page(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        """``template`` rendered for this request's session (its CSRF token) and door."""
        state = request.scope.get("state", {})
        session, door = state.get("session"), state.get("door")
        body = self._templates.get_template(template).render(
            csrf=session.csrf if session else "", path=request.url.path, remote=bool(door and door.password_login), **context
        )
        return HTMLResponse(body, status_code=code)


def highlight(text: str | None, passage: str) -> Markup:
    """The document's text, escaped, with the matching passage marked."""
    text = text or ""
    at = text.find(passage) if passage else -1
    if at < 0:
        return Markup("{}").format(text)
    return Markup("{}<mark>{}</mark>{}").format(text[:at], passage, text[at + len(passage) :])


def as_card(result: dict[str, Any], match: dict[str, Any]) -> dict[str, Any]:
    """A search result as a grid card: a document's passage, a video's moment."""
    timed = result.get("modality") in ("video", "audio") and isinstance(match.get("start"), (int, float))
    return {**result, "passage": match.get("passage"), "start": round(match["start"], 1) if timed else None}


def qr_data_uri(text: str) -> str:
    """``text`` as a QR code: an SVG data URI (the page's policy allows data: images, no other origin)."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=4, border=2, dark="#000", light="#fff")
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode()


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
