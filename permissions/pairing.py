"""Pairing codes: how two nodes of one user prove to each other that the user linked them.

One node offers pairing and shows a short code (40 random bits, ``XXXX-XXXX``); the user
types it on the other node, which connects over Noise (both peer IDs authenticated) and
proves it knows the code with an HMAC over both peer IDs; the offering node answers with its
own proof. A code is single-use, expires within minutes and allows a few attempts, so an
online guess has a 5 in 2**40 chance at most; a relay in the middle cannot answer for either
side, since each proof names the peer IDs that Noise authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud and typed without doubt
CODE_LENGTH = 8
CONTEXT = b"peerlight pairing v1\x00"


class CodeError(ValueError):
    pass


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalize(code: str) -> str:
    """The code as typed, without spaces, dashes or case; :class:`CodeError` if it cannot be one."""
    raw = "".join(ch for ch in code.upper() if ch not in " -")
    if len(raw) != CODE_LENGTH or any(ch not in ALPHABET for ch in raw):
        raise CodeError(f"a pairing code is {CODE_LENGTH} letters and digits, like ABCD-EF23")
    return raw


def proof(code: str, role: str, joiner: str, offerer: str) -> bytes:
    """HMAC-SHA256 keyed by the code over the role (``join`` or ``offer``) and both peer IDs."""
    message = CONTEXT + role.encode() + b"\x00" + joiner.encode() + b"\x00" + offerer.encode()
    return hmac.new(normalize(code).encode(), message, hashlib.sha256).digest()


def matches(expected: bytes, given: object) -> bool:
    return isinstance(given, bytes) and hmac.compare_digest(expected, given)
