"""The password of the UI served to other machines (``ui.remote_listen``), and the throttle on guessing it.

On loopback the local user logs in through a one-time URL from the control socket; another
machine cannot reach that socket, so there it takes a password the user sets with
``peerlight ui password``. It is kept only as a scrypt digest (``ui-password`` in the data
directory, 0600), and checked one attempt at a time in a worker thread: a flood of logins costs
the node at most one scrypt at a time, never a thread per attempt.

Guessing is bounded before any scrypt runs: a client address (an IPv6 /64 counts as one) gets
``CLIENT_FAILURES`` wrong tries per ``WINDOW_SECONDS``, and all clients together
``ALL_FAILURES`` (many addresses, one attacker), after which logins wait until the window has
passed; except from an address that logged in before, so that a stranger tripping the global
limit does not lock the owner out.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

import trio
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..files import write_atomic

log = logging.getLogger("peerlight.webui")

SCRYPT_N = 2**15  # about 0.1 s and 32 MB a check
MIN_LENGTH = 12  # with the throttle: at most ~4,800 guesses a day
MAX_LENGTH = 1024
WINDOW_SECONDS = 900.0
CLIENT_FAILURES = 5
ALL_FAILURES = 50
TRACKED_CLIENTS = 4096
TRUSTED_CLIENTS = 256


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long)."""


class Throttled(Exception):
    """Too many wrong passwords lately: from this client, or from everyone."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many wrong passwords; try again in {retry_after / 60:.0f} minutes")
        self.retry_after = retry_after


class LoginThrottle:
    """Wrong passwords remembered for ``WINDOW_SECONDS``, per client address and in all."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._clients: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()
        self._trusted: OrderedDict[str, None] = OrderedDict()  # addresses that logged in before

    def check(self, client: str) -> None:
        """Raise :class:`Throttled` if ``client`` may not try now."""
        horizon = self._now() - WINDOW_SECONDS
        while self._all and self._all[0] < horizon:
            self._all.popleft()
        failures = self._clients.get(client, deque())
        while failures and failures[0] < horizon:
            failures.popleft()
        if len(failures) >= CLIENT_FAILURES:
            raise Throttled(failures[0] - horizon)
        if len(self._all) >= ALL_FAILURES and client not in self._trusted:
            raise Throttled(self._all[0] - horizon)

    def succeeded(self, client: str) -> None:
        self._trusted[client] = None
        self._trusted.move_to_end(client)
        while len(self._trusted) > TRUSTED_CLIENTS:
            self._trusted.popitem(last=False)

    def failed(self, client: str) -> None:
        now = self._now()
        self._all.append(now)
        self._clients.setdefault(client, deque()).append(now)
        self._clients.move_to_end(client)
        while len(self._clients) > TRACKED_CLIENTS:  # the global count still holds what is forgotten here
            self._clients.popitem(last=False)


class UiPassword:
    """The scrypt digest in ``path``; :meth:`check` is the only way a remote browser logs in."""

    def __init__(self, path: Path, throttle: LoginThrottle | None = None) -> None:
        self.path = path
        self.throttle = throttle or LoginThrottle()
        self._checking = trio.Lock()  # one scrypt at a time, whatever arrives

    def is_set(self) -> bool:
        return self.path.is_file()

    def set(self, password: str) -> None:
        if len(password) < MIN_LENGTH:
            raise PasswordError(f"a password of at least {MIN_LENGTH} characters is needed")
        if len(password) > MAX_LENGTH:
            raise PasswordError(f"a password of at most {MAX_LENGTH} characters, please")
        salt = secrets.token_bytes(16)
        record = {"kdf": "scrypt", "n": SCRYPT_N, "r": 8, "p": 1, "salt": _b64(salt), "digest": _b64(_scrypt(password, salt, SCRYPT_N, 8, 1))}
        write_atomic(self.path, json.dumps(record).encode(), mode=0o600)

    def clear(self) -> bool:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True

    async def check(self, password: str, client: str) -> bool:
        """Whether ``password`` is the one set; :class:`Throttled` before any work when guessing is.
        ``client``: who tries (``connections.client_key`` of its address)."""
        self.throttle.check(client)
        async with self._checking:
            self.throttle.check(client)  # others may have failed while this one waited
            right = await trio.to_thread.run_sync(self._matches, password[: MAX_LENGTH + 1])
        if right:
            self.throttle.succeeded(client)
        else:
            self.throttle.failed(client)
            log.warning("web UI: a wrong password", extra={"client": client})
        return right

    def _matches(self, password: str) -> bool:
        try:
            record = json.loads(self.path.read_bytes())
            n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
            if not (2**10 <= n <= 2**20 and r <= 32 and p <= 16):  # a tampered file must not cost gigabytes
                raise ValueError("scrypt parameters out of range")
            digest = _scrypt(password, base64.b64decode(record["salt"]), n, r, p)
            return secrets.compare_digest(digest, base64.b64decode(record["digest"]))
        except FileNotFoundError:
            return False  # no password set: nobody logs in from elsewhere
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("web UI: the password file cannot be read; set the password again", extra={"reason": str(exc)})
            return False


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
