"""Invites: a share's address and a grant's token in one string that can be copied and pasted.

``peerlight-invite:`` followed by the unpadded URL-safe base64 of a msgpack map
``{"v": 1, "share": <peer ID>, "addresses": [<multiaddr>...], "token": <token bytes>}``.
The token is what grants access; the addresses only say where to ask. An invite is read
strictly (version, fields, sizes) so that a pasted string can never be more than it claims.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgpack

from .tokens import MAX_TOKEN_BYTES, PEER_ID

PREFIX = "peerlight-invite:"
VERSION = 1
MAX_INVITE_CHARS = 4096
MAX_ADDRESSES = 8


class InviteError(ValueError):
    """A string that is not a Peerlight invite (or one of a version this node does not read)."""


@dataclass(frozen=True)
class Invite:
    share: str  # the share's peer ID
    addresses: tuple[str, ...]  # full multiaddrs, ending in /p2p/<share>
    token: bytes


def encode(invite: Invite) -> str:
    body = msgpack.packb({"v": VERSION, "share": invite.share, "addresses": list(invite.addresses[:MAX_ADDRESSES]), "token": invite.token}, use_bin_type=True)
    return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode(text: str) -> Invite:
    text = text.strip()
    if not text.startswith(PREFIX):
        raise InviteError(f"an invite starts with {PREFIX!r}")
    if len(text) > MAX_INVITE_CHARS:
        raise InviteError("this invite is too long to be one")
    encoded = text[len(PREFIX) :]
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        raw = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=MAX_TOKEN_BYTES, max_array_len=MAX_ADDRESSES, max_map_len=8)
    except (binascii.Error, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InviteError(f"this invite is damaged ({type(exc).__name__}); copy it again, whole") from None
    if not isinstance(raw, dict) or raw.get("v") != VERSION or isinstance(raw.get("v"), bool):
        raise InviteError(f"an invite of another version ({raw.get('v') if isinstance(raw, dict) else '?'!r:.20}); this node reads version {VERSION}")
    share, addresses, token = raw.get("share"), raw.get("addresses"), raw.get("token")
    if not isinstance(share, str) or not PEER_ID.fullmatch(share):
        raise InviteError("the invite names no share")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and a.endswith(f"/p2p/{share}") and len(a) < 300 for a in addresses):
        raise InviteError("the invite's addresses are not the share's")
    if not isinstance(token, bytes) or not token:
        raise InviteError("the invite carries no token")
    return Invite(share, tuple(addresses), token)
