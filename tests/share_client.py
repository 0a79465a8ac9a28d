"""A client of one share that asks it every protocol once: what another local program would do.

Run as a separate process::

    python tests/share_client.py MULTIADDR HASH [--identity KEY] [--as-uid UID]

``--identity`` speaks with that key (the node's own ``identity.key``: the owner's programs);
without it the client has a fresh random identity. ``--as-uid`` drops to another user (and
its group, with no supplementary groups) before the identity key is read: another local
user's program. (The interpreter lives where only root may look, so the drop happens in the
process, after one warm-up round as a stranger has imported everything a round needs.)

It prints one JSON line: ``{"identity": "read" | "<why not>" | "random", "answers": {protocol:
"ok" | error code}, "fetched": bytes received by fetch}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import trio

from peerlight.p2p import schema
from peerlight.node.identity import IdentityError, load_identity
from peerlight.p2p.client import Requester
from peerlight.p2p.errors import WireError
from peerlight.p2p.host import new_host, running, split_peer_address


async def ask_everything(address: str, content_hash: str, seed: bytes) -> tuple[dict[str, str], int]:
    peer_id, transport = split_peer_address(address)
    host = new_host(seed)
    answers: dict[str, str] = {}
    fetched = 0
    async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
        requester = Requester(host)
        unary = {
            schema.MANIFEST: {},
            schema.QUERY: {"text": "winter", "mode": "text", "k": 5},
            schema.CATALOG: {"cursor": 0, "limit": 10, "k": 8},
            schema.PREVIEW: {"hash": content_hash},
            schema.ADAPTER: {"model_id": "x"},
            schema.REDEEM: {"token": b"\x00" * 64},
        }
        for protocol, body in unary.items():
            try:
                await requester.request(peer_id, [transport], protocol, body, timeout=10)
                answers[protocol.id] = "ok"
            except WireError as exc:
                answers[protocol.id] = exc.code
        try:
            async for frame in requester.frames(peer_id, [transport], schema.FETCH, {"hash": content_hash}, timeout=10):
                fetched += len(frame.get("data") or b"")
            answers[schema.FETCH.id] = "ok"
        except WireError as exc:
            answers[schema.FETCH.id] = exc.code
    return answers, fetched


def drop_to(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("hash")
    parser.add_argument("--identity", type=Path)
    parser.add_argument("--as-uid", type=int)
    args = parser.parse_args()
    if args.as_uid is not None:
        trio.run(ask_everything, args.address, args.hash, os.urandom(32))
        drop_to(args.as_uid)
    seed, identity = os.urandom(32), "random"
    if args.identity is not None:
        try:
            seed, identity = load_identity(args.identity).seed, "read"
        except IdentityError as exc:
            identity = str(exc)
    answers, fetched = trio.run(ask_everything, args.address, args.hash, seed)
    print(json.dumps({"identity": identity, "uid": os.getuid(), "answers": answers, "fetched": fetched}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
