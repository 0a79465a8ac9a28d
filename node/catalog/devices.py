"""The user's paired devices (their node peer IDs), as catalog rows."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .shares import Share, _SELECT, _share, create_share

DEVICES_SHARE = "devices"
DEVICES_AUTOMATIC = 2  # shares.automatic of the devices share (the local automatic share is 1)


def add_device(conn: sqlite3.Connection, peer_id: str, name: str, share_addresses: list[str]) -> None:
    conn.execute(
        """INSERT INTO devices (peer_id, name, paired_at, share_addresses) VALUES (?, ?, ?, ?)
           ON CONFLICT (peer_id) DO UPDATE SET name = excluded.name, paired_at = excluded.paired_at, share_addresses = excluded.share_addresses""",
        (peer_id, name[:100], time.time(), json.dumps(share_addresses[:8])),
    )


def list_devices(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT peer_id, name, paired_at, share_addresses FROM devices ORDER BY paired_at")
    return [{"peer_id": p, "name": n, "paired_at": at, "share_addresses": json.loads(a)} for p, n, at, a in rows]


def device_ids(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(row[0] for row in conn.execute("SELECT peer_id FROM devices"))


def remove_device(conn: sqlite3.Connection, key: str) -> dict[str, Any]:
    """Unpair a device by peer ID or name; what it was."""
    found = [d for d in list_devices(conn) if key in (d["peer_id"], d["name"])]
    if len(found) != 1:
        raise LookupError(f"no paired device {key!r}" if not found else f"{len(found)} devices are named {key!r}; use the peer ID")
    conn.execute("DELETE FROM devices WHERE peer_id = ?", (found[0]["peer_id"],))
    return found[0]


def devices_share(conn: sqlite3.Connection) -> Share | None:
    row = conn.execute(_SELECT + " WHERE automatic = ?", (DEVICES_AUTOMATIC,)).fetchone()
    return _share(conn, row) if row is not None else None


def ensure_devices_share(conn: sqlite3.Connection, scope: str) -> Share:
    """The automatic share for the user's devices: the whole library, ``devices`` permission."""
    existing = devices_share(conn)
    if existing is not None:
        return existing
    name = DEVICES_SHARE
    while conn.execute("SELECT 1 FROM shares WHERE name = ?", (name,)).fetchone():
        name += "-auto"
    share = create_share(conn, name, scope, "devices", ())
    conn.execute("UPDATE shares SET automatic = ? WHERE id = ?", (DEVICES_AUTOMATIC, share.id))
    return _share(conn, conn.execute(_SELECT + " WHERE id = ?", (share.id,)).fetchone())
