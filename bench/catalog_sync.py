"""Copying a share's catalog of 100,000 items to another node, through the catalog protocol.

A child process serves the catalog of a share (a real catalog file holding N items with
384-dimensional vectors, built directly in SQLite) on a libp2p host; this process syncs it
into its own catalog with the node's peer client (pages of 500 items, float16 K=48
prefixes, every field checked and stored). Then one item changes and the incremental sync
is timed. Reports time, items per second and bytes on the wire per item.

    python bench/catalog_sync.py [--items 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from peerlight.embeddings.vectors import normalize, to_blob  # noqa: E402
from peerlight.node.catalog import Catalog, remote_items, shares  # noqa: E402
from peerlight.p2p import schema  # noqa: E402
from peerlight.node.peers.client import PeerClient  # noqa: E402
from peerlight.p2p import wire  # noqa: E402
from peerlight.p2p.host import split_peer_address  # noqa: E402

MODEL = "ordered:bench-model"


def fill(conn, items: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    conn.execute("INSERT INTO libraries (path, name, added_at) VALUES ('/bench', 'bench', 0)")
    conn.execute("INSERT INTO models (id, name, space, dimension, created_at) VALUES (?, 'bench', 'text', 384, 0)", (MODEL,))
    for start in range(0, items, 10_000):
        count = min(10_000, items - start)
        vectors = normalize(rng.normal(size=(count, 384)).astype(np.float32))
        for i in range(count):
            n = start + i
            item_id = conn.execute(
                "INSERT INTO items (content_hash, size, modality, mime, first_seen, updated_at, embedding_state) VALUES (?, ?, 'text', 'text/plain', 0, 0, 'done')",
                (f"{n:064x}", 1000 + n),
            ).lastrowid
            conn.execute(
                "INSERT INTO locations (item_id, library_id, path, size, mtime_ns, inode, device, last_seen) VALUES (?, 1, ?, 1, 0, ?, 0, 0)",
                (item_id, f"/bench/d{n // 1000}/note{n}.txt", n),
            )
            conn.execute("INSERT INTO item_metadata (item_id, key, value) VALUES (?, 'title', ?)", (item_id, f"Note number {n}"))
            conn.execute(
                "INSERT INTO embeddings (item_id, model_id, segment, dimension, vector) VALUES (?, ?, 0, 384, ?)", (item_id, MODEL, to_blob(vectors[i]))
            )


async def serve(path: Path) -> None:
    from peerlight.node.serving.handlers import ShareService
    from peerlight.p2p.host import listen_addresses, new_host, running
    from peerlight.p2p.server import Limits, ProtocolServer

    catalog = await Catalog.open(path)
    share = await catalog.write(shares.ensure_automatic_share)
    host = new_host(os.urandom(32))
    ProtocolServer(ShareService(share, catalog, None).protocols(), Limits(requests_per_minute=100_000)).attach(host)  # type: ignore[arg-type]
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
        print(listen_addresses(host)[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin
    await catalog.aclose()


async def client(base: Path, address: str, items: int, server_catalog: Path) -> dict[str, float]:
    peer_id, transport = split_peer_address(address)
    catalog = await Catalog.open(base / "client.sqlite3")
    peers = PeerClient(catalog, os.urandom(32), query_timeout=30)
    figures: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(peers.run)
        remote = await catalog.write(partial(shares.remember_remote, peer_id=peer_id, addresses=[transport], found_by="manual"))
        started = time.perf_counter()
        received = await peers.catalogs.sync(remote)
        figures["full_seconds"] = round(time.perf_counter() - started, 2)
        assert received == items, received
        held = await catalog.read(remote_items.catalog_counts)
        assert held[peer_id] == items
        # One item changes on the server: the next sync moves it alone.
        server = await Catalog.open(server_catalog)
        await server.write(lambda conn: conn.execute("UPDATE items SET size = size + 1 WHERE id = 1"))
        await server.aclose()
        started = time.perf_counter()
        changed = await peers.catalogs.sync(await catalog.read(partial(shares.get_remote, key=peer_id)))
        figures["incremental_ms"] = round((time.perf_counter() - started) * 1000, 1)
        figures["incremental_items"] = changed
        # The bytes of the pages as they travel (asked again, same pages).
        requester = await peers.host.requester()
        total, cursor = 0, 0
        while True:
            page = await requester.request(peer_id, [transport], schema.CATALOG, {"cursor": cursor, "limit": 500, "k": 48}, timeout=30)
            total += len(wire.pack({"ok": True, **page}))
            cursor = page["cursor"]
            if page["last_page"]:
                break
        figures["bytes_per_item"] = round(total / items, 1)
        nursery.cancel_scope.cancel()
    await catalog.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, Path(args.serve))
        return
    base = Path(tempfile.mkdtemp(prefix="pl-bench-", dir="/tmp"))
    server = None
    try:
        server_catalog = base / "server.sqlite3"

        async def build() -> None:
            catalog = await Catalog.open(server_catalog)
            await catalog.write(partial(fill, items=args.items))
            await catalog.aclose()

        trio.run(build)
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(server_catalog)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        address = server.stdout.readline().strip()
        figures = trio.run(client, base, address, args.items, server_catalog)
        emit("catalog_sync", items=args.items, items_per_s=round(args.items / figures["full_seconds"]), **figures)
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(30)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
