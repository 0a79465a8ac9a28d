"""Grants: what a share allows one peer, as catalog rows (plain functions over a connection).

The signed token a grantee presents carries the grant's id; whether the grant still holds
(not revoked, not expired) is this row. A revocation is a write here, so it holds at once for
the serving node (which keeps a mirror of its shares' grants) and across restarts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from peerlight.permissions.tokens import CAPABILITIES

DAY_SECONDS = 86400


def day_of(now: float) -> int:
    """The (UTC) day a grant's bytes-per-day allowance counts in."""
    return int(now // DAY_SECONDS)


class GrantNotFound(Exception):
    pass


class InviteUsed(Exception):
    """An open invite is single-use: it is bound to the first peer that redeems it."""


class InviteVoid(Exception):
    """The invite's grant was revoked or has expired (checked in the redeeming transaction)."""


@dataclass(frozen=True)
class Grant:
    id: str
    share_id: int
    grantee: str | None
    capabilities: tuple[str, ...]
    rpm: int
    bytes_per_day: int
    expires_at: float | None
    created_at: float
    invite: bool
    redeemed_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    usage_day: int = 0  # the day bytes_today counts in (as last written by the serving node)
    bytes_today: int = 0

    def bytes_served_on(self, day: int) -> int:
        return self.bytes_today if self.usage_day == day else 0

    def holds(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def to_wire(self) -> dict[str, Any]:
        now = time.time()
        return {
            "id": self.id,
            "grantee": self.grantee,
            "capabilities": list(self.capabilities),
            "requests_per_minute": self.rpm or None,
            "bytes_per_day": self.bytes_per_day or None,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "invite": self.invite,
            "redeemed_at": self.redeemed_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "bytes_today": self.bytes_served_on(day_of(now)),
            "state": "revoked" if self.revoked_at is not None else "expired" if not self.holds(now) else "open invite" if self.grantee is None else "active",
        }


_COLUMNS = "id, share_id, grantee, capabilities, rpm, bytes_per_day, expires_at, created_at, invite, redeemed_at, revoked_at, last_used_at, usage_day, bytes_today"


def _grant(row: tuple) -> Grant:  # type: ignore[type-arg]
    grant_id, share_id, grantee, capabilities, rpm, bpd, expires, created, invite, redeemed, revoked, used, day, served = row
    return Grant(grant_id, share_id, grantee, tuple(json.loads(capabilities)), rpm, bpd, expires, created, bool(invite), redeemed, revoked, used, day, served)


def add_grant(
    conn: sqlite3.Connection,
    grant_id: str,
    share_id: int,
    grantee: str | None,
    capabilities: tuple[str, ...],
    *,
    rpm: int = 0,
    bytes_per_day: int = 0,
    expires_at: float | None = None,
) -> Grant:
    if not capabilities or not set(capabilities) <= set(CAPABILITIES):
        raise ValueError(f"capabilities are among {', '.join(CAPABILITIES)}")
    conn.execute(
        f"INSERT INTO grants ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 0, 0)",
        (grant_id, share_id, grantee, json.dumps(list(capabilities)), rpm, bytes_per_day, expires_at, time.time(), int(grantee is None)),
    )
    return get_grant(conn, grant_id)


def get_grant(conn: sqlite3.Connection, grant_id: str) -> Grant:
    row = conn.execute(f"SELECT {_COLUMNS} FROM grants WHERE id = ?", (grant_id,)).fetchone()
    if row is None:
        raise GrantNotFound(f"no grant {grant_id}")
    return _grant(row)


def grants_of(conn: sqlite3.Connection, share_id: int) -> list[Grant]:
    return [_grant(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM grants WHERE share_id = ? ORDER BY created_at, id", (share_id,))]


def all_grants(conn: sqlite3.Connection) -> list[Grant]:
    return [_grant(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM grants ORDER BY created_at, id")]


def revoke_grant(conn: sqlite3.Connection, share_id: int, grant_id: str) -> Grant:
    """Revoke a grant of the share (again: no change); the grant as it now is."""
    found = conn.execute("SELECT 1 FROM grants WHERE id = ? AND share_id = ?", (grant_id, share_id)).fetchone()
    if found is None:
        raise GrantNotFound(f"the share has no grant {grant_id}")
    conn.execute("UPDATE grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (time.time(), grant_id))
    return get_grant(conn, grant_id)


def redeem_invite(conn: sqlite3.Connection, grant_id: str, peer_id: str) -> Grant:
    """Bind an open invite's grant to ``peer_id``; a second redemption (by anyone else) is refused."""
    grant = get_grant(conn, grant_id)
    if not grant.holds(time.time()):  # revoked or expired since the gate looked: the catalog decides
        raise InviteVoid("this invite was revoked or has expired")
    if grant.grantee is not None:
        if grant.grantee == peer_id:
            return grant  # the same peer asking again (its first answer was lost): same grant
        raise InviteUsed("this invite has been used already")
    conn.execute("UPDATE grants SET grantee = ?, redeemed_at = ? WHERE id = ? AND grantee IS NULL", (peer_id, time.time(), grant_id))
    return get_grant(conn, grant_id)


def touch_grants(conn: sqlite3.Connection, used: dict[str, float]) -> None:
    """Record when grants were last used (batched by the serving node)."""
    conn.executemany("UPDATE grants SET last_used_at = ? WHERE id = ?", [(when, grant_id) for grant_id, when in used.items()])


def record_bytes_served(conn: sqlite3.Connection, served: dict[str, tuple[int, int]]) -> None:
    """Record each grant's bytes of the day, ``{grant id: (day, bytes)}`` (batched by the serving
    node), so that a restart does not hand a grantee a fresh day's allowance."""
    conn.executemany("UPDATE grants SET usage_day = ?, bytes_today = ? WHERE id = ?", [(day, size, grant_id) for grant_id, (day, size) in served.items()])
