"""Capability tokens: no byte string crashes the verifier, and none verifies unless the share signed it."""

from __future__ import annotations

import base64
import os

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerlight.permissions import tokens
from peerlight.permissions.tokens import Claims, TokenError

SHARE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def peer_id(seed: bytes) -> str:
    """The libp2p peer ID of the Ed25519 key with this seed (as a share's host has)."""
    from libp2p.crypto.ed25519 import Ed25519PrivateKey as Libp2pKey
    from libp2p.peer.id import ID

    return ID.from_pubkey(Libp2pKey.from_bytes(seed).get_public_key()).to_base58()


SHARE = peer_id(bytes(range(32)))  # the share's own key signs its tokens
ALICE = peer_id(b"a" * 32)
MALLORY = peer_id(b"m" * 32)
NOW = 1_800_000_000


def claims(**changes: object) -> Claims:
    base = {"share": SHARE, "grant": "0123456789abcdef", "to": ALICE, "can": ("search", "fetch"), "rpm": 60, "bpd": 10**9, "exp": NOW + 3600}
    return Claims(**(base | changes))  # type: ignore[arg-type]


def test_a_token_verifies_for_its_share_and_peer_and_says_what_it_allows() -> None:
    token = tokens.issue(SHARE_KEY, claims())
    got = tokens.verify(token, SHARE_KEY.public_key(), share=SHARE, peer=ALICE, now=NOW)
    assert got.allows("search") and got.allows("fetch") and not got.allows("browse")
    assert (got.rpm, got.bpd, got.exp, len(got.nonce)) == (60, 10**9, NOW + 3600, 16)
    assert len(token) < 300  # small enough to paste inside an invite


@pytest.mark.parametrize(
    ("token_claims", "key", "share", "peer", "now", "reason"),
    [
        (claims(), OTHER_KEY, SHARE, ALICE, NOW, "signature"),  # forged by another key
        (claims(), SHARE_KEY, MALLORY, ALICE, NOW, "share"),  # a token of another share
        (claims(), SHARE_KEY, SHARE, MALLORY, NOW, "peer"),  # another peer's token
        (claims(), SHARE_KEY, SHARE, ALICE, NOW + 3600, "expired"),
        (claims(to=None), SHARE_KEY, SHARE, ALICE, NOW, "peer"),  # an open invite, not yet redeemed
    ],
)
def test_each_wrong_token_is_refused_with_its_reason(token_claims, key, share, peer, now, reason) -> None:
    token = tokens.issue(key, token_claims)
    with pytest.raises(TokenError) as refused:
        tokens.verify(token, SHARE_KEY.public_key(), share=share, peer=peer, now=now)
    assert refused.value.reason == reason


def test_an_open_invite_is_read_unbound_and_a_token_without_expiry_never_expires() -> None:
    token = tokens.issue(SHARE_KEY, claims(to=None, exp=0))
    assert tokens.verify(token, SHARE_KEY.public_key(), share=SHARE, peer=None, now=10**12).to is None


def test_two_grants_with_the_same_claims_are_two_tokens() -> None:
    assert tokens.issue(SHARE_KEY, claims()) != tokens.issue(SHARE_KEY, claims())


@pytest.mark.parametrize(
    "bad",
    [
        claims(can=()), claims(can=("search", "search")), claims(can=("delete",)), claims(grant="XYZ"), claims(to="not a peer"), claims(exp=-1),
        claims(to=ALICE + "\n"), claims(share=SHARE + "\n"),  # a trailing newline is not part of a peer ID
    ],
)
def test_claims_that_make_no_sense_are_not_signed(bad: Claims) -> None:
    with pytest.raises(ValueError):
        tokens.issue(SHARE_KEY, bad)


def test_an_unknown_version_is_refused_by_name() -> None:
    token = msgpack.unpackb(tokens.issue(SHARE_KEY, claims()))
    with pytest.raises(TokenError, match="version 2"):
        tokens.decode(msgpack.packb(token | {"v": 2}))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_no_byte_string_crashes_the_verifier(data: bytes) -> None:
    with pytest.raises(TokenError):
        tokens.verify(data, SHARE_KEY.public_key(), share=SHARE, peer=ALICE, now=NOW)


VALID = tokens.issue(SHARE_KEY, claims())


