"""Every workaround for py-libp2p 0.8.1, in one place, each with the defect it answers.

The daemon runs for weeks on this library, so its known defects (verified on this machine,
see ``docs/protocol.md`` and the project notes) are neutralised here rather than in the
code that uses a host. Each function names the defect; ``tests/test_p2p_host.py`` proves
each one is needed (the defect shows without it) or that the symptom is gone.

Nothing here edits the installed package: instance attributes and module constants only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

log = logging.getLogger("peerlight.p2p")

# Yamux frames: 4 Noise messages' worth of plaintext (65519 bytes each), within the default
# 256 KiB receive window. The default, 65536, is 17 bytes over one Noise message, so every
# frame became two messages (the second of 17 bytes): half the per-message overhead is gone.
YAMUX_FRAME_BYTES = 4 * 65519


def tune_bulk_transfer() -> None:
    """Faster streams: bigger Yamux frames (sender) and one window update per frame read (receiver).

    - ``MAX_MESSAGE_SIZE`` is looked up on every write, so the module constant is enough.
    - ``PY_YAMUX_RELEASE_ON_READ=1`` (the default) sends a window update for every ``read()``;
      off, credit is released per frame, which the Yamux spec allows. Read at stream creation.
    Measured: ~110-160 MB/s out of the box, ~440 MB/s with both (two processes, loopback).
    """
    import libp2p.stream_muxer.yamux.yamux as yamux

    yamux.MAX_MESSAGE_SIZE = YAMUX_FRAME_BYTES
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")


TCP_READ_BYTES = 256 * 1024


def buffered_tcp_reads() -> None:
    """One ``recv`` of up to 256 KiB serves many of the small reads above it.

    Noise reads each message as a 2-byte length and then its body, and Yamux each frame as a
    12-byte header and then its body, every one a ``recv`` syscall and a trip through trio.
    The TCP transport builds its streams from the module global ``TrioTCPStream`` at accept
    and dial time, so a subclass set there buffers every connection our hosts make or take.
    Measured with bulk fetches: the receiver, the limit, spends ~1/5 of its time fewer.
    """
    import libp2p.transport.tcp.tcp as tcp
    from libp2p.io.trio import TrioTCPStream

    if getattr(tcp.TrioTCPStream, "buffered", False):
        return

    class BufferedTCPStream(TrioTCPStream):  # type: ignore[misc]
        buffered = True

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self._chunk = b""
            self._offset = 0
            self._refill = trio.Lock()  # one refill at a time, or a second reader's would overwrite the first's

        def _take(self, n: int | None) -> bytes:
            start = self._offset
            end = len(self._chunk) if n is None else min(len(self._chunk), start + n)
            data = self._chunk if start == 0 and end == len(self._chunk) else self._chunk[start:end]
            self._offset = end
            if end >= len(self._chunk):
                self._chunk, self._offset = b"", 0
            return data

        async def read(self, n: int | None = None) -> bytes:
            if n == 0:
                return b""
            if self._offset < len(self._chunk):
                return self._take(n)  # no await: nothing can interleave
            async with self._refill:
                if self._offset < len(self._chunk):  # another reader refilled meanwhile
                    return self._take(n)
                chunk = await super().read(max(n or 0, TCP_READ_BYTES))
                if not chunk or n is None or len(chunk) <= n:
                    return chunk  # EOF, or all of it wanted: nothing kept
                self._chunk, self._offset = chunk, 0
                return self._take(n)

    tcp.TrioTCPStream = BufferedTCPStream


def no_dial_delay() -> None:
    """``connect()`` waited a fixed 250 ms (a happy-eyeballs head start it waits out even when the
    first dial succeeds at once). We dial one address at a time ourselves (:func:`dial_one`),
    so the head start has nothing to protect."""
    import libp2p.network.swarm as swarm

    swarm._HAPPY_EYEBALLS_DELAY = 0.0


def release_inbound_slots(swarm: Any) -> None:
    """Free an inbound connection's slot and task when the connection closes.

    Defect: the swarm's inbound handler waits for the *swarm* to finish after upgrading a
    connection ("intentional barrier"), holding an inbound slot and a trio task for the
    host's lifetime. After ``max_connections - min_connections`` (250) inbound connections
    ever, every new one is refused. Here the handler waits for the connection's own end.
    It replaces the library's handler for TCP only (what our hosts listen on), and skips its
    connection gate, which our hosts leave at its allow-everything default.
    """
    from libp2p.network.connection.raw_connection import RawConnection

    async def handle(read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        raw_conn = None
        try:
            raw_conn = RawConnection(read_write_closer, False)
            muxed = await swarm.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as exc:  # a failed handshake: the peer's problem, not ours
            log.debug("inbound connection failed its upgrade: %s", exc)
            with trio.move_on_after(1):
                try:
                    await (raw_conn or read_write_closer).close()
                except Exception:
                    pass
            return
        closed = getattr(muxed, "event_closed", None)
        if closed is None:  # not Yamux: keep the library's behaviour
            await swarm.manager.wait_finished()
        else:
            await closed.wait()

    swarm._do_handle_inbound_connection = handle


def forget_failed_dial(swarm: Any, peer_id: Any) -> None:
    """A failed dial puts the peer in a 60 s negative cache, so the next (good) address would be
    refused without being tried: forget the failure before trying the next one."""
    cache = getattr(swarm, "_negative_peer_cache", None)
    if cache is not None:
        cache.evict(str(peer_id))


def replace_addresses(host: Any, peer_id: Any, addresses: list[Any]) -> None:
    """The dialer tries one address per transport: a stale address in the peerstore makes
    ``connect()`` fail although a good one is known. So the peerstore holds exactly the
    address being dialled."""
    store = host.get_peerstore()
    store.clear_addrs(peer_id)
    store.add_addrs(peer_id, addresses, 3600)
