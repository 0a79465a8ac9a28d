"""What a connection to the UI may cost before it has logged in: who may connect, how many at
once, and how long it may make the UI wait.

hypercorn bounds none of it: it keeps a connection as long as the client acknowledges bytes
without reading them (its writes have no deadline) and takes any number of connections. So:

- **Who.** On loopback, only this user's own programs (Linux: the owner of the client's socket,
  asked of the kernel, ``socket_owner.py``): another local user has no login link to use, so gets
  no HTTP at all, and cannot hold the UI's connections either (``ui.loopback_other_users``
  lets them through to the login check, for a forwarder running as another user). At the
  door for other machines, at most ``PER_CLIENT`` connections per address (IPv6: per /56, a
  home's usual prefix).
- **How many.** At most ``max_connections`` at each door; one more is closed as soon as it is
  accepted, before anything else is done for it.
- **How long.** While the door is more than half full, a write the client has not taken for
  ``SEND_SECONDS`` ends its connection (:class:`GuardedStream`); a paused video keeps its
  connection otherwise. A request body must arrive whole within ``guard.BODY_SECONDS``, and
  hypercorn closes a connection with no request under way after 5 s.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .socket_owner import OwnerUnknown, client_uid

log = logging.getLogger("peerlight.webui")

SEND_SECONDS = 30.0
SEND_POLL_SECONDS = 1.0
PER_CLIENT = 8
IPV6_PREFIX = 56


class GuardedStream(trio.abc.HalfCloseableStream):
    """A TCP stream whose writes end the connection when the client stops taking them for
    ``SEND_SECONDS`` while others wait for its slot (``crowded``)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket  # hypercorn reads the peer's address from it
        self.crowded: Callable[[], bool] = lambda: True  # set on admission: whether the door is under pressure

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # hypercorn sends under a shield (against its own scopes' cancellation); the deadlines
        # here are inside it. A trio socket's send either sends or, cancelled, sends nothing,
        # so waiting can be resumed after each poll.
        view = memoryview(data).cast("B")
        stalled_since = trio.current_time()
        while view:
            with trio.move_on_after(SEND_POLL_SECONDS):
                try:
                    sent = await self.socket.send(view)
                except OSError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
                view = view[sent:]
                stalled_since = trio.current_time()
                continue
            if trio.current_time() - stalled_since >= SEND_SECONDS and self.crowded():
                await trio.aclose_forcefully(self._stream)
                raise trio.BrokenResourceError("the client took nothing for too long while others waited")

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class GuardedListener(trio.abc.Listener[GuardedStream]):
    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener

    async def accept(self) -> GuardedStream:
        return GuardedStream(await self._listener.accept())

    async def aclose(self) -> None:
        await self._listener.aclose()


class ConnectionCap:
    """Admits a connection, or closes it at once: one past the door's limit, one past
    ``PER_CLIENT`` from one address (where ``per_client``), or a stranger on loopback."""

    def __init__(self, limit: int, where: str, *, own_user_only: bool = False, per_client: bool = False) -> None:
        self._limit = limit
        self._where = where
        self._own_user_only = own_user_only
        self._per_client = per_client
        self._open = 0
        self._by_client: Counter[str] = Counter()
        self._last_warning = 0.0
        self._last_failure = 0.0
        self.refused = 0

    async def handle(self, handler: Callable[[Any], Awaitable[None]], stream: Any) -> None:
        """Serve ``stream`` with ``handler`` if admitted. Nothing a connection does fails the
        door: what escapes the handler is logged (once a minute), and the connection closed."""
        try:
            await self._admit_and_serve(handler, stream)
        except Exception:
            if time.monotonic() - self._last_failure > 60:
                self._last_failure = time.monotonic()
                log.exception("web UI: a connection failed", extra={"at": self._where})
            await trio.aclose_forcefully(stream)

    async def _admit_and_serve(self, handler: Callable[[Any], Awaitable[None]], stream: Any) -> None:
        inner = getattr(stream, "transport_stream", stream)  # an SSLStream over a GuardedStream
        try:
            peer, ours = inner.socket.getpeername()[:2], inner.socket.getsockname()[:2]
        except OSError:  # gone already
            await trio.aclose_forcefully(stream)
            return
        client = client_key(peer[0])
        if self._open >= self._limit or (self._per_client and self._by_client[client] >= PER_CLIENT):
            await self._refuse(stream, "too many connections")
            return
        if self._own_user_only and not same_user(peer, ours):
            await self._refuse(stream, "a connection of another local user")
            return
        self._open += 1
        self._by_client[client] += 1
        if isinstance(inner, GuardedStream):
            inner.crowded = lambda: self._open > self._limit // 2
        try:
            await handler(stream)
        finally:
            self._open -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]

    async def _refuse(self, stream: Any, why: str) -> None:
        self.refused += 1
        if time.monotonic() - self._last_warning > 60:  # a flood of them: one line a minute
            self._last_warning = time.monotonic()
            log.warning("web UI: connections closed unanswered", extra={"at": self._where, "why": why, "refused": self.refused})
        await trio.aclose_forcefully(stream)


def client_key(address: str) -> str:
    """Who a client address stands for: itself, or its /56 for IPv6 (one home has all of one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


def same_user(peer: tuple[str, int], ours: tuple[str, int]) -> bool:
    """Whether the loopback client at ``peer`` runs as this process's user; where the kernel
    cannot be asked (not Linux), every client goes on to the login check."""
    try:
        uid = client_uid(peer, ours)
    except OwnerUnknown:
        return True
    return uid == os.getuid()
