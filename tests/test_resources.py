"""One node-wide budget: fresh peer ids each within their own limits cannot add up to an exhausted node.

Unit tests of the accounting, then real hosts: a costly handler held busy, a flood of fresh
peers refused with ``rate_limited`` before their handler runs, and the budget given back.
"""

from __future__ import annotations

import os

import pytest
import trio

from peerlight.p2p import errors
from peerlight.p2p.client import Requester
from peerlight.p2p.host import listen_addresses, new_host, running
from peerlight.p2p.resources import ResourceLimits, ResourceManager
from peerlight.p2p.schema import Boolean, Field, Message, Spec
from peerlight.p2p.server import Protocol, ProtocolServer, Request

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
SLOW = Spec("test-slow", "1.0.0", Message({}), (Message({"done": Field(Boolean())}),), costly=True)
CHEAP = Spec("test-cheap", "1.0.0", Message({}), (Message({"ok_cheap": Field(Boolean())}),))


def test_peers_work_and_buffers_are_bounded_node_wide_and_per_peer() -> None:
    manager = ResourceManager(ResourceLimits(peers=2, work=4, buffer_bytes=100, buffer_bytes_per_peer=60))
    close_a, close_b = manager.open_stream("s", "a"), manager.open_stream("t", "b")  # two shares, one budget
    manager.open_stream("s", "c")()  # idle streams hold no peer slot
    with manager.request("a"), manager.request("b"):
        with pytest.raises(errors.RateLimited):
            with manager.request("c"):  # a third peer with a request running
                pass
        with manager.request("a"):  # a known peer may run more
            pass
    with manager.request("c"):
        pass
    close_b()
    with manager.work("a"), manager.work("a"):
        with pytest.raises(errors.RateLimited, match="at most 2"):  # alone, still at most half the slots
            with manager.work("a"):
                pass
    with manager.work("a"):
        with manager.work("b"):
            # Two peers ask: each gets its fair share (4 // 2 = 2), not all four slots.
            with manager.work("a"):
                with pytest.raises(errors.RateLimited, match="at most 2"):
                    with manager.work("a"):
                        pass
    with manager.buffer("a", 60):
        with pytest.raises(errors.RateLimited):
            with manager.buffer("a", 1):
                pass
        with manager.buffer("b", 40):
            with pytest.raises(errors.RateLimited):
                with manager.buffer("c", 1):
                    pass
    close_a()
    assert manager.describe() == {"peers": 0, "streams": 0, "work": 0, "buffer_bytes": 0, "refused": {"peers": 1, "work": 2, "buffers": 2}}


async def test_a_flood_of_fresh_peers_is_refused_before_any_work_and_the_budget_comes_back() -> None:
    started = 0
    release = trio.Event()

    async def slow(request: Request) -> dict:
        nonlocal started
        started += 1
        await release.wait()
        return {"done": True}

    async def cheap(request: Request) -> dict:
        return {"ok_cheap": True}

    server_host = new_host(os.urandom(32))
    manager = ResourceManager(ResourceLimits(peers=8, work=2))
    server = ProtocolServer([Protocol(SLOW, slow), Protocol(CHEAP, cheap)], resources=manager, name="share")
    server.attach(server_host)
    flooders = [new_host(os.urandom(32)) for _ in range(12)]
    outcomes: list[str] = []
    async with running(server_host, LOOPBACK):
        peer, addresses = str(server_host.get_id()), listen_addresses(server_host)
        async with trio.open_nursery() as nursery:
            for host in flooders:
                await nursery.start(_run_host, host)

            async def flood(host) -> None:  # type: ignore[no-untyped-def]
                try:
                    await Requester(host).request(peer, addresses, SLOW, {}, timeout=20)
                    outcomes.append("ok")
                except errors.WireError as exc:
                    outcomes.append(exc.code)

            async with trio.open_nursery() as asking:
                for host in flooders:
                    asking.start_soon(flood, host)
                with trio.fail_after(20):
                    while len(outcomes) < len(flooders) - 2:  # all but the two the work slots hold
                        await trio.sleep(0.05)
                assert started == 2  # no handler ran for a refused peer
                release.set()
            assert outcomes.count("ok") == 2 and outcomes.count("rate_limited") == len(flooders) - 2, outcomes
            assert manager.refused["work"] + manager.refused["peers"] == len(flooders) - 2
            # Everything is given back: a new peer is served at once.
            assert await Requester(flooders[0]).request(peer, addresses, CHEAP, {}) == {"ok_cheap": True}
            nursery.cancel_scope.cancel()
    assert manager.describe()["work"] == 0


async def _run_host(host, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    async with running(host, LOOPBACK):
        task_status.started()
        await trio.sleep_forever()
