"""Two nodes in separate processes talk over real libp2p hosts on loopback.

Node A shares a folder of its library; node B adds the share by multiaddr, searches it
together with its own items, and fetches files, verified, across an interruption and a
restart of A. Nothing here is mocked: two daemons, their catalogs, models and hosts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
import time
import wave
from pathlib import Path

import blake3
import numpy as np
import pytest

from peerlight.cli.client import ControlClient
from peerlight.node.control.protocol import ControlError

from .helpers import cli_json, index_and_wait, new_node, started
from .media import image

pytestmark = pytest.mark.slow

NOTES = {
    "flu.txt": "Influenza spreads fast in winter. Wash your hands, sleep enough and stay home when you have a fever.",
    "bread.txt": "A bread recipe: flour, water, yeast and salt. Knead for ten minutes and bake in a hot oven.",
    "garden.txt": "Tomatoes need sun, water and support; prune the side shoots every week in summer.",
}


def _noise_wav(path: Path, megabytes: int) -> Path:
    """A long WAV of noise: a big item whose bytes do not compress, for transfers that take a while."""
    rng = np.random.default_rng(7)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48000)
        for _ in range(megabytes):
            out.writeframes(rng.integers(-3000, 3000, size=512 * 1024, dtype=np.int16).tobytes())
    return path


@pytest.fixture
def two_nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("nodes")
    nodes = [new_node(base / "a", f"[network]\nmetrics_port = {_free_port()}\n"), new_node(base / "b")]
    library = base / "library"
    (library / "notes").mkdir(parents=True)
    (library / "private").mkdir()
    for name, text in NOTES.items():
        (library / "notes" / name).write_text(text)
    (library / "private" / "diary.txt").write_text("My private diary: influenza kept me in bed all winter.")
    image(library / "notes" / "photo.png", size=(1200, 900))
    _noise_wav(library / "notes" / "long.wav", 160)  # ~0.5 s to send: time to kill the server mid-way
    a = started(nodes[0])
    b = started(nodes[1])
    try:
        yield nodes[0], nodes[1], library, a, b
    finally:
        for process in (a, b):
            process.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metrics(data_dir: Path) -> str:
    import tomllib

    port = tomllib.loads((data_dir / "node.toml").read_text())["network"]["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def _share_address(data_dir: Path, name: str) -> str:
    share = cli_json(data_dir, "share", "show", name)
    assert share["state"] == "serving", share
    return share["addresses"][0]


def test_a_share_is_searched_and_fetched_by_another_node(two_nodes, tmp_path) -> None:
    a_dir, b_dir, library, a, b = two_nodes
    cli_json(a_dir, "library", "add", str(library))
    index_and_wait(a_dir)

    # Every node serves its whole library on loopback through the automatic local share.
    shares = cli_json(a_dir, "share", "list")
    assert [(s["name"], s["scope"], s["automatic"], s["state"]) for s in shares] == [("local", "local", True, "serving")]
    assert all(address.startswith("/ip4/127.0.0.1/") for address in shares[0]["addresses"])

    created = cli_json(a_dir, "share", "create", "notes", "--permission", "public", "--collection", str(library / "notes"))
    assert created["state"] == "serving" and created["peer_id"] != shares[0]["peer_id"]  # shares cannot be linked
    address = _share_address(a_dir, "notes")

    remote = cli_json(b_dir, "peers", "add", address)
    assert remote["name"] == "notes" and remote["last_error"] is None
    assert remote["items"] == 5 and remote["modalities"] == ["audio", "image", "text"]  # the private folder is not counted
    # Adding a share copies its catalog (items and K-prefixes), the private folder excepted, in the background.
    deadline = time.monotonic() + 30
    while (listed := cli_json(b_dir, "peers")[0])["cached_items"] < 5 or listed["syncing"] is not None:
        assert time.monotonic() < deadline, listed
        time.sleep(0.1)
    assert listed["cached_items"] == 5 and listed["last_error"] is None

    # (The image model is randomly initialised here: its cosines mean nothing, so the notes are searched alone.)
    found = cli_json(b_dir, "search", "how do I avoid getting sick in winter", "--peers", "--limit", "10", "--modality", "text")
    names = [r["name"] for r in found["results"] if r["source"] == "peer"]
    assert names and names[0] == "flu.txt", (found["peers"], found["warnings"])
    assert "diary.txt" not in names  # outside the share's collection
    assert all("path" not in r and "rating" not in r for r in found["results"] if r["source"] == "peer")
    assert found["peers"] == [{"peer_id": remote["peer_id"], "name": "notes", "answered": True, "results": len(names), "error": None}]

    target = tmp_path / "downloads"
    target.mkdir()
    fetched = cli_json(b_dir, "fetch", "notes", "flu.txt", "--to", str(target))
    assert Path(fetched["path"]).read_text() == NOTES["flu.txt"]
    photo = (library / "notes" / "photo.png").read_bytes()
    by_hash = cli_json(b_dir, "fetch", remote["peer_id"], blake3.blake3(photo).hexdigest(), "--to", str(target))
    assert Path(by_hash["path"]).read_bytes() == photo
    # The same name again gets a new name, never replacing the first download.
    again = cli_json(b_dir, "fetch", "notes", "flu.txt", "--to", str(target))
    assert again["path"] != fetched["path"] and Path(again["path"]).read_text() == NOTES["flu.txt"]
    assert not [p for p in target.iterdir() if p.name.endswith(".peerlight-partial")]

    # Previews: the opening of a document, a JPEG thumbnail of an image, ten seconds of audio.
    excerpt = cli_json(b_dir, "preview", "notes", "flu.txt", "--to", str(target))
    assert excerpt["text"] == NOTES["flu.txt"]
    thumbnail = cli_json(b_dir, "preview", "notes", "photo.png", "--to", str(target))
    from PIL import Image

    with Image.open(thumbnail["path"]) as shrunk:
        assert shrunk.format == "JPEG" and max(shrunk.size) == 256
    snippet = cli_json(b_dir, "preview", "notes", "long.wav", "--to", str(target))
    with wave.open(snippet["path"]) as audio:
        assert audio.getnframes() == 10 * 16000

    # The traffic shows in `share show` and on the metrics endpoint (loopback only).
    shown = cli_json(a_dir, "share", "show", "notes")["protocols"]
    assert shown["query"]["requests"] >= 1 and shown["fetch"]["bytes_out"] > len(photo)
    metrics = _metrics(a_dir)
    assert 'peerlight_share_requests_total{protocol="query",share="notes"}' in metrics
    assert 'peerlight_share_bytes_total{direction="out",protocol="fetch",share="notes"}' in metrics

    # A share of the notes' text only names only the model of its own items (not the image model).
    texts = cli_json(a_dir, "share", "create", "texts", "--permission", "public", "--collection", str(library / "notes"), "--modality", "text")
    only_text = cli_json(b_dir, "peers", "add", texts["addresses"][0], "--wait")
    assert only_text["items"] == 3 and [m.split(":")[1] for m in only_text["models"]] == ["all-MiniLM-L6-v2"], only_text

    # A file outside the share cannot be fetched, even by its exact content hash.
    diary_hash = blake3.blake3((library / "private" / "diary.txt").read_bytes()).hexdigest()
    missing = cli_json(b_dir, "fetch", "notes", diary_hash, "--to", str(target), expect_rc=1)
    assert missing["error"]["code"] == "not_found", missing


def test_a_share_keeps_its_identity_and_port_and_a_client_recovers_from_a_killed_server(two_nodes, tmp_path) -> None:
    a_dir, b_dir, library, a, b = two_nodes
    cli_json(a_dir, "library", "add", str(library))
    index_and_wait(a_dir)
    before = cli_json(a_dir, "share", "create", "notes", "--permission", "public", "--collection", str(library / "notes"))
    cli_json(b_dir, "peers", "add", before["addresses"][0], "--wait")
    wav = (library / "notes" / "long.wav").read_bytes()
    wav_hash = blake3.blake3(wav).hexdigest()
    target = tmp_path / "downloads"
    target.mkdir()

    # Kill A (SIGKILL: no goodbye) while B downloads, then restart it: B resumes where it was.
    killed = threading.Event()
    progress: list[int] = []

    def on_event(event: dict) -> None:
        progress.append(event["received"])
        if 0 < event["received"] < event["size"] and not killed.is_set():
            killed.set()
            os.kill(a.pid, signal.SIGKILL)

    result: dict = {}

    def download() -> None:
        with ControlClient(b_dir / "control.sock", timeout=None) as client:
            try:
                result["ok"] = client.call("peers.fetch", share="notes", item=wav_hash, to=str(target), on_event=on_event)
            except ControlError as exc:
                result["error"] = exc

    worker = threading.Thread(target=download)
    worker.start()
    assert killed.wait(120), "the download never started"
    a.proc.wait(30)
    restarted = started(a_dir)
    try:
        worker.join(180)
        assert "ok" in result, result
        assert result["ok"]["attempts"] > 1
        assert Path(result["ok"]["path"]).read_bytes() == wav
        first_data = next(i for i, received in enumerate(progress) if received > 0)
        assert 0 not in progress[first_data:], "the transfer started over instead of resuming"

        after = cli_json(a_dir, "share", "show", "notes")
        assert (after["peer_id"], after["port"], after["addresses"]) == (before["peer_id"], before["port"], before["addresses"])
        assert before["addresses"][0].startswith(f"/ip4/127.0.0.1/tcp/{before['port']}/p2p/")
        # B's search waits 5 s for peers; the restarted A loads its text model first (8-10 s cold).
        cli_json(a_dir, "search", "load the model")
        found = cli_json(b_dir, "search", "wash your hands", "--peers")
        assert any(r.get("name") == "flu.txt" for r in found["results"]), found

        # A paused share stops listening: B's search says so, and still answers from B's own index.
        cli_json(a_dir, "share", "pause", "notes")
        paused = cli_json(b_dir, "search", "wash your hands", "--peers", "--modality", "text")
        assert paused["peers"][0]["answered"] is False and any("did not answer" in w for w in paused["warnings"])
        # ... and ranks the share's items from its cached catalog instead.
        cached = [r for r in paused["results"] if r.get("from_cache")]
        assert cached and cached[0]["name"] == "flu.txt", (paused["warnings"], [(p["cached_items"], p["models"]) for p in cli_json(b_dir, "peers")])
        cli_json(a_dir, "share", "resume", "notes")
        resumed = cli_json(b_dir, "search", "wash your hands", "--peers")
        assert resumed["peers"][0]["answered"] is True, resumed["peers"][0]["error"]

        # The share moves to another port (a new address): B, told the new address, reaches it at
        # once although the old one is still in its list (no 60 s block after the failed dial).
        moved = cli_json(a_dir, "share", "edit", "notes", "--port", str(_free_port()))
        assert moved["port"] != before["port"] and moved["peer_id"] == before["peer_id"]
        cli_json(b_dir, "peers", "add", moved["addresses"][0], "--wait")
        again = cli_json(b_dir, "search", "wash your hands", "--peers")
        assert again["peers"][0]["answered"] is True, again["peers"][0]["error"]
        assert len(cli_json(b_dir, "peers")[0]["addresses"]) == 2
    finally:
        restarted.stop()


@pytest.mark.parametrize("b_adapter", ["none", "its own"])
def test_a_node_with_another_adapter_joins_the_share_s_space_through_its_adapter(tmp_path, b_adapter: str) -> None:
    """A's share holds vectors in the universal space (the shipped adapter). B stores either base
    MiniLM vectors (no ordering adapter) or vectors in a space of its own (an adapter it made
    from its library). B fetches A's adapter over the adapter protocol, checks it produces A's
    model id, and turns its own base query vector into a query in A's space."""
    from peerlight.embeddings.adapters import pca_adapter

    a_dir = new_node(tmp_path / "a")
    a = started(a_dir)
    base_id = next(m["base_model_id"] for m in cli_json(a_dir, "models") if m["role"] == "text")
    if b_adapter == "none":
        b_config = '[text_model]\nadapter = "none"\n'
    else:  # any other adapter of the same base model: here a PCA of some vectors, as a node fits one
        own = tmp_path / "own-adapter.npz"
        rng = np.random.default_rng(0)
        own.write_bytes(pca_adapter(base_id, rng.normal(size=(500, 384)).astype(np.float32)).to_bytes())
        b_config = f'[text_model]\nadapter = "{own}"\n'
    b_dir = new_node(tmp_path / "b", b_config)
    library = tmp_path / "library"
    library.mkdir()
    for name, text in NOTES.items():
        (library / name).write_text(text)
    b = started(b_dir)
    try:
        cli_json(a_dir, "library", "add", str(library))
        index_and_wait(a_dir)
        share = cli_json(a_dir, "share", "create", "notes", "--permission", "public", "--collection", str(library))
        remote = cli_json(b_dir, "peers", "add", share["addresses"][0], "--wait")
        a_model = next(m for m in remote["models"] if m.startswith("ordered:"))
        b_models = {m["role"]: m["model_id"] for m in cli_json(b_dir, "models") if m.get("model_id")}
        assert b_models["text"] != a_model and b_models["text"].startswith("ordered:") == (b_adapter == "its own")

        found = cli_json(b_dir, "search", "how do I avoid getting sick in winter", "--peers", "--modality", "text")
        names = [r["name"] for r in found["results"] if r["source"] == "peer"]
        assert names and names[0] == "flu.txt", found
        protocols = cli_json(a_dir, "share", "show", "notes")["protocols"]
        assert protocols["adapter"]["requests"] == 1 and protocols["query"]["requests"] >= 1
        # The adapter is fetched once and kept.
        cli_json(b_dir, "search", "bread", "--peers", "--modality", "text")
        assert cli_json(a_dir, "share", "show", "notes")["protocols"]["adapter"]["requests"] == 1
    finally:
        a.stop()
        b.stop()


