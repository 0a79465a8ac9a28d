"""A peer that serves one file over the documented fetch protocol, and damages it on purpose.

Run as a separate process (``python tests/corrupting_peer.py FILE MODE``): a real libp2p host
(Noise + Yamux) on loopback, answering ``manifest`` and ``fetch`` as docs/protocol.md says.

- ``flip-once``: the first fetch sends the third chunk with one byte changed (its hash is the
  true one): the receiver must notice, keep the two good chunks and ask again from the third;
- ``other-file``: every chunk is consistent with its hash, but the bytes are not the file
  named by the content hash: only the whole-file check can notice.

It prints its multiaddr as the first line, then one JSON line per fetch request it receives.
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
from peerlight.p2p.server import Protocol, ProtocolServer, Request


async def main(path: Path, mode: str) -> None:
    content = path.read_bytes()
    content_hash = blake3.blake3(content).hexdigest()
    served = bytearray(content) if mode == "flip-once" else bytearray(os.urandom(len(content)))
    requests = 0

    async def manifest(request: Request) -> dict[str, Any]:
        return {"name": "corrupting", "scope": "local", "permission": "public", "items": 1, "counts": {"audio": 1}, "models": [], "capabilities": ["manifest", "fetch.range"]}

    async def fetch(request: Request):  # type: ignore[no-untyped-def]
        nonlocal requests
        requests += 1
        offset = request.body.get("offset", 0)
        print(json.dumps({"offset": offset, "request": requests}), flush=True)
        if request.body.get("hash") != content_hash:
            yield {"ok": False}
            return
        yield {"hash": content_hash, "size": len(content), "offset": offset, "length": len(content) - offset, "chunk_bytes": schema.CHUNK_BYTES}
        for start in range(offset, len(content), schema.CHUNK_BYTES):
            data = bytes(served[start : start + schema.CHUNK_BYTES])
            digest = blake3.blake3(data).digest()
            if mode == "flip-once" and requests == 1 and start == 2 * schema.CHUNK_BYTES:
                damaged = bytearray(data)
                damaged[1000] ^= 0x40
                data = bytes(damaged)
            yield {"data": data, "hash": digest}
        yield {"done": True}

    host = new_host(os.urandom(32))
    server = ProtocolServer([Protocol(schema.MANIFEST, manifest), Protocol(schema.FETCH, fetch)])
    server.attach(host)
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
        print(f"{listen_addresses(host)[0]}/p2p/{host.get_id()}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2])
