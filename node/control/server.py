"""The daemon's end of the control socket (trio).

Each connection is served by its own task; a bad frame from one client (garbage, oversized,
truncated, unknown method, unsupported version) gets a typed error reply or a closed
connection, is logged, and never disturbs other clients. On shutdown the server stops
accepting, lets requests already running finish (they may be committing writes), and
closes idle connections.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..callers import Caller
from ..threads import IOTimeout
from .protocol import (
    HEADER,
    ControlError,
    Forbidden,
    FrameTooLarge,
    InternalError,
    Request,
    ShuttingDown,
    Timeout,
    UnknownMethod,
    decode_body,
    encode_frame,
    error_reply,
    event_frame,
    frame_length,
    result_reply,
)

log = logging.getLogger("peerlight.control")

Handler = Callable[[dict[str, Any], Caller], Awaitable[Any]]
Emit = Callable[[Any], Awaitable[None]]


class Streaming:
    """A method that sends progress events before its result: ``fn(params, caller, emit)``.

    Each ``await emit(event)`` sends ``{"v", "id", "event"}`` on the connection; the final
    reply follows as for any method. Clients that ignore events still get the result.
    """

    def __init__(self, fn: Callable[[dict[str, Any], Caller, Emit], Awaitable[Any]]) -> None:
        self.fn = fn


def local_only(method: Handler | Streaming) -> Handler | Streaming:
    """The method, refused with ``forbidden`` to anyone but the local user (it shows paths or changes the node)."""

    def check(caller: Caller) -> None:
        if not caller.is_local:
            raise Forbidden("only the node's own user may do this")

    if isinstance(method, Streaming):
        inner = method.fn

        async def streaming(params: dict[str, Any], caller: Caller, emit: Emit) -> Any:
            check(caller)
            return await inner(params, caller, emit)

        return Streaming(streaming)

    async def handler(params: dict[str, Any], caller: Caller) -> Any:
        check(caller)
        return await method(params, caller)

    return handler


class TruncatedFrame(Exception):
    """The peer closed the connection, or stalled, in the middle of a frame."""


class ClientGone(Exception):
    """The client of a streaming request disconnected: the request is abandoned."""


class FrameReader:
    """Reads whole frames from a trio stream, enforcing the size limit before buffering."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_frame_bytes: int, frame_timeout: float) -> None:
        self._stream = stream
        self._max = max_frame_bytes
        self._timeout = frame_timeout
        self._buffer = bytearray()

    async def next_frame(self, on_frame_start: Callable[[], None] = lambda: None) -> bytes | None:
        """The next frame's body, or ``None`` when the peer closed cleanly between frames."""
        if not self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        on_frame_start()
        with trio.move_on_after(self._timeout) as timer:
            await self._fill(HEADER.size)
            length = frame_length(bytes(self._buffer[: HEADER.size]), self._max)
            await self._fill(HEADER.size + length)
        if timer.cancelled_caught:
            raise TruncatedFrame(f"frame not completed within {self._timeout:g} s")
        body = bytes(self._buffer[HEADER.size : HEADER.size + length])
        del self._buffer[: HEADER.size + length]
        return body

    async def watch_for_hangup(self) -> None:
        """Return when the peer closes the connection; bytes it sends meanwhile are kept for the next frame."""
        while len(self._buffer) <= self._max + HEADER.size:
            try:
                chunk = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not chunk:
                return
            self._buffer += chunk
        await trio.sleep_forever()  # a client that floods us while it waits is dealt with at the next frame

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            chunk = await self._stream.receive_some(max(65536, size - len(self._buffer)))
            if not chunk:
                raise TruncatedFrame(f"connection closed after {len(self._buffer)} of {size} bytes")
            self._buffer += chunk


