"""A host behind a relay, against the same host dialled directly: time to the first byte and throughput.

Three libp2p hosts on loopback: A (the "home" host, reserved on the relay R, serving a test
protocol that sends N bytes), B (dials A directly: the baseline) and C (dials A through R's
circuit, as a peer reaches a host behind a NAT). R runs in a child process of its own, so its
CPU time per GB relayed is read from ``/proc``. A and the diallers share this process; both
runs pay the same for their two ends, so the ratio shows what the relay hop costs.

Figures: time from dialling to the first byte of an answer (connection, Noise, Yamux, stream
negotiation; through the relay also the reservation lookup and the STOP exchange), MB/s of a
single stream, the relayed/direct ratio, and the relay's CPU seconds per GB.

    python bench/nat.py [--megabytes 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from peerlight.p2p.host import connect, listen_addresses, new_host, running  # noqa: E402
from peerlight.p2p.relay import RelayLimits, Reservations, circuit_address, relay_service  # noqa: E402

BLOB = "/bench/blob/1.0.0"
CHUNK = 256 * 1024


async def serve_relay() -> None:
    """The child: a relay with no byte or time limit, until its standard input closes."""
    host = new_host(os.urandom(32))
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]), relay_service(host, RelayLimits(circuit_bytes=0, circuit_seconds=0)):
        print(listen_addresses(host)[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def send_blob(stream: Any) -> None:
    size = int((await stream.read(32)).decode())
    block = os.urandom(CHUNK)
    for start in range(0, size, CHUNK):
        await stream.write(block[: min(CHUNK, size - start)])
    await stream.close()


async def fetch(dialler: Any, target: Any, addresses: list[str], size: int) -> tuple[float, float]:
    """(seconds to the first byte, MB/s) of ``size`` bytes from ``target`` reached at ``addresses``."""
    started = time.perf_counter()
    await connect(dialler, str(target.get_id()), addresses)
    stream = await dialler.new_stream(target.get_id(), [BLOB])
    await stream.write(str(size).encode())
    received = len(await stream.read(CHUNK))
    first_byte = time.perf_counter() - started
    flowing = time.perf_counter()
    while received < size:
        chunk = await stream.read(CHUNK)
        if not chunk:
            raise RuntimeError(f"the stream ended after {received:,} of {size:,} bytes")
        received += len(chunk)
    return first_byte, size / 1e6 / (time.perf_counter() - flowing)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(megabytes: int) -> None:
    relay = subprocess.Popen([sys.executable, __file__, "--serve-relay"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        relay_address = relay.stdout.readline().strip()
        relay_id = relay_address.rsplit("/p2p/", 1)[1]
        home, direct, relayed = (new_host(os.urandom(32)) for _ in range(3))
        home.set_stream_handler(BLOB, send_blob)
        size = megabytes * 10**6
        async with running(home, ["/ip4/127.0.0.1/tcp/0"]), running(direct, ["/ip4/127.0.0.1/tcp/0"]), running(relayed, ["/ip4/127.0.0.1/tcp/0"]):
            async with trio.open_nursery() as nursery:
                reservations = Reservations(home, wanted=1)

                async def candidates() -> list[str]:
                    return [relay_address]

                nursery.start_soon(reservations.keep, candidates)
                with trio.fail_after(30):
                    while not reservations.held:
                        await trio.sleep(0.05)
                direct_first, direct_rate = await fetch(direct, home, listen_addresses(home), size)
                before = cpu_seconds(relay.pid)
                circuit = circuit_address(relay_address, relay_id)
                relayed_first, relayed_rate = await fetch(relayed, home, [circuit], size)
                relay_cpu = cpu_seconds(relay.pid) - before
                nursery.cancel_scope.cancel()
        emit(
            "nat_relay",
            megabytes=megabytes,
            direct_first_byte_ms=round(direct_first * 1000, 1),
            relayed_first_byte_ms=round(relayed_first * 1000, 1),
            direct_mb_s=round(direct_rate, 1),
            relayed_mb_s=round(relayed_rate, 1),
            relayed_over_direct=round(relayed_rate / direct_rate, 3),
            relay_cpu_s_per_gb=round(relay_cpu / (size / 1e9), 2),
        )
    finally:
        relay.stdin.close()
        relay.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    trio.run(serve_relay) if args.serve_relay else trio.run(main, args.megabytes)
