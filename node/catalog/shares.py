"""Shares (the node's Data Servers) and the remote shares it knows, as catalog rows.

Plain functions over a connection, run by ``Catalog.write``/``Catalog.read``. A share's
collections are folders on this machine (whole libraries, or folders within them); a share
with none is the automatic ``local`` share, which serves everything the node indexes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from peerlight.permissions.tokens import CAPABILITIES

from ..callers import Scope
from ..pathnames import decode_path, encode_path, is_within, path_fields
from .peer_examples import keep_rated_prefixes

SCOPES = ("local", "lan", "global")
PERMISSIONS = ("public", "members", "devices")
AUTOMATIC_SHARE = "local"  # the share every node has: the whole library, on loopback, for its own apps


class ShareError(Exception):
    """A share operation that contradicts the catalog."""


class ShareExists(ShareError):
    pass


class ShareNotFound(ShareError):
    pass


class NotInLibrary(ShareError):
    """A collection that is no library and lies in none: the node indexes nothing there."""


@dataclass(frozen=True)
class Share:
    id: int
    name: str
    scope: str
    permission: str
    collections: tuple[str, ...]
    modalities: tuple[str, ...]
    port: int | None
    automatic: bool
    paused: bool
    created_at: float
    public_can: tuple[str, ...] = CAPABILITIES  # what a public share lets anyone do

    @property
    def item_scope(self) -> Scope:
        """What a peer of this share may see: its collections' items of its kinds."""
        return Scope(folders=self.collections, modalities=self.modalities)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "permission": self.permission,
            "public_can": list(self.public_can),
            "collections": [path_fields(path) for path in self.collections],
            "modalities": list(self.modalities),
            "port": self.port,
            "automatic": self.automatic,
            "paused": self.paused,
            "created_at": self.created_at,
        }


