"""Provider lookups on a Kademlia DHT of 10, 20 and 50 nodes on loopback (one process).

Each node joins through one that joined before it (a tree, so lookups must hop; the
join time includes starting the nodes); the last
node provides the Peerlight key; every other node then looks it up, and a second key that
nobody provides is looked up too (the cost of a miss: the whole walk). Reports the median
and worst lookup times, and how many nodes found the provider. py-libp2p does not report a
lookup's hops; the routing table sizes say how much of the swarm each node knows.

    python bench/dht_lookup.py [--sizes 10,20,50]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from peerlight.p2p.dht import PEERLIGHT_KEY, find_providers, provider_key  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dht_swarm import start_swarm  # noqa: E402


async def measure(count: int) -> dict[str, float]:
    async with AsyncExitStack() as stack:
        started = time.perf_counter()
        hosts, dhts = await start_swarm(stack, count)
        joined = time.perf_counter() - started
        started = time.perf_counter()
        await dhts[-1].provide(PEERLIGHT_KEY)
        provide = time.perf_counter() - started
        times, found = [], 0
        for dht in dhts[:-1]:
            started = time.perf_counter()
            providers = await find_providers(dht, PEERLIGHT_KEY)
            times.append(time.perf_counter() - started)
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
