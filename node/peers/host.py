"""The node's client host: one libp2p host with the node's own identity, which asks peers.

Grants are bound to that peer id, and paired devices know the node by it. The peers it asks
answer on the connection it opened, so it listens on loopback only, unless it punches holes
(``hole_punching``: a node on the global network, behind a NAT, that reaches shares behind
other NATs through relays): then it listens on every interface as well, for the direct
connection a punch makes (its TCP simultaneous open leaves from that port), announces none of
it, serves nothing there but libp2p's identify, ping and the punch's answers, and closes any
direct connection from a peer it is not punching with. Work that
outlives the request that started it (a catalog copied after ``peers add`` returned) runs in
the host's background nursery and ends with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from peerlight.p2p.client import Requester
from peerlight.p2p.errors import Unreachable
from peerlight.p2p.holepunch import hole_punching, inbound_only_from_punch_partners
from peerlight.p2p.host import new_host, running
from peerlight.p2p.listen import listen_multiaddrs

READY_SECONDS = 30.0  # how long a request waits for the host to come up (at the daemon's start)


def dht_entry(bootstrap: tuple[str, ...], known: list[Any]) -> list[str]:
    """Where the node enters the DHT: the configured bootstrap nodes, then the global shares it
    knows (each is a DHT server), two addresses of each."""
    return list(bootstrap) + [
        f"{address}/p2p/{remote.peer_id}" for remote in known if (remote.manifest or {}).get("scope") == "global" for address in remote.addresses[:2]
    ]


class PeerHost:
    def __init__(self, seed: bytes, hole_punching: bool = False, private_addresses: bool = False) -> None:
        self._seed = seed
        self._hole_punching = hole_punching
        self._private_addresses = private_addresses  # punch at private addresses too (a test network)
        self._requester: Requester | None = None
        self._ready = trio.Event()
        self._background: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._hole_punching:
            host = new_host(self._seed, announce=lambda candidates: [])
            listen = listen_multiaddrs("global", None)
        else:
            host, listen = new_host(self._seed), ["/ip4/127.0.0.1/tcp/0"]
        async with running(host, listen), self._punching(host), trio.open_nursery() as background:
            self._requester = Requester(host)
            self._background = background
            self._ready.set()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._requester = None
                self._background = None
                self._ready = trio.Event()
                background.cancel_scope.cancel()

    @asynccontextmanager
    async def _punching(self, host: Any) -> AsyncIterator[None]:
        if not self._hole_punching:
            yield
            return
        # The share that took the relayed connection starts; a stranger connecting directly is shut out.
        async with inbound_only_from_punch_partners(host), hole_punching(host, initiate=False, private=self._private_addresses):
            yield

    @asynccontextmanager
    async def joined_dht(self, entry: list[str]) -> AsyncIterator[Any]:
        """The DHT, joined as a client through ``entry`` by the node's host, for the block;
        ``Unreachable`` when there is nowhere to start from or no one there answers."""
        from peerlight.p2p.dht import bootstrap, running_dht

        if not entry:
            raise Unreachable("no DHT node to start from: set network.bootstrap, or add a global share with `peers add`")
        requester = await self.requester()
        async with running_dht(requester.host, server=False) as dht:
            if not await bootstrap(requester.host, dht, entry):
                raise Unreachable("no bootstrap node of the DHT answered")
            yield dht

    async def requester(self) -> Requester:
        """The host's requester, once it runs; Unreachable when it does not come up."""
        with trio.move_on_after(READY_SECONDS):
            await self._ready.wait()
        if self._requester is None:
            raise Unreachable("the node's network client is not running")
        return self._requester

    @property
    def running_requester(self) -> Requester | None:
        return self._requester

    def start_soon(self, work: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``work`` in the background while the host runs; False (not started) when it does not."""
        if self._background is None:
            return False
        self._background.start_soon(work, *args)
        return True
