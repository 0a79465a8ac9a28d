"""Fetching a file from another node's share, against a plain TCP copy, and a query's round trip.

Two real daemons (separate processes) on loopback: node A shares a library holding one big
file of noise, node B fetches it with ``peers.fetch`` (libp2p Noise + Yamux, a BLAKE3 per
1 MiB chunk, written to disk, the whole file verified against its content hash before it is
named). The baseline, in the same run: a child process sends the same file over a plain TCP
socket on loopback to this process, which writes it to disk with our fetch's writer, in one thread (no
encryption, no hashing); the ratio is ours / that. A second plain copy writes through the
page cache, as an ordinary program would, for reference.

The round trip is measured from this process with the node's own client (a libp2p host
asking A's share over one kept stream): a manifest request, and a K-prefix vector query.

    python bench/p2p_transfer.py [--megabytes 1024] [--queries 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import emit, percentile  # noqa: E402

from tests.helpers import DaemonProcess, cli_json, write_config  # noqa: E402

from peerlight.cli.client import ControlClient  # noqa: E402
from peerlight.node.peers.download import PartialDownload  # noqa: E402
from peerlight.node.paths import NodePaths  # noqa: E402
from peerlight.node.setup import init_node  # noqa: E402

SENDER = """
import socket, sys
path, port = sys.argv[1], int(sys.argv[2])
with socket.create_connection(("127.0.0.1", port)) as conn, open(path, "rb") as f:
    while block := f.read(1 << 20):
        conn.sendall(block)
