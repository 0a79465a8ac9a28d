"""A share's gate through real hosts: every protocol x permission level x kind of token.

Two libp2p hosts on loopback (Noise authenticates the asking peer); the share's server runs
the real gate (``ShareAccess``) in front of a handler per Peerlight protocol. The handlers are
trivial on purpose: the gate is the only place that decides, so what it lets through or
refuses is the same whatever the handler would have answered.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time

import pytest
import trio

from peerlight.node.catalog.grants import Grant, add_grant, grants_of, record_bytes_served
from peerlight.node.catalog.migrations import migrate
from peerlight.node.catalog.shares import Share, create_share
from peerlight.p2p import schema
from peerlight.node.serving.access import ShareAccess, signing_key
from peerlight.p2p import errors
from peerlight.p2p.client import Requester
from peerlight.p2p.host import listen_addresses, new_host, running
from peerlight.p2p.server import Protocol, ProtocolServer, Request
from peerlight.permissions import tokens

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
PROTOCOLS = [spec for spec in schema.SHARE_PROTOCOLS if spec is not schema.REDEEM]
# The least each protocol's schema needs beside a token: what is asked is the gate's answer, not the handler's.
NEEDS = {schema.FETCH: {"hash": "0" * 64}, schema.PREVIEW: {"hash": "0" * 64}, schema.ADAPTER: {"model_id": "m"}}
ALL = ("search", "browse", "fetch")


async def unary(request: Request) -> dict:
    return {"answered": request.protocol}


async def streamed(request: Request):  # type: ignore[no-untyped-def]
    for n in range(4):
        yield {"data": bytes(1000), "n": n}


def slow_fetch(sent: trio.Event):  # type: ignore[no-untyped-def]
    """A fetch handler that takes ~10 s for its 1,000 frames, and sets ``sent`` after the fifth:
    time to change the share's access while the reply runs."""

    async def handler(request: Request):  # type: ignore[no-untyped-def]
        for n in range(1000):
            if n == 5:
                sent.set()
            yield {"data": bytes(1000), "n": n}
            await trio.sleep(0.01)

    return handler


def share(permission: str) -> Share:
    return Share(1, "family", "lan", permission, (), (), None, False, False, time.time())


def grant(grant_id: str, grantee: str, can: tuple[str, ...] = ALL, **fields: object) -> Grant:
    values = {"rpm": 0, "bytes_per_day": 0, "expires_at": None, "revoked_at": None}
    values |= fields
    return Grant(grant_id, 1, grantee, can, values["rpm"], values["bytes_per_day"], values["expires_at"], time.time(), False, None, values["revoked_at"], None)  # type: ignore[arg-type]


def token(key, share_peer: str, grant_id: str, to: str, can: tuple[str, ...] = ALL, exp: int = 0) -> bytes:  # type: ignore[no-untyped-def]
    return tokens.issue(key, tokens.Claims(share_peer, grant_id, to, can, exp=exp))


async def ask(requester: Requester, host, peer: str, protocol: schema.Spec, body: dict) -> str:  # type: ignore[no-untyped-def]
    """'ok', or the error code the request got."""
    try:
        frames = [frame async for frame in requester.frames(peer, listen_addresses(host), protocol, NEEDS.get(protocol, {}) | body, timeout=10)]
    except errors.WireError as exc:
        return exc.code
    assert frames
    return "ok"


