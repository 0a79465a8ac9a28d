"""Topic summaries: built from a share's items, signed, verified, and refused when forged, expired or inflated."""

from __future__ import annotations

import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peerlight.embeddings.codebook import REGIONS, Codebook, CodebookError, train_codebook
from peerlight.embeddings.default_adapters import shipped_codebooks
from peerlight.embeddings.vectors import normalize
from peerlight.node.identity import create_identity
from peerlight.node.routing.topics import (
    MIN_TOPIC_ITEMS,
    REGION_TIERS,
    TOPIC_TIERS,
    choose_topics,
    profile,
    region_key,
    region_key_text,
    summary_of,
    sticky_tier,
    tier,
    topic_key,
    topic_key_text,
)
from peerlight.p2p import summaries
from peerlight.p2p.summaries import MAX_SUMMARY_BYTES, SIGNING_TAG, InvalidSummary, Topic, TopicSummary, decode, encode

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def codebook() -> Codebook:
    rng = np.random.default_rng(0)
    return train_codebook("ordered:test:0", normalize(rng.standard_normal((4000, 32)).astype(np.float32)), count=128, iterations=5)


def share_key(tmp_path, name: str = "share"):  # type: ignore[no-untyped-def]
    identity = create_identity(tmp_path / f"{name}.key")
    return identity.peer_id, Ed25519PrivateKey.from_private_bytes(identity.seed)


def clustered(rng: np.random.Generator, centres: int, per_centre: int, dimension: int = 32) -> np.ndarray:
    """Items of a library with a few interests: tight clusters around random centres."""
    middle = normalize(rng.standard_normal((centres, dimension)).astype(np.float32))
    return normalize(np.repeat(middle, per_centre, axis=0) + 0.15 * rng.standard_normal((centres * per_centre, dimension)).astype(np.float32))


def signed(body: dict, key: Ed25519PrivateKey) -> bytes:  # type: ignore[type-arg]
    packed = msgpack.packb(body, use_bin_type=True)
    return msgpack.packb({"body": packed, "sig": key.sign(SIGNING_TAG + packed)}, use_bin_type=True)


def test_a_share_s_summary_lists_its_topics_and_verifies(codebook, tmp_path) -> None:
    peer_id, key = share_key(tmp_path)
    items = clustered(np.random.default_rng(1), 5, 40)
    found = profile(codebook, items)
    assert found.items == 200 and found.topics
    assert all(found.histogram[t] >= MIN_TOPIC_ITEMS for t in found.topics)
    value = encode(summary_of(codebook, found, peer_id, seq=1, now=NOW), key)
    summary = decode(value, peer_id, now=NOW + 60)
    assert [t.centroid for t in summary.topics] == found.topics
    assert [t.items for t in summary.topics] == [int(found.histogram[t]) for t in found.topics]
    assert summary.codebook == codebook.id and summary.items == 200
    # Sub-centroids survive the int8 round trip closely.
    for topic in summary.topics:
        assert np.max(topic.subs @ found.subs[topic.centroid].T) > 0.99


def test_the_fullest_summary_fits_its_byte_limit(codebook, tmp_path) -> None:
    peer_id, key = share_key(tmp_path)
    rng = np.random.default_rng(2)
    topics = tuple(Topic(c, 100_000 + c, normalize(rng.standard_normal((n, 16)).astype(np.float32))) for c, n in zip(range(64), [2] * 4 + [1] * 60))
    summary = TopicSummary(peer_id, codebook.id, "ordered:all-MiniLM-L6-v2:8142582d383b4144", 6_403_200, topics, 2**61, NOW, NOW + 86_400, tuple(range(100, 132)), (200_100,) * 32)
    assert sum(len(t.subs) for t in topics) == summaries.MAX_SUBS
    value = encode(summary, key)
    assert len(value) <= MAX_SUMMARY_BYTES
    assert len(decode(value, peer_id, now=NOW).retired) == 32


def test_a_forged_altered_or_replayed_summary_is_refused(codebook, tmp_path) -> None:
    peer_id, key = share_key(tmp_path)
    other_id, other_key = share_key(tmp_path, "other")
    found = profile(codebook, clustered(np.random.default_rng(3), 3, 30))
    value = encode(summary_of(codebook, found, peer_id, seq=1, now=NOW), key)
    with pytest.raises(InvalidSummary, match="signature"):  # someone else signs a summary in the share's name
        decode(_resigned(value, other_key), peer_id, now=NOW)
    altered = bytearray(value)
    altered[-70] ^= 1  # a byte of the body (the signature is the last 64)
    with pytest.raises(InvalidSummary):
        decode(bytes(altered), peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="signature"):  # another share's valid summary replayed as this one's
        decode(encode(summary_of(codebook, found, other_id, seq=1, now=NOW), other_key), peer_id, now=NOW)
    body = msgpack.unpackb(msgpack.unpackb(value)["body"])
    with pytest.raises(InvalidSummary, match="another share"):  # signed by the share, about another
        decode(signed(body | {"peer": other_id}, key), peer_id, now=NOW)
    with pytest.raises(InvalidSummary):
        decode(b"\x81\xa4body\xc4\x00", peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="at most"):
        decode(b"\x00" * (MAX_SUMMARY_BYTES + 1), peer_id, now=NOW)