"""


# This VM (Firecracker, ``page_reporting``) hands freed memory back to its host about 2 s after
# it is freed, and a page touched again then costs a fault on the host: writing 1 GB into the
# page cache takes ~0.2 s of CPU right after a big file was deleted and ~0.9 s once that memory
# is gone. Each copy starts after this pause, so neither writes into the other's warm pages.
COLD_PAUSE_SECONDS = 4.0


def noise_wav(path: Path, megabytes: int) -> None:
    rng = np.random.default_rng(1)
    block = rng.integers(-3000, 3000, size=512 * 1024, dtype=np.int16).tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48000)
        for i in range(megabytes):
            out.writeframes(block[i % 7 :] + block[: i % 7])  # distinct blocks, cheap to make


def plain_tcp_copy(source: Path, target: Path, *, direct: bool) -> float:
    """Seconds to receive ``source`` over loopback TCP from a child process and write it to ``target``.

    ``direct``: written as our fetch writes (8 MiB batches, O_DIRECT where the filesystem has
    it), so that the ratio is the cost of the protocol (Noise, Yamux, msgpack, BLAKE3) alone;
    otherwise through the page cache, as ``nc > file`` would.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.perf_counter()
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(source), str(listener.getsockname()[1])])
        conn, _ = listener.accept()
        with conn:
            if direct:
                writer = PartialDownload(target)
                batch: list[bytes] = []
                while block := conn.recv(1 << 20, socket.MSG_WAITALL):
                    batch.append(block)
                    if len(batch) == 8:
                        writer.write(batch)
                        batch = []
                writer.write(batch)
                writer.sync()
                writer.close()
            else:
                buffer = bytearray(1 << 20)
                view = memoryview(buffer)
                with open(target, "wb") as out:
                    while received := conn.recv_into(buffer):
                        out.write(view[:received])
                    out.flush()
                    os.fsync(out.fileno())
        elapsed = time.perf_counter() - started
        sender.wait()
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_trips(address: str, queries: int) -> dict[str, float]:
    from peerlight.p2p import schema
    from peerlight.p2p.client import Requester
    from peerlight.p2p.host import new_host, running, split_peer_address

    peer_id, transport = split_peer_address(address)
    figures: dict[str, float] = {}

    async def run() -> None:
        host = new_host(os.urandom(32))
        async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
            requester = Requester(host)
            manifest = await requester.request(peer_id, [transport], schema.MANIFEST, {})
            model = next((m for m in manifest["models"] if m["space"] == "text"), None)
            cases = [("manifest", schema.MANIFEST, {})]
            if model:
                prefix = np.random.default_rng(0).normal(size=model["dimension"] // 8).astype("<f4")
                cases.append(("query", schema.QUERY, {"vector": prefix.tobytes(), "model_id": model["id"], "k": 10}))
            for name, protocol, body in cases:
                for _ in range(20):
                    await requester.request(peer_id, [transport], protocol, body)
                times = []
                for _ in range(queries):
                    started = time.perf_counter()
                    await requester.request(peer_id, [transport], protocol, body)
                    times.append(time.perf_counter() - started)
                figures[f"{name}_p50_ms"] = round(percentile(times, 50) * 1000, 3)
                figures[f"{name}_p99_ms"] = round(percentile(times, 99) * 1000, 3)

    trio.run(run)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pl-bench-", dir="/tmp"))
    daemons: list[DaemonProcess] = []
    try:
        library = base / "library"
        library.mkdir()
        big = library / "big.wav"
        noise_wav(big, args.megabytes)
        (library / "note.txt").write_text("a note so that the share has a text vector space to query")
        nodes = []
        for name in ("a", "b"):
            paths = NodePaths(base / name)
            init_node(paths)
            write_config(paths.root)
            nodes.append(paths.root)
            daemons.append(DaemonProcess(paths.root))
            assert daemons[-1].wait_ready() == "ready"
        a_dir, b_dir = nodes
        cli_json(a_dir, "library", "add", str(library))
        cli_json(a_dir, "index", "--wait")
        share = cli_json(a_dir, "share", "create", "bench", "--permission", "public", "--collection", str(library))
        cli_json(b_dir, "peers", "add", share["addresses"][0], "--wait")
        size = big.stat().st_size
        content_hash = __import__("blake3").blake3(big.read_bytes(), max_threads=-1).hexdigest()

        rounds = []
        for round_ in range(2):  # interleaved: this VM's speed drifts between processes
            target = base / f"down{round_}"
            target.mkdir()
            time.sleep(COLD_PAUSE_SECONDS)
            cpu_before = [cpu_seconds(d.proc.pid) for d in daemons]
            started = time.perf_counter()
            with ControlClient(b_dir / "control.sock", timeout=None) as client:
                result = client.call("peers.fetch", share="bench", item=content_hash, to=str(target))
            ours = time.perf_counter() - started
            cpu = [cpu_seconds(d.proc.pid) - before for d, before in zip(daemons, cpu_before)]
            assert Path(result["path"]).stat().st_size == size
            shutil.rmtree(target)
            plain = []
            for direct in (True, False):
                time.sleep(COLD_PAUSE_SECONDS)
                plain.append(plain_tcp_copy(big, base / "plain.bin", direct=direct))
                (base / "plain.bin").unlink()
            rounds.append((ours, plain, cpu))
        ours = min(r[0] for r in rounds)
        plain_direct = min(r[1][0] for r in rounds)
        plain_cached = min(r[1][1] for r in rounds)
        gigabytes = size / 1e9
        server_cpu = min(r[2][0] for r in rounds) / gigabytes
        client_cpu = min(r[2][1] for r in rounds) / gigabytes
        rtt = round_trips(share["addresses"][0], args.queries)
        emit(
            "p2p_transfer",
            megabytes=args.megabytes,
            fetch_mb_s=round(size / ours / 1e6, 1),
            plain_tcp_mb_s=round(size / plain_direct / 1e6, 1),
            ratio=round(plain_direct / ours, 3),
            plain_tcp_page_cache_mb_s=round(size / plain_cached / 1e6, 1),
            fetch_seconds=round(ours, 2),
            server_cpu_s_per_gb=round(server_cpu, 2),
            client_cpu_s_per_gb=round(client_cpu, 2),
            **rtt,
        )
    finally:
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