async def test_every_protocol_level_and_token_gets_the_expected_answer() -> None:
    seed = os.urandom(32)
    share_host, member, stranger = new_host(seed), new_host(os.urandom(32)), new_host(os.urandom(32))
    key, other_key = signing_key(seed), signing_key(os.urandom(32))
    share_peer, member_id, stranger_id = str(share_host.get_id()), str(member.get_id()), str(stranger.get_id())
    grants = [
        grant("00000000000000a1", member_id),
        grant("00000000000000a2", member_id, revoked_at=time.time()),
        grant("00000000000000a3", member_id, expires_at=time.time() - 5),
        grant("00000000000000a4", stranger_id),
    ]
    access = ShareAccess(share("public"), key, share_peer, grants, devices=frozenset({member_id}))
    protocols = [Protocol(pid, streamed if pid == schema.FETCH else unary) for pid in PROTOCOLS]
    server = ProtocolServer(protocols, gate=access)
    server.attach(share_host)
    valid = token(key, share_peer, "00000000000000a1", member_id)
    tampered = bytearray(valid)
    tampered[-5] ^= 1
    states = {
        "none": None,
        "valid": valid,
        "expired": token(key, share_peer, "00000000000000a1", member_id, exp=int(time.time()) - 1),
        "expired grant": token(key, share_peer, "00000000000000a3", member_id),
        "revoked": token(key, share_peer, "00000000000000a2", member_id),
        "another peer's": token(key, share_peer, "00000000000000a4", stranger_id),
        "tampered": bytes(tampered),
        "another share's": token(other_key, str(stranger.get_id()), "00000000000000a1", member_id),
        "not a token": b"\x93\x01\x02\x03",
    }
    async with running(share_host, LOOPBACK), running(member, LOOPBACK), running(stranger, LOOPBACK):
        as_member, as_stranger = Requester(member), Requester(stranger)
        for level in ("public", "members", "devices"):
            access.update(share(level), grants)
            for state, presented in states.items():
                body = {} if presented is None else {"token": presented}
                for protocol in PROTOCOLS:
                    got = await ask(as_member, share_host, share_peer, protocol, body)
                    if level == "public" or level == "devices":  # the member is a paired device
                        expected = "ok"
                    else:
                        expected = "ok" if state == "valid" else "forbidden"
                    assert got == expected, (level, state, protocol, got)
            # The stranger is no device, and holds no grant of its own token's share key.
            for protocol in PROTOCOLS:
                got = await ask(as_stranger, share_host, share_peer, protocol, {"token": valid})
                assert got == ("ok" if level == "public" else "forbidden"), (level, protocol, got)


async def test_a_protocol_the_gate_does_not_know_is_refused_even_on_a_public_share() -> None:
    seed = os.urandom(32)
    share_host, asker = new_host(seed), new_host(os.urandom(32))
    share_peer = str(share_host.get_id())
    access = ShareAccess(share("public"), signing_key(seed), share_peer, [])
    unknown = schema.Spec("unlisted", "1.0.0", schema.Message({}), (schema.Message({}),), served_by_shares=False)  # served, but no share's
    ProtocolServer([Protocol(unknown, unary), Protocol(schema.MANIFEST, unary)], gate=access).attach(share_host)
    async with running(share_host, LOOPBACK), running(asker, LOOPBACK):
        requester = Requester(asker)
        assert await ask(requester, share_host, share_peer, schema.MANIFEST, {}) == "ok"
        assert await ask(requester, share_host, share_peer, unknown, {}) == "forbidden"


async def test_a_public_share_lets_anyone_do_what_its_owner_allows_only_and_members_the_rest() -> None:
    seed = os.urandom(32)
    share_host, anyone, member = new_host(seed), new_host(os.urandom(32)), new_host(os.urandom(32))
    key, share_peer, member_id = signing_key(seed), str(share_host.get_id()), str(member.get_id())
    searchable = dataclasses.replace(share("public"), public_can=("search",))
    access = ShareAccess(searchable, key, share_peer, [grant("00000000000000c1", member_id, ("search", "fetch"))])
    ProtocolServer([Protocol(pid, streamed if pid == schema.FETCH else unary) for pid in PROTOCOLS], gate=access).attach(share_host)
    held = token(key, share_peer, "00000000000000c1", member_id, ("search", "fetch"))
    async with running(share_host, LOOPBACK), running(anyone, LOOPBACK), running(member, LOOPBACK):
        requester = Requester(anyone)
        got = {pid.name: await ask(requester, share_host, share_peer, pid, {}) for pid in PROTOCOLS}
        # A grant holder may also do what its grant allows beyond the public's capabilities.
        granted = {pid.name: await ask(Requester(member), share_host, share_peer, pid, {"token": held}) for pid in PROTOCOLS}
        shown_by_another = {pid.name: await ask(requester, share_host, share_peer, pid, {"token": held}) for pid in PROTOCOLS}
    expected = {pid.name: "ok" if pid.capability in (None, "search") else "forbidden" for pid in PROTOCOLS}
    assert got == expected
    assert granted == {pid.name: "ok" if pid.capability in (None, "search", "fetch") else "forbidden" for pid in PROTOCOLS}
    assert shown_by_another == expected  # the token names the member: another peer gains nothing by it


