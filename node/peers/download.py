"""A download in progress on disk: the verified bytes so far and the BLAKE3 of all of them.

Big downloads are written with ``O_DIRECT`` where the filesystem allows it: the bytes go from
one reused, page-aligned staging buffer to the disk, not through the page cache. Filling the
page cache with a new 1 GB file cost ~4 s of kernel CPU on the machines we measure on (memory
that has not been touched lately is slow to hand out in a VM) against ~0.1 s this way, and a
download is rarely read again at once. Writes that cannot be direct (a filesystem without it,
such as tmpfs; an unaligned offset; the file's last, short chunk) go through the page cache.
Both kinds write disjoint ranges of the same file, which the kernel keeps coherent, and one
``fsync`` makes all of it durable.
"""

from __future__ import annotations

import errno
import mmap
import os
from contextlib import suppress
from pathlib import Path

import blake3

from ..files import open_regular

DIRECT_ALIGNMENT = 4096  # offsets, lengths and buffer addresses of direct writes: covers 512 and 4096-byte sectors
STAGING_BYTES = 8 * 1024 * 1024  # the largest batch written at once (a multiple of the alignment)


class PartialDownload:
    """Append-only writer of verified chunks, with the running whole-file hash.

    The receiving loop hashes each verified chunk into ``hasher`` as it queues it, and
    :meth:`write` (run in a worker thread) appends the batch. A failed write fails the
    fetch; the next fetch re-reads what is on disk, once, to bring the hash up to date.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = blake3.blake3()  # one thread: chunk-sized updates gain nothing from more
        self.size = 0
        # No link is followed (one planted under the partial's name would write elsewhere), and
        # nothing but a regular file is read (a FIFO planted there would block this thread).
        with suppress(FileNotFoundError), open_regular(path, follow=False) as existing:
            while block := existing.read(STAGING_BYTES):
                self.hasher.update(block)
                self.size += len(block)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self.direct_fd: int | None = None
        self._staging: mmap.mmap | None = None
        direct = getattr(os, "O_DIRECT", 0)
        if direct:
            try:
                self.direct_fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | direct)
                self._staging = mmap.mmap(-1, STAGING_BYTES)  # page-aligned, reused: no new memory per batch
            except OSError:  # the filesystem has no direct I/O: the page cache it is
                self._close_direct()

    @property
    def direct(self) -> bool:
        return self.direct_fd is not None

    def write(self, batch: list[bytes]) -> None:
        """Append verified chunks: one system call for the batch (more only after a short write)."""
        total = sum(len(data) for data in batch)
        if self._can_write_direct(total):
            try:
                self._write_direct(batch, total)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # a full disk and the like are real failures
                    raise
                self._close_direct()  # EINVAL: this filesystem refuses direct writes after all
        self._write_buffered(batch)

    def _can_write_direct(self, total: int) -> bool:
        return (
            self.direct_fd is not None
            and total <= STAGING_BYTES
            and self.size % DIRECT_ALIGNMENT == 0
            and total % DIRECT_ALIGNMENT == 0
        )

    def _write_direct(self, batch: list[bytes], total: int) -> None:
        assert self._staging is not None and self.direct_fd is not None
        staging = memoryview(self._staging)
        try:
            offset = 0
            for data in batch:
                staging[offset : offset + len(data)] = data
                offset += len(data)
            written = 0
            while written < total:
                done = os.pwrite(self.direct_fd, staging[written:total], self.size + written)
                if done <= 0 or done % DIRECT_ALIGNMENT:
                    # a short, unaligned direct write cannot be continued directly: finish it buffered
                    written += max(done, 0)
                    _write_all(self.fd, [staging[written:total]])
                    break
                written += done
        finally:
            staging.release()
        self.size += total

    def _write_buffered(self, batch: list[bytes]) -> None:
        _write_all(self.fd, [memoryview(data) for data in batch])
        self.size += sum(len(data) for data in batch)

    def sync(self) -> None:
        os.fsync(self.fd)  # the file's data, however it was written, and its size

    def close(self) -> None:
        self._close_direct()
        os.close(self.fd)

    def _close_direct(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None
        if self._staging is not None:
            self._staging.close()
            self._staging = None


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` until every byte is written."""
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views and written:
            views[0] = views[0][written:]
