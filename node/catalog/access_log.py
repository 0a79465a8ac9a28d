"""A share's access log: who asked for what, allowed or denied (plain functions over a connection)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

# The log rotates: a share keeps this many of its newest allowed requests, and as many of its
# newest refusals apart, so that a flood of refused requests cannot push its members' out.
ROWS_KEPT_PER_SHARE = 20_000


@dataclass(frozen=True)
class Access:
    share_id: int
    at: float
    peer_id: str
    protocol: str
    capability: str | None
    item: str | None
    allowed: bool
    reason: str | None = None
    grant_id: str | None = None


def append(conn: sqlite3.Connection, entries: list[Access]) -> None:
    """Add entries, then drop each touched share's rows beyond its newest ROWS_KEPT_PER_SHARE
    allowed ones and its newest ROWS_KEPT_PER_SHARE refusals."""
    conn.executemany(
        "INSERT INTO access_log (share_id, at, peer_id, protocol, capability, item, allowed, reason, grant_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.share_id, e.at, e.peer_id, e.protocol, e.capability, e.item, int(e.allowed), e.reason, e.grant_id) for e in entries],
    )
    for share_id, allowed in {(e.share_id, int(e.allowed)) for e in entries}:
        row = conn.execute(
            "SELECT id FROM access_log WHERE share_id = ? AND allowed = ? ORDER BY id DESC LIMIT 1 OFFSET ?", (share_id, allowed, ROWS_KEPT_PER_SHARE)
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM access_log WHERE share_id = ? AND allowed = ? AND id <= ?", (share_id, allowed, row[0]))


def recent(conn: sqlite3.Connection, share_id: int, limit: int = 100, denied_only: bool = False) -> list[dict[str, Any]]:
    """The newest entries first."""
    where = "share_id = ?" + (" AND allowed = 0" if denied_only else "")
    rows = conn.execute(
        f"SELECT at, peer_id, protocol, capability, item, allowed, reason, grant_id FROM access_log WHERE {where} ORDER BY id DESC LIMIT ?",
        (share_id, limit),
    )
    return [
        {"at": at, "peer_id": peer, "protocol": protocol, "capability": capability, "item": item, "allowed": bool(allowed), "reason": reason, "grant": grant}
        for at, peer, protocol, capability, item, allowed, reason, grant in rows
    ]
