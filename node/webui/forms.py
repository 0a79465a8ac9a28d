"""Reading what a browser sent: query values and small URL-encoded forms, bounded and typed.

Anything malformed reads as absent (the page then shows its default), never as an error page:
these values come from the UI's own links and forms, or from someone fiddling with the URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request

MAX_FORM_BYTES = 16384
MAX_FORM_FIELDS = 64


def choice(request: Request, key: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    value = request.query_params.get(key)
    return value if value in choices else default


def whole_number(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdecimal() and len(text) < 19 else None


def number(text: str | None) -> float | None:
    """A non-negative finite number below a billion, or None."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < 1e9 else None


async def limited_body(request: Request, limit: int) -> bytes:
    """The request body, or ValueError once it passes ``limit`` bytes (read no further) or does
    not arrive whole."""
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ValueError("too large")
    except ClientDisconnect:  # gone, or too slow (guard.BODY_SECONDS)
        raise ValueError("the body did not arrive") from None
    return body


async def small_form(request: Request, multiple: tuple[str, ...] = ()) -> dict[str, Any]:
    """A URL-encoded form of a few fields (what htmx posts): the first value of each, every value
    of those in ``multiple``; without Starlette's multipart machinery (a dependency for file
    uploads, which this UI never takes)."""
    try:
        body = await limited_body(request, MAX_FORM_BYTES)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # too large, or more fields than any form of the UI has
        return {}
    return {key: values if key in multiple else values[0] for key, values in fields.items()}