class ControlServer:
    """Serves a method table on a Unix socket with mode 0600."""

    def __init__(
        self,
        socket_path: Path,
        methods: dict[str, Handler | Streaming],
        *,
        max_frame_bytes: int,
        frame_timeout: float,
    ) -> None:
        self.socket_path = socket_path
        self._caller = Caller.local()  # whoever can open the 0600 socket is the node's user
        self._methods = methods
        self._max_frame_bytes = max_frame_bytes
        self._frame_timeout = frame_timeout
        self._closing = False
        self._busy = 0  # requests being handled now
        self._idle_scopes: set[trio.CancelScope] = set()
        self._streaming_scopes: set[trio.CancelScope] = set()
        self._accepting = trio.CancelScope()
        self._drained = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await self._listen()
        try:
            async with trio.open_nursery() as connections:
                with self._accepting:
                    task_status.started()
                    async with listener:
                        while True:
                            stream = await listener.accept()
                            connections.start_soon(self._serve_connection, stream)
        finally:
            with trio.CancelScope(shield=True):
                self.socket_path.unlink(missing_ok=True)

    @property
    def requests_in_flight(self) -> int:
        return self._busy

    def close(self) -> None:
        """Stop accepting and end idle connections; running requests finish and reply."""
        self._closing = True
        self._accepting.cancel()
        for scope in self._idle_scopes | self._streaming_scopes:
            scope.cancel()  # streaming methods only report progress: nothing to finish

    async def _listen(self) -> trio.SocketListener:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket_path.unlink(missing_ok=True)  # a stale socket from a crashed daemon
            await sock.bind(os.fspath(self.socket_path))
            # Permissions are set before listen(): nobody can connect in between.
            os.chmod(self.socket_path, 0o600)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
                raise OSError(
                    f"control socket path {self.socket_path} is too long for a Unix socket; "
                    "use a shorter data directory"
                ) from None
            raise
        return trio.SocketListener(sock)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._converse(stream)
        except Exception:
            # One client's connection failing must never take the daemon down.
            log.exception("control: connection failed")

    async def _converse(self, stream: trio.SocketStream) -> None:
        reader = FrameReader(stream, self._max_frame_bytes, self._frame_timeout)
        async with stream:
            while not self._closing:
                try:
                    with trio.CancelScope() as idle:
                        self._idle_scopes.add(idle)
                        body = await reader.next_frame(on_frame_start=lambda: self._idle_scopes.discard(idle))
                    self._idle_scopes.discard(idle)
                    if idle.cancelled_caught or body is None:
                        return
                except FrameTooLarge as exc:
                    log.warning("control: closing connection: %s", exc)
                    await self._send(stream, error_reply(None, exc))
                    return
                except TruncatedFrame as exc:
                    log.warning("control: closing connection: truncated frame: %s", exc)
                    return
                except trio.BrokenResourceError:
                    return
                reply = await self._handle(body, stream, reader)
                if reply is None or not await self._send(stream, reply):
                    return

    async def _handle(self, body: bytes, stream: trio.SocketStream, reader: FrameReader) -> dict[str, Any] | None:
        """The reply to one request; None when its client has gone and nobody is left to answer."""
        request_id = None
        try:
            request = Request.from_wire(decode_body(body))
        except ControlError as exc:
            if isinstance(exc.data, dict):
                request_id = exc.data.get("id")
            log.warning("control: rejected request: %s", exc)
            return error_reply(request_id, exc)
        handler = self._methods.get(request.method)
        if handler is None:
            error = UnknownMethod(f"unknown method {request.method!r}", data={"methods": sorted(self._methods)})
            log.warning("control: %s", error)
            return error_reply(request.id, error)
        if self._closing:
            return error_reply(request.id, ShuttingDown("the daemon is shutting down"))
        self._busy += 1
        try:
            if isinstance(handler, Streaming):
                return await self._stream_request(handler, request, stream, reader)
            return result_reply(request.id, await handler(request.params, self._caller))
        except ControlError as exc:
            log.info("control: %s failed: %s: %s", request.method, exc.code, exc)
            return error_reply(request.id, exc)
        except IOTimeout as exc:
            log.warning("control: %s timed out: %s", request.method, exc)
            return error_reply(request.id, Timeout(str(exc)))
        except Exception:
            log.exception("control: %s raised", request.method)
            return error_reply(request.id, InternalError(f"{request.method} failed; see the daemon log"))
        finally:
            self._busy -= 1

    async def _stream_request(
        self, handler: Streaming, request: Request, stream: trio.SocketStream, reader: FrameReader
    ) -> dict[str, Any] | None:
        """Run a streaming method while watching its connection: a client that hangs up cancels it."""
        outcome: dict[str, Any] = {}

        async def emit(event: Any) -> None:
            if not await self._send(stream, event_frame(request.id, event)):
                raise ClientGone()

        async def run(cancel_all: trio.CancelScope) -> None:
            try:
                outcome["reply"] = result_reply(request.id, await handler.fn(request.params, self._caller, emit))
            except* ClientGone:
                pass  # (raised by emit, perhaps inside a nursery of the method's: hence except*)
            except* Exception as group:  # reported below like any method's error, not as a nursery's group
                error: BaseException = group
                while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                    error = error.exceptions[0]
                outcome["error"] = error
            cancel_all.cancel()

        with trio.CancelScope() as scope:
            self._streaming_scopes.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, nursery.cancel_scope)
                    await reader.watch_for_hangup()
                    log.info("control: client of %s went away; request cancelled", request.method)
                    nursery.cancel_scope.cancel()
                    return None
            finally:
                self._streaming_scopes.discard(scope)
        if "error" in outcome:
            raise outcome["error"]
        if "reply" in outcome:
            return outcome["reply"]
        if scope.cancelled_caught:
            return error_reply(request.id, ShuttingDown("the daemon is shutting down"))
        return None

    async def _send(self, stream: trio.SocketStream, message: dict[str, Any]) -> bool:
        try:
            frame = encode_frame(message)
        except (TypeError, ValueError, OverflowError):
            log.exception("control: reply cannot be encoded")
            frame = encode_frame(error_reply(message.get("id"), InternalError("reply could not be encoded")))
        try:
            await stream.send_all(frame)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False

