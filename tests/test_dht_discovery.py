"""Global discovery on a DHT of 20 nodes: a node finds a global share it was never told about.

Everything runs inside a network namespace this test creates (loopback only) and deletes:
the DHT swarm (``tests/dht_swarm.py``, 20 Kademlia servers) and two daemons. Node A's
global share joins the DHT through one swarm node and provides the Peerlight key; node B,
bootstrapped from another swarm node, looks the key up, and searches the share it found.
No public bootstrap node is ever dialled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import DaemonProcess, cli_json, index_and_wait, new_node

pytestmark = pytest.mark.slow

SWARM = Path(__file__).with_name("dht_swarm.py")


def _node(base: Path, name: str, bootstrap: str) -> Path:
    # Every address here is loopback: a global share announces them only when told to ("all").
    return new_node(base / name, f'[network]\nbootstrap = ["{bootstrap}"]\nannounce = "all"\n')


def test_a_global_share_is_found_on_a_dht_of_twenty_nodes(namespace, tmp_path) -> None:
    swarm = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, str(SWARM), "20"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    daemons = []
    try:
        nodes = json.loads(swarm.stdout.readline())
        assert len(nodes) == 20
        a_dir, b_dir = _node(tmp_path, "a", nodes[19]), _node(tmp_path, "b", nodes[7])
        library = tmp_path / "library"
        library.mkdir()
        (library / "flu.txt").write_text("Influenza spreads fast in winter: wash your hands and rest.")
        for data_dir in (a_dir, b_dir):
            daemons.append(DaemonProcess(data_dir, wrapper=("ip", "netns", "exec", namespace)))
            assert daemons[-1].wait_ready() == "ready"
        cli_json(a_dir, "library", "add", str(library))
        index_and_wait(a_dir)
        share = cli_json(a_dir, "share", "create", "world", "--scope", "global", "--permission", "public", "--collection", str(library))
        assert share["state"] == "serving" and share["announced"] == share["addresses"], share
        deadline = time.monotonic() + 60
        while not (cli_json(a_dir, "share", "show", "world").get("dht") or {}).get("provided"):
            assert time.monotonic() < deadline, cli_json(a_dir, "share", "show", "world")
            time.sleep(0.5)
        # Its DHT neighbours dialled it back on what it announces: it is reachable ("public").
        while (shown := cli_json(a_dir, "share", "show", "world"))["reachability"]["status"] != "public":
            assert time.monotonic() < deadline + 60 and shown["reachability"]["private_votes"] == 0, shown["reachability"]
            time.sleep(0.5)
        assert shown["reachability"]["public_votes"] >= 2 and shown["reachability"]["reached_at"], shown["reachability"]

        # B was never told about A: it finds the share on the DHT.
        assert cli_json(b_dir, "peers") == []
        found = cli_json(b_dir, "discover", "--global")
        assert [(r["name"], r["found_by"], r["scope"], r["peer_id"]) for r in found] == [("world", "dht", "global", share["peer_id"])]
        answer = cli_json(b_dir, "search", "avoid the flu", "--peers", "--modality", "text")
        assert [r["name"] for r in answer["results"]] == ["flu.txt"]
    finally:
        for daemon in daemons:
            daemon.stop()
        swarm.stdin.close()
        swarm.wait(30)
