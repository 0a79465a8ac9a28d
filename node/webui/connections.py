"""What a connection to the UI may cost before it has logged in: who may connect, how many at
once, and how long it may make the UI wait.

hypercorn bounds none of it: it keeps a connection as long as the client acknowledges bytes
without reading them (its writes have no deadline), waits on a request's next byte up to
``read_timeout`` each time, and takes any number of connections. So:

- **Who.** On loopback, only this user's own programs (Linux: the client socket's owner, read
  from ``/proc/net/tcp``): another local user has no login link to use, so gets no HTTP at
  all, and cannot hold the UI's connections either. At the door for other machines, at most
  ``PER_CLIENT`` connections per address (an IPv6 /64 counts as one).
- **How many.** At most ``max_connections`` at each door; one more is closed as soon as it is
  accepted.
- **How long.** A write the client does not take within ``SEND_SECONDS``, or a request that has
  not arrived whole ``REQUEST_SECONDS`` after its first byte (no answer begun), ends the
  connection (:class:`GuardedStream`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("peerlight.webui")

SEND_SECONDS = 30.0
REQUEST_SECONDS = 60.0
PER_CLIENT = 8
PROC_TCP = ("/proc/net/tcp", "/proc/net/tcp6")


class GuardedStream(trio.abc.HalfCloseableStream):
    """A TCP stream whose writes and half-received requests have deadlines (module doc)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket  # hypercorn reads the peer's address from it
        self._unanswered_since: float | None = None  # first byte received since the last byte sent

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # hypercorn sends under a shield, against the cancellation of its own scopes; this
        # deadline is ours, inside it, so it still ends a send the client never takes.
        with trio.move_on_after(SEND_SECONDS) as waited:
            await self._stream.send_all(data)
        if waited.cancelled_caught:
            await trio.aclose_forcefully(self._stream)
            raise trio.BrokenResourceError("the client took nothing for too long")
        self._unanswered_since = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._unanswered_since is None:
            data = await self._stream.receive_some(max_bytes)
        else:
            with trio.move_on_at(self._unanswered_since + REQUEST_SECONDS) as waited:
                data = await self._stream.receive_some(max_bytes)
            if waited.cancelled_caught:
                await trio.aclose_forcefully(self._stream)
                raise trio.BrokenResourceError("the request did not arrive in time")
        if data and self._unanswered_since is None:
            self._unanswered_since = trio.current_time()
        return data

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
    """Admits a connection, or closes it at once: a stranger on loopback, one past the door's
    limit, or one past ``PER_CLIENT`` from one address (where ``per_client``)."""

    def __init__(self, limit: int, where: str, *, own_user_only: bool = False, per_client: bool = False) -> None:
        self._limit = limit
        self._where = where
        self._own_user_only = own_user_only
        self._per_client = per_client
        self._open = 0
        self._by_client: Counter[str] = Counter()
        self._last_warning = 0.0
        self.refused = 0

    async def handle(self, handler: Callable[[Any], Awaitable[None]], stream: Any) -> None:
        """Serve ``stream`` with ``handler`` if admitted. Nothing a connection does fails the
        door: what escapes the handler is logged, and the connection closed."""
        try:
            await self._admit_and_serve(handler, stream)
        except Exception:
            log.exception("web UI: a connection failed", extra={"at": self._where})
            await trio.aclose_forcefully(stream)

    async def _admit_and_serve(self, handler: Callable[[Any], Awaitable[None]], stream: Any) -> None:
        sock = _socket_of(stream)
        try:
            client = client_key(sock.getpeername()[0])
        except OSError:  # gone already
            await trio.aclose_forcefully(stream)
            return
        if self._own_user_only and not await trio.to_thread.run_sync(same_user, sock):
            await self._refuse(stream, "a connection of another local user")
            return
        if self._open >= self._limit or (self._per_client and self._by_client[client] >= PER_CLIENT):
            await self._refuse(stream, "too many connections")
            return
        self._open += 1
        self._by_client[client] += 1
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
    """Who a client address stands for: itself, or its /64 for IPv6 (one home has all of one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def same_user(sock: socket.socket) -> bool:
    """Whether the loopback client at the other end of ``sock`` runs as this process's user.
    Its socket is the one whose local end is our peer and whose remote end is us; where the
    table cannot be read (not Linux), every client is let through to the login check."""
    peer, ours = sock.getpeername()[:2], sock.getsockname()[:2]
    found_table = False
    for table in PROC_TCP:
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                found_table = True
                for line in lines:
                    fields = line.split()
                    if len(fields) > 7 and _endpoint(fields[1]) == _normal(peer) and _endpoint(fields[2]) == _normal(ours):
                        return int(fields[7]) == os.getuid()
        except OSError:
            continue
    return not found_table  # not found at all: gone already, or not ours to see


def _socket_of(stream: Any) -> socket.socket:
    inner = getattr(stream, "transport_stream", stream)  # an SSLStream over a GuardedStream
    return inner.socket


def _normal(address: tuple[Any, ...]) -> tuple[str, int]:
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(address[1])


def _endpoint(text: str) -> tuple[str, int] | None:
    """``0100007F:1F90`` (IPv4) or 32 hex digits and a port (IPv6), as /proc/net/tcp writes them:
    each 32-bit word of the address in the kernel's byte order."""
    address, _, port = text.partition(":")
    try:
        raw = bytes.fromhex(address)
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
        return _normal((str(ipaddress.ip_address(words)), int(port, 16)))
    except ValueError:
        return None

