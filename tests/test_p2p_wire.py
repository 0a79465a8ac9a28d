"""The wire decoders: every byte string gets a typed error or a message, never a crash."""

from __future__ import annotations

import msgpack
import pytest
import trio
from hypothesis import given, settings, strategies as st

from peerlight.p2p import errors, wire


class _Chunks:
    """A stream whose reads return the given pieces, then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def read(self, n: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""


def test_varints_round_trip_and_refuse_nonsense() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**62):
        encoded = wire.encode_varint(value)
        assert wire.decode_varint(encoded) == (value, len(encoded))
        assert wire.decode_varint(encoded[:-1]) is None or len(encoded) == 1
    with pytest.raises(errors.Malformed):
        wire.decode_varint(b"\xff" * 10)
    with pytest.raises(errors.Malformed):
        wire.decode_varint(b"\x80\x00")  # redundant trailing zero byte


@given(st.binary(max_size=200))
@settings(max_examples=400, deadline=None)
def test_no_body_crashes_the_decoder(body: bytes) -> None:
    try:
        message = wire.unpack(body)
    except errors.Malformed:
        return
    assert isinstance(message, dict) and all(isinstance(key, str) for key in message)


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=40), st.text(max_size=20), st.lists(st.floats(allow_nan=False), max_size=5)), max_size=6))
@settings(max_examples=200, deadline=None)
def test_messages_round_trip(message: dict) -> None:
    frame = wire.pack(message)
    length, used = wire.decode_varint(frame)
    assert length == len(frame) - used
    assert wire.unpack(frame[used:]) == message


def test_extension_types_and_non_maps_are_refused() -> None:
    with pytest.raises(errors.Malformed, match="extension"):
        wire.unpack(msgpack.packb({"a": msgpack.ExtType(5, b"x")}))
    with pytest.raises(errors.Malformed, match="map"):
        wire.unpack(msgpack.packb([1, 2]))
    with pytest.raises(errors.Malformed):
        wire.unpack(msgpack.packb({1: "integer key"}))


async def test_frames_are_reassembled_from_any_split() -> None:
    frames = wire.pack({"a": 1}) + wire.pack({"b": b"x" * 1000})
    pieces = [frames[i : i + 7] for i in range(0, len(frames), 7)]
    reader = wire.FrameReader(_Chunks(pieces).read)
    assert await reader.message(10_000, 5) == {"a": 1}
    assert await reader.message(10_000, 5) == {"b": b"x" * 1000}
    with pytest.raises(wire.StreamClosed):
        await reader.message(10_000, 5)


async def test_an_oversized_frame_is_refused_from_its_prefix() -> None:
    reader = wire.FrameReader(_Chunks([wire.encode_varint(10**9)]).read)
    with pytest.raises(errors.TooLarge) as caught:
        await reader.message(64 * 1024, 5)
    assert caught.value.data == {"limit": 64 * 1024}


async def test_a_stalled_frame_times_out() -> None:
    async def never(n: int) -> bytes:
        await trio.sleep_forever()
        return b""

    reader = wire.FrameReader(never)
    with pytest.raises(errors.Timeout):
        await reader.message(100, 0.05)


@given(st.binary(max_size=300), st.integers(1, 50))
@settings(max_examples=300, deadline=None)
def test_no_byte_stream_crashes_the_frame_reader(data: bytes, split: int) -> None:
    async def read_all() -> None:
        reader = wire.FrameReader(_Chunks([data[i : i + split] for i in range(0, len(data), split)]).read)
        while True:
            try:
                await reader.message(128, 5)
            except (wire.StreamClosed, errors.Malformed, errors.TooLarge):
                return

    trio.run(read_all)


def test_error_frames_map_to_types() -> None:
    for cls in errors.ERRORS.values():
        frame = cls("why", {"n": 1}).to_wire()
        decoded = errors.from_wire(wire.unpack(wire.pack(frame)[1:])["error"])
        assert type(decoded) is cls and decoded.message == "why" and decoded.data == {"n": 1}
    assert isinstance(errors.from_wire({"code": "from_the_future", "message": "x"}), errors.Internal)
    assert isinstance(errors.from_wire("nonsense"), errors.Malformed)
