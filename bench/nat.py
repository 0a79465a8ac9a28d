"""Behind NATs: a relay's cost against a direct connection, and how often hole punching works.

Three libp2p hosts on loopback: A (the "home" host, reserved on the relay R, serving a test
protocol that sends N bytes), B (dials A directly: the baseline) and C (dials A through R's
circuit, as a peer reaches a host behind a NAT). R runs in a child process of its own, so its
CPU time per GB relayed is read from ``/proc``. A and the diallers share this process; both
runs pay the same for their two ends, so the ratio shows what the relay hop costs.

Figures: time from dialling to the first byte of an answer (connection, Noise, Yamux, stream
negotiation; through the relay also the reservation lookup and the STOP exchange), MB/s of a
single stream, the relayed/direct ratio, and the relay's CPU seconds per GB.

With ``--punch N`` (root, iptables): hole punching in the namespace internet of the NAT tests
(``tests/nat_internet.py``): a relay on the public side, a host in home A (endpoint-independent
NAT) reserved on it (its addresses are documentation ones, so private addresses are allowed in
punches, as ``announce = "all"`` does), and N fresh hosts, one after another, in home B (the same kind of NAT) and
then ``--symmetric-tries`` (10) in home C (symmetric), each dialling A through the relay; A starts the punch (DCUtR). A
try succeeds when the dialler's connection to A turns direct within 30 s; the time is from the
relayed connection to the direct one. ``--netem`` adds 40 ms and 1% loss to every router's
uplink (each way through the internet crosses two: ~80 ms one way, ~2% loss).

    python bench/nat.py [--megabytes 256] [--punch 50 [--symmetric-tries 10]] [--netem]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blob import BLOB, receive_blob, send_blob  # noqa: E402
from common import emit  # noqa: E402

from peerlight.p2p.host import connect, listen_addresses, new_host, running  # noqa: E402
from peerlight.p2p.holepunch import hole_punching  # noqa: E402
from peerlight.p2p.relay import RelayLimits, Reservations, circuit_address, connection_kind, relay_service  # noqa: E402

async def serve_relay(ip: str) -> None:
    """The child: a relay with no byte or time limit, until its standard input closes."""
    host = new_host(os.urandom(32))
    async with running(host, [f"/ip4/{ip}/tcp/0"]), relay_service(host, RelayLimits(circuit_bytes=0, circuit_seconds=0)):
        print(listen_addresses(host)[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def fetch(dialler: Any, target: str, addresses: list[str], size: int) -> tuple[float, float]:
    """(seconds to the first byte, MB/s) of ``size`` bytes from the peer ``target`` reached at ``addresses``."""
    from libp2p.peer.id import ID

    started = time.perf_counter()
    await connect(dialler, target, addresses)
    stream = await dialler.new_stream(ID.from_base58(target), [BLOB])
    dialled = time.perf_counter() - started
    first_byte, rate = await receive_blob(stream, size)
    return dialled + first_byte, rate


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
                direct_first, direct_rate = await fetch(direct, str(home.get_id()), listen_addresses(home), size)
                before = cpu_seconds(relay.pid)
                circuit = circuit_address(relay_address, relay_id)
                relayed_first, relayed_rate = await fetch(relayed, str(home.get_id()), [circuit], size)
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


async def home(ip: str, relay_address: str) -> None:
    """In home A: a host reserved on the relay, starting punches, until its standard input closes."""
    host = new_host(os.urandom(32))
    host.set_stream_handler(BLOB, send_blob)
    async with running(host, [f"/ip4/{ip}/tcp/0"]), hole_punching(host, initiate=True, private=True), trio.open_nursery() as nursery:
        reservations = Reservations(host, wanted=1)

        async def candidates() -> list[str]:
            return [relay_address]

        nursery.start_soon(reservations.keep, candidates)
        while not reservations.held:
            await trio.sleep(0.05)
        print(json.dumps({"peer_id": str(host.get_id()), "circuit": reservations.circuit_addresses()[0], "direct": listen_addresses(host)[0]}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


async def diallers(ip: str, target: str, circuit: str, tries: int, patience: float) -> None:
    """In another home: ``tries`` fresh hosts, one at a time, dial the target through the relay
    and wait for the punch; one JSON line per try (the seconds it took, or null)."""
    for _ in range(tries):
        host = new_host(os.urandom(32))
        async with running(host, [f"/ip4/{ip}/tcp/0"]), hole_punching(host, initiate=False, private=True):
            took = None
            try:
                await connect(host, target, [circuit])
                relayed_at = time.perf_counter()
                with trio.move_on_after(patience):
                    while connection_kind(host, target) != "direct":
                        await trio.sleep(0.05)
                    took = time.perf_counter() - relayed_at
            except Exception as exc:  # a failed try, not the end of the run
                print(f"a try failed: {exc}", file=sys.stderr)
            print(json.dumps(took), flush=True)
            with trio.move_on_after(5):  # its circuit ends now, not when the relay notices (a slot per target)
                await host.close()


async def measure(ip: str, target: str, address: str, wait_direct: bool, megabytes: int) -> None:
    """From another host: dial ``address``, (optionally) wait for the punch, then time a request's
    first byte on the connection there is, and ``megabytes`` over one stream; one JSON line."""
    from libp2p.peer.id import ID

    host = new_host(os.urandom(32))
    async with running(host, [f"/ip4/{ip}/tcp/0"]), hole_punching(host, initiate=False, private=True):
        started = time.perf_counter()
        await connect(host, target, [address])
        stream = await host.new_stream(ID.from_base58(target), [BLOB])
        await stream.write(b"1")
        await stream.read(1)
        dial_first_byte = time.perf_counter() - started
        if wait_direct:
            with trio.fail_after(30):
                while connection_kind(host, target) != "direct":
                    await trio.sleep(0.05)
        kind = connection_kind(host, target)
        started = time.perf_counter()
        stream = await host.new_stream(ID.from_base58(target), [BLOB])
        await stream.write(b"1")
        await stream.read(1)
        first_byte = time.perf_counter() - started
        _, rate = await fetch(host, target, [address], megabytes * 10**6)
        print(json.dumps({"path": kind, "dial_first_byte_ms": round(dial_first_byte * 1000, 1), "first_byte_ms": round(first_byte * 1000, 1), "mb_s": round(rate, 1)}), flush=True)


def punch_rates(tries: int, symmetric_tries: int, netem: bool, megabytes: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.nat_internet import PUBLIC_IP, NatInternet

    internet = NatInternet().build()
    children: list[subprocess.Popen[str]] = []

    def child(namespace: str, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(process)
        return process

    try:
        if netem:
            for router in (internet.router_a, internet.router_b, internet.router_c):
                command = ["ip", "netns", "exec", router, "tc", "qdisc", "add", "dev", "w0", "root", "netem", "delay", "40ms", "loss", "1%"]
                added = subprocess.run(command, capture_output=True, text=True)
                if added.returncode != 0:  # e.g. a kernel built without sch_netem: "Specified qdisc kind is unknown"
                    raise SystemExit(f"cannot add netem here: {added.stderr.strip()}")
        relay_address = child(internet.public, "--serve-relay", PUBLIC_IP).stdout.readline().strip()
        target = json.loads(child(internet.home_a, "--home", "192.168.1.2", relay_address).stdout.readline())
        figures: dict[str, Any] = {}
        for kind, namespace, ip, count in (("eim", internet.home_b, "192.168.2.2", tries), ("symmetric", internet.home_c, "192.168.3.2", symmetric_tries)):
            process = child(namespace, "--diallers", ip, target["peer_id"], target["circuit"], str(count))
            times = [json.loads(process.stdout.readline()) for _ in range(count)]
            succeeded = sorted(t for t in times if t is not None)
            figures[f"{kind}_tries"] = count
            figures[f"{kind}_success"] = round(len(succeeded) / count, 3)
            if succeeded:
                figures[f"{kind}_relayed_to_direct_p50_s"] = round(succeeded[len(succeeded) // 2], 2)
                figures[f"{kind}_relayed_to_direct_max_s"] = round(succeeded[-1], 2)
        # The paths a peer's requests take: the same LAN, across two NATs after the punch, and
        # through the relay (a symmetric NAT): a request's first byte, and MB/s of one stream.
        for name, namespace, ip, address, wait in (
            ("lan", internet.home_a, "192.168.1.3", target["direct"], False),
            ("punched", internet.home_b, "192.168.2.2", target["circuit"], True),
            ("relayed", internet.home_c, "192.168.3.2", target["circuit"], False),
        ):
            if name == "lan":  # a second host on home A's LAN
                subprocess.run(["ip", "-n", internet.home_a, "addr", "add", f"{ip}/24", "dev", "l1"], check=True)
            path = json.loads(child(namespace, "--measure", ip, target["peer_id"], address, str(int(wait)), str(megabytes)).stdout.readline())
            figures[f"{name}_path"] = path.pop("path")
            figures.update({f"{name}_{key}": value for key, value in path.items()})
        return figures
    finally:
        for process in children:
            process.stdin.close()
        for process in children:
            process.wait(60)
        internet.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--punch", type=int, default=0, help="hole-punch tries per NAT kind (root and iptables: namespaces)")
    parser.add_argument("--symmetric-tries", type=int, default=10, help="tries behind the symmetric NAT (each failure waits 30 s)")
    parser.add_argument("--netem", action="store_true", help="40 ms and 1%% loss on every router's uplink (with --punch)")
    parser.add_argument("--serve-relay", nargs="?", const="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--home", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--diallers", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        trio.run(serve_relay, args.serve_relay)
    elif args.home:
        trio.run(home, *args.home)
    elif args.diallers:
        ip, target, circuit, count = args.diallers
        trio.run(diallers, ip, target, circuit, int(count), 30.0)
    elif args.measure:
        ip, target, address, wait, megabytes = args.measure
        trio.run(measure, ip, target, address, wait == "1", int(megabytes))
    elif args.punch:
        emit("nat_punch", netem=args.netem, megabytes=args.megabytes, **punch_rates(args.punch, args.symmetric_tries, args.netem, args.megabytes))
    else:
        trio.run(main, args.megabytes)
