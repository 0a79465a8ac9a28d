"""Permissions between two daemons: a members share, a grant, an invite, a revocation that lasts.

Node A serves a ``members`` share on loopback; node B (its own process, its own node key)
is refused until A grants it, joins with the invite A printed, and is refused again once the
grant is revoked, also after A restarts. Nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import cli_json, index_and_wait, new_node, started

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("perm")
    roots = [new_node(base / name) for name in ("a", "b")]
    library = base / "library"
    library.mkdir()
    (library / "flu.txt").write_text("Influenza spreads fast in winter. Wash your hands and stay home with a fever.")
    (library / "bread.txt").write_text("A bread recipe: flour, water, yeast and salt; bake in a hot oven.")
    processes = [started(root) for root in roots]
    try:
        yield roots[0], roots[1], library, processes
    finally:
        for process in processes:
            process.stop()


def test_a_members_share_serves_its_grantees_only_until_revoked(nodes, tmp_path) -> None:
    a_dir, b_dir, library, processes = nodes
    cli_json(a_dir, "library", "add", str(library))
    index_and_wait(a_dir)
    share = cli_json(a_dir, "share", "create", "family", "--collection", str(library), "--permission", "members")
    b_peer = cli_json(b_dir, "status")["peer_id"]

    # Without a grant: refused, and told nothing about what the share holds.
    stranger = cli_json(b_dir, "peers", "add", share["addresses"][0])
    assert stranger["items"] is None and stranger["last_error"].startswith("forbidden"), stranger
    shown = cli_json(b_dir, "search", "flu", "--peers", "--modality", "text")
    assert not [r for r in shown["results"] if r.get("source") == "peer"] and shown["peers"][0]["answered"] is False

    # A grant to B's node (search and browse, not fetch), used through the invite A printed.
    granted = cli_json(a_dir, "share", "grant", "family", "--to", b_peer, "--can", "search,browse", "--expires", "30d")
    assert granted["grant"]["grantee"] == b_peer and granted["invite"].startswith("peerlight-invite:")
    joined = cli_json(b_dir, "join", granted["invite"])
    assert joined["granted"] is True and joined["items"] == 2, joined
    found = cli_json(b_dir, "search", "how do I avoid getting sick in winter", "--peers", "--modality", "text")
    assert found["peers"][0]["answered"] is True and found["results"][0]["name"] == "flu.txt", found
    target = tmp_path / "downloads"
    target.mkdir()
    refused = cli_json(b_dir, "fetch", share["peer_id"], "flu.txt", "--to", str(target), expect_rc=1)
    assert "forbidden" in refused["error"]["message"], refused
    listed = cli_json(a_dir, "share", "grants", "family")
    assert [(g["id"], g["grantee"], g["state"]) for g in listed] == [(granted["grant"]["id"], b_peer, "active")]
    assert listed[0]["last_used_at"] is not None and listed[0]["expires_at"] > listed[0]["created_at"] + 29 * 86400

    # The level can change: public lets anyone in, members again needs the grant (which B has).
    cli_json(a_dir, "share", "edit", "family", "--permission", "public")
    assert cli_json(b_dir, "fetch", share["peer_id"], "bread.txt", "--to", str(target))["size"] > 0  # fetch: not granted, but public
    cli_json(a_dir, "share", "edit", "family", "--permission", "members")
    assert "forbidden" in cli_json(b_dir, "fetch", share["peer_id"], "bread.txt", "--to", str(target), expect_rc=1)["error"]["message"]

    # Revoked: refused at once, and still after A restarts.
    cli_json(a_dir, "share", "revoke", "family", granted["grant"]["id"])
    after = cli_json(b_dir, "search", "winter", "--peers", "--modality", "text")
    assert after["peers"][0]["answered"] is False and "forbidden" in (after["peers"][0]["error"] or ""), after["peers"]
    # B's node drops the token and its copy of the catalog: nothing of the share is shown from cache.
    assert not [r for r in after["results"] if r.get("source") == "peer"], after["results"]
    remote = next(r for r in cli_json(b_dir, "peers") if r["peer_id"] == share["peer_id"])
    assert (remote["granted"], remote["refused"], remote["cached_items"]) == (False, True, 0), remote
    processes[0].stop()
    processes[0] = started(a_dir)
    again = cli_json(b_dir, "search", "winter", "--peers", "--modality", "text")
    assert again["peers"][0]["answered"] is False and "forbidden" in (again["peers"][0]["error"] or ""), again["peers"]
    assert cli_json(a_dir, "share", "grants", "family")[0]["state"] == "revoked"

    # An open invite: bound to the first node that joins with it (B), with fetch this time.
    invite = cli_json(a_dir, "share", "grant", "family", "--invite", "--can", "search,browse,fetch")
    assert invite["grant"]["grantee"] is None
    cli_json(b_dir, "join", invite["invite"])
    fetched = cli_json(b_dir, "fetch", share["peer_id"], "flu.txt", "--to", str(target))
    assert Path(fetched["path"]).read_text().startswith("Influenza")
    redeemed = [g for g in cli_json(a_dir, "share", "grants", "family") if g["id"] == invite["grant"]["id"]][0]
    assert redeemed["grantee"] == b_peer and redeemed["state"] == "active"

    # The access log: B's refusals and uses, newest first, with the item a fetch asked for.
    log = cli_json(a_dir, "share", "log", "family", "--limit", "1000")
    assert all(entry["peer_id"] == b_peer for entry in log)
    seen = {(e["protocol"], e["allowed"], e["reason"]) for e in log}
    assert {("manifest", False, "forbidden"), ("query", True, None), ("fetch", False, "forbidden"), ("fetch", True, None)} <= seen, seen
    assert log[0]["at"] >= log[-1]["at"] and any(e["protocol"] == "fetch" and e["item"] for e in log)
    denied = cli_json(a_dir, "share", "log", "family", "--denied")
    assert denied and not any(e["allowed"] for e in denied)


def test_paired_devices_share_with_each_other_and_unpairing_ends_it(nodes) -> None:
    import threading

    from peerlight.cli.client import ControlClient

    a_dir, b_dir, library, _ = nodes
    cli_json(a_dir, "library", "add", str(library))
    index_and_wait(a_dir)
    a_peer, b_peer = cli_json(a_dir, "status")["peer_id"], cli_json(b_dir, "status")["peer_id"]

    offered: dict = {}
    result: dict = {}
    shown = threading.Event()

    def offer() -> None:
        with ControlClient(a_dir / "control.sock", timeout=120) as client:
            result["a"] = client.call("devices.pair", scope="local", on_event=lambda e: offered.update(e) or shown.set())

    worker = threading.Thread(target=offer)
    worker.start()
    assert shown.wait(60), "no pairing code was offered"
    code, address = offered["join"].split("@", 1)
    wrong = "".join("A" if c != "A" and c != "-" else ("B" if c == "A" else c) for c in code)
    refused = cli_json(b_dir, "devices", "pair", "--join", f"{wrong}@{address}", "--scope", "local", expect_rc=1)
    assert "wrong pairing code" in refused["error"]["message"], refused
    paired = cli_json(b_dir, "devices", "pair", "--join", offered["join"], "--scope", "local")
    worker.join(60)
    assert paired["paired"]["peer_id"] == a_peer and result["a"]["paired"]["peer_id"] == b_peer
    assert [d["peer_id"] for d in cli_json(a_dir, "devices", "list")] == [b_peer]

    # Each node now has a devices share, and B sees A's items through it with no further step.
    a_share = next(s for s in cli_json(a_dir, "share", "list") if s["permission"] == "devices")
    assert a_share["name"] == "devices" and a_share["collections"] == []
    found = None
    for _ in range(100):  # B adds A's devices share in the background, just after pairing
        remotes = {r["peer_id"]: r for r in cli_json(b_dir, "peers")}
        if remotes.get(a_share["peer_id"], {}).get("items") == 2:
            found = cli_json(b_dir, "search", "how do I avoid getting sick in winter", "--peers", "--modality", "text")
            break
        import time

        time.sleep(0.1)
    assert found is not None, cli_json(b_dir, "peers")
    assert found["results"][0]["name"] == "flu.txt" and found["results"][0]["source"] == "peer", found

    # Unpaired on A: B is refused at once.
    cli_json(a_dir, "devices", "unpair", b_peer)
    after = cli_json(b_dir, "search", "winter", "--peers", "--modality", "text")
    answer = next(p for p in after["peers"] if p["peer_id"] == a_share["peer_id"])
    assert answer["answered"] is False and "forbidden" in (answer["error"] or ""), after["peers"]


def _offer_in_background(data_dir: Path) -> tuple:  # type: ignore[type-arg]
    """Start `devices pair` (offering) on ``data_dir``'s daemon in a thread: (thread, offer, outcome, shown)."""
    import threading

    from peerlight.cli.client import ControlClient
    from peerlight.cli.client import ControlError as ClientError

    offered: dict = {}
    outcome: dict = {}
    shown = threading.Event()

    def offer() -> None:
        try:
            with ControlClient(data_dir / "control.sock", timeout=120) as client:
                outcome["result"] = client.call("devices.pair", scope="local", on_event=lambda e: offered.update(e) or shown.set())
        except ClientError as exc:
            outcome["error"] = exc.message

    worker = threading.Thread(target=offer)
    worker.start()
    assert shown.wait(60), "no pairing code was offered"
    return worker, offered, outcome


