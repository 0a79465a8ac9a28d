"""Who may use a share, and for what: the share's gate, the one enforcement point of its protocols.

Every request of every protocol passes :meth:`ShareAccess.admit` before its handler runs
(:class:`~peerlight.p2p.server.ProtocolServer` calls it). A share's permission level decides:

- ``public``: anyone who reaches the share, for the capabilities the owner opened to all
  (``public_can``); the others as for ``members``;
- ``members``: holders of a grant, who send its token (``token`` in the request) with each
  request; the token must be signed by this share, name the requesting peer (authenticated
  by Noise) and a grant that still holds, and allow the protocol's capability;
- ``devices``: the owner's paired devices, and the owner: a program speaking with the node's
  own identity (its key lies in the data directory, mode 0600, so another local user has no
  way to it). The automatic ``local`` share and new ``local`` shares are ``devices`` shares.

A protocol the gate does not know is refused: unknown means no.

A refusal is a ``forbidden`` error that says why in general terms and nothing about the share's
contents. A grant's request rate and bytes per day are limited here too; bytes are counted as
reply frames are sent, so a limit reached, or a grant revoked, stops a running transfer. The
bytes of the day start from what the catalog last recorded for the grant and are written back
in batches (:attr:`ShareAccess.bytes_counted`), so restarting the node gives no fresh allowance.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peerlight.p2p import schema
from peerlight.p2p.errors import Forbidden, RateLimited, WireError
from peerlight.p2p.server import OPEN, Permit, Request
from peerlight.permissions import tokens

from ..catalog.access_log import Access
from ..catalog.database import Catalog
from ..catalog.grants import Grant, InviteUsed, InviteVoid, day_of, redeem_invite
from ..catalog.shares import Share

VERIFIED_TOKENS_KEPT = 4096  # tokens whose signature was checked, kept to spare a check per request
LOG_BACKLOG = 10_000  # access-log entries waiting for their batch write (beyond that the oldest are dropped)

log = logging.getLogger("peerlight.serving")


@dataclass
class GrantUsage:
    """A grant's traffic: its request allowance (a token bucket) and the bytes of its day."""

    tokens: float
    stamp: float
    day: int = 0
    bytes_today: int = 0

    def today(self) -> int:
        """The bytes served today (a new UTC day starts from 0)."""
        day = day_of(time.time())
        if self.day != day:
            self.day, self.bytes_today = day, 0
        return self.bytes_today


# A refusal for today's bytes concerns the requests, not the peer: its token stays good for tomorrow.
USED_UP = {"limit": "bytes_per_day", "reason": "bytes_per_day"}
SMALLEST_ANSWER = 64  # bytes: fewer left of the day's allowance than a data frame or a manifest takes is none left


@dataclass
class GrantPermit(Permit):
    access: ShareAccess
    grant_id: str
    usage: GrantUsage = field(repr=False, default_factory=lambda: GrantUsage(0, 0))

    def charge(self, size: int) -> None:
        grant = self.access.grants.get(self.grant_id)
        if grant is None or not grant.holds(time.time()):
            raise Forbidden("the grant was revoked or has expired")
        if self.access.share.permission == "devices":  # made stricter while the reply runs
            raise Forbidden("the share's permission changed", {"permission": "devices"})
        if grant.bytes_per_day:
            if self.usage.today() + size > grant.bytes_per_day:
                raise Forbidden(f"the grant's {grant.bytes_per_day} bytes for today are used up", USED_UP)
            self.usage.bytes_today += size
            self.access.bytes_counted[self.grant_id] = (self.usage.day, self.usage.bytes_today)

    def remaining(self) -> int | None:
        grant = self.access.grants.get(self.grant_id)
        if grant is None or not grant.bytes_per_day:
            return None
        return max(0, grant.bytes_per_day - self.usage.today())


@dataclass
class LevelPermit(Permit):
    """A request let in by the share's level alone (public, or a paired device): re-checked at
    each reply frame, so making the share stricter stops replies already running."""

    access: ShareAccess
    peer_id: str
    capability: str | None

    def charge(self, size: int) -> None:
        if not self.access.allows_without_grant(self.peer_id, self.capability):
            level = self.access.share.permission
            # Still public with less opened to all: this capability is refused, not the peer (a
            # grant it holds may still allow it).
            narrowed = {"capability": self.capability} if level == "public" and self.capability else {}
            raise Forbidden("the share's permission changed", {"permission": level, **narrowed})