def _share(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Share:
    share_id, name, scope, permission, modalities, port, automatic, paused, created_at, public_can = row
    collections = tuple(
        sorted(decode_path(path) for (path,) in conn.execute("SELECT path FROM share_collections WHERE share_id = ?", (share_id,)))
    )
    return Share(
        share_id, name, scope, permission, collections, tuple(json.loads(modalities)), port, bool(automatic), bool(paused), created_at, tuple(json.loads(public_can))
    )


_SELECT = "SELECT id, name, scope, permission, modalities, port, automatic, paused, created_at, public_can FROM shares"


def list_shares(conn: sqlite3.Connection) -> list[Share]:
    return [_share(conn, row) for row in conn.execute(_SELECT + " ORDER BY automatic DESC, name")]


def get_share(conn: sqlite3.Connection, name: str) -> Share:
    row = conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ShareNotFound(f"no share named {name!r}")
    return _share(conn, row)


def _check_collections(conn: sqlite3.Connection, collections: tuple[str, ...]) -> None:
    libraries = [decode_path(path) for (path,) in conn.execute("SELECT path FROM libraries")]
    for folder in collections:
        if not any(is_within(folder, library) for library in libraries):
            raise NotInLibrary(f"{folder} is not in a library; add it with `peerlight library add` first")


def create_share(
    conn: sqlite3.Connection,
    name: str,
    scope: str,
    permission: str,
    collections: tuple[str, ...],
    modalities: tuple[str, ...] = (),
    port: int | None = None,
    automatic: bool = False,
    public_can: tuple[str, ...] = CAPABILITIES,
) -> Share:
    if conn.execute("SELECT 1 FROM shares WHERE name = ?", (name,)).fetchone():
        raise ShareExists(f"a share named {name!r} exists already")
    _check_collections(conn, collections)
    share_id = conn.execute(
        "INSERT INTO shares (name, scope, permission, modalities, port, automatic, created_at, public_can) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (name, scope, permission, json.dumps(list(modalities)), port, int(automatic), time.time(), json.dumps(list(public_can))),
    ).lastrowid
    conn.executemany(
        "INSERT OR IGNORE INTO share_collections (share_id, path) VALUES (?, ?)", [(share_id, encode_path(p)) for p in collections]
    )
    return get_share(conn, name)


@dataclass(frozen=True)
class ShareEdit:
    """Changes to a share; None leaves a field as it is."""

    new_name: str | None = None
    scope: str | None = None
    permission: str | None = None
    collections: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None
    port: int | None = None
    paused: bool | None = None
    public_can: tuple[str, ...] | None = None


def edit_share(conn: sqlite3.Connection, name: str, edit: ShareEdit) -> Share:
    share = get_share(conn, name)
    if share.automatic and (edit.scope not in (None, "local") or edit.collections is not None or edit.new_name not in (None, name)):
        raise ShareError("the automatic local share always serves everything on loopback; create another share instead")
    if edit.new_name not in (None, name) and conn.execute("SELECT 1 FROM shares WHERE name = ?", (edit.new_name,)).fetchone():
        raise ShareExists(f"a share named {edit.new_name!r} exists already")
    changes = {
        "name": edit.new_name,
        "scope": edit.scope,
        "permission": edit.permission,
        "modalities": json.dumps(list(edit.modalities)) if edit.modalities is not None else None,
        "port": edit.port,
        "paused": int(edit.paused) if edit.paused is not None else None,
        "public_can": json.dumps(list(edit.public_can)) if edit.public_can is not None else None,
    }
    for column, value in changes.items():
        if value is not None:
            conn.execute(f"UPDATE shares SET {column} = ? WHERE id = ?", (value, share.id))
    if edit.collections is not None:
        _check_collections(conn, edit.collections)
        conn.execute("DELETE FROM share_collections WHERE share_id = ?", (share.id,))
        conn.executemany(
            "INSERT OR IGNORE INTO share_collections (share_id, path) VALUES (?, ?)",
            [(share.id, encode_path(p)) for p in edit.collections],
        )
    return get_share(conn, edit.new_name or name)


def remove_share(conn: sqlite3.Connection, name: str) -> Share:
    share = get_share(conn, name)
    if share.automatic:
        raise ShareError("the automatic local share cannot be removed; pause it with `peerlight share pause local`")
    conn.execute("DELETE FROM shares WHERE id = ?", (share.id,))
    return share


def set_port(conn: sqlite3.Connection, share_id: int, port: int) -> None:
    """Remember the port a share was given, so it keeps it across restarts."""
    conn.execute("UPDATE shares SET port = ? WHERE id = ?", (port, share_id))


def ensure_automatic_share(conn: sqlite3.Connection) -> Share:
    """The node's automatic ``local`` share, created on first start with no user step.

    It is a ``devices`` share: on loopback every local user and container could reach it, so
    only programs speaking with this node's own identity (its key is the user's, mode 0600)
    or the user's paired devices are served."""
    row = conn.execute(_SELECT + " WHERE automatic = 1").fetchone()
    if row is not None:
        return _share(conn, row)
    name = AUTOMATIC_SHARE
    while conn.execute("SELECT 1 FROM shares WHERE name = ?", (name,)).fetchone():
        name += "-auto"
    return create_share(conn, name, "local", "devices", (), automatic=True)


# --- remote shares ---


@dataclass(frozen=True)
class RemoteShare:
    peer_id: str
    name: str | None
    addresses: tuple[str, ...]
    manifest: dict[str, Any] | None
    found_by: str
    first_seen: float
    last_seen: float | None
    last_error: str | None
    token: bytes | None = None  # our grant's token for this share, sent with every request

    @property
    def stranger(self) -> bool:
        """Found by discovery, and neither added nor joined by the user (we hold no grant of it):
        maybe one of many a Sybil put on the DHT, so it is told less and kept smaller."""
        return self.found_by != "manual" and self.token is None

    def with_token(self, body: dict[str, Any]) -> dict[str, Any]:
        """A request body for this share, carrying our grant's token when we hold one."""
        return body if self.token is None else body | {"token": self.token}

    def to_wire(self) -> dict[str, Any]:
        manifest = self.manifest or {}
        return {
            "peer_id": self.peer_id,
            "name": self.name,
            "addresses": list(self.addresses),
            "found_by": self.found_by,
            "scope": manifest.get("scope"),
            "items": manifest.get("items"),
            "modalities": sorted(k for k, n in (manifest.get("counts") or {}).items() if n),
            "models": [m.get("id") for m in manifest.get("models") or [] if isinstance(m, dict)],
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "last_error": self.last_error,
            "granted": self.token is not None,
            "refused": (self.last_error or "").startswith("forbidden:"),
        }


_SELECT_REMOTE = "SELECT peer_id, name, addresses, manifest, found_by, first_seen, last_seen, last_error, token FROM remote_shares"


def _remote(row: tuple[Any, ...]) -> RemoteShare:
    peer_id, name, addresses, manifest, found_by, first_seen, last_seen, last_error, token = row
    return RemoteShare(peer_id, name, tuple(json.loads(addresses)), json.loads(manifest) if manifest else None, found_by, first_seen, last_seen, last_error, token)


def set_token(conn: sqlite3.Connection, peer_id: str, token: bytes | None) -> None:
    """Keep the token of a grant another node's share gave us (None: forget it)."""
    conn.execute("UPDATE remote_shares SET token = ? WHERE peer_id = ?", (token, peer_id))


def remember_remote(conn: sqlite3.Connection, peer_id: str, addresses: list[str], found_by: str) -> RemoteShare:
    """Add a remote share (or new addresses of a known one), newest addresses first."""
    row = conn.execute("SELECT addresses FROM remote_shares WHERE peer_id = ?", (peer_id,)).fetchone()
    known = json.loads(row[0]) if row else []
    merged = list(dict.fromkeys([*addresses, *known]))[:16]
    conn.execute(
        """INSERT INTO remote_shares (peer_id, addresses, found_by, first_seen) VALUES (?, ?, ?, ?)
           ON CONFLICT (peer_id) DO UPDATE SET addresses = excluded.addresses""",
        (peer_id, json.dumps(merged), found_by, time.time()),
    )
    return get_remote(conn, peer_id)


def record_contact(
    conn: sqlite3.Connection, peer_id: str, *, manifest: dict[str, Any] | None = None, address: str | None = None, error: str | None = None
) -> None:
    """What the last contact with a remote share taught: its manifest and working address, or the error."""
    if error is not None:
        conn.execute("UPDATE remote_shares SET last_error = ? WHERE peer_id = ?", (error[:500], peer_id))
        return
    row = conn.execute("SELECT addresses FROM remote_shares WHERE peer_id = ?", (peer_id,)).fetchone()
    if row is None:
        return
    addresses = json.loads(row[0])
    if address:  # the address that worked goes first: dialled first next time
        addresses = list(dict.fromkeys([address, *addresses]))
    name = manifest.get("name") if manifest and isinstance(manifest.get("name"), str) else None
    conn.execute(
        """UPDATE remote_shares SET last_seen = ?, last_error = NULL, addresses = ?,
                  manifest = COALESCE(?, manifest), name = COALESCE(?, name) WHERE peer_id = ?""",
        (time.time(), json.dumps(addresses), json.dumps(manifest) if manifest is not None else None, name, peer_id),
    )


def get_remote(conn: sqlite3.Connection, key: str) -> RemoteShare:
    """A remote share by peer id or by name (the name must be unambiguous)."""
    row = conn.execute(_SELECT_REMOTE + " WHERE peer_id = ?", (key,)).fetchone()
    if row is not None:
        return _remote(row)
    rows = conn.execute(_SELECT_REMOTE + " WHERE name = ?", (key,)).fetchall()
    if len(rows) == 1:
        return _remote(rows[0])
    if rows:
        raise ShareNotFound(f"{len(rows)} peers' shares are named {key!r}; name one by its peer id")
    raise ShareNotFound(f"no known peer share {key!r} (add one with `peerlight peers add MULTIADDR`)")


def list_remote(conn: sqlite3.Connection) -> list[RemoteShare]:
    return [_remote(row) for row in conn.execute(_SELECT_REMOTE + " ORDER BY last_seen DESC NULLS LAST, peer_id")]


REFUSING_KEPT = 64  # discovered shares that refuse us (they need a grant) kept at most...
REFUSING_KEPT_SECONDS = 7 * 86400  # ... and for at most this long unless they let us in


def prune_refusing(conn: sqlite3.Connection, now: float, keep: int = REFUSING_KEPT, max_age: float = REFUSING_KEPT_SECONDS) -> int:
    """Forget discovered shares that only ever refused us: found on the LAN or the DHT (not added
    by the user), never answered, holding no token of ours. Anyone can announce such a share, so
    without a bound they would pile up. The oldest go first; how many went."""
    rows = conn.execute(
        """SELECT peer_id, first_seen FROM remote_shares
           WHERE found_by != 'manual' AND last_seen IS NULL AND token IS NULL AND last_error LIKE 'forbidden:%'
           ORDER BY first_seen DESC"""
    ).fetchall()
    gone = [peer_id for n, (peer_id, first_seen) in enumerate(rows) if n >= keep or now - first_seen > max_age]
    conn.executemany("DELETE FROM remote_shares WHERE peer_id = ?", [(peer_id,) for peer_id in gone])
    return len(gone)


def forget_remote(conn: sqlite3.Connection, key: str) -> RemoteShare:
    remote = get_remote(conn, key)
    keep_rated_prefixes(conn, remote.peer_id)  # what the user rated of it keeps teaching
    conn.execute("DELETE FROM remote_shares WHERE peer_id = ?", (remote.peer_id,))
    return remote