def test_a_pairing_offer_ends_at_once_after_too_many_wrong_codes_or_a_newer_offer(nodes) -> None:
    import time

    from peerlight.node.pairing import MAX_ATTEMPTS

    a_dir, b_dir, _, _ = nodes
    worker, offered, outcome = _offer_in_background(a_dir)
    code, address = offered["join"].split("@", 1)
    wrong = "".join("A" if c != "A" and c != "-" else ("B" if c == "A" else c) for c in code)
    started_at = time.monotonic()
    for _ in range(MAX_ATTEMPTS):
        refused = cli_json(b_dir, "devices", "pair", "--join", f"{wrong}@{address}", "--scope", "local", expect_rc=1)
        assert "wrong pairing code" in refused["error"]["message"], refused
    refused = cli_json(b_dir, "devices", "pair", "--join", f"{wrong}@{address}", "--scope", "local", expect_rc=1)
    assert "too many wrong codes" in refused["error"]["message"], refused
    worker.join(60)
    assert not worker.is_alive() and "too many wrong codes" in outcome["error"]  # the offering side hears it at once
    assert time.monotonic() - started_at < 60  # not after the code's five minutes
    # Even the right code is refused now.
    late = cli_json(b_dir, "devices", "pair", "--join", offered["join"], "--scope", "local", expect_rc=1)
    assert "refused" in late["error"]["message"] or "did not answer" in late["error"]["message"], late

    first, first_offer, first_outcome = _offer_in_background(a_dir)
    second, second_offer, second_outcome = _offer_in_background(a_dir)
    first.join(60)
    assert "replaced" in first_outcome["error"]
    assert cli_json(b_dir, "devices", "pair", "--join", first_offer["join"], "--scope", "local", expect_rc=1)["error"]
    paired = cli_json(b_dir, "devices", "pair", "--join", second_offer["join"], "--scope", "local")
    second.join(60)
    assert paired["paired"]["peer_id"] == cli_json(a_dir, "status")["peer_id"]
    assert second_outcome["result"]["paired"]["peer_id"] == cli_json(b_dir, "status")["peer_id"]