class ShareAccess:
    """The gate of one share: its level, its grants (a mirror of the catalog's) and paired devices.

    ``usage`` holds the grants' traffic; the node passes one dict for its lifetime, so that a
    share whose host restarts keeps counting where it was."""

    def __init__(
        self,
        share: Share,
        key: Ed25519PrivateKey,
        peer_id: str,
        grants: list[Grant],
        devices: frozenset[str] = frozenset(),
        usage: dict[str, GrantUsage] | None = None,
    ) -> None:
        self.share = share
        self.peer_id = peer_id
        self._public_key = key.public_key()
        self.grants: dict[str, Grant] = {}
        self.devices = devices
        self._verified: dict[bytes, tokens.Claims] = {}
        self._usage: dict[str, GrantUsage] = {} if usage is None else usage
        self.last_used: dict[str, float] = {}  # grant id -> when: written to the catalog now and then
        self.bytes_counted: dict[str, tuple[int, int]] = {}  # grant id -> (day, bytes): likewise
        self.log: deque[Access] = deque(maxlen=LOG_BACKLOG)  # written to the catalog's access log in batches
        self.update(share, grants)

    def update(self, share: Share, grants: list[Grant], devices: frozenset[str] | None = None) -> None:
        """The catalog changed (a grant issued or revoked, the level edited): takes effect at once."""
        self.share = share
        self.grants = {grant.id: grant for grant in grants if grant.share_id == share.id}
        if devices is not None:
            self.devices = devices

    async def admit(self, request: Request) -> Permit:
        """Let the request in (with what it may spend) or refuse it; either way it goes in the access log."""
        try:
            permit = self._decide(request)
        except WireError as refusal:
            self._record(request, None, refusal.code)
            raise
        self._record(request, permit.grant_id if isinstance(permit, GrantPermit) else None, None)
        return permit

    def _record(self, request: Request, grant_id: str | None, refused: str | None) -> None:
        item = schema.Hash().keep(request.body.get("hash"))  # as the handler reads it, or nothing
        self.log.append(
            Access(
                self.share.id,
                time.time(),
                request.peer_id,
                request.protocol.rsplit("/", 2)[-2],
                capability if isinstance(capability := schema.capability_of(request.protocol), str) else None,
                item,
                refused is None,
                refused,
                grant_id,
            )
        )

    def _decide(self, request: Request) -> Permit:
        if request.protocol == schema.REDEEM.id:
            return OPEN  # how a peer without a grant gets one: the invite desk checks the invite itself
        capability = schema.capability_of(request.protocol)
        if capability is schema.MISSING:
            raise Forbidden(f"the gate knows no protocol {request.protocol!r}", {"reason": "unknown_protocol"})
        assert capability is None or isinstance(capability, str)
        level = self.share.permission
        if self.allows_without_grant(request.peer_id, capability):
            return LevelPermit(self, request.peer_id, capability)
        if level == "public":
            if not isinstance(request.body.get("token"), bytes):
                raise Forbidden(f"this share allows {capability} to members only", {"permission": level, "capability": capability})
            # What the public may not do, a grant holder may, as far as the grant allows.
        if level == "devices":
            raise Forbidden("this share is open to its owner's paired devices only", {"permission": level})
        grant = self._grant_presented(request)
        if capability is not None and capability not in grant.capabilities:
            raise Forbidden(f"the grant does not allow {capability}", {"permission": level, "capability": capability})
        usage = self._usage.get(grant.id)
        if usage is None:  # first use since the node started: the day's bytes as last recorded
            usage = self._usage[grant.id] = GrantUsage(float(grant.rpm), time.monotonic(), grant.usage_day, grant.bytes_today)
        if grant.rpm:
            now = time.monotonic()
            usage.tokens = min(float(grant.rpm), usage.tokens + (now - usage.stamp) * grant.rpm / 60)
            usage.stamp = now
            if usage.tokens < 1:
                raise RateLimited(f"the grant allows {grant.rpm} requests a minute", {"retry_after": round((1 - usage.tokens) * 60 / grant.rpm, 3)})
            usage.tokens -= 1
        if grant.bytes_per_day and usage.today() + SMALLEST_ANSWER > grant.bytes_per_day:
            raise Forbidden(f"the grant's {grant.bytes_per_day} bytes for today are used up", USED_UP)
        self.last_used[grant.id] = time.time()
        return GrantPermit(self, grant.id, usage)

    def may_meet_directly(self, peer_id: str) -> bool:
        """Whether ``peer_id`` may be offered a direct connection (a hole punch, which tells it
        this home's public IP): anyone for a ``public`` share; for the others, only the owner's
        devices and the holders of a live grant bound to them, never a stranger who found the
        share's relay address."""
        if self.share.permission == "public" or peer_id in self.devices:
            return True
        now = time.time()
        return any(grant.grantee == peer_id and grant.holds(now) for grant in self.grants.values())

    def allows_without_grant(self, peer_id: str, capability: str | None) -> bool:
        """Whether the share's level alone lets ``peer_id`` use ``capability`` (None: the manifest)."""
        level = self.share.permission
        if level == "public":
            return capability is None or capability in self.share.public_can
        return level == "devices" and peer_id in self.devices

    def _grant_presented(self, request: Request) -> Grant:
        token = request.body.get("token")
        if not isinstance(token, bytes):
            raise Forbidden("this share is open to members: send a grant's token", {"permission": "members"})
        claims = self._verified.get(token)
        if claims is None:
            try:
                claims = tokens.verify(token, self._public_key, share=self.peer_id, peer=request.peer_id)
            except tokens.TokenError as exc:
                raise Forbidden(f"the token is not valid here ({exc.reason})", {"permission": "members", "reason": exc.reason}) from None
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[token] = claims
        if claims.to != request.peer_id:  # a cached token, shown by another peer
            raise Forbidden("the token is not valid here (peer)", {"permission": "members", "reason": "peer"})
        grant = self.grants.get(claims.grant)
        now = time.time()
        if grant is None or grant.grantee != request.peer_id:
            raise Forbidden("the token's grant is not known here", {"permission": "members", "reason": "unknown"})
        if claims.expired(now) or not grant.holds(now):
            reason = "revoked" if grant.revoked_at is not None else "expired"
            raise Forbidden(f"the grant has been {reason}", {"permission": "members", "reason": reason})
        return grant


