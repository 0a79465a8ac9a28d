"""Serving Peerlight's protocols on a host: one request frame in, one or more frames out.

Every inbound stream goes through :meth:`ProtocolServer.serve_stream`, the single place
where a request is limited (streams per peer, requests per minute, frame size, deadlines),
decoded, dispatched and answered, and where failures become typed error frames and are
counted. A handler raises :class:`~.errors.WireError` subclasses; anything else is an
internal error, logged with its traceback, and the server keeps serving.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from contextlib import aclosing, nullcontext
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from . import wire
from .errors import Internal, RateLimited, Timeout, WireError
from .resources import ResourceManager
from .schema import Spec

log = logging.getLogger("peerlight.p2p")

Reply = dict[str, Any] | AsyncIterator[dict[str, Any]]


class Permit:
    """What a gate let one request do. ``charge`` is told each reply frame's size before it is
    sent, and raises a :class:`~.errors.WireError` to stop the reply (a byte limit reached, a
    grant revoked while a transfer runs)."""

    grant_id: str | None = None  # the grant it was let in by, if any

    def charge(self, size: int) -> None:
        return None

    def remaining(self) -> int | None:
        """Bytes it may still be sent (None: no limit), so a transfer can end exactly on a limit."""
        return None


OPEN = Permit()


@dataclass(frozen=True)
class Request:
    peer_id: str
    protocol: str
    body: dict[str, Any]  # checked against the protocol's schema, defaults filled in
    permit: Permit = OPEN  # what the gate let it do (set before the handler runs)


Handler = Callable[[Request], Awaitable[dict[str, Any]] | AsyncIterator[dict[str, Any]]]


class Gate(typing.Protocol):
    """The one place that decides whether a request may be answered at all (before its handler)."""

    async def admit(self, request: Request) -> Permit: ...


@dataclass(frozen=True)
class Protocol:
    """A protocol of the schema and the handler that answers it."""

    spec: Spec
    handler: Handler

    @property
    def id(self) -> str:
        return self.spec.id


REFUSALS_LOGGED_PER_MINUTE = 120
SWEEP_SECONDS = 60.0  # at most this often, a stream's end also forgets other quiet peers


@dataclass(frozen=True)
class Limits:
    streams_per_peer: int = 16  # open streams at once
    requests_per_minute: int = 1200  # per peer, refilled continuously
    request_timeout: float = 10.0  # to receive the request frame
    write_timeout: float = 30.0  # for the peer to take one frame of the answer
    handler_timeout: float = 60.0  # for a unary answer to be computed
    idle_timeout: float = 60.0  # a stream with no new request is closed after this


@dataclass(eq=False)
class _Running:
    """A reply being made: its cancel scope, whether a frame is being written, and why it was stopped."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    writing: bool = False
    refusal: WireError | None = None
    permit: Permit = OPEN


class _Bucket:
    """A token bucket: ``rate`` per minute, bursts up to a minute's worth."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.rate = per_minute / 60.0
        self.stamp = time.monotonic()

    def full(self) -> bool:
        """Refilled to capacity: the peer has been quiet long enough to be forgotten."""
        return self.tokens + (time.monotonic() - self.stamp) * self.rate >= self.capacity

    def take(self) -> float:
        """0 if a request may go now, else the seconds until it may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class ProtocolStats:
    requests: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_in: int = 0
    bytes_out: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def describe(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def quantile(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3) if ordered else None

        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99)},
        }