def test_a_grant_s_bytes_of_the_day_are_served_to_the_limit_exactly(nodes, tmp_path) -> None:
    """A fetch under a grant of 2 MB a day ends on the limit to the byte (its last data frame cut
    short), is refused with the limit named, and the grantee keeps what it got and its token;
    every later request under the grant, however small, is refused until the next day."""
    from . import media

    a_dir, b_dir, library, processes = nodes
    media.tone(library / "long.wav", seconds=40)  # ~3.8 MB: more than the day's allowance
    cli_json(a_dir, "library", "add", str(library))
    index_and_wait(a_dir)
    share = cli_json(a_dir, "share", "create", "quota", "--collection", str(library), "--permission", "members")
    b_peer = cli_json(b_dir, "status")["peer_id"]
    limit = 2_000_000
    granted = cli_json(a_dir, "share", "grant", "quota", "--to", b_peer, "--can", "search,browse,fetch", "--bytes-per-day", str(limit))
    cli_json(b_dir, "join", granted["invite"])
    target = tmp_path / "downloads"
    refused = cli_json(b_dir, "fetch", share["peer_id"], "long.wav", "--to", str(target), expect_rc=1)
    assert "bytes for today are used up" in refused["error"]["message"], refused
    assert cli_json(a_dir, "share", "grants", "quota")[0]["bytes_today"] == limit  # to the byte
    partial = [p for p in target.iterdir() if p.name.endswith(".peerlight-partial")]
    assert len(partial) == 1 and limit - 100_000 < partial[0].stat().st_size < limit  # kept for tomorrow's resume
    small = cli_json(b_dir, "fetch", share["peer_id"], "flu.txt", "--to", str(target), expect_rc=1)
    assert "used up" in small["error"]["message"], small
    remote = next(r for r in cli_json(b_dir, "peers") if r["peer_id"] == share["peer_id"])
    assert remote["granted"] is True, remote  # a refusal of today's bytes is no refusal of the peer