class InviteDesk:
    """The ``redeem`` protocol: an open invite's grant is bound to the first peer that presents it.

    The invite's token must be this share's, unbound, and name an invite grant that still
    holds; the answer is a token bound to the asking peer with the same claims. Asking again
    (an answer lost on the way) gives the same peer its token again; anyone else is refused."""

    def __init__(
        self, access: ShareAccess, catalog: Catalog, key: Ed25519PrivateKey, on_redeemed: Callable[[Grant], None] = lambda grant: None
    ) -> None:
        self._access = access
        self._catalog = catalog
        self._key = key
        self._on_redeemed = on_redeemed  # the node's list of grants must hear of it too, or its next reload undoes it

    async def redeem(self, request: Request) -> dict[str, bytes]:
        token = request.body["token"]
        try:
            claims = tokens.verify(token, self._key.public_key(), share=self._access.peer_id, peer=None)
        except tokens.TokenError as exc:
            raise Forbidden(f"this is no invite of this share ({exc.reason})", {"reason": exc.reason}) from None
        grant = self._access.grants.get(claims.grant)
        if grant is None or not grant.invite or not grant.holds(time.time()):
            raise Forbidden("this invite is not valid (any more)", {"reason": "revoked"})
        try:
            bound = await self._catalog.write(partial(redeem_invite, grant_id=grant.id, peer_id=request.peer_id))
        except InviteUsed:
            raise Forbidden("this invite has been used already", {"reason": "used"}) from None
        except InviteVoid:
            raise Forbidden("this invite is not valid (any more)", {"reason": "revoked"}) from None
        self._access.update(self._access.share, [g for g in self._access.grants.values() if g.id != bound.id] + [bound])
        self._on_redeemed(bound)
        own = tokens.Claims(claims.share, claims.grant, request.peer_id, claims.can, claims.rpm, claims.bpd, claims.exp)
        log.info("an invite was redeemed", extra={"share": self._access.share.name, "grant": grant.id, "peer": request.peer_id})
        return {"token": tokens.issue(self._key, own)}


def signing_key(seed: bytes) -> Ed25519PrivateKey:
    """The share's Ed25519 key from its identity's 32-byte seed (the key its peer ID names)."""
    return Ed25519PrivateKey.from_private_bytes(seed)
