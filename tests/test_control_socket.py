"""A real daemon process must survive whatever a local client sends to its control socket."""

from __future__ import annotations

import os
import socket
import stat
import struct
import time

import msgpack
import pytest

from peerlight.cli.client import ControlClient
from peerlight.node.control.protocol import (
    ERROR_TYPES,
    PROTOCOL_VERSION,
    FrameTooLarge,
    InvalidParams,
    UnknownMethod,
    decode_body,
    encode_frame,
)

from .helpers import DaemonProcess


def raw_connection(daemon: DaemonProcess) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket_path))
    return sock


def read_reply(sock: socket.socket) -> dict | None:
    """The next reply frame, or None if the daemon closed the connection."""
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (length,) = struct.unpack(">I", header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "connection closed mid-reply"
        body += chunk
    return decode_body(body)


def assert_closed(sock: socket.socket) -> None:
    assert sock.recv(1) == b""


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def request(method: str, params: dict | None = None, *, id: int = 1, v: object = PROTOCOL_VERSION) -> bytes:
    return encode_frame({"v": v, "id": id, "method": method, "params": params or {}})


def test_socket_is_private(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o600


def test_bad_clients_get_typed_errors_while_others_keep_being_served(daemon: DaemonProcess) -> None:
    with ControlClient(daemon.socket_path) as bystander:
        assert bystander.call("daemon.status")["running"]

        # Garbage that parses as a small length, then non-msgpack bytes: a typed error, connection kept.
        with raw_connection(daemon) as sock:
            sock.sendall(frame(b"\xc1\xc1\xc1 not msgpack"))
            reply = read_reply(sock)
            assert reply["error"]["code"] == "malformed_message"
            sock.sendall(request("daemon.status", id=2))
            assert read_reply(sock)["result"]["running"] is True

        # Garbage whose first four bytes announce a huge frame: frame_too_large, then closed.
        with raw_connection(daemon) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = read_reply(sock)
            assert reply["error"]["code"] == FrameTooLarge.code
            assert_closed(sock)

        # A frame just over the configured limit (4 MiB by default).
        with raw_connection(daemon) as sock:
            sock.sendall(struct.pack(">I", 4 * 1024 * 1024 + 1))
            assert read_reply(sock)["error"]["code"] == FrameTooLarge.code
            assert_closed(sock)

        # A truncated frame: the header promises more than ever arrives.
        with raw_connection(daemon) as sock:
            sock.sendall(struct.pack(">I", 100) + b"\x81\xa1v\x01")
            sock.shutdown(socket.SHUT_WR)
            assert read_reply(sock) is None

        # A valid msgpack body that is not a map, an unknown method, a future protocol version.
        with raw_connection(daemon) as sock:
            sock.sendall(frame(msgpack.packb([1, 2, 3])))
            assert read_reply(sock)["error"]["code"] == "malformed_message"
            sock.sendall(request("no.such.method", id=5))
            reply = read_reply(sock)
            assert reply["id"] == 5 and reply["error"]["code"] == UnknownMethod.code
            assert "daemon.status" in reply["error"]["data"]["methods"]
            sock.sendall(request("daemon.status", id=6, v=2))
            reply = read_reply(sock)
            assert reply["id"] == 6 and reply["error"]["code"] == "unsupported_version"
            assert reply["error"]["data"]["supported"] == [PROTOCOL_VERSION]
            sock.sendall(request("daemon.status", {"verbose": True}, id=7))
            assert read_reply(sock)["error"]["code"] == InvalidParams.code
            sock.sendall(request("library.add", {"path": 42}, id=8))
            reply = read_reply(sock)
            assert reply["error"]["code"] == InvalidParams.code and reply["error"]["data"] == {"param": "path"}

        # Every error code seen above is one the client knows as a type.
        assert {"malformed_message", "frame_too_large", "unknown_method", "unsupported_version"} <= set(ERROR_TYPES)

        # The connection opened before all of this still works.
        assert bystander.call("daemon.status")["running"]


def test_a_stalled_partial_frame_is_dropped_without_blocking_others(node, tmp_path) -> None:
    node.config.write_text(node.config.read_text().replace("frame_timeout_seconds = 30.0", "frame_timeout_seconds = 0.5"))
    process = DaemonProcess(node.root)
    assert process.wait_ready() == "ready"
    try:
        with raw_connection(process) as stalled:
            stalled.sendall(struct.pack(">I", 50) + b"\x81")
            assert process.call("daemon.status")["running"]
            started = time.monotonic()
            assert_closed(stalled)
            assert time.monotonic() - started < 8
        assert process.call("daemon.status")["running"]
    finally:
        assert process.stop() == 0


def test_many_concurrent_clients(daemon: DaemonProcess) -> None:
    clients = [ControlClient(daemon.socket_path) for _ in range(40)]
    try:
        for client in clients:
            client._sock.sendall(request("daemon.status", id=1))
        for client in clients:
            assert client._receive_frame()
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("relative/path", "invalid_params"),
        ("/definitely/not/here", "not_found"),
        ("/etc/hostname", "invalid_params"),
        ("/tmp/with\x00nul", "invalid_params"),
    ],
)
def test_bad_library_paths_are_typed_errors(daemon: DaemonProcess, path: str, code: str) -> None:
    with ControlClient(daemon.socket_path) as client:
        with pytest.raises(ERROR_TYPES[code]):
            client.call("library.add", path=path)
        assert client.call("library.list") == []


def test_library_inside_the_data_dir_is_refused(daemon: DaemonProcess) -> None:
    inside = daemon.data_dir / "logs"
    with pytest.raises(InvalidParams, match="data directory"):
        daemon.call("library.add", path=str(inside))
