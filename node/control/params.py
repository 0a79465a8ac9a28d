"""Typed access to a request's params, with ``invalid_params`` errors that name the key."""

from __future__ import annotations

import os
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

    def path(self, key: str, default: Any = _MISSING) -> Any:
        """An absolute path: a string, or its exact bytes (msgpack bin) for a name that is not UTF-8."""
        value = self.key(key, default)
        if value is not default and not value.startswith("/"):
            raise InvalidParams(f"{key!r} must be an absolute path", data={"param": key})
        return value

    def paths(self, key: str, *, max_items: int = 256) -> list[str]:
        """A list of absolute paths (one path alone is accepted as a list of one); empty when absent."""
        raw = self._get(key, [])
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > max_items:
            raise InvalidParams(f"{key!r} holds more than {max_items} paths", data={"param": key})
        return [Params({key: item}).path(key) for item in items]

    def list(self, key: str, *, max_items: int) -> list[Any]:
        """A list of at most ``max_items`` entries, each still to be checked by the caller."""
        value = self._get(key, [])
        if not isinstance(value, list) or len(value) > max_items:
            raise InvalidParams(f"{key!r} must be a list of at most {max_items} entries", data={"param": key})
        return value

    def key(self, key: str, default: Any = _MISSING) -> Any:
        """Something named by id, name or path: a non-empty string, or bytes for a path that is not UTF-8."""
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bytes):
            value = os.fsdecode(value)
        if not isinstance(value, str) or not value or len(value) > 4096 or "\x00" in value:
            raise InvalidParams(f"{key!r} must be a non-empty string (or bytes), without NUL, of 4096 characters at most", data={"param": key})
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise InvalidParams(f"{key!r} must be true or false", data={"param": key})
        return value

    def number(self, key: str, default: Any = _MISSING, *, min: float | None = None, max: float | None = None, integer: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        kinds = (int,) if integer else (int, float)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise InvalidParams(f"{key!r} must be {'an integer' if integer else 'a number'}", data={"param": key})
        if (min is not None and value < min) or (max is not None and value > max):
            raise InvalidParams(f"{key!r} must be between {min} and {max}", data={"param": key})
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if value is not default and value not in choices:
            raise InvalidParams(f"{key!r} must be one of {', '.join(choices)}", data={"param": key})
        return value

    def choices(self, key: str, choices: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v in choices for v in value):
            raise InvalidParams(f"{key!r} must be a list of {', '.join(choices)}", data={"param": key})
        return tuple(value)

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
