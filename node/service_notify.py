"""Telling a service manager how the daemon is doing: systemd's ``sd_notify`` protocol.

Under a ``Type=notify`` unit, systemd passes ``NOTIFY_SOCKET`` (a datagram socket; a leading
``@`` names an abstract one) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``, the process it means). The daemon sends ``READY=1`` once its control socket
serves and its services run, so ``systemctl --user start`` returns only then; ``WATCHDOG=1``
every half interval while it is healthy, so a wedged daemon is killed and restarted
(``Restart=on-failure``); ``STATUS=…`` for ``systemctl status``; and ``STOPPING=1`` when it
shuts down. The protocol is a few lines of datagrams, so it is written here rather than
adding a dependency (``sdnotify`` and ``systemd-python`` do the same, the latter with C
bindings).

Without ``NOTIFY_SOCKET`` (started by hand, by launchd, or by a test) nothing is sent. A
notification that cannot be sent is logged, never fatal: the daemon serves whether or not its
manager listens.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

log = logging.getLogger("peerlight.daemon")

MAX_STATUS = 200  # characters of STATUS= sent (systemctl shows one line)


@dataclass(frozen=True)
class ServiceNotifier:
    address: str | bytes  # a path, or an abstract name (bytes starting with NUL)
    watchdog_seconds: float | None  # how often the manager wants WATCHDOG=1 at the latest

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ, pid: int | None = None) -> ServiceNotifier | None:
        """The notifier systemd asked for, or None when the daemon was not started by it."""
        name = environ.get("NOTIFY_SOCKET", "")
        if not name or not (name.startswith("/") or name.startswith("@")):
            return None  # unset, or a kind of address (vsock) this daemon does not speak
        address: str | bytes = b"\0" + name[1:].encode() if name.startswith("@") else name
        return cls(address, _watchdog_seconds(environ, os.getpid() if pid is None else pid))

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines, e.g. ``notify(READY="1", STATUS="serving")``; whether it was sent."""
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a manager not reading must never stall the daemon
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("could not notify the service manager", extra={"reason": f"{type(exc).__name__}: {exc}"})
            return False
        return True

    async def keep_alive(self, healthy: Callable[[], Awaitable[bool]]) -> None:
        """Send ``WATCHDOG=1`` every half watchdog interval while ``healthy()`` answers True in
        time; a check that hangs or fails sends nothing, and the manager restarts the daemon
        when the interval runs out."""
        if self.watchdog_seconds is None:
            return
        interval = self.watchdog_seconds / 2
        while True:
            with trio.move_on_after(interval) as waited:
                ok = await healthy()
            if not waited.cancelled_caught and ok:
                self.notify(WATCHDOG="1")
            else:
                log.warning("the daemon's health check failed: no watchdog ping sent")
            await trio.sleep(interval)


def _watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """WATCHDOG_USEC in seconds, if it is meant for this process (WATCHDOG_PID, when set)."""
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        microseconds = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return microseconds / 1e6 if microseconds > 0 else None


def _one_line(value: str) -> str:
    return " ".join(str(value).split())[:MAX_STATUS]
