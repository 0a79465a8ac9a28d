"""A blocking client of the daemon's control socket.

Blocking sockets, not trio: a CLI command makes one or two calls, and importing an event
loop would only slow its start. The wire format is shared with the daemon
(``peerlight.node.control.protocol``), so errors come back as the same exception types.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peerlight.node.control.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    ControlError,
    MalformedMessage,
    Request,
    decode_body,
    encode_frame,
    error_from_wire,
    frame_length,
)


class DaemonNotRunning(Exception):
    """Nothing answers on the control socket."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        super().__init__(f"no daemon is running on {socket_path.parent} (start one with `peerlight start`)")


class ConnectionLost(Exception):
    """The daemon closed the connection before answering (it may be shutting down)."""


class ControlClient:
    """One connection to the daemon; use as a context manager."""

    def __init__(self, socket_path: Path, *, timeout: float | None = 60.0) -> None:
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._ids = itertools.count(1)
        try:
            self._sock.connect(os.fspath(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            self._sock.close()
            raise DaemonNotRunning(socket_path) from None
        except OSError as exc:
            self._sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise DaemonNotRunning(socket_path) from None
            raise

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, method: str, *, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """Send one request and return its result, or raise the typed error it got.

        Progress events the daemon sends before the result go to ``on_event``.
        """
        request = Request(next(self._ids), method, params)
        try:
            self._sock.sendall(encode_frame(request.to_wire()))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionLost(f"the daemon closed the connection: {exc}") from None
        while True:
            reply = decode_body(self._receive_frame())
            if not isinstance(reply, dict) or reply.get("id") != request.id:
                raise MalformedMessage(f"unexpected reply to request {request.id}: {reply!r:.200}")
            if "event" in reply:
                if on_event is not None:
                    on_event(reply["event"])
                continue
            if "error" in reply:
                raise error_from_wire(reply["error"])
            return reply.get("result")

    def _receive_frame(self) -> bytes:
        header = self._receive_exactly(HEADER.size)
        return self._receive_exactly(frame_length(header, DEFAULT_MAX_FRAME_BYTES * 16))

    def _receive_exactly(self, size: int) -> bytes:
        chunks, remaining = [], size
        while remaining:
            try:
                chunk = self._sock.recv(min(remaining, 1 << 20))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionLost("the daemon closed the connection before answering")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


def call(socket_path: Path, method: str, *, timeout: float | None = 60.0, **params: Any) -> Any:
    """Open a connection, make one call, close."""
    with ControlClient(socket_path, timeout=timeout) as client:
        return client.call(method, **params)


__all__ = ["ConnectionLost", "ControlClient", "ControlError", "DaemonNotRunning", "call"]
