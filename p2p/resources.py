"""One node-wide budget for what peers may make the node spend, in the spirit of go-libp2p's
resource manager.

Limits per share and per peer are not enough on their own: peer IDs cost nothing to make, so
a thousand fresh ones each within its own limits add up to an exhausted node. Every share's
server draws from one :class:`ResourceManager`:

- **peers**: distinct peers with a request running node-wide (an idle stream holds none);
  a new one past the limit is refused before anything is done for it;
- **streams**: open streams, node-wide and per share;
- **work**: requests that cost CPU in threads the handler timeout cannot stop (an encoder pass
  for a text query, a scan, a decode for a preview): a few at once node-wide, and each peer
  at most its fair share of them (the limit divided among the peers asking, at least one,
  and never more than half of it); held while the answer is computed, not while it is sent;
- **buffers**: the read-ahead memory of running transfers, node-wide and per peer.

A refusal is :class:`~.errors.RateLimited` with a ``retry_after``: nothing waits in a queue a
flood could fill. Every refusal is counted (``describe``), so an operator can see a flood.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import RateLimited


@dataclass(frozen=True)
class ResourceLimits:
    peers: int = 256  # distinct peers with requests running, node-wide
    streams: int = 4096  # open streams, node-wide
    streams_per_share: int = 2048
    work: int = 4  # expensive requests running at once, node-wide
    buffer_bytes: int = 256 * 1024 * 1024  # transfers' read-ahead, node-wide
    buffer_bytes_per_peer: int = 32 * 1024 * 1024


class ResourceManager:
    """The node's budget; each share's server asks it before a stream, a costly request or a buffer."""

    def __init__(self, limits: ResourceLimits = ResourceLimits()) -> None:
        self.limits = limits
        self._peer_streams: Counter[str] = Counter()  # peer -> streams open, node-wide
        self._requests: Counter[str] = Counter()  # peer -> requests running, node-wide
        self._share_streams: Counter[str] = Counter()
        self._work: Counter[str] = Counter()  # peer -> expensive requests running
        self._buffers: Counter[str] = Counter()  # peer -> buffer bytes held
        self.refused: Counter[str] = Counter()  # what was refused, by kind

    def _refuse(self, kind: str, message: str) -> RateLimited:
        self.refused[kind] += 1
        return RateLimited(message, {"retry_after": 1, "limit": kind})

    def open_stream(self, share: str, peer_id: str) -> Callable[[], None]:
        """Take a stream slot for ``peer_id`` on ``share``; the function returned gives it back."""
        if sum(self._peer_streams.values()) >= self.limits.streams:
            raise self._refuse("streams", "the node has too many open streams; try again later")
        if self._share_streams[share] >= self.limits.streams_per_share:
            raise self._refuse("streams", "this share has too many open streams; try again later")
        self._peer_streams[peer_id] += 1
        self._share_streams[share] += 1

        def close() -> None:
            _release(self._peer_streams, peer_id, 1)
            _release(self._share_streams, share, 1)

        return close

    @contextmanager
    def request(self, peer_id: str) -> Iterator[None]:
        """Count ``peer_id`` among the peers served while one of its requests runs."""
        if peer_id not in self._requests and len(self._requests) >= self.limits.peers:
            raise self._refuse("peers", f"the node serves {self.limits.peers} peers at once; try again later")
        self._requests[peer_id] += 1
        try:
            yield
        finally:
            _release(self._requests, peer_id, 1)

    @contextmanager
    def work(self, peer_id: str) -> Iterator[None]:
        """Hold one of the node's few slots for expensive work, within ``peer_id``'s fair share."""
        running = sum(self._work.values())
        if running >= self.limits.work:
            raise self._refuse("work", "the node is busy answering other peers; try again shortly")
        asking = len(set(self._work) | {peer_id})  # peers with costly work running, this one included
        fair = max(1, min(self.limits.work // 2, self.limits.work // asking))
        if self._work[peer_id] >= fair:
            raise self._refuse("work", f"at most {fair} costly request{'s' if fair > 1 else ''} of one peer at a time")
        self._work[peer_id] += 1
        try:
            yield
        finally:
            _release(self._work, peer_id, 1)

    @contextmanager
    def buffer(self, peer_id: str, size: int) -> Iterator[None]:
        """Hold ``size`` bytes of the node's transfer buffers for ``peer_id``."""
        if sum(self._buffers.values()) + size > self.limits.buffer_bytes:
            raise self._refuse("buffers", "the node is sending as much as it can; try again shortly")
        if self._buffers[peer_id] + size > self.limits.buffer_bytes_per_peer:
            raise self._refuse("buffers", "too many transfers of one peer at once")
        self._buffers[peer_id] += size
        try:
            yield
        finally:
            _release(self._buffers, peer_id, size)

    def describe(self) -> dict[str, Any]:
        return {
            "peers": len(self._requests),
            "streams": sum(self._peer_streams.values()),
            "work": sum(self._work.values()),
            "buffer_bytes": sum(self._buffers.values()),
            "refused": dict(self.refused),
        }


def _release(counter: Counter[str], key: str, amount: int) -> None:
    counter[key] -= amount
    if counter[key] <= 0:
        del counter[key]
