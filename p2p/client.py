"""Asking a peer: open a stream for a protocol, send one request frame, read the answer.

The requester's side of :mod:`.server`. Every wait has a deadline, every frame a size
limit, and an error frame comes back as its :class:`~.errors.WireError` type, so a peer
that vanishes, stalls or misbehaves costs the caller at most the deadline it chose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from . import quirks, wire
from .errors import Malformed, Timeout, Unreachable, Unsupported, WireError, from_wire
from .host import connect
from .schema import REPLY_FRAME_BYTES, Spec

IDLE_SECONDS = 60.0  # a kept stream unused this long is closed (servers close theirs after 60 s too)


class Exchange:
    """One open stream to a peer: frames out, frames in."""

    def __init__(self, stream: Any, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout
        self.reader = wire.FrameReader(stream.read)

    async def send(self, message: dict[str, Any]) -> None:
        with trio.move_on_after(self.timeout) as waited:
            try:
                await self.stream.write(wire.pack(message))
            except Exception as exc:
                raise Unreachable(f"the peer closed the stream: {type(exc).__name__}: {exc}") from None
        if waited.cancelled_caught:
            raise Timeout(f"the peer took no data for {self.timeout:g} s")

    async def aclose(self) -> None:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            try:
                await self.stream.reset()
            except Exception:
                pass

    async def receive(self, max_bytes: int = REPLY_FRAME_BYTES) -> dict[str, Any]:
        """The next frame; an error frame is raised as its type."""
        try:
            message = await self.reader.message(max_bytes, self.timeout)
        except wire.StreamClosed as exc:
            raise Unreachable(f"the peer closed the stream: {exc}") from None
        if message.get("ok") is False:
            raise from_wire(message.get("error"))
        return message


class Requester:
    """The requester's side of one host: requests and replies, over streams kept open for reuse.

    A stream stays open after its reply and carries the next request to the same peer and
    protocol (the server answers requests on a stream one after another), so a round trip
    costs one frame each way, not a new stream's negotiation. A reused stream the server has
    closed meanwhile (idle, restarted) is replaced once, transparently: every protocol here
    is a read, safe to repeat.
    """

    def __init__(self, host: Any, max_idle_per_peer: int = 4, idle_seconds: float = IDLE_SECONDS) -> None:
        self.host = host
        self._idle: dict[tuple[str, str], list[Exchange]] = {}
        self._used: dict[tuple[str, str], float] = {}  # when each kept stream was last put back
        self._max_idle = max_idle_per_peer
        self._idle_seconds = idle_seconds

    async def request(self, peer_id: str, addresses: Sequence[str], spec: Spec, body: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
        """One request, its one-frame answer (without the ``ok`` field), checked against the
        protocol's schema: only the fields it defines, each valid, are kept. A reply that
        announces more frames is refused at its first: no more than one frame is ever held."""
        frames = [frame async for frame in self.frames(peer_id, addresses, spec, body, timeout=timeout, max_frames=1)]
        return spec.keep_reply(frames[0])

    async def frames(
        self,
        peer_id: str,
        addresses: Sequence[str],
        spec: Spec,
        body: dict[str, Any],
        *,
        timeout: float = 10.0,
        max_frames: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The frames of one reply (without ``ok`` and ``more``), in order, each at most the
        protocol's ``max_reply_bytes``; a reply that goes on past ``max_frames`` is refused
        (Malformed) before the next frame is read. The caller checks each frame against the
        schema (which of a streamed answer's messages it is depends on where it comes).

        Iterate it to the end, or under ``contextlib.aclosing`` when stopping early: a stream
        left mid-reply is reset, never reused.
        """
        protocol_id, max_bytes = spec.id, spec.max_reply_bytes
        key = (peer_id, protocol_id)
        await self._drop_stale()
        for attempt in (1, 2):
            idle = self._idle.get(key) or []
            reused = bool(idle) and attempt == 1
            current = idle.pop() if reused else await self._open(peer_id, addresses, protocol_id, timeout)
            current.timeout = timeout
            received = 0
            finished = False
            try:
                await current.send(body)
                while True:
                    frame = await current.receive(max_bytes)
                    received += 1
                    more = frame.pop("more", False) is True
                    if received == 1 and frame.pop("ok", None) is not True:
                        raise Malformed("a reply without ok: true")
                    frame.pop("ok", None)
                    if not more:
                        finished = True
                    elif max_frames is not None and received >= max_frames:
                        raise Malformed(f"a reply of more than {max_frames} frame{'s' if max_frames > 1 else ''} where {max_frames} {'were' if max_frames > 1 else 'was'} expected")
                    yield frame
                    if finished:
                        break
            except Unreachable:
                await current.aclose()
                if reused and received == 0:
                    continue  # the server closed the idle stream: once more on a new one
                raise
            except WireError as error:
                # The server's error frame ends the reply; the stream stays usable unless the server
                # closes it: after a framing error (a malformed with no field named), too_large or rate_limited.
                framing = error.code in ("too_large", "rate_limited", "timeout") or (isinstance(error, Malformed) and "field" not in error.data)
                if received == 0 and not framing:
                    await self._keep(key, current)
                else:
                    await current.aclose()
                raise
            except BaseException:
                await current.aclose()
                raise
            else:
                await self._keep(key, current)
            return

    async def _open(self, peer_id: str, addresses: Sequence[str], protocol_id: str, timeout: float) -> Exchange:
        """A new stream; a connection that has died unnoticed (the peer restarted, or stopped without
        closing its sockets) is dropped and dialled again, once."""
        from libp2p.peer.id import ID

        for attempt in (1, 2):
            reused = await connect(self.host, peer_id, addresses, timeout) == ""  # checks the peer id: Unreachable if bad
            target = ID.from_base58(peer_id)
            with trio.move_on_after(timeout) as waited:
                try:
                    return Exchange(await self.host.new_stream(target, [protocol_id]), timeout)
                except Exception as exc:
                    if quirks.refused_protocol(exc):
                        raise Unsupported(f"{peer_id} does not speak {protocol_id}") from None
                    if not (reused and attempt == 1):
                        raise Unreachable(f"cannot open a stream to {peer_id}: {type(exc).__name__}: {exc}") from None
            if waited.cancelled_caught and not (reused and attempt == 1):
                raise Timeout(f"no stream to {peer_id} within {timeout:g} s")
            with trio.move_on_after(2):
                try:
                    await self.host.disconnect(target)
                except Exception:
                    pass
        raise AssertionError("unreachable")  # pragma: no cover

    async def _keep(self, key: tuple[str, str], current: Exchange) -> None:
        idle = self._idle.setdefault(key, [])
        self._used[key] = trio.current_time()
        if len(idle) < self._max_idle:
            idle.append(current)
        else:
            await current.aclose()

    async def _drop_stale(self) -> None:
        """Close streams kept longer than the server keeps them (it closes idle ones): peers met
        once, strangers found by discovery among them, do not stay in memory for the node's life."""
        now = trio.current_time()
        stale = [key for key, used in self._used.items() if now - used > self._idle_seconds]
        closing = []  # taken out before the first await: another request may sweep meanwhile
        for key in stale:
            self._used.pop(key, None)
            closing += self._idle.pop(key, [])
        for current in closing:
            await current.aclose()

    async def forget(self, peer_id: str) -> None:
        """Drop idle streams to ``peer_id`` (it went away, or changed address)."""
        closing = []
        for key in [key for key in self._idle if key[0] == peer_id]:
            self._used.pop(key, None)
            closing += self._idle.pop(key, [])
        for current in closing:
            await current.aclose()
