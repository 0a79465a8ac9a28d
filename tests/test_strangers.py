"""What a search tells a share found by discovery (a stranger): a vector prefix at most.

A whole query vector can be turned back into much of its text (embedding inversion), and the
text is the text. A share the user added, or one that granted us access, gets the query as
before; a stranger gets a K-prefix of an ordered vector, no text unless the user asks
(``send_text``), and nothing at all where the only model in common is not ordered. Real
hosts, a real catalog, the real client; the shares record what they were sent.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import trio

from peerlight.node.catalog import Catalog
from peerlight.node.catalog.shares import record_contact, remember_remote
from peerlight.p2p import schema
from peerlight.node.peers.client import PeerClient
from peerlight.node.peers.search import STRANGER_PREFIX
from peerlight.p2p.host import listen_addresses, new_host, running, split_peer_address
from peerlight.p2p.server import Protocol, ProtocolServer, Request

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
ORDERED_MODEL = "ordered:text:all-MiniLM-L6-v2+universal:0123456789abcdef:384"
PLAIN_MODEL = "text:some-model:abcdef:384"


def manifest(model: str) -> dict:
    return {"name": "s", "scope": "global", "permission": "public", "items": 1, "counts": {"text": 1},
            "models": [{"id": model, "dimension": 384, "space": "text"}], "capabilities": ["manifest", "query.text", "query.vector"]}


async def test_a_stranger_gets_a_vector_prefix_and_never_the_text_unless_asked(tmp_path) -> None:
    catalog = await Catalog.open(tmp_path / "catalog.sqlite3")
    sent: dict[str, list[dict]] = {}
    hosts = {}
    for name in ("added", "stranger", "stranger-plain"):
        host = new_host(os.urandom(32))

        async def query(request: Request, name: str = name) -> dict:
            sent.setdefault(name, []).append(request.body)
            return {"results": [], "warnings": [], "took_ms": 0}

        ProtocolServer([Protocol(schema.QUERY, query)]).attach(host)
        hosts[name] = host
    client = PeerClient(catalog, os.urandom(32), query_timeout=5)
    vector = np.random.default_rng(3).normal(size=384).astype(np.float32)
    try:
        async with running(hosts["added"], LOOPBACK), running(hosts["stranger"], LOOPBACK), running(hosts["stranger-plain"], LOOPBACK):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                for name, found_by, model in (("added", "manual", ORDERED_MODEL), ("stranger", "dht", ORDERED_MODEL), ("stranger-plain", "mdns", PLAIN_MODEL)):
                    peer_id, transport = split_peer_address(listen_addresses(hosts[name])[0])
                    await catalog.write(partial(remember_remote, peer_id=peer_id, addresses=[transport], found_by=found_by))
                    await catalog.write(partial(record_contact, peer_id=peer_id, manifest=manifest(model)))
                body = {"text": "my secret words", "mode": "hybrid", "k": 5, "filters": {}}
                spaces = {ORDERED_MODEL: (vector, 0.0, 0.1), PLAIN_MODEL: (vector, 0.0, 0.1)}
                answers = {a.remote.manifest["models"][0]["id"] + a.remote.found_by: a for a in await client.search.ask(body, spaces)}

                assert [len(b["vector"]) // 4 for b in sent["added"]] == [384]  # the user's own choice: the whole vector
                assert [len(b["vector"]) // 4 for b in sent["stranger"]] == [STRANGER_PREFIX]
                assert np.array_equal(np.frombuffer(sent["stranger"][0]["vector"], "<f4"), vector[:STRANGER_PREFIX])
                assert not any("text" in b for bodies in sent.values() for b in bodies)
                assert "stranger-plain" not in sent and "--send-text" in answers[PLAIN_MODEL + "mdns"].error

                await client.search.ask(body, spaces, send_text=True)  # the user asks for it
                assert [b.get("text") for b in sent["stranger-plain"]] == ["my secret words"]
                nursery.cancel_scope.cancel()
    finally:
        await catalog.aclose()
