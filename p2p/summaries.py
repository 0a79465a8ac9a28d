"""A share's topic summary: what it holds, in a few hundred bytes, signed by the share's key.

Global search routes a query to the shares whose summaries promise items near it. A summary
is the share's histogram over the codebook's topics (items per topic, for at most
``MAX_TOPICS`` topics) and a few *sub-centroids* per topic (where in the topic its items
lie), each an int8 K-prefix, and its items per *region* (the codebook's groups of topics,
counted over every topic, listed or not). It is signed with the share's Ed25519 key, the key its peer
id names, so nobody can forge another share's topics; it carries a sequence number (a
newer one replaces an older one) and an expiry (a summary outlives its share by hours at
most).

Layout (``docs/protocol.md``, "Topic summaries"): the wire value is a msgpack map
``{"body": bin, "sig": bin(64)}``; ``sig`` is Ed25519 over ``SIGNING_TAG + body``; ``body``
is a msgpack map of the fields of :class:`TopicSummary`, with ``topics`` packed as rows of
(u16 LE topic, u32 LE items, u8 sub-centroids), ``subs`` as rows of K int8 values and
``retired`` as u16 LE topics and ``regions`` as u32 LE item counts.
The whole value is at most ``MAX_SUMMARY_BYTES``.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_TAG = b"peerlight-summary/1\0"
VERSION = 2
MAX_SUMMARY_BYTES = 2048
MAX_TOPICS = 64
MAX_SUBS = 68  # sub-centroids in all (the fullest summary, 64 topics, 32 retired and 32 regions, then fits 2 KB)
MAX_SUBS_PER_TOPIC = 8
MAX_RETIRED = 32  # topics it stopped providing whose DHT records may still name it
MAX_REGIONS = 32  # region counts (as many as the codebook has regions)
MAX_LIFETIME = 24 * 3600  # expires at most this long after it was issued
CLOCK_SKEW = 600  # a summary issued this far in the future is still accepted
_TOPIC_ROW = struct.Struct("<HIB")


class InvalidSummary(Exception):
    """A summary that is not valid: damaged, too large, forged, expired or self-contradictory."""


@dataclass(frozen=True)
class Topic:
    centroid: int  # the codebook's topic number
    items: int  # the share's items there
    subs: np.ndarray = field(compare=False)  # (s, K) float32 unit vectors: where in the topic they lie


@dataclass(frozen=True)
class TopicSummary:
    peer_id: str  # the share that signed it
    codebook: str  # the codebook id whose topic numbers it uses
    model_id: str  # the ordered space of the share's items
    items: int  # items the share lets strangers search, in all (topics listed or not)
    topics: tuple[Topic, ...]
    seq: int  # newer replaces older
    issued: int  # Unix seconds
    expires: int
    retired: tuple[int, ...] = ()  # topics it provided lately and no longer holds: their records outlive the change
    regions: tuple[int, ...] = ()  # items per region of the codebook, every topic counted

    def listed(self) -> frozenset[int]:
        """The topics whose DHT keys may name this share: those it holds, and those it just gave up."""
        return frozenset(t.centroid for t in self.topics) | frozenset(self.retired)


def _quantise(subs: np.ndarray) -> bytes:
    return np.clip(np.round(np.asarray(subs, dtype=np.float32) * 127), -127, 127).astype(np.int8).tobytes()


def encode(summary: TopicSummary, key: Ed25519PrivateKey) -> bytes:
    """The signed wire value; ``InvalidSummary`` if it would break a limit (the builder keeps within them)."""
    prefix = summary.topics[0].subs.shape[1] if summary.topics else 0
    body = {
        "v": VERSION,
        "peer": summary.peer_id,
        "codebook": summary.codebook,
        "model": summary.model_id,
        "items": summary.items,
        "k": prefix,
        "topics": b"".join(_TOPIC_ROW.pack(t.centroid, t.items, len(t.subs)) for t in summary.topics),
        "subs": b"".join(_quantise(t.subs) for t in summary.topics),
        "retired": struct.pack(f"<{len(summary.retired)}H", *summary.retired),
        "regions": struct.pack(f"<{len(summary.regions)}I", *summary.regions),
        "seq": summary.seq,
        "issued": summary.issued,
        "expires": summary.expires,
    }
    packed = msgpack.packb(body, use_bin_type=True)
    value = msgpack.packb({"body": packed, "sig": key.sign(SIGNING_TAG + packed)}, use_bin_type=True)
    if len(value) > MAX_SUMMARY_BYTES:
        raise InvalidSummary(f"a summary of {len(value)} bytes is over the {MAX_SUMMARY_BYTES}-byte limit")
    decode(value, summary.peer_id, now=summary.issued)  # what peers will check, checked before it is sent
    return value


def public_key_of(peer_id: str) -> Ed25519PublicKey:
    """The Ed25519 key an Ed25519 peer id embeds (identity multihash of the protobuf public key)."""
    from libp2p.peer.id import ID

    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except Exception as exc:  # not base58, not an identity multihash
        raise InvalidSummary(f"no public key in peer id {peer_id[:60]!r}: {exc}") from None
    raw = key.to_bytes() if key is not None else b""
    if len(raw) != 32:
        raise InvalidSummary("a summary is signed by an Ed25519 key, which the peer id must embed")
    return Ed25519PublicKey.from_public_bytes(raw)


def _unpack(data: bytes) -> dict:  # type: ignore[type-arg]
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=MAX_SUMMARY_BYTES, max_str_len=300, max_array_len=16, max_map_len=16, ext_hook=_no_ext
        )
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise InvalidSummary(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise InvalidSummary("a summary is a msgpack map")
    return value


def _no_ext(code: int, data: bytes) -> None:
    raise InvalidSummary("msgpack extension types are not part of a summary")


def _integer(body: dict, name: str, low: int, high: int) -> int:  # type: ignore[type-arg]
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidSummary(f"{name!r} must be an integer {low}…{high}")
    return value


def _text(body: dict, name: str, limit: int) -> str:  # type: ignore[type-arg]
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidSummary(f"{name!r} must be text of 1…{limit} characters")
    return value


def decode(value: bytes, peer_id: str, now: float | None = None) -> TopicSummary:
    """Check a summary fetched from (or about) ``peer_id``: size, signature by that peer's key,
    fields, expiry, and that its histogram agrees with its item count. Anything else is
    ``InvalidSummary``: a summary is all or nothing."""
    if not isinstance(value, (bytes, bytearray)) or len(value) > MAX_SUMMARY_BYTES:
        raise InvalidSummary(f"a summary is at most {MAX_SUMMARY_BYTES} bytes")
    outer = _unpack(bytes(value))
    packed, signature = outer.get("body"), outer.get("sig")
    if not isinstance(packed, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise InvalidSummary("a summary is {body: bin, sig: bin(64)}")
    try:
        public_key_of(peer_id).verify(signature, SIGNING_TAG + packed)
    except InvalidSignature:
        raise InvalidSummary("the signature is not the share's: a forged or altered summary") from None
    body = _unpack(packed)
    if body.get("v") != VERSION:
        raise InvalidSummary(f"summary version {body.get('v')!r} is not {VERSION}")
    if body.get("peer") != peer_id:
        raise InvalidSummary("the summary names another share")  # a share's valid summary replayed as another's
    items = _integer(body, "items", 0, 2**40)
    prefix = _integer(body, "k", 0, 256)
    issued, expires = _integer(body, "issued", 0, 2**40), _integer(body, "expires", 0, 2**40)
    now = time.time() if now is None else now
    if issued > now + CLOCK_SKEW or not issued < expires <= issued + MAX_LIFETIME:
        raise InvalidSummary(f"a summary is issued before now and expires within {MAX_LIFETIME} s of it")
    if expires <= now:
        raise InvalidSummary("the summary has expired")
    rows, subs = body.get("topics"), body.get("subs")
    if not isinstance(rows, bytes) or not isinstance(subs, bytes) or len(rows) % _TOPIC_ROW.size:
        raise InvalidSummary("'topics' and 'subs' are packed rows")
    topics, offset, seen, total = [], 0, set(), 0
    for centroid, count, nsubs in _TOPIC_ROW.iter_unpack(rows):
        if centroid in seen or count < 1 or not 1 <= nsubs <= MAX_SUBS_PER_TOPIC:
            raise InvalidSummary("each topic is listed once, with an item and 1…8 sub-centroids")
        seen.add(centroid)
        total += count
        end = offset + nsubs * prefix
        if end > len(subs):
            raise InvalidSummary("fewer sub-centroids than the topics count")
        matrix = np.frombuffer(subs[offset:end], dtype=np.int8).reshape(nsubs, prefix).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if prefix == 0 or (norms == 0).any():
            raise InvalidSummary("a sub-centroid is a non-zero K-prefix")
        topics.append(Topic(centroid, count, matrix / norms))
        offset = end
    if offset != len(subs) or len(topics) > MAX_TOPICS or offset // max(prefix, 1) > MAX_SUBS:
        raise InvalidSummary(f"at most {MAX_TOPICS} topics and {MAX_SUBS} sub-centroids, none left over")
    retired = body.get("retired", b"")
    if not isinstance(retired, bytes) or len(retired) % 2 or len(retired) // 2 > MAX_RETIRED:
        raise InvalidSummary(f"'retired' is at most {MAX_RETIRED} u16 topics")
    gone = struct.unpack(f"<{len(retired) // 2}H", retired)
    if len(set(gone)) != len(gone) or set(gone) & seen:
        raise InvalidSummary("a retired topic is listed once, and not as held")
    if total > items:
        raise InvalidSummary(f"its topics hold {total} items, more than the {items} it has")  # claims it cannot fill
    packed_regions = body.get("regions", b"")
    if not isinstance(packed_regions, bytes) or len(packed_regions) % 4 or len(packed_regions) // 4 > MAX_REGIONS:
        raise InvalidSummary(f"'regions' is at most {MAX_REGIONS} u32 counts")
    regions = struct.unpack(f"<{len(packed_regions) // 4}I", packed_regions)
    if regions and sum(regions) != items:  # every item lies in one region: the counts add up to the items
        raise InvalidSummary(f"its regions hold {sum(regions)} items, not the {items} it has")
    return TopicSummary(
        peer_id,
        _text(body, "codebook", 64),
        _text(body, "model", 200),
        items,
        tuple(topics),
        _integer(body, "seq", 0, 2**62),
        issued,
        expires,
        gone,
        regions,
    )
