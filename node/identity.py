"""The node's long-term Ed25519 identity.

One key pair per node, created once at ``peerlight init`` and reloaded on every start, so
the node's libp2p peer ID (derived from the public key) stays the same across restarts and
peers can recognise it. The same key later signs capability tokens. The file is PKCS#8 PEM,
readable by standard tools, and kept at mode 0600. A key that cannot be read is an error,
never silently replaced: replacing it would change who the node is.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .files import write_atomic


class IdentityError(Exception):
    """The identity key file is missing, unreadable, corrupt or exposed."""


@dataclass(frozen=True)
class NodeIdentity:
    """An Ed25519 key pair and the libp2p peer ID it defines."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed, as libp2p's own Ed25519 key type takes it."""
        return self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def peer_id(self) -> str:
        """The libp2p peer ID (base58): an identity multihash of the protobuf-encoded public key.

        Computed here rather than through libp2p, whose import takes most of a second, so the
        CLI and the daemon can name the node without loading the network stack. A test checks
        it against libp2p's own ``ID.from_pubkey``.
        """
        # PublicKey protobuf: field 1 (KeyType) = 1 (Ed25519), field 2 (Data) = 32 raw bytes.
        encoded_key = b"\x08\x01\x12\x20" + self.public_bytes
        # Keys this short are "inlined": multihash code 0x00 (identity), then the length.
        return _base58(b"\x00" + bytes([len(encoded_key)]) + encoded_key)


def create_identity(path: Path) -> NodeIdentity:
    """Create a new key pair at ``path`` (mode 0600); refuse to overwrite an existing key."""
    identity = NodeIdentity(Ed25519PrivateKey.generate())
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        # Never half-written: a torn key file would be a corrupt identity that cannot be replaced.
        write_atomic(path, pem, mode=0o600, exclusive=True)
    except FileExistsError:
        raise IdentityError(f"{path}: an identity key already exists; refusing to replace it") from None
    return identity


def load_identity(path: Path) -> NodeIdentity:
    """Load the key pair at ``path``, with a clear error for every way it can be unusable."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{path}: no identity key (run `peerlight init`)") from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the identity key: {exc.strerror}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise IdentityError(
            f"{path}: the identity key is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(
            f"{path}: the identity key is corrupt ({exc}); restore it from a backup — "
            "a new key would give this node a different peer ID"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return NodeIdentity(key)


_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, remainder = divmod(number, 58)
        digits = _BASE58_ALPHABET[remainder] + digits
    leading_zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * leading_zeros + digits