async def test_a_grant_allows_its_capabilities_only_and_its_limits_hold() -> None:
    seed = os.urandom(32)
    share_host, member = new_host(seed), new_host(os.urandom(32))
    key = signing_key(seed)
    share_peer, member_id = str(share_host.get_id()), str(member.get_id())
    grants = [grant("00000000000000b1", member_id, ("search",), rpm=3), grant("00000000000000b2", member_id, ("fetch",), bytes_per_day=2500)]
    access = ShareAccess(share("members"), key, share_peer, grants)
    server = ProtocolServer([Protocol(pid, streamed if pid == schema.FETCH else unary) for pid in PROTOCOLS], gate=access)
    server.attach(share_host)
    search_only = token(key, share_peer, "00000000000000b1", member_id, ("search",))
    fetch_only = token(key, share_peer, "00000000000000b2", member_id, ("fetch",))
    async with running(share_host, LOOPBACK), running(member, LOOPBACK):
        requester = Requester(member)
        assert await ask(requester, share_host, share_peer, schema.CATALOG, {"token": search_only}) == "forbidden"  # browse: not granted
        assert await ask(requester, share_host, share_peer, schema.FETCH, {"token": search_only}) == "forbidden"
        answers = [await ask(requester, share_host, share_peer, schema.QUERY, {"token": search_only}) for _ in range(4)]
        assert answers == ["ok", "ok", "ok", "rate_limited"]  # 3 a minute (refusals for capabilities count none)
        # 2,500 bytes a day: the first fetch's four ~1 KB frames stop at the third.
        assert await ask(requester, share_host, share_peer, schema.FETCH, {"token": fetch_only}) == "forbidden"
        assert await ask(requester, share_host, share_peer, schema.FETCH, {"token": fetch_only}) == "forbidden"


@pytest.mark.parametrize("recorded_day", [0, -1], ids=["recorded-today", "recorded-yesterday"])
async def test_a_grants_bytes_of_the_day_survive_a_restart(tmp_path, recorded_day: int) -> None:
    """The first gate serves a fetch and its bytes reach the catalog as the node writes them;
    a second gate built from the catalog (the node restarted) keeps counting from there, and
    only on the same day: bytes recorded yesterday leave today's allowance whole."""
    conn = sqlite3.connect(tmp_path / "catalog.sqlite3", isolation_level=None)
    migrate(conn)
    shared = create_share(conn, "family", "lan", "members", ())
    seed = os.urandom(32)
    share_host, member = new_host(seed), new_host(os.urandom(32))
    key = signing_key(seed)
    share_peer, member_id = str(share_host.get_id()), str(member.get_id())
    add_grant(conn, "00000000000000e1", shared.id, member_id, ("fetch",), bytes_per_day=6000)  # one fetch (~4 KB), not two
    valid = token(key, share_peer, "00000000000000e1", member_id, ("fetch",))
    answers = []
    for run in range(2):
        access = ShareAccess(shared, key, share_peer, grants_of(conn, shared.id))
        server = ProtocolServer([Protocol(schema.FETCH, streamed)], gate=access)
        host = share_host if run == 0 else new_host(seed)  # the same identity, a new host: a restart
        server.attach(host)
        async with running(host, LOOPBACK), running(member, LOOPBACK):
            answers.append(await ask(Requester(member), host, share_peer, schema.FETCH, {"token": valid}))
        served = {grant_id: (day + recorded_day, size) for grant_id, (day, size) in access.bytes_counted.items()}
        record_bytes_served(conn, served)
    assert answers == (["ok", "forbidden"] if recorded_day == 0 else ["ok", "ok"])


