"""A malicious share, in its own process, speaking the protocols of docs/protocol.md.

Run as ``python tests/hostile_share.py MODE``: a real libp2p host (Noise + Yamux) on loopback
that prints its multiaddr, then answers as the mode says, to try one attack on a client:

- ``many-frames``: the manifest is 64 frames of 8 MiB (``more: true``) where one is expected;
- ``repeat-cursor``: every catalog page ends where it began and says it is not the last;
- ``growing-cursor``: the manifest says 3 items; the catalog sends new items forever;
- ``odd-values``: names with escape sequences and bidi overrides; sizes of 2**63; NaN and
  infinite scores, times and metadata; metadata past every bound;
- ``huge-fetch``: a query says the file has 1,000 bytes; the fetch header says 2**40, and
  valid chunks follow;
- ``adapter-bomb``: the share's space is an ordered one the client does not have; its
  adapter file is 2 MB on the wire and inflates to 2 GiB.

Each request it receives is printed as one JSON line (protocol and cursor), so a test can
count them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import blake3
import trio

from peerlight.p2p import schema
from peerlight.p2p.host import listen_addresses, new_host, running
from peerlight.p2p.server import Limits, Protocol, ProtocolServer, Request

MODES = ("many-frames", "repeat-cursor", "growing-cursor", "odd-values", "huge-fetch", "adapter-bomb")
BOMB_MODEL = "ordered:all-MiniLM-L6-v2:0123456789abcdef"
EVIL_NAME = "\x1b[2J\x1b]0;pwned\x07evil\u202etxt.exe\x00"
FRAME_BYTES = 8 * 1024 * 1024 - 4096
CLAIMED = 1000  # the size a query gives for huge-fetch's file


def _adapter_bomb() -> bytes:
    """An .npz whose rotation array declares 2 GiB, deflated to ~2 MB (repeated deflate blocks)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.hostile import _deflate_zeros, _zip

    size = 2 << 30
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }" + b" " * 39 + b"\n"
    return _zip([("header.npy", header)], raw=[("rotation.npy", 8, 0, _deflate_zeros(size), size)])


def _item(n: int, **fields: Any) -> dict[str, Any]:
    return {"content_hash": blake3.blake3(str(n).encode()).hexdigest(), "name": f"item-{n}.txt", "modality": "text",
            "mime": "text/plain", "size": 10, "metadata": {}, "vectors": {}} | fields


async def main(mode: str) -> None:
    assert mode in MODES, mode
    nan, inf = float("nan"), float("inf")

    def log(request: Request) -> None:
        print(json.dumps({"protocol": request.protocol, "cursor": request.body.get("cursor")}), flush=True)

    async def manifest(request: Request):  # type: ignore[no-untyped-def]
        log(request)
        models = [{"id": BOMB_MODEL, "dimension": 384, "space": "text"}] if mode == "adapter-bomb" else []
        answer = {"name": EVIL_NAME if mode == "odd-values" else "hostile", "scope": "local", "permission": "public", "items": 3,
                  "counts": {"text": 3}, "models": models, "capabilities": ["manifest", "catalog", "query.text", "query.vector", "fetch.range", "adapter"]}
        if mode == "many-frames":
            for _ in range(63):
                yield {"pad": bytes(FRAME_BYTES)}
        yield answer

    async def catalog(request: Request) -> dict[str, Any]:
        log(request)
        cursor = request.body.get("cursor", 0)
        if mode == "repeat-cursor":
            return {"items": [_item(1)], "cursor": cursor, "last_page": False, "total": None, "k": 48}
        if mode == "growing-cursor":
            return {"items": [_item(cursor + n) for n in range(500)], "cursor": cursor + 500, "last_page": False, "total": None, "k": 48}
        items = [
            _item(1, name=EVIL_NAME, metadata={"year": nan, "title": "}" * 5000, "when": inf, "big": 2**64 - 1}),
            _item(2, size=2**63),
            _item(3, size=-1),
            _item(4, size=nan),
        ]
        return {"items": items, "cursor": 10, "last_page": True, "total": 1, "k": 48}

    async def query(request: Request) -> dict[str, Any]:
        log(request)
        result = _item(1, name="file.bin", size=CLAIMED) | {"score": nan, "similarity": inf, "match": {"start": nan, "end": inf, "passage": EVIL_NAME}}
        return {"results": [result, _item(2, name=EVIL_NAME) | {"score": -inf, "size": 2**64 - 1}], "warnings": [], "took_ms": nan}

    async def adapter(request: Request) -> dict[str, Any]:
        log(request)
        return {"model_id": BOMB_MODEL, "adapter": _adapter_bomb()}

    async def fetch(request: Request):  # type: ignore[no-untyped-def]
        log(request)
        yield {"hash": request.body.get("hash"), "size": 2**40, "offset": request.body.get("offset", 0), "length": 2**40, "chunk_bytes": schema.CHUNK_BYTES}
        for _ in range(2048):  # 2 GiB of chunks, each consistent with its hash
            data = os.urandom(schema.CHUNK_BYTES)
            yield {"data": data, "hash": blake3.blake3(data).digest()}

    host = new_host(os.urandom(32))
    protocols = [
        Protocol(schema.MANIFEST, manifest),
        Protocol(schema.CATALOG, catalog),
        Protocol(schema.QUERY, query),
        Protocol(schema.FETCH, fetch),
        Protocol(schema.ADAPTER, adapter),
    ]
    ProtocolServer(protocols, Limits(requests_per_minute=1_000_000)).attach(host)
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
        print(f"{listen_addresses(host)[0]}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
