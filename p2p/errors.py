"""Typed errors of the Peerlight wire protocols.

Every failure a peer can cause or meet has a code, sent in an error frame
(``{"ok": false, "error": {"code": ..., "message": ...}}``) and raised on the requester's
side as the matching exception type, so callers branch on types, never on messages. The
codes are part of the protocol (``docs/protocol.md``).
"""

from __future__ import annotations

from typing import Any

from .fields import plain_text


class WireError(Exception):
    """A request that failed; ``code`` is what travels."""

    code = "internal"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}

    def to_wire(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            error["data"] = self.data
        return {"ok": False, "error": error}


class Malformed(WireError):
    """The bytes are not a message of this protocol (bad framing, msgpack or fields)."""

    code = "malformed"


class TooLarge(WireError):
    """A frame longer than the protocol allows; nothing of it is read."""

    code = "too_large"


class Unsupported(WireError):
    """The peer does not speak this protocol or version."""

    code = "unsupported"


class NotFound(WireError):
    code = "not_found"


class Forbidden(WireError):
    code = "forbidden"


class RateLimited(WireError):
    """Too many requests or streams from one peer; retry after ``data["retry_after"]`` seconds."""

    code = "rate_limited"


class Timeout(WireError):
    """A wait on the network (a frame, a dial, an answer) took longer than its deadline."""

    code = "timeout"


class Unavailable(WireError):
    """The server cannot answer now (paused share, no model for the query, shutting down)."""

    code = "unavailable"


class Unreachable(WireError):
    """No connection could be made to the peer (on the requester's side only)."""

    code = "unreachable"


class Internal(WireError):
    code = "internal"


class Cancelled(WireError):
    """The transfer was stopped by the server (e.g. the file changed, or access was revoked)."""

    code = "cancelled"


class Changed(WireError):
    """The item's file is no longer the one indexed (edited or replaced); the server indexes it again."""

    code = "changed"


ERRORS: dict[str, type[WireError]] = {
    cls.code: cls
    for cls in (Malformed, TooLarge, Unsupported, NotFound, Forbidden, RateLimited, Timeout, Unavailable, Unreachable, Internal, Cancelled, Changed)
}


def from_wire(error: Any) -> WireError:
    """The exception for an error frame's ``error`` map; an unknown code is kept as ``internal``."""
    if not isinstance(error, dict):
        return Malformed(f"an error frame without an error map: {error!r:.80}")
    code, message = error.get("code"), error.get("message")
    cls = ERRORS.get(code, Internal) if isinstance(code, str) else Internal
    data = error.get("data") if isinstance(error.get("data"), dict) else None
    # A peer's words reach our logs and terminal: no control or bidi characters, bounded.
    text = plain_text(message, 1000) if isinstance(message, str) else plain_text(repr(message), 200)
    if cls is Internal and code != "internal":
        text = f"{plain_text(code, 40)}: {text}"
    return cls((text or "")[:1000], data)