async def test_revoking_a_grant_stops_a_transfer_that_is_running() -> None:
    seed = os.urandom(32)
    share_host, member = new_host(seed), new_host(os.urandom(32))
    key = signing_key(seed)
    share_peer, member_id = str(share_host.get_id()), str(member.get_id())
    grants = [grant("00000000000000c1", member_id)]
    access = ShareAccess(share("members"), key, share_peer, grants)
    sent = trio.Event()
    server = ProtocolServer([Protocol(schema.FETCH, slow_fetch(sent))], gate=access)
    server.attach(share_host)
    valid = token(key, share_peer, "00000000000000c1", member_id)
    async with running(share_host, LOOPBACK), running(member, LOOPBACK):
        requester = Requester(member)
        received: list[int] = []

        async def download() -> None:
            with pytest.raises(errors.Forbidden, match="revoked"):
                async for frame in requester.frames(share_peer, listen_addresses(share_host), schema.FETCH, {"hash": "0" * 64, "token": valid}, timeout=10):
                    received.append(frame["n"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(download)
            await sent.wait()
            access.update(share("members"), [grant("00000000000000c1", member_id, revoked_at=time.time())])
        assert 5 <= len(received) < 1000
        assert await ask(requester, share_host, share_peer, schema.FETCH, {"token": valid}) == "forbidden"


async def test_revoking_one_grant_stops_only_the_transfers_running_under_it() -> None:
    """A peer holding two grants of a share (a friend's, a club's) loses what runs under the
    revoked one; its transfer under the other goes on to the end. (The node's revocation goes
    through DataServers.revoked, which updates the gate and stops the grant's running replies.)"""
    from peerlight.node.serving.servers import DataServers, RunningShare

    seed = os.urandom(32)
    share_host, member = new_host(seed), new_host(os.urandom(32))
    key = signing_key(seed)
    share_peer, member_id = str(share_host.get_id()), str(member.get_id())
    revoked, kept = grant("00000000000000f1", member_id), grant("00000000000000f2", member_id)
    members = share("members")
    access = ShareAccess(members, key, share_peer, [revoked, kept])
    sent = trio.Event()
    server = ProtocolServer([Protocol(schema.FETCH, slow_fetch(sent))], gate=access)
    server.attach(share_host)
    servers = DataServers(None, None, None, None)  # type: ignore[arg-type]  # the gates and servers only
    servers._grants = [revoked, kept]
    servers.shares[members.id] = RunningShare(members, None, server=server, access=access)  # type: ignore[arg-type]
    async with running(share_host, LOOPBACK), running(member, LOOPBACK):
        requester = Requester(member)
        outcome: dict[str, object] = {}

        async def download(grant_id: str) -> None:
            frames = 0
            body = {"hash": "0" * 64, "token": token(key, share_peer, grant_id, member_id)}
            try:
                async for _ in requester.frames(share_peer, listen_addresses(share_host), schema.FETCH, body, timeout=30):
                    frames += 1
                outcome[grant_id] = frames
            except errors.WireError as exc:
                outcome[grant_id] = (exc.code, exc.data.get("reason"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(download, kept.id)
            await sent.wait()
            sent = trio.Event()
            server.protocols[schema.FETCH.id] = Protocol(schema.FETCH, slow_fetch(sent))
            nursery.start_soon(download, revoked.id)
            await sent.wait()
            servers.revoked(dataclasses.replace(revoked, revoked_at=time.time()))
    assert outcome == {revoked.id: ("forbidden", "revoked"), kept.id: 1000}


def test_a_grant_issued_redeemed_or_revoked_reaches_the_gate_before_the_call_returns() -> None:
    """The node's own list of grants changes with the gate's: a later device change (which
    pushes that list to every gate) must not undo a redemption or a revocation."""
    from peerlight.node.serving.servers import DataServers, RunningShare

    seed = os.urandom(32)
    members = share("members")
    access = ShareAccess(members, signing_key(seed), "12D3KooWShare", [])
    servers = DataServers(None, None, None, None)  # type: ignore[arg-type]  # only the gates are used here
    servers.shares[members.id] = RunningShare(members, None, access=access)  # type: ignore[arg-type]
    redeemed = grant("00000000000000d1", "12D3KooWMember")
    servers.grant_changed(redeemed)
    assert access.grants[redeemed.id] == redeemed
    servers.set_devices(frozenset({"12D3KooWLaptop"}))
    assert access.grants[redeemed.id] == redeemed and access.devices == {"12D3KooWLaptop"}
    servers.revoked(dataclasses.replace(redeemed, revoked_at=time.time()))
    assert not access.grants[redeemed.id].holds(time.time())
    servers.set_devices(frozenset())
    assert not access.grants[redeemed.id].holds(time.time())


@pytest.mark.parametrize(
    ("before", "after", "as_device"),
    [
        ("public", dataclasses.replace(share("public"), public_can=("search",)), False),  # fetch no longer public
        ("public", share("members"), False),
        ("devices", share("devices"), True),  # the device is unpaired (below)
        ("members", share("devices"), False),  # a grant no longer opens a devices share
    ],
)
async def test_making_a_share_stricter_stops_replies_already_running(before: str, after: Share, as_device: bool) -> None:
    seed = os.urandom(32)
    share_host, peer = new_host(seed), new_host(os.urandom(32))
    key = signing_key(seed)
    share_peer, peer_id = str(share_host.get_id()), str(peer.get_id())
    grants = [grant("00000000000000e1", peer_id)]
    access = ShareAccess(share(before), key, share_peer, grants, devices=frozenset({peer_id}))
    sent = trio.Event()
    ProtocolServer([Protocol(schema.FETCH, slow_fetch(sent))], gate=access).attach(share_host)
    body = {"token": token(key, share_peer, "00000000000000e1", peer_id)} if before == "members" else {}
    async with running(share_host, LOOPBACK), running(peer, LOOPBACK):
        received: list[int] = []

        async def download() -> None:
            with pytest.raises(errors.Forbidden, match="permission changed"):
                async for frame in Requester(peer).frames(share_peer, listen_addresses(share_host), schema.FETCH, NEEDS[schema.FETCH] | body, timeout=10):
                    received.append(frame["n"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(download)
            await sent.wait()
            access.update(after, grants, devices=frozenset() if as_device else None)
        assert 5 <= len(received) < 1000


def test_a_grant_revoked_while_the_grants_are_reloaded_stays_revoked() -> None:
    """The periodic reload may read the grants before a revocation is written: its stale copy
    must not bring the grant back for a cycle."""
    from peerlight.node.serving.servers import DataServers, RunningShare

    members = share("members")
    access = ShareAccess(members, signing_key(os.urandom(32)), "12D3KooWShare", [])
    held = grant("00000000000000e1", "12D3KooWMember")

    class ReadBeforeTheRevocation:  # a catalog read that began before the revocation was written
        def __init__(self) -> None:
            self.reading = trio.Event()
            self.answer = trio.Event()

        async def read(self, fn):  # type: ignore[no-untyped-def]
            self.reading.set()
            await self.answer.wait()
            return [held]

    catalog = ReadBeforeTheRevocation()
    servers = DataServers(catalog, None, None, None)  # type: ignore[arg-type]
    servers.shares[members.id] = RunningShare(members, None, access=access)  # type: ignore[arg-type]
    servers.grant_changed(held)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(servers.reload_grants)
            await catalog.reading.wait()
            servers.revoked(dataclasses.replace(held, revoked_at=time.time()))
            catalog.answer.set()
        servers.set_devices(frozenset())  # pushes the node's list of grants to every gate
        assert not access.grants[held.id].holds(time.time())

    trio.run(main)


async def test_a_reply_stopped_by_a_revocation_ends_with_a_forbidden_frame_not_a_cut() -> None:
    seed = os.urandom(32)
    share_host, member = new_host(seed), new_host(os.urandom(32))
    share_peer, member_id = str(share_host.get_id()), str(member.get_id())
    waiting = trio.Event()

    async def stalls(request: Request):  # type: ignore[no-untyped-def]
        yield {"n": 0}
        yield {"n": 1}
        waiting.set()
        await trio.sleep(100)  # reading a slow disk, say
        yield {"n": 2}

    server = ProtocolServer([Protocol(schema.FETCH, stalls)])
    server.attach(share_host)
    async with running(share_host, LOOPBACK), running(member, LOOPBACK):
        requester = Requester(member)
        received: list[int] = []

        async def download() -> None:
            with pytest.raises(errors.Forbidden, match="revoked"):
                async for frame in requester.frames(share_peer, listen_addresses(share_host), schema.FETCH, {"hash": "0" * 64}, timeout=10):
                    received.append(frame["n"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(download)
            await waiting.wait()
            assert server.cancel_peer(member_id, errors.Forbidden("the grant has been revoked", {"reason": "revoked"})) == 1
        assert received == [0]  # the server holds a frame back until it knows whether more follow


def test_the_node_s_own_identity_passes_devices_gates_after_a_pairing_changes_them() -> None:
    from peerlight.node.serving.servers import DataServers, RunningShare

    devices_share = share("devices")
    access = ShareAccess(devices_share, signing_key(os.urandom(32)), "12D3KooWShare", [])
    servers = DataServers(None, None, None, None, owner="12D3KooWOwner")  # type: ignore[arg-type]
    servers.shares[devices_share.id] = RunningShare(devices_share, None, access=access)  # type: ignore[arg-type]
    servers.set_devices(frozenset({"12D3KooWLaptop"}))
    assert access.devices == {"12D3KooWLaptop", "12D3KooWOwner"}
    assert access.allows_without_grant("12D3KooWOwner", "fetch") and not access.allows_without_grant("12D3KooWStranger", None)


def test_a_global_share_provides_the_peerlight_key_only_never_one_made_from_its_name() -> None:
    """sha256("peerlight:share:" + name) let anyone confirm a guessed name of a members-only share."""
    from peerlight.node.serving.servers import GlobalReach, RunningShare, _provide_forever
    from peerlight.p2p import reachability
    from peerlight.p2p.dht import PEERLIGHT_KEY, RELAY_KEY

    provided: list[str] = []

    class RecordingDht:  # stands in for libp2p's KadDHT: only what _provide_forever calls
        def get_routing_table_size(self) -> int:
            return 1

        async def provide(self, key: str) -> bool:
            provided.append(key)
            return True

    current = RunningShare(share("members"), None)  # type: ignore[arg-type]

    async def main() -> None:
        with trio.move_on_after(0.2):
            await _provide_forever(current, None, RecordingDht(), GlobalReach(reprovide_seconds=0.05))

    trio.run(main)
    assert provided and set(provided) == {PEERLIGHT_KEY}
    assert current.dht is not None and current.dht["provided"] is True

    # A share relaying for others provides the relay key too, once it is public (and only then).
    provided.clear()
    current.relay = lambda: {}
    trio.run(main)
    assert set(provided) == {PEERLIGHT_KEY}
    current.set_reachability(reachability.Reachability(status=reachability.PUBLIC))
    trio.run(main)
    assert set(provided) == {PEERLIGHT_KEY, RELAY_KEY}


def test_an_unpairing_that_overlaps_a_pairing_is_not_undone_by_its_older_list() -> None:
    from peerlight.node.serving.servers import DataServers, RunningShare

    devices_share = share("devices")
    access = ShareAccess(devices_share, signing_key(os.urandom(32)), "12D3KooWShare", [])
    paired = {"12D3KooWLaptop", "12D3KooWPhone"}

    class SlowFirstRead:  # the first read (the pairing's) sees the list before the unpairing
        def __init__(self) -> None:
            self.reads = 0
            self.release = trio.Event()

        async def read(self, fn):  # type: ignore[no-untyped-def]
            self.reads += 1
            seen = frozenset(paired)
            if self.reads == 1:
                await self.release.wait()
            return seen

    catalog = SlowFirstRead()
    servers = DataServers(catalog, None, None, None)  # type: ignore[arg-type]
    servers.shares[devices_share.id] = RunningShare(devices_share, None, access=access)  # type: ignore[arg-type]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(servers.refresh_devices)  # after a pairing
            await trio.sleep(0.01)
            paired.discard("12D3KooWPhone")  # unpaired in the catalog
            nursery.start_soon(servers.refresh_devices)  # after the unpairing
            await trio.sleep(0.01)
            catalog.release.set()
        assert access.devices == {"12D3KooWLaptop"}

    trio.run(main)
