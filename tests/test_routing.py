"""The router: topic lookups, summaries and their doubts (overclaiming, silence, expiry), and a real
py-libp2p DHT that loses half its nodes in the middle of a query."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from functools import partial

import numpy as np
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peerlight.embeddings.codebook import Codebook, train_codebook
from peerlight.embeddings.vectors import normalize
from peerlight.node.identity import create_identity
from peerlight.node.routing.router import RouteSettings, RoutingCache, route
from peerlight.node.routing.topics import profile, summary_of, topic_key
from peerlight.p2p.dht import bootstrap, find_providers, running_dht
from peerlight.p2p.errors import NotFound
from peerlight.p2p.host import listen_addresses, new_host, running
from peerlight.p2p.summaries import Topic, TopicSummary, encode

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def codebook() -> Codebook:
    rng = np.random.default_rng(0)
    return train_codebook("ordered:test:0", normalize(rng.standard_normal((4000, 32)).astype(np.float32)), count=128, iterations=5)


class Shares:
    """Shares with keys and signed summaries, and a DHT held in a dict: the router's inputs without a network."""

    def __init__(self, codebook: Codebook, tmp_path) -> None:  # type: ignore[no-untyped-def]
        self.codebook = codebook
        self.tmp_path = tmp_path
        self.summaries: dict[str, bytes] = {}
        self.providers: dict[str, dict[str, list[str]]] = {}
        self.silent: set[str] = set()
        self.unpublished: set[str] = set()
        self.fetches: list[str] = []

    def add(self, name: str, items: np.ndarray, provides: list[str] | None = None, *, lifetime: float | None = None) -> str:
        """A share of ``items``, providing its own keys or ``provides``."""
        identity = create_identity(self.tmp_path / f"{name}.key")
        key = Ed25519PrivateKey.from_private_bytes(identity.seed)
        found = profile(self.codebook, items)
        summary = summary_of(self.codebook, found, identity.peer_id, seq=1, now=NOW)
        if lifetime is not None:
            summary = TopicSummary(**{**summary.__dict__, "expires": int(NOW + lifetime)})
        self.summaries[identity.peer_id] = encode(summary, key)
        for key in found.keys(self.codebook.id) if provides is None else provides:
            self.providers.setdefault(key, {})[identity.peer_id] = [f"/ip4/127.0.0.1/tcp/1/{name}"]
        return identity.peer_id

    async def lookup(self, key: str) -> dict[str, list[str]]:
        return self.providers.get(key, {})

    async def fetch(self, peer_id: str, addresses: list[str]) -> bytes:
        self.fetches.append(peer_id)
        if peer_id in self.silent:
            raise OSError("no answer")
        if peer_id in self.unpublished:
            raise NotFound("this share publishes no topic summary")
        return self.summaries[peer_id]


def routed_by(query, codebook, shares, cache, settings, clock):  # type: ignore[no-untyped-def]
    return trio.run(partial(route, query, codebook, shares.lookup, shares.fetch, cache, settings, now=clock))