def _corrupting_peer(path: Path, mode: str) -> tuple[subprocess.Popen, str]:
    peer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("corrupting_peer.py")), str(path), mode], stdout=subprocess.PIPE, text=True
    )
    return peer, peer.stdout.readline().strip()


def test_a_damaged_chunk_is_fetched_again_and_a_wrong_file_never_gets_its_name(two_nodes, tmp_path) -> None:
    """Peers that send damaged bytes (a separate process speaking the documented protocol)."""
    _, b_dir, library, _, _ = two_nodes
    wav = library / "notes" / "long.wav"
    wav_hash = blake3.blake3(wav.read_bytes()).hexdigest()
    target = tmp_path / "downloads"
    target.mkdir()

    peer, address = _corrupting_peer(wav, "flip-once")
    try:
        remote = cli_json(b_dir, "peers", "add", address, "--wait")
        fetched = cli_json(b_dir, "fetch", remote["peer_id"], wav_hash, "--to", str(target))
        assert fetched["attempts"] == 2 and Path(fetched["path"]).read_bytes() == wav.read_bytes()
    finally:
        peer.kill()
    requests = [json.loads(line) for line in peer.stdout.read().splitlines()]
    # The two good chunks before the damaged one were kept: the second request starts at the third.
    assert [r["offset"] for r in requests] == [0, 2 * 1024 * 1024], requests

    (target / "again").mkdir()
    liar, address = _corrupting_peer(wav, "other-file")
    try:
        remote = cli_json(b_dir, "peers", "add", address, "--wait")
        refused = cli_json(b_dir, "fetch", remote["peer_id"], wav_hash, "--to", str(target / "again"), expect_rc=1)
    finally:
        liar.kill()
    assert "discarded" in refused["error"]["message"], refused
    assert not list((target / "again").iterdir())  # neither the file nor a partial one


