"""Provider lookups on a Kademlia DHT of 10, 20 and 50 nodes on loopback (one process).

Each node joins through one that joined before it (a tree, so lookups must hop; the
join time includes starting the nodes); the last
node provides the Peerlight key; every other node then looks it up, and a second key that
nobody provides is looked up too (the cost of a miss: the whole walk). Reports the median
and worst lookup times, how many nodes found the provider, and a lookup's hops and messages:
py-libp2p does not report them, so the looking node's two kinds of query (FIND_NODE while it
walks towards the key, GET_PROVIDERS once near it) are counted as they are sent. A hop is a
round of the iterative lookup: queries that start when none is in flight (each round waits
for all of its queries, up to ALPHA = 3 at once, before the next one starts).

    python bench/dht_lookup.py [--sizes 10,20,50]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from peerlight.p2p.dht import PEERLIGHT_KEY, find_providers, provider_key  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dht_swarm import start_swarm  # noqa: E402


class LookupCounter:
    """Counts a DHT node's outgoing lookup queries and the rounds they come in (instrumentation)."""

    def __init__(self, dht: Any) -> None:
        self.queries = self.rounds = self._in_flight = 0
        routing, providers = dht.peer_routing, dht.provider_store
        routing._query_single_peer_for_closest = self._counted(routing._query_single_peer_for_closest)
        providers._get_providers_from_peer_with_closers = self._counted(providers._get_providers_from_peer_with_closers)

    def _counted(self, query: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            if not self._in_flight:
                self.rounds += 1
            self.queries += 1
            self._in_flight += 1
            try:
                return await query(*args, **kwargs)
            finally:
                self._in_flight -= 1

        return counted

    def take(self) -> tuple[int, int]:
        figures = (self.rounds, self.queries)
        self.rounds = self.queries = 0
        return figures


async def measure(count: int) -> dict[str, float]:
    async with AsyncExitStack() as stack:
        started = time.perf_counter()
        hosts, dhts = await start_swarm(stack, count)
        joined = time.perf_counter() - started
        started = time.perf_counter()
        await dhts[-1].provide(PEERLIGHT_KEY)
        provide = time.perf_counter() - started
        times, hops, queries, found = [], [], [], 0
        for dht in dhts[:-1]:
            counter = LookupCounter(dht)
            started = time.perf_counter()
            providers = await find_providers(dht, PEERLIGHT_KEY)
            times.append(time.perf_counter() - started)
            rounds, sent = counter.take()
            hops.append(rounds)
            queries.append(sent)
            found += str(hosts[-1].get_id()) in providers
        started = time.perf_counter()
        await find_providers(dhts[0], provider_key("nobody provides this"))
        miss = time.perf_counter() - started
        tables = [dht.get_routing_table_size() for dht in dhts]
        return {
            f"n{count}_join_s": round(joined, 2),
            f"n{count}_provide_ms": round(provide * 1000, 1),
            f"n{count}_lookup_p50_ms": round(statistics.median(times) * 1000, 1),
            f"n{count}_lookup_max_ms": round(max(times) * 1000, 1),
            f"n{count}_found": f"{found}/{count - 1}",
            f"n{count}_hops_p50": statistics.median(hops),
            f"n{count}_hops_max": max(hops),
            f"n{count}_queries_p50": statistics.median(queries),
            f"n{count}_miss_ms": round(miss * 1000, 1),
            f"n{count}_routing_table_median": statistics.median(tables),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,20,50")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    figures: dict[str, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        figures |= trio.run(measure, size)
    emit("dht_lookup", **figures)


if __name__ == "__main__":
    main()