def near(vector: np.ndarray, count: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return normalize(vector + spread * rng.standard_normal((count, len(vector))).astype(np.float32))


def test_the_shares_near_the_query_are_asked_first(codebook, tmp_path) -> None:
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(1)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    close = shares.add("close", near(query, 50, 0.2, 2))
    nearby = shares.add("nearby", near(query, 200, 0.45, 3))
    far = [shares.add(f"far{i}", near(normalize(rng.standard_normal(32).astype(np.float32)), 100, 0.2, 10 + i)) for i in range(8)]
    routed = routed_by(query, codebook, shares, RoutingCache(), RouteSettings(ask=2), lambda: NOW)
    assert [c.peer_id for c in routed.chosen] == [close, nearby]
    # Small shares (tier 0 keys mostly): the top tiers' keys first, then one batch of the rest.
    assert routed.lookups == 2 * RouteSettings.lookups and not set(far) & {c.peer_id for c in routed.chosen}


def test_where_few_shares_hold_the_nearest_topics_the_next_ones_are_looked_up(codebook, tmp_path) -> None:
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(30)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    only = shares.add("only", near(query, 30, 0.1, 31))
    routed = routed_by(query, codebook, shares, RoutingCache(), RouteSettings(ask=10), lambda: NOW)
    assert routed.lookups == RouteSettings.max_lookups and [c.peer_id for c in routed.chosen] == [only]
    # A share whose topics are all farther: found only by listing the shares, and still ranked by its summary.
    elsewhere = shares.add("elsewhere", near(normalize(rng.standard_normal(32).astype(np.float32)), 30, 0.1, 32), provides=[])

    async def list_any() -> dict[str, list[str]]:
        return {peer: ["/ip4/127.0.0.1/tcp/1"] for peer in (only, elsewhere)}

    listed = trio.run(partial(route, query, codebook, shares.lookup, shares.fetch, RoutingCache(), RouteSettings(ask=10), now=lambda: NOW, list_any=list_any))
    assert [c.peer_id for c in listed.chosen] == [only, elsewhere] and listed.lookups == RouteSettings.max_lookups + 1


def test_a_share_claiming_every_topic_is_ranked_by_what_its_summary_holds(codebook, tmp_path) -> None:
    """It provides every topic's key at the top tier, but its signed summary can list 64 topics
    at most: the keys it does not bear out count for nothing (flagged), it is ranked by its
    summary, and once that is cached it no longer takes a fetch ahead of honest shares."""
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(4)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    honest = shares.add("honest", near(query, 60, 0.1, 5))
    every_key = [topic_key(codebook.id, t, 2) for t in range(codebook.size)]  # every topic, at the top tier
    elsewhere = normalize(rng.standard_normal(32).astype(np.float32))
    cheat = shares.add("cheat", near(elsewhere, 400, 0.05, 6), provides=every_key)  # its items lie far from the query
    cache = RoutingCache()
    routed = routed_by(query, codebook, shares, cache, RouteSettings(ask=2), lambda: NOW)
    assert [c.peer_id for c in routed.chosen] == [honest, cheat]
    assert routed.chosen[1].flagged and routed.chosen[1].found_under == [] and not routed.chosen[0].flagged
    # With one fetch to spend, the cheat's claimed tier 2 took it on the first query; on the next
    # (a fresh honest share nearby), its cached summary has judged its keys: the fetch goes to the honest one.
    later = shares.add("later", near(query, 60, 0.1, 7))
    shares.fetches.clear()
    again = routed_by(query, codebook, shares, cache, RouteSettings(ask=3, summaries=1), lambda: NOW)
    assert shares.fetches == [later] and again.chosen[-1].peer_id == cheat


def test_a_provider_record_is_never_held_against_the_share_it_names(codebook, tmp_path) -> None:
    """Provider records are not signed: a DHT node may list an honest share under keys it never
    provided. Those keys count for nothing, and its rank is what its summary earns."""
    rng = np.random.default_rng(70)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    scores = []
    for framed in (False, True):
        shares = Shares(codebook, tmp_path / str(framed))
        (tmp_path / str(framed)).mkdir()
        honest = shares.add("honest", near(query, 60, 0.1, 71))
        other = shares.add("other", near(query, 60, 0.2, 72))
        if framed:
            for t in range(codebook.size):
                shares.providers.setdefault(topic_key(codebook.id, t, 2), {})[honest] = []
        routed = routed_by(query, codebook, shares, RoutingCache(), RouteSettings(ask=2), lambda: NOW)
        assert [c.peer_id for c in routed.chosen] == [honest, other] and routed.chosen[0].flagged == framed
        scores.append(routed.chosen[0].score)
    assert scores[0] == scores[1]


def test_no_key_s_providers_take_every_fetch_and_shares_without_a_summary_are_not_asked_again(codebook, tmp_path) -> None:
    """Twenty peers providing the query region's top key (a few hostile ones could) take a quarter
    of the fetches before the shares found under other keys: the share found under a topic key
    is still read and asked. A share that answered it has no summary is not fetched again for
    half an hour."""
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(80)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    from peerlight.node.routing.router import plan

    region_top = plan(codebook, codebook.prefixes(query.reshape(1, -1))[0], RouteSettings())[0].key
    crowd = [shares.add(f"crowd{i}", near(normalize(rng.standard_normal(32).astype(np.float32)), 20, 0.1, 81 + i), provides=[region_top]) for i in range(20)]
    wanted = shares.add("wanted", near(query, 60, 0.1, 110))
    silent_about_it = shares.add("no-summary", near(query, 60, 0.1, 111))
    shares.unpublished.add(silent_about_it)
    cache = RoutingCache()
    routed = routed_by(query, codebook, shares, cache, RouteSettings(ask=3, summaries=8), lambda: NOW)
    assert routed.chosen[0].peer_id == wanted
    # The crowd's key took 2 fetches first, the other keys' shares theirs, and the crowd the 4 left.
    assert wanted in shares.fetches and silent_about_it in shares.fetches and len(set(shares.fetches) & set(crowd)) == 6
    shares.fetches.clear()
    routed_by(query, codebook, shares, cache, RouteSettings(ask=3, summaries=8), lambda: NOW)
    assert silent_about_it not in shares.fetches and wanted not in shares.fetches  # one cached, one known to have none


def test_a_large_library_is_found_by_its_region_key(codebook, tmp_path) -> None:
    """A library of thousands of items holds some in hundreds of topics, more than its records
    can name; its region key still finds it, first, for a query near what it holds."""
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(50)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    items = np.concatenate([near(query, 1500, 0.3, 51), normalize(rng.standard_normal((3000, 32)).astype(np.float32))])
    region_keys = [k for k in profile(codebook, items).keys(codebook.id) if k not in {topic_key(codebook.id, t, v) for t in range(codebook.size) for v in (0, 1, 2)}]
    assert region_keys
    large = shares.add("large", items, provides=region_keys)  # none of its topic keys: found by its region alone
    small = [shares.add(f"small{i}", near(query, 12, 0.3, 52 + i)) for i in range(4)]
    routed = routed_by(query, codebook, shares, RoutingCache(), RouteSettings(ask=3), lambda: NOW)
    assert routed.chosen[0].peer_id == large and not routed.chosen[0].flagged
    assert all(p.region is not None for p in routed.chosen[0].found_under)
    assert {c.peer_id for c in routed.chosen[1:]} <= set(small)


def test_a_key_above_the_share_s_tier_counts_for_nothing(codebook, tmp_path) -> None:
    """Tier 2 says "a hundred items or more here": a share of a few items providing it, or a
    region's top tier, is flagged and ranked by its summary alone, behind the share whose keys
    its summary bears out."""
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(60)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    nearest = [int(t) for t in codebook.nearest(query, 3)[0]]
    region = int(codebook.regions[nearest[0]])
    honest = shares.add("honest", near(query, 150, 0.1, 61))
    boastful = shares.add("boastful", near(query, 6, 0.3, 62), provides=[topic_key(codebook.id, t, 2) for t in nearest])
    from peerlight.node.routing.topics import region_key

    inflated = shares.add("inflated", near(query, 20, 0.3, 63), provides=[region_key(codebook.id, region, 2)])
    routed = routed_by(query, codebook, shares, RoutingCache(), RouteSettings(ask=3), lambda: NOW)
    assert routed.chosen[0].peer_id == honest and not routed.chosen[0].flagged and routed.chosen[0].found_under
    assert {c.peer_id for c in routed.chosen[1:]} == {boastful, inflated}
    assert all(c.flagged and c.found_under == [] for c in routed.chosen[1:])


def test_a_share_that_does_not_answer_drops_in_rank_and_is_left_out_without_a_summary(codebook, tmp_path) -> None:
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(7)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    first = shares.add("first", near(query, 60, 0.1, 8))
    second = shares.add("second", near(query, 60, 0.15, 9))
    silent = shares.add("silent", near(query, 60, 0.1, 10))
    shares.silent.add(silent)
    unpublished = shares.add("unpublished", near(query, 60, 0.1, 14))
    shares.unpublished.add(unpublished)
    cache = RoutingCache()
    routed = routed_by(query, codebook, shares, cache, RouteSettings(ask=3), lambda: NOW)
    assert not {silent, unpublished} & {c.peer_id for c in routed.chosen}  # no valid summary: not asked
    assert cache.misses.get(silent, NOW) == 1 and cache.misses.get(unpublished, NOW) is None  # answering "none" is an answer
    assert [c.peer_id for c in routed.chosen] == [first, second]
    for _ in range(3):  # the first share stops answering queries
        cache.missed(first, NOW)
    routed = routed_by(query, codebook, shares, cache, RouteSettings(ask=3), lambda: NOW)
    assert [c.peer_id for c in routed.chosen] == [second, first]


def test_a_summary_of_another_space_under_the_codebook_s_id_is_left_out(codebook, tmp_path) -> None:
    """Its codebook id is public: a share may copy it onto sub-centroids of another length (which
    would break the scoring of every search meeting it) or another model's space."""
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(40)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    honest = shares.add("honest", near(query, 30, 0.1, 41))
    identity = create_identity(tmp_path / "odd.key")
    found = profile(codebook, near(query, 30, 0.1, 42))
    odd = TopicSummary(
        identity.peer_id, codebook.id, codebook.model_id, 30, tuple(Topic(t, 1, normalize(rng.standard_normal((1, 32)).astype(np.float32))) for t in found.topics), 1, int(NOW), int(NOW) + 3600
    )
    shares.summaries[identity.peer_id] = encode(odd, Ed25519PrivateKey.from_private_bytes(identity.seed))
    for key in found.keys(codebook.id):
        shares.providers.setdefault(key, {})[identity.peer_id] = []
    routed = routed_by(query, codebook, shares, RoutingCache(), RouteSettings(ask=5), lambda: NOW)
    assert [c.peer_id for c in routed.chosen] == [honest]


def test_summaries_and_lookups_are_cached_until_they_expire(codebook, tmp_path) -> None:
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(11)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    peer = shares.add("short-lived", near(query, 60, 0.25, 12), lifetime=1800)
    cache = RoutingCache()
    clock = [NOW]
    settings = RouteSettings(ask=1)
    first = routed_by(query, codebook, shares, cache, settings, lambda: clock[0])
    assert first.fetched == 1 and first.lookups == RouteSettings.lookups
    clock[0] = NOW + 60
    second = routed_by(query, codebook, shares, cache, settings, lambda: clock[0])
    assert (second.fetched, second.lookups) == (0, 0) and second.chosen[0].peer_id == peer
    clock[0] = NOW + 1800  # the summary expired (and the lookups, after 10 minutes): fetched again, and refused
    third = routed_by(query, codebook, shares, cache, settings, lambda: clock[0])
    assert third.lookups == RouteSettings.lookups and third.fetched == 1 and third.chosen == []


async def test_half_the_dht_vanishing_mid_query_still_finds_the_shares(codebook, tmp_path) -> None:
    """Sixteen real Kademlia servers on loopback; three shares provide their topics; half the
    servers (chosen among those holding the records) close while the query's lookups run.
    The survivors still hold the records, and the routing ends within its lookup bound."""
    shares = Shares(codebook, tmp_path)
    rng = np.random.default_rng(13)
    query = normalize(rng.standard_normal(32).astype(np.float32))
    wanted = [shares.add(f"s{i}", near(query, 60, 0.1, 20 + i)) for i in range(3)]  # tier 1 keys near the query
    async with AsyncExitStack() as stack:
        hosts, dhts = [], []
        for _ in range(16):
            host = new_host(os.urandom(32))
            await stack.enter_async_context(running(host, ["/ip4/127.0.0.1/tcp/0"]))
            hosts.append(host)
            dhts.append(await stack.enter_async_context(running_dht(host, server=True)))
        for i in range(1, 16):
            await bootstrap(hosts[i], dhts[i], listen_addresses(hosts[(i - 1) // 2]))
        # The shares' provider records, held by every server but the querier (in a DHT of 16
        # every node is among the 20 closest to any key).
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo
        from multiaddr import Multiaddr

        for key, providers in shares.providers.items():
            for peer_id in providers:
                info = PeerInfo(ID.from_base58(peer_id), [Multiaddr("/ip4/127.0.0.1/tcp/4001")])
                for dht in dhts[1:]:
                    dht.provider_store.add_provider(bytes.fromhex(key), info)
        querier = dhts[0]
        first_done, vanished = trio.Event(), trio.Event()
        answered: list[int] = []

        async def lookup(key: str) -> dict[str, list[str]]:
            """The first lookup runs on the whole DHT; the others after half of it is gone
            (the survivors' routing tables still name the vanished nodes)."""
            if first_done.is_set():
                await vanished.wait()
            found = await find_providers(querier, key, count=20, timeout=8)
            answered.append(len(found))
            first_done.set()
            return found

        async def vanish() -> None:
            await first_done.wait()
            for host in hosts[8:]:
                await host.close()
            vanished.set()

        settings = RouteSettings(lookup_seconds=8, ask=3)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(vanish)
            routed = await route(query, codebook, lookup, shares.fetch, RoutingCache(), settings, now=lambda: NOW)
        assert trio.current_time() - started < 2 * settings.lookup_seconds + settings.summary_seconds
        assert len(answered) == RouteSettings.lookups
        assert {c.peer_id for c in routed.chosen} == set(wanted), routed


async def test_a_dht_server_keeps_more_than_twenty_providers_of_a_topic() -> None:
    """py-libp2p 0.8.1 refuses a key's 21st provider: a popular topic would list only the first
    20 shares that announced it (p2p/quirks.py: more_providers_per_key)."""
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo

    from peerlight.p2p.host import new_host

    host = new_host(os.urandom(32))
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]), running_dht(host, server=True) as dht:
        key = bytes.fromhex(topic_key("0" * 16, 1, 0))
        for _ in range(300):
            dht.provider_store.add_provider(key, PeerInfo(ID.from_pubkey(new_host(os.urandom(32)).get_public_key()), []))
        assert len(dht.provider_store.get_providers(key)) == 256