class ProtocolServer:
    """The protocols of one host, their limits and their counters."""

    def __init__(
        self,
        protocols: list[Protocol],
        limits: Limits = Limits(),
        gate: Gate | None = None,
        resources: ResourceManager | None = None,
        name: str = "",
    ) -> None:
        self.protocols = {protocol.id: protocol for protocol in protocols}
        self.limits = limits
        self.gate = gate
        # The node-wide budget every share's server draws from (a server of its own when alone).
        self.resources = resources if resources is not None else ResourceManager()
        self.name = name
        self.stats: dict[str, ProtocolStats] = {pid: ProtocolStats() for pid in self.protocols}
        self._streams: dict[str, int] = defaultdict(int)
        self._buckets: dict[str, _Bucket] = {}
        self._cancels: dict[str, set[_Running]] = defaultdict(set)
        self._log_budget = _Bucket(REFUSALS_LOGGED_PER_MINUTE)
        self._unlogged = 0  # refusals counted but not logged since the last one logged
        self._swept = time.monotonic()

    def attach(self, host: Any) -> None:
        for protocol_id in self.protocols:
            host.set_stream_handler(protocol_id, self._stream_handler(protocol_id))

    def _stream_handler(self, protocol_id: str) -> Callable[[Any], Awaitable[None]]:
        async def handle(stream: Any) -> None:
            await self.serve_stream(stream, protocol_id)

        return handle

    def cancel_peer(self, peer_id: str, refusal: WireError | None = None, grant_id: str | None = None) -> int:
        """Stop every request ``peer_id`` has running (e.g. its access was revoked); with
        ``grant_id``, only those let in by that grant (the peer's others go on).

        With a ``refusal``, each reply ends with that error frame, so the peer learns why
        instead of seeing a cut it would take for a network drop: a reply waiting in its
        handler is cancelled at once; one in the middle of writing a frame finishes that frame
        and meets the refusal before its next (a frame is never cut in two)."""
        replies = [r for r in self._cancels.get(peer_id, ()) if grant_id is None or r.permit.grant_id == grant_id]
        for reply in replies:
            reply.refusal = refusal
            if refusal is None or not reply.writing:
                reply.scope.cancel()
        return len(replies)

    def _forget_quiet_peers(self) -> None:
        """Drop the rate state of peers with no stream whose allowance has refilled.

        A peer's state is kept only while it matters: peers come and go for weeks. One whose
        last stream closed before its allowance refilled is forgotten by a later sweep (on a
        stream's end, at most every SWEEP_SECONDS, and whenever the stats are read)."""
        self._swept = time.monotonic()
        for peer_id in [peer for peer, bucket in self._buckets.items() if peer not in self._streams and bucket.full()]:
            del self._buckets[peer_id]

    def describe(self) -> dict[str, Any]:
        self._forget_quiet_peers()
        return {
            "protocols": {pid.rsplit("/", 2)[-2]: stats.describe() for pid, stats in self.stats.items()},
            "streams_open": sum(self._streams.values()),
        }

    async def serve_stream(self, stream: Any, protocol_id: str) -> None:
        """Answer requests on ``stream`` one after another until the peer closes it or goes idle.

        A stream carries any number of requests, each answered before the next is read, so a
        client pays the stream's set-up (~4 ms here) once, not per request. After a framing
        error (a frame too large or not msgpack) the stream's position is unknown: it is closed.
        """
        peer_id = str(stream.muxed_conn.peer_id)
        stats = self.stats[protocol_id]
        try:
            close_slot = self.resources.open_stream(self.name, peer_id)
        except RateLimited as refusal:  # the node's budget, before anything is read or done
            self._count_error(stats, refusal, peer_id, protocol_id)
            with trio.move_on_after(1):
                try:
                    await self._send(stream, refusal.to_wire(), stats)
                    await stream.close()
                except Exception:  # the peer is gone already: nothing to tell it
                    pass
            return
        self._streams[peer_id] += 1
        reader = wire.FrameReader(stream.read)
        counted = 0  # bytes of the stream already added to the stats
        try:
            while True:
                try:
                    body = await self._next_request(reader, peer_id, protocol_id)
                except (wire.StreamClosed, Timeout):
                    return  # the peer is done with the stream, or idle
                except WireError as error:
                    self._count_error(stats, error, peer_id, protocol_id)
                    await self._send(stream, error.to_wire(), stats)
                    return
                if body is None:
                    return
                stats.bytes_in += reader.bytes_read - counted
                counted = reader.bytes_read
                if not await self._serve_request(stream, peer_id, protocol_id, body, stats):
                    return
        except wire.StreamClosed:
            stats.errors["closed"] += 1
        finally:
            close_slot()
            stats.bytes_in += reader.bytes_read - counted
            self._streams[peer_id] -= 1
            if not self._streams[peer_id]:
                del self._streams[peer_id]
                bucket = self._buckets.get(peer_id)
                if bucket is not None and bucket.full():
                    del self._buckets[peer_id]
                if time.monotonic() - self._swept > SWEEP_SECONDS:
                    self._forget_quiet_peers()
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                try:
                    await stream.close()
                except Exception:
                    pass

    async def _next_request(self, reader: wire.FrameReader, peer_id: str, protocol_id: str) -> dict[str, Any] | None:
        protocol = self.protocols[protocol_id]
        if self._streams[peer_id] > self.limits.streams_per_peer:
            raise RateLimited(f"at most {self.limits.streams_per_peer} streams at once per peer", {"retry_after": 1})
        first = reader.bytes_read == 0
        try:
            body = await reader.message(protocol.spec.max_request_bytes, self.limits.request_timeout if first else self.limits.idle_timeout)
        except wire.StreamClosed:
            return None
        bucket = self._buckets.setdefault(peer_id, _Bucket(self.limits.requests_per_minute))
        wait = bucket.take()
        if wait:
            raise RateLimited(f"at most {self.limits.requests_per_minute} requests a minute", {"retry_after": round(wait, 3)})
        return body

    async def _serve_request(self, stream: Any, peer_id: str, protocol_id: str, body: dict[str, Any], stats: ProtocolStats) -> bool:
        """Answer one request; False when the stream cannot carry another."""
        started = time.perf_counter()
        stats.requests += 1
        running = _Running()
        self._cancels[peer_id].add(running)
        try:
            with running.scope:
                try:
                    await self._answer(stream, Request(peer_id, protocol_id, body), stats, running)
                    return True
                except WireError as error:
                    self._count_error(stats, error, peer_id, protocol_id)
                    await self._send(stream, error.to_wire(), stats)
                    return True
                except wire.StreamClosed:
                    raise
                except Exception as exc:
                    stats.errors["internal"] += 1
                    log.exception("request failed", extra={"peer": peer_id, "protocol": protocol_id})
                    await self._send(stream, Internal(f"the server failed: {type(exc).__name__}").to_wire(), stats)
                    return True
            if running.refusal is not None:  # cancelled between frames: the peer is told why
                self._count_error(stats, running.refusal, peer_id, protocol_id)
                with trio.move_on_after(self.limits.write_timeout):
                    await self._send(stream, running.refusal.to_wire(), stats)
                return True
            stats.errors["cancelled"] += 1  # shutting down: the reply is cut short
            return False
        finally:
            stats.latencies.append(time.perf_counter() - started)
            self._cancels[peer_id].discard(running)
            if not self._cancels[peer_id]:
                del self._cancels[peer_id]

    def _count_error(self, stats: ProtocolStats, error: WireError, peer_id: str, protocol_id: str) -> None:
        """Count a refusal; log it unless refusals come faster than the log's own budget (a flood
        of fresh peers must not turn into a flood of log lines: disk, CPU, a blocked stderr)."""
        stats.errors[error.code] += 1
        if self._log_budget.take():
            self._unlogged += 1
            return
        extra = {"peer": peer_id, "protocol": protocol_id, "code": error.code, "reason": error.message}
        if self._unlogged:
            extra["not_logged_before"], self._unlogged = self._unlogged, 0
        log.info("request refused", extra=extra)

    async def _answer(self, stream: Any, request: Request, stats: ProtocolStats, running: _Running | None = None) -> None:
        """The reply: one frame, or several of which all but the last say ``more: true``.

        The gate is asked first, here and nowhere else: no handler checks permissions itself.
        Then the request is checked against its protocol's schema: the handler sees only fields
        of the types and within the limits the schema gives, with defaults filled in."""
        with self.resources.request(request.peer_id):  # a new peer past the node's budget: refused here
            permit = OPEN if self.gate is None else await self.gate.admit(request)
            checked = self.protocols[request.protocol].spec.check_request(request.body)
            request = dataclasses.replace(request, body=checked, permit=permit)
            if running is not None:
                running.permit = permit
            buffer_bytes = self.protocols[request.protocol].spec.buffer_bytes
            with self.resources.buffer(request.peer_id, buffer_bytes) if buffer_bytes else nullcontext():
                await self._reply(stream, request, stats, permit, running)

    async def _reply(self, stream: Any, request: Request, stats: ProtocolStats, permit: Permit, running: _Running | None) -> None:
        protocol = self.protocols[request.protocol]
        with self.resources.work(request.peer_id) if protocol.spec.costly else nullcontext():
            reply = protocol.handler(request)
            if inspect.isawaitable(reply):
                with trio.move_on_after(self.limits.handler_timeout) as waited:
                    answer = await reply
                if waited.cancelled_caught:
                    raise Timeout(f"the answer took longer than {self.limits.handler_timeout:g} s")
        if inspect.isawaitable(reply):  # computed: the work slot is free while a slow reader takes it
            await self._send(stream, {"ok": True, **answer}, stats, permit, running)
            return
        if not inspect.isasyncgen(reply):
            raise TypeError(f"handler of {request.protocol} returned {type(reply).__name__}")
        async with aclosing(reply) as frames:
            pending: dict[str, Any] | None = None
            try:
                async for frame in frames:
                    if pending is not None:
                        await self._send(stream, {"ok": True, **pending, "more": True}, stats, permit, running)
                    pending = frame
            except WireError:
                # The handler ends the answer with an error: the frame it made before goes first
                # (a transfer cut at a byte limit delivers its last, shortened frame).
                if pending is not None:
                    await self._send(stream, {"ok": True, **pending, "more": True}, stats, permit, running)
                raise
            await self._send(stream, {"ok": True, **(pending or {})}, stats, permit, running)

    async def _send(self, stream: Any, message: dict[str, Any], stats: ProtocolStats, permit: Permit = OPEN, running: _Running | None = None) -> None:
        if running is not None and running.refusal is not None:
            raise running.refusal
        data = wire.pack(message)
        permit.charge(len(data))
        with trio.move_on_after(self.limits.write_timeout) as waited:
            try:
                if running is not None:
                    running.writing = True
                await stream.write(data)
            except Exception as exc:
                raise wire.StreamClosed(f"{type(exc).__name__}: {exc}") from None
            finally:
                if running is not None:
                    running.writing = False
        if waited.cancelled_caught:
            raise wire.StreamClosed(f"the peer took no data for {self.limits.write_timeout:g} s")
        stats.bytes_out += len(data)