def _resigned(value: bytes, key: Ed25519PrivateKey) -> bytes:
    body = msgpack.unpackb(value)["body"]
    return msgpack.packb({"body": body, "sig": key.sign(SIGNING_TAG + body)}, use_bin_type=True)


def test_an_expired_or_future_summary_is_refused(codebook, tmp_path) -> None:
    peer_id, key = share_key(tmp_path)
    found = profile(codebook, clustered(np.random.default_rng(4), 2, 30))
    value = encode(summary_of(codebook, found, peer_id, seq=1, now=NOW), key)
    summary = decode(value, peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="expired"):
        decode(value, peer_id, now=summary.expires)
    with pytest.raises(InvalidSummary, match="issued"):  # made "tomorrow", to outlive its real lifetime
        decode(value, peer_id, now=NOW - 3600)
    body = msgpack.unpackb(msgpack.unpackb(value)["body"])
    with pytest.raises(InvalidSummary, match="expires within"):
        decode(signed(body | {"expires": NOW + 10 * 86_400}, key), peer_id, now=NOW)


def test_a_summary_claiming_more_than_it_holds_is_refused(codebook, tmp_path) -> None:
    """Histogram against item count: topics that together hold more items than the share has."""
    peer_id, key = share_key(tmp_path)
    found = profile(codebook, clustered(np.random.default_rng(5), 4, 25))
    body = msgpack.unpackb(msgpack.unpackb(encode(summary_of(codebook, found, peer_id, seq=1, now=NOW), key))["body"])
    with pytest.raises(InvalidSummary, match="more than"):
        decode(signed(body | {"items": 10}, key), peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="listed once"):  # one topic listed twice to double its weight
        subs = body["topics"][6] * body["k"]  # the first topic's sub-centroids
        decode(signed(body | {"topics": body["topics"][:7] * 2, "subs": body["subs"][:subs] * 2}, key), peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="retired"):  # a held topic also "retired"
        decode(signed(body | {"retired": body["topics"][:2]}, key), peer_id, now=NOW)


def test_topics_change_little_when_the_library_changes_little(codebook) -> None:
    rng = np.random.default_rng(6)
    histogram = rng.integers(0, 40, size=codebook.size)
    before = choose_topics(histogram)
    changed = histogram.copy()
    changed[rng.choice(codebook.size, 10, replace=False)] += rng.integers(-5, 6, size=10)  # a few items come and go
    after = choose_topics(np.maximum(changed, 0), frozenset(before))
    assert len(before) == 64
    assert len(set(before) ^ set(after)) <= 2
    assert choose_topics(np.zeros(codebook.size, int)) == []  # an empty share: no keys at all
    assert len(choose_topics(np.ones(codebook.size, int))) == 64  # never more than 64 records


def test_a_tier_is_kept_while_its_count_wavers_at_the_floor(codebook) -> None:
    assert [sticky_tier(n, TOPIC_TIERS) for n in (1, 9, 10, 99, 100)] == [0, 0, 1, 1, 2]
    assert sticky_tier(95, TOPIC_TIERS, previous=2) == 2  # a few items gone: the same key
    assert sticky_tier(60, TOPIC_TIERS, previous=2) == 1  # a third gone: the key follows
    assert sticky_tier(110, TOPIC_TIERS, previous=1) == 1 and sticky_tier(160, TOPIC_TIERS, previous=1) == 2
    rng = np.random.default_rng(10)
    items = clustered(rng, 30, 150)
    before = profile(codebook, items)
    fewer = items[rng.permutation(len(items))[: len(items) - 150]]  # 3% gone
    assert len(set(before.keys(codebook.id)) ^ set(profile(codebook, fewer, previous=before).keys(codebook.id))) <= 2
    assert len(set(before.keys(codebook.id)) ^ set(profile(codebook, fewer).keys(codebook.id))) > 2  # tiers read afresh: more change


def test_topic_keys_are_plain_sha256_multihashes(codebook) -> None:
    key = topic_key(codebook.id, 7, 2)
    assert topic_key_text(codebook.id, 7, 2) == f"peerlight:topic:v2:{codebook.id}:7:2"
    assert region_key_text(codebook.id, 3, 1) == f"peerlight:region:v1:{codebook.id}:3:1"
    assert key.startswith("1220") and len(bytes.fromhex(key)) == 34
    assert len({topic_key(codebook.id, 7, level) for level in (0, 1, 2)} | {region_key(codebook.id, 7, 1)}) == 4


def test_regions_are_derived_from_the_codebook_alone(codebook) -> None:
    regions = codebook.regions
    assert regions.shape == (codebook.size,) and set(regions.tolist()) <= set(range(REGIONS))
    assert regions[:REGIONS].tolist() == list(range(REGIONS))  # each seed is its own region
    again = Codebook.from_bytes(codebook.to_bytes())
    assert again.regions.tolist() == regions.tolist()


