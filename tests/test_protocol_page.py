"""``docs/protocol.md`` against the node: what the page says is what another implementation gets.

The page's message reference is written from the schema and must hold it as written; its
conformance examples are sent, byte for byte as the page writes them, to a running daemon's
share by a client of our own that checks nothing (a bare libp2p host, as another
implementation would be); its adapter id test vector is recomputed from the bytes it gives.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
import trio

from peerlight.embeddings.adapters import Adapter
from peerlight.p2p import schema
from peerlight.p2p.client import Requester
from peerlight.p2p.errors import WireError
from peerlight.p2p.host import new_host, running, split_peer_address

from .helpers import cli_json, index_and_wait, new_node, started

PAGE = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
NOTES = {
    "flu.txt": "How to avoid getting sick in winter: wash your hands, sleep well and keep warm.",
    "bread.txt": "A sourdough loaf needs flour, water, salt and a lively starter; bake it hot.",
}


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^## ", text[start + len(heading) :], re.M)
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def test_the_page_holds_the_schema_s_message_reference_as_written() -> None:
    """The limits the page states are the ones the node enforces (``python -m peerlight.p2p.schema`` writes them)."""
    page = PAGE.read_text()
    begin, end = "<!-- schema:begin -->\n", "<!-- schema:end -->"
    written = page[page.index(begin) + len(begin) : page.index(end)]
    assert written == schema.markdown()


def test_every_protocol_of_the_schema_has_its_section_on_the_page() -> None:
    page = PAGE.read_text()
    assert all(f"## `{spec.id}`" in page for spec in schema.PROTOCOLS)


def _test_vector() -> tuple[Adapter, bytes, str, str]:
    """The page's adapter: its input bytes (hex), its adapter id and its model id."""
    block = _section(PAGE.read_text(), "### Test vector")
    fields = dict(re.findall(r"^- (\w[\w ]*\w): `([^`]*)`", block, re.M))
    rotation = np.array(json.loads(fields["rotation"]), dtype=np.float32)
    d_in = rotation.shape[0]
    adapter = Adapter(
        fields["base_model_id"],
        rotation,
        np.zeros((d_in, 0), np.float32),
        np.zeros(0, np.float32),
        np.zeros((0, d_in), np.float32),
        np.array(json.loads(fields["out_bias"]), dtype=np.float32),
    )
    return adapter, bytes.fromhex(re.sub(r"\s", "", fields["hashed bytes"])), fields["adapter id"], fields["model id"]


def test_the_adapter_id_test_vector() -> None:
    adapter, hashed, adapter_id, model_id = _test_vector()
    assert adapter.id_bytes() == hashed  # the layout, byte for byte
    assert blake3.blake3(hashed).hexdigest() == adapter_id == adapter.adapter_id
    assert adapter.model_id == model_id


# --- the conformance examples, against a running node ---

ROW = re.compile(r"^\| `(\w+)` \| `(.+)` \| `(.+)` \|$", re.M)


def _examples() -> list[tuple[str, str, str]]:
    rows = ROW.findall(_section(PAGE.read_text(), "## Conformance examples"))
    assert len(rows) >= 25
    return rows


def _with_values(value: Any, values: dict[str, Any]) -> Any:
    """The request with the page's placeholders (``"$NAME"``) replaced by this node's values."""
    if isinstance(value, dict):
        return {k: _with_values(v, values) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("$"):
        return values[value[1:]]
    return value


async def _answer(requester: Requester, peer_id: str, transport: str, spec: schema.Spec, body: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """(``ok`` or the error code, ``data.field``, a fetch header's ``length``)."""
    frames = []
    try:
        async for frame in requester.frames(peer_id, [transport], spec, body, timeout=30):
            frames.append(frame)
    except WireError as exc:
        return exc.code, exc.data.get("field"), None
    if spec.streamed:
        assert frames[-1] == {"done": True} and all("data" in f for f in frames[1:-1]), frames[:2]
        assert sum(len(f["data"]) for f in frames[1:-1]) == frames[0]["length"]
        return "ok", None, frames[0]["length"]
    return "ok", None, None


@pytest.mark.slow
def test_the_page_s_conformance_examples_hold_against_a_running_node(tmp_path) -> None:
    data_dir = new_node(tmp_path / "a")
    library = tmp_path / "library"
    library.mkdir()
    for name, text in NOTES.items():
        (library / name).write_text(text)
    content = (library / "flu.txt").read_bytes()
    daemon = started(data_dir)
    try:
        cli_json(data_dir, "library", "add", str(library))
        index_and_wait(data_dir)
        share = cli_json(data_dir, "share", "create", "notes", "--permission", "public", "--collection", str(library))
        peer_id, transport = split_peer_address(share["addresses"][0])
        manifest_keys = set(re.findall(r'^\s+"(\w+)":', _section(PAGE.read_text(), "## `/peerlight/manifest/1.0.0`"), re.M))

        async def run() -> list[str]:
            host = new_host(os.urandom(32))
            async with running(host, ["/ip4/127.0.0.1/tcp/0"]):
                requester = Requester(host)
                manifest = [f async for f in requester.frames(peer_id, [transport], schema.MANIFEST, {}, timeout=30)][0]
                assert set(manifest) | {"ok"} == manifest_keys, set(manifest) ^ manifest_keys  # the page shows the frame, ok included
                model = next(m for m in manifest["models"] if m["space"] == "text")
                rng = np.random.default_rng(7)
                digest = blake3.blake3(content).hexdigest()
                values = {
                    "HASH": digest,
                    "HASH_UPPER": digest.upper(),
                    "SIZE": len(content),
                    "SIZE_PLUS_1": len(content) + 1,
                    "SIZE_MINUS_10": len(content) - 10,
                    "MODEL": model["id"],
                    "VECTOR_48": rng.standard_normal(48).astype("<f4").tobytes(),
                    "VECTOR_TOO_LONG": rng.standard_normal(model["dimension"] + 1).astype("<f4").tobytes(),
                    "BYTES_64": bytes(64),
                }
                failures = []
                for protocol, request, expected in _examples():
                    spec = next(s for s in schema.PROTOCOLS if s.name == protocol)
                    body = _with_values(json.loads(request), values)
                    code, field, length = await _answer(requester, peer_id, transport, spec, body)
                    want = re.sub(r"\$(\w+)", lambda m: str(values[m.group(1)]), expected).split()
                    got = [code]
                    if len(want) > 1:  # the field an error names, or the length a fetch announces
                        got.append(f"length={length}" if code == "ok" else str(field))
                    if got != want:
                        failures.append(f"{protocol} {request}: expected {expected}, got {' '.join(map(str, got))}")
                return failures

        assert trio.run(run) == []
    finally:
        daemon.stop()