@settings(max_examples=400)
@given(st.integers(0, len(VALID) - 1), st.integers(1, 255))
def test_no_changed_byte_of_a_valid_token_verifies(position: int, flip: int) -> None:
    tampered = bytearray(VALID)
    tampered[position] ^= flip
    with pytest.raises(TokenError):
        tokens.verify(bytes(tampered), SHARE_KEY.public_key(), share=SHARE, peer=ALICE, now=NOW)


claim_values = st.fixed_dictionaries(
    {
        "share": st.just(SHARE),
        "grant": st.text("0123456789abcdef", min_size=16, max_size=16),
        "to": st.sampled_from([ALICE, MALLORY, None]),
        "can": st.lists(st.sampled_from(tokens.CAPABILITIES), min_size=1, max_size=3, unique=True),
        "rpm": st.integers(0, 10**6),
        "bpd": st.integers(0, 10**12),
        "exp": st.integers(0, 2 * NOW),
        "nonce": st.binary(min_size=16, max_size=16),
    }
)


@settings(max_examples=300)
@given(claim_values, st.binary(min_size=64, max_size=64))
def test_well_formed_claims_with_any_signature_but_the_share_s_never_verify(raw: dict, signature: bytes) -> None:
    body = msgpack.packb(raw, use_bin_type=True)
    forged = msgpack.packb({"v": 1, "body": body, "sig": signature}, use_bin_type=True)
    with pytest.raises(TokenError):
        tokens.verify(forged, SHARE_KEY.public_key(), share=SHARE, peer=raw["to"], now=0)
    signed = msgpack.packb({"v": 1, "body": body, "sig": SHARE_KEY.sign(tokens.SIGNING_CONTEXT + body)}, use_bin_type=True)
    assert tokens.verify(signed, SHARE_KEY.public_key(), share=SHARE, peer=raw["to"], now=0).grant == raw["grant"]


def test_peer_id_format_accepts_every_real_peer_id() -> None:
    for _ in range(50):
        assert tokens.PEER_ID.fullmatch(peer_id(os.urandom(32)))


def test_base64_of_a_token_is_short_enough_for_an_invite() -> None:
    assert len(base64.urlsafe_b64encode(VALID)) < 400


def test_invites_round_trip_and_garbage_is_an_invite_error() -> None:
    from peerlight.permissions import invites

    invite = invites.Invite(SHARE, (f"/ip4/127.0.0.1/tcp/4001/p2p/{SHARE}",), VALID)
    text = invites.encode(invite)
    assert text.startswith("peerlight-invite:") and invites.decode(f"  {text}\n") == invite
    elsewhere = invites.encode(invites.Invite(SHARE, (f"/ip4/127.0.0.1/tcp/4001/p2p/{ALICE}",), VALID))  # addresses of another peer
    for bad in ("", "peerlight-invite:", "peerlight-invite:!!!", text[:-10], "http://example.com", elsewhere):
        with pytest.raises(invites.InviteError):
            invites.decode(bad)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_no_pasted_text_crashes_the_invite_reader(text: str) -> None:
    from peerlight.permissions import invites

    try:
        invites.decode("peerlight-invite:" + text)
    except invites.InviteError:
        pass


def test_pairing_codes_and_proofs() -> None:
    from peerlight.permissions import pairing

    code = pairing.new_code()
    assert len(code) == 9 and code[4] == "-" and pairing.normalize(code.lower().replace("-", " ")) == code.replace("-", "")
    proof = pairing.proof(code, "join", ALICE, SHARE)
    assert pairing.matches(proof, pairing.proof(code, "join", ALICE, SHARE))
    assert not pairing.matches(proof, pairing.proof(code, "offer", ALICE, SHARE))  # the two roles differ
    assert not pairing.matches(proof, pairing.proof(code, "join", MALLORY, SHARE))  # bound to the peer IDs
    assert not pairing.matches(proof, "not bytes")
    with pytest.raises(pairing.CodeError):
        pairing.normalize("ABCD-EF0O")  # 0 and O are not in the alphabet


def test_a_device_name_from_another_node_is_made_safe_to_show() -> None:
    from peerlight.node.pairing import MAX_DEVICE_NAME, device_name

    assert device_name("laptop\x1b[2J\x1b]0;pwned\x07 \n\tdesk") == "laptop [2J ]0;pwned desk"
    assert device_name("\x00\x01  ") == "a device"
    assert len(device_name("x" * 1000)) == MAX_DEVICE_NAME