def test_keys_carry_the_tier_of_what_the_share_holds(codebook, tmp_path) -> None:
    """A small share: tier 0 topic keys and no region key. A large one: its fullest regions'
    keys first, at their tiers, and topic keys at theirs, 64 records in all; its summary
    counts its items per region, every topic counted."""
    rng = np.random.default_rng(8)
    small = profile(codebook, clustered(rng, 3, 3))
    assert small.regions == [] and small.keys(codebook.id) == [topic_key(codebook.id, t, tier(int(small.histogram[t]), TOPIC_TIERS)) for t in small.topics]
    assert all(small.histogram[t] < 10 for t in small.topics) and small.keys(codebook.id)[0] == topic_key(codebook.id, small.topics[0], 0)

    large = profile(codebook, clustered(rng, 40, 200))  # 8,000 items in hundreds of topics
    keys = large.keys(codebook.id)
    assert large.regions and len(keys) == 64 == len(large.regions) + len(large.provided_topics)
    assert int(large.region_histogram.sum()) == 8000 and all(large.region_histogram[r] >= 300 for r in large.regions)
    fullest = large.regions[0]
    assert keys[0] == region_key(codebook.id, fullest, tier(int(large.region_histogram[fullest]), REGION_TIERS))
    assert topic_key(codebook.id, large.topics[0], 2) in keys  # its fullest topic holds over 100 items
    peer_id, key = share_key(tmp_path)
    summary = decode(encode(summary_of(codebook, large, peer_id, seq=1, now=NOW), key), peer_id, now=NOW)
    assert summary.regions == tuple(int(n) for n in large.region_histogram)


def test_region_counts_are_bounded_by_the_items(codebook, tmp_path) -> None:
    peer_id, key = share_key(tmp_path)
    found = profile(codebook, clustered(np.random.default_rng(9), 4, 25))
    body = msgpack.unpackb(msgpack.unpackb(encode(summary_of(codebook, found, peer_id, seq=1, now=NOW), key))["body"])
    assert len(body["regions"]) == 4 * REGIONS
    with pytest.raises(InvalidSummary, match="regions hold"):  # a region inflated past the share's items
        decode(signed(body | {"regions": struct.pack("<I", 101) + body["regions"][4:]}, key), peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="regions"):
        decode(signed(body | {"regions": bytes(4 * 33)}, key), peer_id, now=NOW)
    with pytest.raises(InvalidSummary, match="regions"):
        decode(signed(body | {"regions": b"\x00" * 5}, key), peer_id, now=NOW)


def test_the_shipped_codebook_divides_the_shipped_space() -> None:
    (codebook,) = shipped_codebooks()
    assert codebook.model_id == "ordered:all-MiniLM-L6-v2:8142582d383b4144"
    assert (codebook.size, codebook.prefix) == (1024, 16)
    assert np.allclose(np.linalg.norm(codebook.centroids, axis=1), 1, atol=1e-5)
    assert Codebook.from_bytes(codebook.to_bytes()).id == codebook.id
    page = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert f"codebook has id `{codebook.id}`" in page
    with pytest.raises(CodebookError):
        Codebook.from_bytes(b"PK\x03\x04 not a zip")


async def test_a_share_that_stops_and_starts_publishing_republishes_at_once_with_its_old_topics_retired(codebook, tmp_path) -> None:
    """Made members-only, then public again: what it provided is retired meanwhile (its DHT
    records live on), and its summary comes back at the next check, not when the old one would
    have aged (3 hours), though the catalog did not change."""
    from functools import partial

    from peerlight.node.catalog import Catalog
    from peerlight.node.catalog.embeddings import register_model
    from peerlight.node.routing.publisher import TopicPublisher
    from peerlight.node.search.filters import Scope

    from .test_vector_indexes import add_items

    catalog = await Catalog.open(tmp_path / "catalog.sqlite3")
    try:
        await catalog.write(partial(register_model, model_id=codebook.model_id, name="test", space="text", dimension=32))
        items = clustered(np.random.default_rng(7), 3, 20)
        await catalog.write(partial(add_items, vectors=dict(enumerate(items, start=1)), model_id=codebook.model_id))
        peer_id, key = share_key(tmp_path)
        clock = [float(NOW)]
        publisher = TopicPublisher(catalog, codebook, peer_id, key, scope=Scope, now=lambda: clock[0])
        await publisher.refresh()
        held = list(publisher.topics)
        assert held and decode(publisher.value, peer_id, now=clock[0]).listed() == frozenset(held)

        publisher.withdraw()
        assert (publisher.topics, publisher.value, publisher.keys()) == ([], None, [])
        assert set(publisher.retired) == set(held)
        clock[0] += 60  # the next check of a share that is public again; the catalog did not change
        await publisher.refresh()
        summary = decode(publisher.value, peer_id, now=clock[0])
        assert [t.centroid for t in summary.topics] == held and not summary.retired  # held again: not retired
    finally:
        await catalog.aclose()
