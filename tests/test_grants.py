"""Grants as catalog rows: issued, listed, revoked for good, and an open invite bound once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from peerlight.node.catalog import grants
from peerlight.node.catalog.migrations import migrate
from peerlight.node.catalog.shares import create_share

ALICE, BOB = "12D3KooWAlice", "12D3KooWBob"


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "catalog.sqlite3", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    return conn


def test_a_grant_is_issued_listed_and_revoked_once(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    grant = grants.add_grant(conn, "0123456789abcdef", share.id, ALICE, ("search", "fetch"), rpm=30, expires_at=time.time() + 60)
    assert grant.holds(time.time()) and grant.to_wire()["state"] == "active"
    assert [g.id for g in grants.grants_of(conn, share.id)] == [grant.id]
    revoked = grants.revoke_grant(conn, share.id, grant.id)
    assert not revoked.holds(time.time()) and revoked.to_wire()["state"] == "revoked"
    assert grants.revoke_grant(conn, share.id, grant.id).revoked_at == revoked.revoked_at  # revoking again changes nothing
    other = create_share(conn, "work", "lan", "members", ())
    with pytest.raises(grants.GrantNotFound):
        grants.revoke_grant(conn, other.id, grant.id)  # a grant is revoked through its own share only


def test_a_grants_bytes_of_the_day_are_recorded_and_count_on_that_day_only(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    grant = grants.add_grant(conn, "0123456789abcdef", share.id, ALICE, ("fetch",), bytes_per_day=10_000)
    today = grants.day_of(time.time())
    assert (grant.usage_day, grant.bytes_today, grant.to_wire()["bytes_today"]) == (0, 0, 0)
    grants.record_bytes_served(conn, {grant.id: (today, 4_321)})
    again = grants.get_grant(conn, grant.id)
    assert (again.usage_day, again.bytes_today, again.to_wire()["bytes_today"]) == (today, 4_321, 4_321)
    grants.record_bytes_served(conn, {grant.id: (today - 1, 9_999)})  # recorded yesterday: nothing counts today
    assert grants.get_grant(conn, grant.id).to_wire()["bytes_today"] == 0


def test_an_expired_grant_no_longer_holds(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    grant = grants.add_grant(conn, "00000000000000aa", share.id, ALICE, ("browse",), expires_at=time.time() - 1)
    assert not grant.holds(time.time()) and grant.to_wire()["state"] == "expired"


def test_an_open_invite_is_bound_to_its_first_peer_only(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    invite = grants.add_grant(conn, "00000000000000bb", share.id, None, ("search",))
    assert invite.invite and invite.to_wire()["state"] == "open invite"
    bound = grants.redeem_invite(conn, invite.id, ALICE)
    assert bound.grantee == ALICE and bound.redeemed_at is not None
    assert grants.redeem_invite(conn, invite.id, ALICE).grantee == ALICE  # asked again by the same peer
    with pytest.raises(grants.InviteUsed):
        grants.redeem_invite(conn, invite.id, BOB)


def test_a_revoked_or_expired_invite_cannot_be_redeemed(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    revoked = grants.add_grant(conn, "00000000000000bc", share.id, None, ("search",))
    grants.revoke_grant(conn, share.id, revoked.id)
    expired = grants.add_grant(conn, "00000000000000bd", share.id, None, ("search",), expires_at=time.time() - 1)
    for invite in (revoked, expired):
        with pytest.raises(grants.InviteVoid):
            grants.redeem_invite(conn, invite.id, ALICE)
        assert grants.get_grant(conn, invite.id).grantee is None


def test_grants_go_with_their_share(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    grants.add_grant(conn, "00000000000000cc", share.id, ALICE, ("fetch",))
    conn.execute("DELETE FROM shares WHERE id = ?", (share.id,))
    assert grants.all_grants(conn) == []


def test_capabilities_are_checked(conn: sqlite3.Connection) -> None:
    share = create_share(conn, "family", "lan", "members", ())
    with pytest.raises(ValueError):
        grants.add_grant(conn, "00000000000000dd", share.id, ALICE, ("delete",))


def test_the_access_log_keeps_the_newest_entries_of_each_share(conn: sqlite3.Connection, monkeypatch) -> None:
    from peerlight.node.catalog import access_log

    monkeypatch.setattr(access_log, "ROWS_KEPT_PER_SHARE", 100)
    family = create_share(conn, "family", "lan", "members", ())
    work = create_share(conn, "work", "lan", "members", ())
    entries = [access_log.Access(family.id, float(n), ALICE, "query", "search", None, n % 2 == 0, None if n % 2 == 0 else "forbidden") for n in range(250)]
    for start in range(0, 250, 50):
        access_log.append(conn, entries[start : start + 50])
    access_log.append(conn, [access_log.Access(work.id, 1.0, BOB, "fetch", "fetch", "ab" * 32, True)])
    kept = access_log.recent(conn, family.id, limit=1000)
    # The newest 100 allowed and the newest 100 refused, newest first.
    assert [e["at"] for e in kept] == [float(n) for n in range(249, 49, -1)]
    assert {e["allowed"] for e in access_log.recent(conn, family.id, denied_only=True)} == {False}
    assert [e["peer_id"] for e in access_log.recent(conn, work.id)] == [BOB]  # each share rotates alone
    # A flood of refusals does not push the members' requests out.
    access_log.append(conn, [access_log.Access(family.id, 1000.0 + n, BOB, "query", "search", None, False, "forbidden") for n in range(500)])
    allowed = [e for e in access_log.recent(conn, family.id, limit=10_000) if e["allowed"]]
    assert len(allowed) == 100 and allowed[0]["at"] == 248.0


def test_discovered_shares_that_only_refuse_us_are_kept_boundedly(conn: sqlite3.Connection) -> None:
    from peerlight.node.catalog import shares

    now = 10_000_000.0
    for n in range(10):
        shares.remember_remote(conn, f"12D3KooWRefusing{n:02d}", ["/ip4/10.0.0.1/tcp/1"], "mdns")
        conn.execute("UPDATE remote_shares SET first_seen = ?, last_error = 'forbidden: a grant is needed' WHERE peer_id = ?", (now - n * 100, f"12D3KooWRefusing{n:02d}"))
    shares.remember_remote(conn, "12D3KooWJoined", ["/ip4/10.0.0.2/tcp/1"], "mdns")  # we hold its token
    shares.set_token(conn, "12D3KooWJoined", b"token")
    shares.remember_remote(conn, "12D3KooWAddedByHand", ["/ip4/10.0.0.3/tcp/1"], "manual")
    conn.execute("UPDATE remote_shares SET first_seen = 0, last_error = 'forbidden: no' WHERE peer_id IN ('12D3KooWJoined', '12D3KooWAddedByHand')")
    assert shares.prune_refusing(conn, now, keep=4, max_age=650) == 6
    left = {r.peer_id for r in shares.list_remote(conn)}
    assert left == {f"12D3KooWRefusing{n:02d}" for n in range(4)} | {"12D3KooWJoined", "12D3KooWAddedByHand"}
    assert shares.prune_refusing(conn, now + 1000, keep=4, max_age=650) == 4  # too old now, all of them
