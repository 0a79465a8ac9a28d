"""Capability tokens: a share's signed statement of what one peer may do, until when.

A token is issued by a share and signed with the share's own Ed25519 key, so that it proves
itself to that share alone and needs no lookup to check its signature. It names the grantee's
peer ID: a Noise connection authenticates the peer, so a token copied to anyone else is
useless to them. What a token cannot say by itself, whether its grant has been revoked, the
share checks against its grants when it is presented.

Wire form (msgpack): ``{"v": 1, "body": <msgpack bytes of the claims>, "sig": <64 bytes>}``,
the signature covering ``SIGNING_CONTEXT + body``. Claims:

``share``   the share's peer ID (base58)
``grant``   the grant's id (16 lowercase hex digits)
``to``      the grantee's peer ID, or nil in an open invite (bound to the first peer that redeems it)
``can``     capabilities, a subset of ``search``, ``browse``, ``fetch``
``rpm``     requests per minute allowed (0: the share's default)
``bpd``     bytes per day that may be fetched (0: no limit)
``exp``     expiry, Unix seconds (0: never)
``nonce``   16 random bytes: two grants with the same claims are still two tokens

Decoding is strict: an unknown version, a missing or extra claim, a wrong type, an oversized
token: each is a :class:`TokenError` with a reason, never another exception.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERSION = 1
SIGNING_CONTEXT = b"peerlight capability token v1\x00"  # a signature for a token is never one for anything else
MAX_TOKEN_BYTES = 1024
CAPABILITIES = ("search", "browse", "fetch")
CLAIMS = frozenset({"share", "grant", "to", "can", "rpm", "bpd", "exp", "nonce"})
PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,64}")  # base58btc, as libp2p writes Ed25519 peer IDs
GRANT_ID = re.compile(r"^[0-9a-f]{16}$")


class TokenError(Exception):
    """A token that cannot be used; ``reason`` is one word a log or a test can match."""

    reason = "malformed"


class MalformedToken(TokenError):
    reason = "malformed"


class BadSignature(TokenError):
    reason = "signature"


class WrongShare(TokenError):
    reason = "share"


class WrongPeer(TokenError):
    reason = "peer"


class Expired(TokenError):
    reason = "expired"


@dataclass(frozen=True)
class Claims:
    share: str
    grant: str
    to: str | None
    can: tuple[str, ...]
    rpm: int = 0
    bpd: int = 0
    exp: int = 0
    nonce: bytes = b""

    def allows(self, capability: str) -> bool:
        return capability in self.can

    def expired(self, now: float) -> bool:
        return bool(self.exp) and now >= self.exp


def new_grant_id() -> str:
    return os.urandom(8).hex()


def issue(key: Ed25519PrivateKey, claims: Claims) -> bytes:
    """The signed token for ``claims`` (a fresh nonce is added when they carry none)."""
    _check_claims(claims)
    nonce = claims.nonce or os.urandom(16)
    body = msgpack.packb(
        {
            "share": claims.share,
            "grant": claims.grant,
            "to": claims.to,
            "can": list(claims.can),
            "rpm": claims.rpm,
            "bpd": claims.bpd,
            "exp": claims.exp,
            "nonce": nonce,
        },
        use_bin_type=True,
    )
    token = msgpack.packb({"v": VERSION, "body": body, "sig": key.sign(SIGNING_CONTEXT + body)}, use_bin_type=True)
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken(f"a token of {len(token)} bytes; at most {MAX_TOKEN_BYTES}")
    return token


def decode(token: bytes) -> tuple[Claims, bytes, bytes]:
    """(claims, signed body, signature) of a token, its signature not yet checked."""
    if not isinstance(token, bytes) or not token:
        raise MalformedToken("a token is a non-empty byte string")
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken(f"a token of {len(token)} bytes; at most {MAX_TOKEN_BYTES}")
    outer = _unpack(token)
    if set(outer) != {"v", "body", "sig"}:
        raise MalformedToken("a token has exactly the fields v, body and sig")
    if outer["v"] != VERSION or isinstance(outer["v"], bool):
        raise MalformedToken(f"token version {outer['v']!r:.20} is not known here (this node reads version {VERSION})")
    body, signature = outer["body"], outer["sig"]
    if not isinstance(body, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise MalformedToken("a token's body is bytes and its signature 64 bytes")
    raw = _unpack(body)
    if set(raw) != CLAIMS:
        raise MalformedToken(f"a token's claims are exactly {sorted(CLAIMS)}")
    can = raw["can"]
    if not isinstance(can, list) or not all(isinstance(c, str) for c in can):
        raise MalformedToken("'can' is a list of capability names")
    for name in ("rpm", "bpd", "exp"):
        if not isinstance(raw[name], int) or isinstance(raw[name], bool):
            raise MalformedToken(f"{name!r} is an integer")
    if not isinstance(raw["nonce"], bytes) or len(raw["nonce"]) != 16:
        raise MalformedToken("'nonce' is 16 bytes")
    if not isinstance(raw["share"], str) or not isinstance(raw["grant"], str) or not (raw["to"] is None or isinstance(raw["to"], str)):
        raise MalformedToken("'share' and 'grant' are strings, 'to' a string or nil")
    claims = Claims(raw["share"], raw["grant"], raw["to"], tuple(can), raw["rpm"], raw["bpd"], raw["exp"], raw["nonce"])
    try:
        _check_claims(claims)
    except ValueError as exc:
        raise MalformedToken(str(exc)) from None
    return claims, body, signature


def verify(token: bytes, key: Ed25519PublicKey, *, share: str, peer: str | None, now: float | None = None) -> Claims:
    """The claims of a token that ``key`` signed for ``share``, bound to ``peer`` and not expired.

    ``peer`` None accepts an open invite's unbound token (for redeeming it); a bound token is
    accepted only from the peer it names. Revocation is the caller's to check (by grant id).
    """
    claims, body, signature = decode(token)
    try:
        key.verify(signature, SIGNING_CONTEXT + body)
    except InvalidSignature:
        raise BadSignature("the token was not signed by this share") from None
    if claims.share != share:
        raise WrongShare("the token is for another share")
    if claims.to != peer:
        raise WrongPeer("the token was issued to another peer" if claims.to else "an open invite must be redeemed first")
    if claims.expired(time.time() if now is None else now):
        raise Expired("the token has expired")
    return claims


def _check_claims(claims: Claims) -> None:
    if not PEER_ID.fullmatch(claims.share):
        raise ValueError("'share' is not a peer ID")
    if claims.to is not None and not PEER_ID.fullmatch(claims.to):
        raise ValueError("'to' is not a peer ID")
    if not GRANT_ID.match(claims.grant):
        raise ValueError("'grant' is 16 lowercase hex digits")
    if not claims.can or len(set(claims.can)) != len(claims.can) or not set(claims.can) <= set(CAPABILITIES):
        raise ValueError(f"'can' lists distinct capabilities among {', '.join(CAPABILITIES)}")
    for name in ("rpm", "bpd", "exp"):
        if not 0 <= getattr(claims, name) < 2**63:
            raise ValueError(f"{name!r} must be within 0..2**63-1")
    if claims.nonce and len(claims.nonce) != 16:
        raise ValueError("'nonce' is 16 bytes")


def _unpack(data: bytes) -> dict:  # type: ignore[type-arg]
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_ext, max_bin_len=MAX_TOKEN_BYTES, max_str_len=MAX_TOKEN_BYTES, max_array_len=16, max_map_len=16)
    except MalformedToken:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise MalformedToken(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise MalformedToken("a token is a msgpack map")
    return value


def _no_ext(code: int, data: bytes) -> None:
    raise MalformedToken("msgpack extension types are not part of a token")
