"""A share serves the file that was indexed, never what a path names now.

Someone who can write into a shared folder (a synced folder, a NAS) swaps an indexed file for
a link to a secret, or for another file of the same size, and fetches it by the old hash. The
node opens served files without following links below the library's root and compares
device, inode, size and modification time with what it indexed: the peer gets ``not_found``
or ``changed``, and no byte of the secret.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import blake3
import pytest

from peerlight.p2p import schema
from peerlight.node.files import FileChanged, IndexedFile, NotRegularFile, open_beneath, open_indexed

from . import media
from .helpers import cli_json, index_and_wait, new_node, started
from .test_local_users import _ask_here

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not for peers\n"


def _indexed(path: Path, root: Path) -> IndexedFile:
    st = path.stat()
    return IndexedFile(str(path), 1, str(root), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "nofollow-walk"])
def test_open_beneath_follows_no_link_at_any_component(tmp_path, use_openat2: bool) -> None:
    root = tmp_path / "library"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "photo.jpg").write_bytes(b"photo")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    with open_beneath(str(root), str(root / "a" / "b" / "photo.jpg"), use_openat2=use_openat2) as handle:
        assert handle.read() == b"photo"

    (root / "a" / "last.jpg").symlink_to(secret)  # the last component is a link
    (root / "link").symlink_to(tmp_path)  # a folder on the way is a link
    (root / "inside.jpg").symlink_to(root / "a" / "b" / "photo.jpg")  # even a link that stays inside
    for path in (root / "a" / "last.jpg", root / "link" / "secret", root / "inside.jpg"):
        with pytest.raises(OSError) as refused:
            open_beneath(str(root), str(path), use_openat2=use_openat2)
        assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR), (path, refused.value)
    with pytest.raises(OSError):
        open_beneath(str(root), str(root / ".." / "secret"), use_openat2=use_openat2)
    os.mkfifo(root / "pipe")
    with pytest.raises(NotRegularFile):
        open_beneath(str(root), str(root / "pipe"), use_openat2=use_openat2)


def test_a_file_replaced_by_another_of_the_same_size_is_refused(tmp_path) -> None:
    root = tmp_path / "library"
    root.mkdir()
    path = root / "song.mp3"
    path.write_bytes(b"a" * 100)
    indexed = _indexed(path, root)
    open_indexed(indexed).close()
    replacement = root / ".new"
    replacement.write_bytes(b"b" * 100)
    os.utime(replacement, ns=(indexed.mtime_ns, indexed.mtime_ns))  # even the same modification time
    os.replace(replacement, path)
    with pytest.raises(FileChanged, match="another file"):
        open_indexed(indexed)
    edited = _indexed(path, root)
    with open(path, "r+b") as out:
        out.write(b"c")  # the same file, edited in place
    os.utime(path, ns=(edited.mtime_ns + 1_000_000, edited.mtime_ns + 1_000_000))
    with pytest.raises(FileChanged, match="modification time"):
        open_indexed(edited)


@pytest.mark.slow
def test_a_peer_never_gets_the_bytes_of_a_file_swapped_in_after_indexing(tmp_path) -> None:
    data_dir = new_node(tmp_path / "a")
    library = tmp_path / "library"
    library.mkdir()
    note = library / "key.txt"
    note.write_bytes(b"x" * len(SECRET))  # the same size as the secret
    photo = media.image(library / "photo.png")
    long_wav = media.tone(library / "long.wav", seconds=240)  # 23 MB: three read-ahead blocks
    secret = tmp_path / "id_ed25519"
    secret.write_bytes(SECRET)
    note_hash, photo_hash = blake3.blake3(note.read_bytes()).hexdigest(), blake3.blake3(photo.read_bytes()).hexdigest()
    daemon = started(data_dir)
    try:
        cli_json(data_dir, "library", "add", str(library))
        index_and_wait(data_dir)
        share = cli_json(data_dir, "share", "create", "open", "--permission", "public", "--collection", str(library))
        address = share["addresses"][0]
        before = _ask_here(address, photo_hash)
        assert before["answers"][schema.FETCH.id] == "ok" and before["answers"][schema.PREVIEW.id] == "ok", before

        # The note becomes a link to the secret; the photo another file of the same size.
        note.unlink()
        note.symlink_to(secret)
        other = library / ".other"
        other.write_bytes(os.urandom(photo.stat().st_size))
        os.replace(other, photo)

        linked = _ask_here(address, note_hash)
        assert linked["answers"][schema.FETCH.id] == "not_found" and linked["fetched"] == 0, linked
        swapped = _ask_here(address, photo_hash)
        # Preview is asked first and finds the change; by the fetch the file may be re-indexed already.
        assert swapped["answers"][schema.PREVIEW.id] == "changed", swapped
        assert swapped["answers"][schema.FETCH.id] in ("changed", "not_found") and swapped["fetched"] == 0, swapped

        # A file written to in place while it is sent: the transfer ends with `changed`, not new bytes.
        assert _fetch_while_rewritten(address, long_wav) < long_wav.stat().st_size

        # The changed file was handed to the indexer: the old item is gone from the share soon after.
        deadline = time.monotonic() + 60
        while _ask_here(address, photo_hash)["answers"][schema.FETCH.id] != "not_found":
            assert time.monotonic() < deadline, "the changed file was not indexed again"
            time.sleep(0.5)
    finally:
        daemon.stop()


def _fetch_while_rewritten(address: str, path: Path) -> int:
    """Fetch ``path``'s item, reading slowly; rewrite the file in place after the first frames.
    The share must end the reply with ``changed``; the bytes received before, how many."""
    import trio

    from peerlight.p2p import errors
    from peerlight.p2p.client import Requester
    from peerlight.p2p.host import new_host, running, split_peer_address

    content_hash = blake3.blake3(path.read_bytes()).hexdigest()
    peer_id, transport = split_peer_address(address)

    async def main() -> int:
        received = 0
        host = new_host(os.urandom(32))
        async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
            frames = Requester(host).frames(peer_id, [transport], schema.FETCH, {"hash": content_hash}, timeout=30)
            try:
                async for frame in frames:
                    received += len(frame.get("data") or b"")
                    if received and received <= 2 * 1024 * 1024:
                        with open(path, "r+b") as out:  # same inode, same size, new bytes
                            out.seek(len(out.read()) // 2)
                            out.write(os.urandom(4096))
                        await trio.sleep(0.05)
            except errors.Changed:
                return received
        raise AssertionError(f"the whole file ({received} bytes) was sent although it changed")

    return trio.run(main)
