"""A swarm of Kademlia DHT servers, for tests: ``python tests/dht_swarm.py N [IP]`` (loopback by default).

Prints one line of JSON, the full multiaddrs of its nodes, once they all know each other,
then serves until its standard input closes. Run it only inside a network namespace of
the test's own making, with the daemons that use it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import AsyncExitStack
from typing import Any

import trio

from peerlight.p2p.dht import bootstrap, running_dht
from peerlight.p2p.host import listen_addresses, new_host, running
from peerlight.p2p.reachability import serve_autonat


async def start_swarm(stack: AsyncExitStack, count: int, ip: str = "127.0.0.1") -> tuple[list[Any], list[Any]]:
    """``count`` DHT servers listening on ``ip``, running until ``stack`` closes: (hosts, DHTs).

    Each node joins through one that joined before it (a tree): a lookup must hop to cross it.
    """
    hosts, dhts = [], []
    for _ in range(count):
        host = new_host(os.urandom(32))
        serve_autonat(host)  # as public bootstrap nodes do: they dial back whoever asks
        await stack.enter_async_context(running(host, [f"/ip4/{ip}/tcp/0"]))
        hosts.append(host)
        dhts.append(await stack.enter_async_context(running_dht(host, server=True)))
    for i in range(1, count):
        await bootstrap(hosts[i], dhts[i], listen_addresses(hosts[(i - 1) // 2]))
    return hosts, dhts


async def main(count: int, ip: str) -> None:
    logging.disable(logging.WARNING)
    async with AsyncExitStack() as stack:
        hosts, _ = await start_swarm(stack, count, ip)
        print(json.dumps([listen_addresses(host)[0] for host in hosts]), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1")
