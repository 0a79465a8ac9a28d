from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from peerlight.node.identity import IdentityError, create_identity, load_identity
from peerlight.node.paths import NodePaths
from peerlight.node.setup import InitError, init_node


def test_created_key_is_private_and_reloads_to_the_same_peer_id(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    created = create_identity(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_identity(key).peer_id == created.peer_id
    assert created.peer_id.startswith("12D3KooW")  # an inlined Ed25519 key


def test_peer_id_matches_the_one_a_real_libp2p_host_uses(tmp_path: Path) -> None:
    from peerlight.p2p.host import new_host

    identity = create_identity(tmp_path / "identity.key")
    host = new_host(identity.seed)
    assert host.get_id().to_base58() == identity.peer_id


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    create_identity(key)
    before = key.read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        create_identity(key)
    assert key.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key at all", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", random.Random(0).randbytes(64)],
    ids=["empty", "text", "pem without a key", "random bytes"],
)
def test_corrupt_key_is_a_clear_error_and_left_in_place(tmp_path: Path, content: bytes) -> None:
    key = tmp_path / "identity.key"
    key.write_bytes(content)
    key.chmod(0o600)
    with pytest.raises(IdentityError, match="corrupt"):
        load_identity(key)
    assert key.read_bytes() == content


def test_key_of_another_type_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "identity.key"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    with pytest.raises(IdentityError, match="not an Ed25519 key"):
        load_identity(key)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    create_identity(key)
    key.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(key)


def test_missing_key_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="peerlight init"):
        load_identity(tmp_path / "identity.key")


def test_init_creates_a_private_directory_config_and_key(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "node")
    result = init_node(paths)
    assert result.created
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
    assert paths.config.is_file() and paths.identity.is_file()
    with pytest.raises(InitError, match="already holds a node"):
        init_node(paths)
    again = init_node(paths, if_missing=True)
    assert not again.created and again.identity.peer_id == result.identity.peer_id


def test_init_refuses_to_invent_a_new_identity_for_an_existing_catalog(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "node")
    init_node(paths)
    paths.catalog.write_bytes(b"")
    paths.identity.unlink()
    with pytest.raises(InitError, match="restore the key"):
        init_node(paths, if_missing=True)
    assert not paths.identity.exists()
