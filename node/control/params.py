"""Typed access to a request's params, with ``invalid_params`` errors that name the key."""

from __future__ import annotations

from typing import Any

from .protocol import InvalidParams

_MISSING = object()


class Params:
    """Reads params one by one; ``done()`` rejects any the method does not know."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw
        self._seen: set[str] = set()

    def text(self, key: str, default: Any = _MISSING, *, max_length: int = 4096) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise InvalidParams(f"{key!r} must be a string", data={"param": key})
        if len(value) > max_length or "\x00" in value:
            raise InvalidParams(f"{key!r} is too long or contains NUL", data={"param": key})
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise InvalidParams(f"{key!r} must be true or false", data={"param": key})
        return value

    def done(self) -> None:
        unknown = sorted(set(self._raw) - self._seen, key=str)
        if unknown:
            raise InvalidParams(f"unknown params: {', '.join(map(repr, unknown))}", data={"params": unknown})

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key in self._raw:
            return self._raw[key]
        if default is _MISSING:
            raise InvalidParams(f"missing param {key!r}", data={"param": key})
        return default
