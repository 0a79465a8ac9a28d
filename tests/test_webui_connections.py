"""What a connection to the UI may cost: the UI's own serving code (``serve_door`` with its
guarded streams and connection cap, and the guard's deadline on request bodies) on loopback,
with a plain ASGI app in place of the pages, and clients that never read, send a request a
byte at a time, or come too many; and the owner of a loopback client's socket."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from peerlight.node.webui import connections, guard
from peerlight.node.webui.connections import ConnectionCap, client_key
from peerlight.node.webui.guard import body_in_time
from peerlight.node.webui.server import serve_door, ui_config

LIMIT = 4


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    receive = body_in_time(receive)  # what the guard does for every page
    while scope["method"] == "POST":  # a form is read whole before it is answered, as the UI's are
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    body = b"x" * 65536  # big enough that a client not reading fills its window
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def door(**cap: Any) -> AsyncIterator[int]:
    config = ui_config()
    config.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery:
        port: list[int] = []
        nursery.start_soon(serve_door, hello, config, ConnectionCap(cap.pop("limit", LIMIT), "test", **cap), lambda p: port.append(p) if p else None)
        while not port:
            await trio.sleep(0.01)
        yield port[0]
        nursery.cancel_scope.cancel()


def served(port: int) -> bool:
    """Whether a fresh client gets an answer now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.settimeout(5)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return client.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def until_served(port: int, seconds: float) -> float | None:
    """Seconds until a fresh client is served (None: not within ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if served(port):
            return time.monotonic() - started
        time.sleep(0.2)
    return None


@pytest.fixture
def short_deadlines(monkeypatch) -> None:
    monkeypatch.setattr(connections, "SEND_SECONDS", 1.0)
    monkeypatch.setattr(guard, "BODY_SECONDS", 1.0)


async def test_clients_that_never_read_lose_their_slots(short_deadlines) -> None:
    """Each pipelines requests on a tiny receive window and reads nothing: hypercorn's send would
    wait for ever, under a shield. Without the send deadline no fresh client is ever served.
    (The door is full, so more than half full: stalled writers are cut.)"""
    async with door() as port:

        def hold() -> list[socket.socket]:
            held = []
            for _ in range(LIMIT):
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.connect(("127.0.0.1", port))
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
                held.append(client)
            return held

        held = await trio.to_thread.run_sync(hold)
        try:
            assert await trio.to_thread.run_sync(until_served, port, 15) is not None
        finally:
            for client in held:
                client.close()


async def test_a_request_sent_a_byte_at_a_time_loses_its_slot(short_deadlines) -> None:
    """A body sent a byte at a time. (Headers sent so are cut by hypercorn itself: the connection
    counts as idle until they are whole.) Without the body deadline no fresh client is served."""
    async with door() as port:
        stop = trio.Event()

        def dribble() -> None:
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
                for byte in b"x" * 100_000:
                    if stop.is_set():
                        return
                    try:
                        client.send(bytes([byte]))
                    except OSError:
                        return  # cut, as it should be
                    time.sleep(0.3)  # each byte well within read_timeout

        async with trio.open_nursery() as nursery:
            for _ in range(LIMIT):
                nursery.start_soon(trio.to_thread.run_sync, dribble)
            await trio.sleep(0.5)
            try:
                assert await trio.to_thread.run_sync(until_served, port, 15) is not None
            finally:
                stop.set()


async def test_one_address_holds_at_most_its_share_of_the_connections() -> None:
    async with door(limit=64, per_client=True) as port:

        def hold_many() -> tuple[int, bool]:
            held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(connections.PER_CLIENT)]
            time.sleep(0.3)
            extra = socket.create_connection(("127.0.0.1", port), timeout=5)
            extra.settimeout(5)
            try:
                closed = extra.recv(1) == b""
            except ConnectionResetError:
                closed = True
            for client in [*held, extra]:
                client.close()
            return len(held), closed

        assert await trio.to_thread.run_sync(hold_many) == (connections.PER_CLIENT, True)


def test_client_addresses_group_an_ipv6_home_and_unmap_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:7f:bbbb::9") == "2001:db8:1::/56"
    assert client_key("2001:db8:1:100::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.7") == client_key("203.0.113.7") == "203.0.113.7"


async def test_a_paused_reader_keeps_its_connection_while_the_door_has_room(short_deadlines) -> None:
    """A player whose buffer is full stops reading: with room at the door, it is not cut, and
    takes every byte once it reads again."""
    async with door(limit=64) as port:

        def pause_then_read() -> int:
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.connect(("127.0.0.1", port))
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                time.sleep(3)  # three times SEND_SECONDS
                client.settimeout(10)
                received = 0
                while chunk := client.recv(65536):
                    received += len(chunk)
                return received

        assert await trio.to_thread.run_sync(pause_then_read) > 21 * 65536


def test_the_owner_of_a_loopback_client_s_socket_is_asked_of_the_kernel() -> None:
    import os
    import subprocess
    import sys

    from peerlight.node.webui.socket_owner import client_uid

    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as server:
            server.bind((address, 0))
            server.listen()
            with socket.socket(family) as client:
                client.connect(server.getsockname()[:2])
                accepted, _ = server.accept()
                with accepted:
                    assert client_uid(accepted.getpeername()[:2], accepted.getsockname()[:2]) == os.getuid()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        other = subprocess.Popen(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable, "-c",
             f"import socket, time; s = socket.create_connection(('127.0.0.1', {server.getsockname()[1]})); time.sleep(5)"]
        )
        try:
            accepted, _ = server.accept()
            with accepted:
                assert client_uid(accepted.getpeername()[:2], accepted.getsockname()[:2]) == 65534
        finally:
            other.kill()
            other.wait()
