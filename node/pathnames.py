"""File names that are not valid UTF-8, kept losslessly from the disk to the catalog and the wire.

A POSIX file name is bytes. Python hands out names that are not valid UTF-8 (a Latin-1 "é"
from an old archive, say) as ``str`` with lone surrogates (``surrogateescape``), which the
filesystem functions accept back unchanged — but SQLite and msgpack refuse them. So:

- in the catalog, a name is stored as TEXT when it is valid UTF-8 and as a BLOB of its exact
  bytes otherwise (one canonical form per name, so ``path = ?`` and UNIQUE keep working;
  prefix tests compare ``CAST(path AS BLOB)`` with the folder's bytes);
- on the control socket, a path param may be a string or its bytes (msgpack bin), and a
  result carries ``path`` (exact when valid UTF-8, else a readable form with ``\\xNN``
  escapes) plus ``path_bytes`` with the exact bytes when the name is not UTF-8;
- for people, :func:`display` gives a one-line readable form: undecodable bytes as ``\\xNN``
  and control characters (a newline in a name) escaped.
"""

from __future__ import annotations

import os
from typing import Any

_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)} | {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"}


def is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_path(path: str) -> str | bytes:
    """The catalog's (and the wire's) form of a path: itself when valid UTF-8, else its bytes."""
    return path if is_utf8(path) else os.fsencode(path)


def decode_path(value: str | bytes) -> str:
    """A path from its catalog or wire form, as Python's filesystem functions take it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def is_within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (a textual test: resolve both first if links matter)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def storable(value: object) -> object:
    """A value the catalog can store as it is: strings with undecodable bytes made readable."""
    return readable(value) if isinstance(value, str) else value


def prefix_bytes(folder: str) -> bytes:
    """The exact bytes every path under ``folder`` starts with (to compare with ``CAST(path AS BLOB)``)."""
    return os.fsencode(folder.rstrip("/") + "/")


def readable(path: str) -> str:
    """Valid UTF-8 with nothing lost that is readable: undecodable bytes become ``\\xNN``."""
    return path if is_utf8(path) else os.fsencode(path).decode("utf-8", "backslashreplace")


def display(path: str) -> str:
    """A one-line form for people and logs: ``\\xNN`` for undecodable bytes, control characters escaped."""
    return readable(path).translate(_CONTROL)


def path_fields(path: str, key: str = "path") -> dict[str, Any]:
    """``{key: readable form}``, plus ``{key}_bytes`` with the exact bytes when the name is not UTF-8."""
    if is_utf8(path):
        return {key: path}
    return {key: readable(path), f"{key}_bytes": os.fsencode(path)}
