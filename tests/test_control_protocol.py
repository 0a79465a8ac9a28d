from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerlight.node.control import protocol
from peerlight.node.control.protocol import (
    ERROR_TYPES,
    ControlError,
    FrameTooLarge,
    MalformedMessage,
    Request,
    UnsupportedVersion,
    decode_body,
    encode_frame,
    error_from_wire,
    error_reply,
    frame_length,
)


def test_request_round_trips_through_a_frame() -> None:
    request = Request(3, "library.add", {"path": "/x"})
    frame = encode_frame(request.to_wire())
    body = frame[4:]
    assert frame_length(frame[:4], 1 << 20) == len(body)
    assert Request.from_wire(decode_body(body)) == request


@pytest.mark.parametrize("cls", list(ERROR_TYPES.values()))
def test_every_error_type_survives_the_wire(cls: type[ControlError]) -> None:
    error = cls("it went wrong", data={"param": "path"})
    wire = decode_body(encode_frame(error_reply(1, error))[4:])["error"]
    back = error_from_wire(wire)
    assert type(back) is cls and back.message == "it went wrong" and back.data == {"param": "path"}


def test_unknown_error_codes_keep_their_code() -> None:
    back = error_from_wire({"code": "from_the_future", "message": "?"})
    assert type(back) is ControlError and back.code == "from_the_future"


def test_oversized_frame_is_refused_from_its_header() -> None:
    with pytest.raises(FrameTooLarge):
        frame_length((5_000_001).to_bytes(4, "big"), 5_000_000)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ([1, 2], MalformedMessage),
        ({"v": 1, "method": "x"}, MalformedMessage),
        ({"v": 1, "id": True, "method": "x"}, MalformedMessage),
        ({"v": 1, "id": 1, "method": ""}, MalformedMessage),
        ({"v": 1, "id": 1, "method": "x", "params": [1]}, MalformedMessage),
        ({"v": 99, "id": 1, "method": "x"}, UnsupportedVersion),
        ({"id": 1, "method": "x"}, UnsupportedVersion),
    ],
)
def test_malformed_requests_raise_typed_errors(message: object, error: type[ControlError]) -> None:
    with pytest.raises(error):
        Request.from_wire(message)


def test_unsupported_version_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        Request.from_wire({"v": 2, "id": 4, "method": "daemon.status"})
    assert caught.value.data == {"supported": [1], "id": 4}


@given(st.binary(max_size=256))
def test_any_bytes_decode_or_raise_malformed(body: bytes) -> None:
    try:
        message = decode_body(body)
    except MalformedMessage:
        return
    try:
        Request.from_wire(message)
    except (MalformedMessage, UnsupportedVersion):
        pass


def test_non_string_map_keys_are_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_body(msgpack.packb({(1, 2): 3}))
    with pytest.raises(MalformedMessage):
        decode_body(msgpack.packb({1: 3}))


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_body(msgpack.packb({"a": 1}) + b"\x00")


def test_every_error_type_has_its_own_code() -> None:
    # ERROR_TYPES is keyed by code: two classes sharing one would silently lose a type on the wire.
    defined = {cls for cls in vars(protocol).values() if isinstance(cls, type) and issubclass(cls, ControlError)}
    assert set(ERROR_TYPES.values()) == defined - {ControlError}
    assert all(code == cls.code for code, cls in ERROR_TYPES.items())
