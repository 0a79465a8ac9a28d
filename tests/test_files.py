"""Atomic, durable writes and non-blocking reads of the node's files (node/files.py)."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from peerlight.node.files import NotRegularFile, open_regular, replace_dir_atomic, write_atomic

from .helpers import fill_disk


def test_write_atomic_replaces_with_the_mode_asked_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_an_exclusive_write_never_replaces(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    write_atomic(key, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(key, b"second", exclusive=True)
    assert key.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_a_full_disk_fails_the_write_and_keeps_the_old_content(small_disk, tmp_path: Path) -> None:
    disk = small_disk(1 << 20)
    target = disk / "defaults.json"
    write_atomic(target, b"old content")
    filler = fill_disk(disk)
    with pytest.raises(OSError):
        write_atomic(target, b"x" * 100_000)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in disk.iterdir()) == ["defaults.json", "filler"]
    filler.unlink()
    write_atomic(target, b"x" * 100_000)
    assert target.read_bytes() == b"x" * 100_000


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "index"

    def fill(version: str):  # noqa: ANN202
        def write(folder: Path) -> None:
            (folder / "a").write_text(version)
            (folder / "b").write_text(version)

        return write

    replace_dir_atomic(target, fill("1"))
    replace_dir_atomic(target, fill("2"))

    def broken(folder: Path) -> None:
        (folder / "a").write_text("3")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_dir_atomic(target, broken)
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "2", "b": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
    # A swap interrupted after the first rename leaves only index.old; the next replace still works.
    os.replace(target, tmp_path / "index.old")
    replace_dir_atomic(target, fill("4"))
    assert [p.name for p in tmp_path.iterdir()] == ["index"] and (target / "a").read_text() == "4"


def test_open_regular_reads_files_and_refuses_everything_else_without_blocking(tmp_path: Path) -> None:
    regular = tmp_path / "photo.jpg"
    regular.write_bytes(b"\xff\xd8 jpeg")
    with open_regular(regular) as handle:
        assert handle.read() == b"\xff\xd8 jpeg"
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)  # a plain open() would wait forever for a writer
    sock_path = tmp_path / "socket.mp3"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    outcomes: dict[str, str] = {}

    def try_all() -> None:
        for path in (fifo, sock_path, tmp_path, Path("/dev/null")):
            try:
                open_regular(path).close()
                outcomes[str(path)] = "opened"
            except NotRegularFile as exc:
                outcomes[str(path)] = exc.kind

    worker = threading.Thread(target=try_all, daemon=True)
    worker.start()
    worker.join(20)
    listener.close()
    assert not worker.is_alive(), "open_regular blocked"
    assert outcomes == {str(fifo): "FIFO", str(sock_path): "socket", str(tmp_path): "folder", "/dev/null": "character device"}


def test_lan_addresses_put_the_home_network_first_and_container_bridges_last() -> None:
    from ipaddress import IPv4Address as ip

    from peerlight.p2p.listen import lan_order

    interfaces = [
        ("docker0", ip("172.17.0.1")), ("lo", ip("127.0.0.1")), ("eth0", ip("10.0.0.7")), ("wlan0", ip("192.168.1.20")),
        ("br-5f2c", ip("172.18.0.1")), ("eth0", ip("169.254.3.3")), ("eth1", ip("203.0.113.9")), ("eth0", ip("172.20.1.5")),
    ]
    assert lan_order(interfaces) == ["192.168.1.20", "10.0.0.7", "172.20.1.5", "172.17.0.1", "172.18.0.1"]


def test_a_share_on_several_addresses_listens_on_one_port() -> None:
    import socket

    from peerlight.p2p.listen import common_port

    port = common_port(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    held = []
    try:
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):  # free on each, and the same number
            sock = socket.socket()
            sock.bind((address, port))
            held.append(sock)
    finally:
        for sock in held:
            sock.close()
