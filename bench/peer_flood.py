"""A flood of fresh peer ids against one share, and what the node's own user feels meanwhile.

A real daemon (its own process) shares an indexed library of text notes publicly on loopback.
A flooder process makes ``--peers`` fresh identities (each a new libp2p host with its own
Noise key), ``--concurrency`` at a time; each asks the share a text query (an encoder pass
on the node) and starts a fetch of the library's big file that it then reads slowly (holding
the node's transfer buffers). Meanwhile this process measures the local user's searches
through the control socket. Baseline, in the same run: the same searches with no flood.

One JSON line: the local search p50 during the flood against idle (the aim: at most 2x), the
daemon's peak RSS, and how many of the flood's requests were refused (``rate_limited``).

    python bench/peer_flood.py [--peers 1000] [--concurrency 25] [--searches 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import emit, percentile  # noqa: E402

from tests.helpers import DaemonProcess, cli_json, write_config  # noqa: E402

from peerlight.cli.client import ControlClient  # noqa: E402
from peerlight.node.paths import NodePaths  # noqa: E402
from peerlight.node.setup import init_node  # noqa: E402

FLOODER = r"""
import json, os, sys
import trio
from peerlight.p2p import schema
from peerlight.p2p.client import Requester
from peerlight.p2p.errors import WireError
from peerlight.p2p.host import new_host, running, split_peer_address

address, big_hash, peers, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
peer_id, transport = split_peer_address(address)
counts = {}

def count(outcome):
    counts[outcome] = counts.get(outcome, 0) + 1

async def one_peer():
    host = new_host(os.urandom(32))
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
        requester = Requester(host)
        try:
            await requester.request(peer_id, [transport], schema.QUERY, {"text": "how to keep warm in winter", "mode": "hybrid", "k": 10}, timeout=30)
            count("query_ok")
        except WireError as exc:
            count("query_" + exc.code)
        try:
            frames = requester.frames(peer_id, [transport], schema.FETCH, {"hash": big_hash}, timeout=30)
            async for frame in frames:  # a slow reader: the node's buffers stay held meanwhile
                await trio.sleep(0.2)
                if "data" in frame:
                    break
            await frames.aclose()
            count("fetch_ok")
        except WireError as exc:
            count("fetch_" + exc.code)
        await host.close()

async def main():
    limiter = trio.Semaphore(concurrency)
    async def guarded():
        async with limiter:
            with trio.move_on_after(60):
                await one_peer()
    async with trio.open_nursery() as nursery:
        for _ in range(peers):
            nursery.start_soon(guarded)
    print(json.dumps(counts), flush=True)

trio.run(main)
"""

NOTES = [
    "Layer wool clothing and keep your head covered to stay warm in winter.",
    "Bread rises best in a warm kitchen; knead the dough for ten minutes.",
    "Influenza spreads fast in winter: wash your hands and rest.",
    "A bicycle chain needs oil every few hundred kilometres.",
    "Tomatoes grow well in full sun with regular watering.",
]


def local_searches(control: Path, count: int) -> list[float]:
    """Seconds per local search (hybrid: an encoder pass and a vector search), one after another."""
    times = []
    with ControlClient(control, timeout=120) as client:
        for n in range(count):
            started = time.perf_counter()
            client.call("search.query", query=f"keeping warm when it is cold outside {n}", mode="hybrid", limit=10)
            times.append(time.perf_counter() - started)
    return times


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--searches", type=int, default=40)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pl-bench-", dir="/tmp"))
    daemon = flooder = None
    try:
        library = base / "library"
        library.mkdir()
        for n in range(200):
            (library / f"note{n}.txt").write_text(NOTES[n % len(NOTES)] + f" Note {n}.")
        big = library / "big.wav"  # a media file, so that it is indexed and served: 64 MB of noise
        with wave.open(str(big), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(44100)
            out.writeframes(os.urandom(64 * 1024 * 1024))
        paths = NodePaths(base / "node")
        init_node(paths)
        write_config(paths.root)
        daemon = DaemonProcess(paths.root)
        assert daemon.wait_ready() == "ready"
        cli_json(paths.root, "library", "add", str(library))
        cli_json(paths.root, "index", "--wait")
        share = cli_json(paths.root, "share", "create", "flood", "--permission", "public", "--collection", str(library))
        big_hash = __import__("blake3").blake3(big.read_bytes()).hexdigest()

        local_searches(paths.root / "control.sock", 5)  # warm: the model is loaded
        idle = local_searches(paths.root / "control.sock", args.searches)
        rss_before_flood = peak_rss(daemon.proc.pid)
        flooder = subprocess.Popen(
            [sys.executable, "-c", FLOODER, share["addresses"][0], big_hash, str(args.peers), str(args.concurrency)],
            stdout=subprocess.PIPE, text=True,
        )
        time.sleep(3)  # the flood is under way
        during = local_searches(paths.root / "control.sock", args.searches)
        out, _ = flooder.communicate(timeout=1800)
        counts = json.loads(out.strip().splitlines()[-1])
        budget = cli_json(paths.root, "status")["peers_budget"]
        refused = sum(n for outcome, n in counts.items() if outcome.endswith("rate_limited"))
        emit(
            "peer_flood",
            peers=args.peers,
            concurrency=args.concurrency,
            local_search_p50_idle_ms=round(percentile(idle, 50) * 1000, 1),
            local_search_p50_flood_ms=round(percentile(during, 50) * 1000, 1),
            ratio=round(percentile(during, 50) / percentile(idle, 50), 2),
            daemon_peak_rss_mb=round(peak_rss(daemon.proc.pid) / 2**20),
            daemon_peak_rss_before_flood_mb=round(rss_before_flood / 2**20),
            requests=sum(counts.values()),
            refused=refused,
            outcomes=counts,
            refused_by_kind=budget["refused"],
        )
    except BaseException:
        traceback.print_exc()  # before the clean-up, whose own failure would hide it
        raise
    finally:
        if flooder is not None and flooder.poll() is None:
            flooder.kill()
        if daemon is not None:
            stopped = time.perf_counter()
            daemon.stop(timeout=120)
            print(f"the daemon stopped in {time.perf_counter() - stopped:.1f} s", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
