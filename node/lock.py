"""One daemon per data directory.

An exclusive ``flock`` on ``daemon.lock`` is held for the daemon's lifetime. The kernel drops
it when the process dies, however it dies, so a crashed daemon never blocks the next start:
a pid file or socket it left behind is recognised as stale (the lock is free) and cleared.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from .files import write_atomic
from .paths import NodePaths

log = logging.getLogger("peerlight.daemon")


class AlreadyRunning(Exception):
    """Another daemon holds this data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a Peerlight daemon ({who}) is already running on {data_dir}")


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


class DaemonLock:
    """Holds the data directory for this process; ``release`` removes the pid file."""

    def __init__(self, paths: NodePaths, fd: int) -> None:
        self._paths = paths
        self._fd = fd

    @classmethod
    def acquire(cls, paths: NodePaths) -> DaemonLock:
        fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(paths.root, read_pid(paths.pid_file)) from None
        lock = cls(paths, fd)
        lock._clear_stale()
        lock._write_pid()
        return lock

    def _clear_stale(self) -> None:
        stale_pid = read_pid(self._paths.pid_file)
        if self._paths.pid_file.exists():
            log.warning(
                "cleared a stale pid file left by a daemon that did not shut down cleanly",
                extra={"stale_pid": stale_pid},
            )
            self._paths.pid_file.unlink()
        if self._paths.control_socket.exists():
            log.warning("removed a stale control socket")
            self._paths.control_socket.unlink()

    def _write_pid(self) -> None:
        write_atomic(self._paths.pid_file, f"{os.getpid()}\n".encode(), mode=0o644)

    def release(self) -> None:
        if self._fd < 0:
            return
        if read_pid(self._paths.pid_file) == os.getpid():
            self._paths.pid_file.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
