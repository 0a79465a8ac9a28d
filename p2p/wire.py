"""Frames on a libp2p stream: an unsigned varint length, then that many bytes of msgpack.

The framing is the one libp2p's own protocols use (multiformats unsigned varint prefix), so
any implementation can read it. Every read has a size limit, checked from the length prefix
before a byte of the body is read, and a deadline; decoding accepts maps with string keys
only, never msgpack extension types, so a peer cannot make us build arbitrary objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import trio

from .errors import Malformed, Timeout, TooLarge

MAX_VARINT_BYTES = 9  # lengths up to 2**63: longer prefixes are malformed


class StreamClosed(Exception):
    """The other side closed its end (cleanly or not) before a whole frame arrived."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(value, bytes used) from the start of ``data``; None while it is incomplete."""
    value = shift = 0
    for used, byte in enumerate(data[:MAX_VARINT_BYTES], 1):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if used > 1 and byte == 0:
                raise Malformed("a varint with a redundant trailing byte")
            return value, used
        shift += 7
    if len(data) >= MAX_VARINT_BYTES:
        raise Malformed("a length prefix longer than 9 bytes")
    return None


def pack(message: dict[str, Any]) -> bytes:
    """One frame: the varint length and the msgpack body."""
    body = msgpack.packb(message, use_bin_type=True)
    return encode_varint(len(body)) + body


def packed_size(envelope: dict[str, Any], key: str, n: int) -> int:
    """The length of ``pack(envelope)`` with ``envelope[key]`` a bin of ``n`` bytes, computed
    without building it: msgpack's ``bin`` header grows at 256 and 65,536 bytes, the varint
    prefix at 128, 16,384, ..."""
    body = len(msgpack.packb(envelope | {key: b""}, use_bin_type=True)) + n + _bin_header(n) - _bin_header(0)
    return body + len(encode_varint(body))


def data_fitting(budget: int, envelope: dict[str, Any], key: str) -> int:
    """The most bytes ``envelope[key]`` can hold with the whole frame (prefix included) at most
    ``budget`` bytes long (0 when not even an empty one fits)."""
    n = max(0, budget - packed_size(envelope, key, 0) - 16)
    while n > 0 and packed_size(envelope, key, n) > budget:
        n -= 1
    while packed_size(envelope, key, n + 1) <= budget:
        n += 1
    return n if packed_size(envelope, key, n) <= budget else 0


def _bin_header(n: int) -> int:
    return 2 if n < 256 else 3 if n < 65536 else 5


def unpack(body: bytes | memoryview) -> dict[str, Any]:
    """A frame's body as a map with string keys, or :class:`Malformed`."""
    try:
        message = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
        )
    except Malformed:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise Malformed(f"not a msgpack message: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(message, dict):
        raise Malformed(f"a message must be a map, not {type(message).__name__}")
    return message


def _refuse_ext(code: int, data: bytes) -> Any:
    raise Malformed(f"msgpack extension types are not part of the protocol (type {code})")


class FrameReader:
    """Reads whole frames from a stream's ``read(n)``, keeping what arrives beyond a frame."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], read_size: int = 256 * 1024) -> None:
        self._read = read
        self._read_size = read_size
        self._buffer = bytearray()
        self.bytes_read = 0

    async def _fill(self) -> None:
        try:
            data = await self._read(self._read_size)
        except EOFError:
            data = b""
        except Exception as exc:  # StreamReset and friends: the peer or the connection is gone
            raise StreamClosed(f"{type(exc).__name__}: {exc}") from None
        if not data:
            raise StreamClosed("the stream ended")
        self.bytes_read += len(data)
        self._buffer += data

    async def _next(self, max_bytes: int, timeout: float) -> tuple[int, int]:
        """Wait until a whole frame is buffered: (body start, body length)."""
        with trio.move_on_after(timeout) as waited:
            while True:
                prefix = decode_varint(self._buffer)
                if prefix is not None:
                    break
                await self._fill()
            length, used = prefix
            if length > max_bytes:
                raise TooLarge(f"a frame of {length} bytes; at most {max_bytes} are accepted here", {"limit": max_bytes})
            while len(self._buffer) < used + length:
                await self._fill()
            return used, length
        assert waited.cancelled_caught
        raise Timeout(f"no whole frame within {timeout:g} s")

    async def frame(self, max_bytes: int, timeout: float) -> bytes:
        """The next frame's body. :class:`TooLarge` is raised from the prefix alone."""
        used, length = await self._next(max_bytes, timeout)
        body = bytes(memoryview(self._buffer)[used : used + length])
        del self._buffer[: used + length]
        return body

    async def message(self, max_bytes: int, timeout: float) -> dict[str, Any]:
        """The next frame, decoded straight from the buffer (a 1 MiB data frame is copied once, not three times)."""
        used, length = await self._next(max_bytes, timeout)
        view = memoryview(self._buffer)
        body = view[used : used + length]
        try:
            return unpack(body)
        finally:
            body.release()  # the buffer cannot shrink while a view of it exists
            view.release()
            del self._buffer[: used + length]
