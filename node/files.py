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

Serving. What a share sends must be the very file that was indexed, not what a path names now:
someone who can write into a shared folder (a synced folder, a NAS) could otherwise swap an
indexed file for a link to ``~/.ssh/id_ed25519`` and fetch it by the old hash.
:func:`open_beneath` opens a file below a library's root without following a link at any
component (``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it,
else a walk of ``O_NOFOLLOW`` opens), and :func:`check_unchanged` compares the open file's
device, inode, size and modification time with what the catalog recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import functools
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


def open_regular(path: str | os.PathLike[str], *, follow: bool = True) -> BinaryIO:
    """Open a regular file for reading; anything else raises :class:`NotRegularFile` at once.
    With ``follow=False`` a symbolic link at ``path`` itself is refused (``ELOOP``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # opening a Unix socket
            raise NotRegularFile(path, "socket") from None
        raise
    return _regular_handle(fd, path)


class FileChanged(OSError):
    """The file at an indexed path is no longer the one indexed (replaced, edited, or swapped)."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        super().__init__(errno.ESTALE, f"changed since it was indexed ({what})", os.fspath(path))


@dataclasses.dataclass(frozen=True)
class IndexedFile:
    """Where an item's file is and what it was when indexed: what serving checks before a byte leaves."""

    path: str
    library_id: int
    root: str  # the library's folder: nothing above it is resolved when the file is opened
    size: int
    mtime_ns: int
    inode: int
    device: int


OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x02, 0x04, 0x08
SYS_OPENAT2 = 437  # the same number on every Linux architecture since 5.6 (unified syscall table)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _openat2(dir_fd: int, relative: bytes) -> int | None:
    """``openat2`` below ``dir_fd`` with no link followed; None where the kernel lacks it."""
    libc = _libc()
    how = _OpenHow(OPEN_FLAGS, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    fd = libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(relative), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EPERM):  # an old kernel, or a seccomp filter that does not know it
        return None
    raise OSError(code, os.strerror(code))


def _walk_nofollow(dir_fd: int, parts: list[bytes]) -> int:
    """Open ``parts`` below ``dir_fd`` one component at a time, each with ``O_NOFOLLOW``."""
    current = os.dup(dir_fd)
    try:
        for folder in parts[:-1]:  # O_PATH: a folder that may be traversed but not listed still opens
            following = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = following
        return os.open(parts[-1], OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=current)
    finally:
        os.close(current)


def open_beneath(root: str, path: str, *, use_openat2: bool = True) -> BinaryIO:
    """Open the regular file ``path`` inside the folder ``root`` without following a link at any
    component below ``root`` (a link there raises ``ELOOP``); anything but a regular file raises
    :class:`NotRegularFile`. ``root`` itself is the user's choice and is resolved as usual."""
    relative = os.path.relpath(path, root)
    parts = [os.fsencode(part) for part in relative.split("/")]
    if relative.startswith("/") or any(part in (b"", b".", b"..") for part in parts):
        raise OSError(errno.EXDEV, "not inside its library", path)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2(root_fd, b"/".join(parts)) if use_openat2 else None
        if fd is None:
            fd = _walk_nofollow(root_fd, parts)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link on the way (never followed when serving)", path) from None
        if exc.errno == errno.ENXIO:
            raise NotRegularFile(path, "socket") from None
        raise
    finally:
        os.close(root_fd)
    return _regular_handle(fd, path)


def check_unchanged(handle: BinaryIO, indexed: IndexedFile) -> None:
    """Raise :class:`FileChanged` unless the open file is the one indexed (device, inode, size, mtime)."""
    st = os.fstat(handle.fileno())
    for what, now, then in (
        ("another file", (st.st_dev, st.st_ino), (indexed.device, indexed.inode)),
        ("size", st.st_size, indexed.size),
        ("modification time", st.st_mtime_ns, indexed.mtime_ns),
    ):
        if now != then:
            raise FileChanged(indexed.path, what)


def open_indexed(indexed: IndexedFile) -> BinaryIO:
    """The file that was indexed at ``indexed.path``, opened without links, or an OSError."""
    handle = open_beneath(indexed.root, indexed.path)
    try:
        check_unchanged(handle, indexed)
    except BaseException:
        handle.close()
        raise
    return handle


RENAME_NOREPLACE = 1
AT_FDCWD = -100


def rename_exclusive(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (FileExistsError): atomic, where
    hard links are not to be had. Where the kernel or libc lacks ``renameat2``, a plain rename
    after a check (a window of a few microseconds, on file systems that have no links anyway)."""
    libc = _libc()
    function = getattr(libc, "renameat2", None)
    if function is not None:
        done = function(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE)
        if done == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), os.fspath(target))
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), os.fspath(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(target))
    os.rename(source, target)


def _regular_handle(fd: int, path: str | os.PathLike[str]) -> BinaryIO:
    """A file object of ``fd`` if it is a regular file (reads blocking again); else ``fd`` is
    closed and the file refused: the check and the reads concern the same open file."""
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