def test_three_nodes_sync_and_search_each_other(two_nodes, tmp_path) -> None:
    """B adds the shares of A and C (three daemons) and ranks both with its own items."""
    a_dir, b_dir, library, _, _ = two_nodes
    c_dir = new_node(tmp_path / "c")
    c_library = tmp_path / "c-library"
    c_library.mkdir()
    (c_library / "cold.txt").write_text("A cold with a fever: rest, drink water and wash your hands often so others stay well.")
    (c_library / "bikes.txt").write_text("Oil the chain of your bicycle every month and check the tyre pressure.")
    c = started(c_dir)
    try:
        cli_json(a_dir, "library", "add", str(library / "notes"))
        index_and_wait(a_dir)
        cli_json(c_dir, "library", "add", str(c_library))
        index_and_wait(c_dir)
        shares = [cli_json(node, "share", "create", "mine", "--permission", "public", "--collection", str(folder)) for node, folder in ((a_dir, library / "notes"), (c_dir, c_library))]
        added = [cli_json(b_dir, "peers", "add", share["addresses"][0], "--wait") for share in shares]
        assert sorted(p["cached_items"] for p in cli_json(b_dir, "peers")) == [2, 5]  # both catalogs synced
        found = cli_json(b_dir, "search", "what to do against the flu", "--peers", "--modality", "text", "--limit", "4")
        assert all(p["answered"] for p in found["peers"]) and len(found["peers"]) == 2, found["peers"]
        by_peer = {r["peer_id"]: r["name"] for r in found["results"] if r.get("source") == "peer"}
        assert set(by_peer) == {p["peer_id"] for p in added}, found["results"]
        top_two = {r["name"] for r in found["results"][:2]}
        assert top_two == {"flu.txt", "cold.txt"}, found["results"]
    finally:
        c.stop()
