"""Who may use the web UI: the local user, logged in through a one-time URL, as Jupyter does.

``peerlight ui`` asks the daemon over the control socket (which only the node's user can
open: the data directory is 0700) for a login token. The browser opens
``/login?token=…``; the token works once, within a minute, and becomes a session cookie
(``HttpOnly``, ``SameSite=Strict``) bound to a CSRF token the pages send back with every
change. Another local user cannot reach the control socket, so cannot get a token, and the
loopback port alone gives them nothing but a login page.

Tokens and session ids are 256-bit random values, kept only as SHA-256 digests (a memory dump
of the daemon does not yield a usable cookie) and compared by digest lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

LOGIN_SECONDS = 60.0  # a login URL is good for this long, once
PENDING_LOGINS = 16  # login URLs outstanding at once (older ones are dropped)
MAX_SESSIONS = 64  # browsers logged in at once at each door (the oldest is logged out)


@dataclass(frozen=True)
class Session:
    csrf: str  # sent back in X-CSRF-Token with every change
    expires: float
    door: str = "loopback"  # where it was opened: valid there only


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Sessions:
    def __init__(self, session_seconds: float, now: Callable[[], float] = time.time) -> None:
        self._session_seconds = session_seconds
        self._now = now
        self._logins: OrderedDict[str, float] = OrderedDict()  # token digest -> expiry
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # session id digest -> session

    def login_token(self) -> str:
        """A new one-time login token."""
        token = secrets.token_urlsafe(32)
        self._logins[_digest(token)] = self._now() + LOGIN_SECONDS
        while len(self._logins) > PENDING_LOGINS:
            self._logins.popitem(last=False)
        return token

    def redeem(self, token: str) -> tuple[str, Session] | None:
        """The session a login token opens (its id, for the cookie), or None: unknown, used or expired."""
        expires = self._logins.pop(_digest(token), None)
        if expires is None or expires <= self._now():
            return None
        return self.open("loopback")

    def open(self, door: str) -> tuple[str, Session]:
        """A new session at ``door`` (after its login succeeded): its id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self._now() + self._session_seconds, door)
        self._sessions[_digest(session_id)] = session
        at_door = [key for key, kept in self._sessions.items() if kept.door == door]
        for key in at_door[: max(0, len(at_door) - MAX_SESSIONS)]:  # the oldest of this door go: one door cannot log the other out
            del self._sessions[key]
        return session_id, session

    def get(self, session_id: str | None, door: str = "loopback") -> Session | None:
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None or session.expires <= self._now():
            self._sessions.pop(key, None)
            return None
        return session if session.door == door else None

    def end_all(self, door: str) -> None:
        """Log out every browser of ``door`` (its password changed)."""
        for key in [key for key, session in self._sessions.items() if session.door == door]:
            del self._sessions[key]

    def end(self, session_id: str) -> None:
        self._sessions.pop(_digest(session_id), None)


def ui_host_label(seed: bytes) -> str:
    """The secret label of the UI's host name: derived from the node's identity key (0600), so it
    is stable across restarts (bookmarks keep working) and unknown to anyone without the key."""
    import hmac

    return hmac.new(seed, b"peerlight-ui-host/1", hashlib.sha256).hexdigest()[:12]
