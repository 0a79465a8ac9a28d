"""Wire format of the control socket: length-prefixed msgpack frames.

A frame is a 4-byte big-endian body length followed by a msgpack map. Requests are
``{"v": 1, "id": int, "method": str, "params": map}``; each gets exactly one reply,
``{"v": 1, "id": id, "result": any}`` or ``{"v": 1, "id": id, "error": {"code", "message", "data"}}``,
possibly preceded by progress events ``{"v": 1, "id": id, "event": any}`` for long work.
``v`` is checked on every request so a client from another release gets a typed
``unsupported_version`` error instead of a misunderstanding. Errors are exception types on
both ends: the server raises them, the wire carries their ``code``, the client re-raises them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from ..pathnames import readable

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024


class ControlError(Exception):
    """An error that travels over the control socket; ``code`` names its type on the wire."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            wire["data"] = self.data
        return wire


class InternalError(ControlError):
    """The daemon failed unexpectedly; it logged the details and keeps serving."""

    code = "internal_error"


class MalformedMessage(ControlError):
    """The frame's body is not a msgpack map of the expected shape."""

    code = "malformed_message"


class FrameTooLarge(ControlError):
    """The frame announces more bytes than the receiver accepts; the connection is closed."""

    code = "frame_too_large"


class UnsupportedVersion(ControlError):
    """The request speaks a protocol version this daemon does not."""

    code = "unsupported_version"


class UnknownMethod(ControlError):
    code = "unknown_method"


class InvalidParams(ControlError):
    code = "invalid_params"


class NotFound(ControlError):
    code = "not_found"


class Conflict(ControlError):
    """The request contradicts the node's state (e.g. a library that already exists)."""

    code = "conflict"


class ShuttingDown(ControlError):
    code = "shutting_down"


class Unavailable(ControlError):
    """The request needs something the node lacks now (e.g. a model whose weights are missing)."""

    code = "unavailable"


class Forbidden(ControlError):
    """The caller may not do this (a peer asking for what only the node's user may)."""

    code = "forbidden"


class Timeout(ControlError):
    """The request waited too long on something outside the node (a stalled disk or network mount)."""

    code = "timeout"


ERROR_TYPES: dict[str, type[ControlError]] = {
    cls.code: cls
    for cls in (
        InternalError,
        MalformedMessage,
        FrameTooLarge,
        UnsupportedVersion,
        UnknownMethod,
        InvalidParams,
        NotFound,
        Conflict,
        ShuttingDown,
        Unavailable,
        Forbidden,
        Timeout,
    )
}


def error_from_wire(wire: Any) -> ControlError:
    """Rebuild the typed exception from an error reply (unknown codes stay ``ControlError``)."""
    if not isinstance(wire, dict):
        return MalformedMessage(f"error reply is not a map: {wire!r:.200}")
    code = wire.get("code")
    cls = ERROR_TYPES.get(code, ControlError) if isinstance(code, str) else ControlError
    error = cls(str(wire.get("message", "")), wire.get("data"))
    if cls is ControlError:
        error.code = str(code)  # type: ignore[misc]  # keep the unknown code for the caller
    return error


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "id": self.id, "method": self.method, "params": self.params}

    @classmethod
    def from_wire(cls, message: Any) -> Request:
        """Validate a decoded request; errors carry the request id when one could be read."""
        if not isinstance(message, dict):
            raise MalformedMessage("a request must be a msgpack map")
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            raise MalformedMessage("a request needs an integer 'id'")
        version = message.get("v")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(
                f"protocol version {version!r} is not supported",
                data={"supported": sorted(SUPPORTED_VERSIONS), "id": request_id},
            )
        method = message.get("method")
        if not isinstance(method, str) or not method:
            raise MalformedMessage("a request needs a non-empty string 'method'", data={"id": request_id})
        params = message.get("params", {})
        if not isinstance(params, dict):
            raise MalformedMessage("'params' must be a map", data={"id": request_id})
        return cls(request_id, method, params)


def result_reply(request_id: int | None, result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "result": result}


def event_frame(request_id: int, event: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "event": event}


def error_reply(request_id: int | None, error: ControlError) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "error": error.to_wire()}


def encode_frame(message: dict[str, Any]) -> bytes:
    try:
        body = msgpack.packb(message, use_bin_type=True, datetime=False)
    except UnicodeEncodeError:
        # A file name that is not UTF-8 slipped into a message (an error text, say): send it readable.
        body = msgpack.packb(_readable_strings(message), use_bin_type=True, datetime=False)
    return HEADER.pack(len(body)) + body


def _readable_strings(value: Any) -> Any:
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, dict):
        return {_readable_strings(k): _readable_strings(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_readable_strings(v) for v in value]
    return value


def decode_body(body: bytes) -> Any:
    """Decode one frame body; anything that is not exactly one msgpack object is malformed."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises ValueError, TypeError, its own types…: all mean "bad bytes"
        raise MalformedMessage(f"frame body is not valid msgpack: {exc}") from None


def frame_length(header: bytes, max_frame_bytes: int) -> int:
    (length,) = HEADER.unpack(header)
    if length > max_frame_bytes:
        raise FrameTooLarge(
            f"frame of {length} bytes exceeds the limit of {max_frame_bytes} bytes",
            data={"limit": max_frame_bytes},
        )
    return length
