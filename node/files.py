"""Reading and writing files safely: atomic, durable writes; reads that never block on odd files.

Writes. Every file the node writes (config, identity key, pid file, adapters, vector
indexes, their registry) goes through :func:`write_atomic` or :func:`replace_dir_atomic`:
the new content is written beside the target, flushed to disk (``fsync``), renamed over the
target, and the folder is flushed so the rename itself survives a power cut. A crash at any
point leaves either the old or the new version, never a torn file; a full disk fails the
write and leaves the old version in place.

Reads. Library folders hold whatever the user (or an archive, or a peer's download) put
there. :func:`open_regular` opens without blocking (a FIFO would otherwise wait forever for
a writer, a tty could become the controlling terminal) and refuses anything that is not a
regular file, so the check and the read concern the same file: nothing can be swapped in
between.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """The path names a FIFO, socket, device or folder: something the node never reads as media."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
        self.kind = kind


def kind_of(mode: int) -> str:
    """A readable name for a file type (from ``st_mode``)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "unknown file type"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading; anything else raises :class:`NotRegularFile` at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # opening a Unix socket
            raise NotRegularFile(path, "socket") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, kind_of(mode))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Replace ``path`` by ``data`` atomically and durably.

    With ``exclusive``, the file is created only if it does not exist yet (FileExistsError
    otherwise) — still never visible half-written, unlike ``O_EXCL`` followed by a write.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and fails if the name exists
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def replace_dir_atomic(target: Path, fill: Callable[[Path], None]) -> None:
    """Replace the folder ``target`` by what ``fill(staging)`` writes into a fresh staging folder.

    The staging folder's files are flushed before it takes ``target``'s place. Between the two
    renames only ``<target>.old`` exists, so a reader that finds no ``target`` should look
    there (an interrupted swap); a stale ``.old`` is removed only once ``target`` exists.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(target.name + ".old")
    try:
        fill(staging)
        for entry in staging.iterdir():
            with open(entry, "rb") as written:
                os.fsync(written.fileno())
        fsync_dir(staging)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
