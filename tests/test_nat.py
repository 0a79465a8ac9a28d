"""Two homes behind NATs find, search and fetch from each other through a relay on the public side.

The topology (``tests/nat_internet.py``) lives in namespaces this test creates and deletes: a
public side with a DHT of four nodes and a Peerlight node that relays (``network.relay_service``),
and two homes, each a daemon with a global share behind its own masquerading router. Each home
learns from AutoNAT that it is private, reserves a slot on the relay (home A from its
configuration, home B from the relay's DHT record), and announces its circuit address; home B
finds home A's share on the DHT and searches and fetches it through the relay.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import DaemonProcess, cli_json, index_and_wait, new_node
from .nat_internet import PUBLIC_IP, NatInternet

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables (make test checks for it)"),
]

SWARM = Path(__file__).with_name("dht_swarm.py")


def _config(bootstrap: list[str], *extra: str) -> str:
    """Several bootstrap nodes, as a real bootstrap list has: AutoNAT needs two that agree."""
    return "\n".join(["[network]", f"bootstrap = {json.dumps(bootstrap)}", 'announce = "all"', "reprovide_seconds = 10", *extra]) + "\n"


def _global_share(data_dir: Path, library: Path, name: str) -> dict[str, Any]:
    cli_json(data_dir, "library", "add", str(library))
    index_and_wait(data_dir)
    return cli_json(data_dir, "share", "create", name, "--scope", "global", "--permission", "public", "--collection", str(library))


def _wait(what: str, probe: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def _private_and_reserved(shown: dict[str, Any]) -> dict[str, Any] | None:
    return shown if shown["reachability"]["status"] == "private" and shown.get("relays") else None


@pytest.fixture
def internet() -> Any:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("network namespaces need root")
    built = NatInternet().build()
    try:
        yield built
    finally:
        built.remove()


def test_two_homes_behind_nats_meet_through_a_relay(internet, tmp_path) -> None:
    swarm = subprocess.Popen(
        ["ip", "netns", "exec", internet.public, sys.executable, str(SWARM), "4", PUBLIC_IP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    daemons: list[DaemonProcess] = []

    def start(data_dir: Path, namespace: str) -> None:
        daemons.append(DaemonProcess(data_dir, wrapper=("ip", "netns", "exec", namespace)))
        assert daemons[-1].wait_ready() == "ready", daemons[-1].stderr()

    try:
        nodes = json.loads(swarm.stdout.readline())
        for name in ("relay", "a", "b"):
            (tmp_path / f"{name}-library").mkdir()
        (tmp_path / "relay-library" / "about.txt").write_text("This node relays for homes behind NATs.")
        (tmp_path / "a-library" / "flu.txt").write_text("Influenza spreads fast in winter: wash your hands and rest.")
        (tmp_path / "b-library" / "bread.txt").write_text("Sourdough bread needs a starter, flour, water and patience.")

        relay_dir = new_node(tmp_path / "relay", _config(nodes, "relay_service = true"))
        start(relay_dir, internet.public)
        relay = _global_share(relay_dir, tmp_path / "relay-library", "relay")
        # The relay is public (its DHT neighbours dial it back), so it offers itself on the DHT.
        _wait("the relay to read public", lambda: cli_json(relay_dir, "share", "show", "relay")["reachability"]["status"] == "public")
        relay_address = next(a for a in relay["addresses"] if PUBLIC_IP in a)

        a_dir = new_node(tmp_path / "a", _config(nodes, f'relays = ["{relay_address}"]'))
        b_dir = new_node(tmp_path / "b", _config(nodes))  # finds the relay on the DHT
        start(a_dir, internet.home_a)
        start(b_dir, internet.home_b)
        world = _global_share(a_dir, tmp_path / "a-library", "world")
        _global_share(b_dir, tmp_path / "b-library", "kitchen")

        for data_dir, name in ((a_dir, "world"), (b_dir, "kitchen")):
            shown = _wait(
                f"{name} to read private and hold a reservation",
                lambda data_dir=data_dir, name=name: _private_and_reserved(cli_json(data_dir, "share", "show", name)),
                timeout=150,
            )
            assert shown["reachability"]["public_votes"] == 0, shown["reachability"]
            assert [r["relay"] for r in shown["relays"]] == [relay["peer_id"]], shown["relays"]
            circuit = f"{relay_address}/p2p-circuit/p2p/{shown['peer_id']}"
            assert circuit in shown["announced"], shown["announced"]
        relay_state = cli_json(relay_dir, "share", "show", "relay")["relay"]
        assert relay_state["reservations"] == 2, relay_state

        # B was never told about A: the DHT gives it A's share, reachable only through the relay.
        found = _wait(
            "B to find A's share on the DHT",
            lambda: [r for r in cli_json(b_dir, "discover", "--global") if r["peer_id"] == world["peer_id"]],
            timeout=90,
        )
        assert any("/p2p-circuit" in address for address in found[0]["addresses"]), found
        answer = cli_json(b_dir, "search", "avoid the flu", "--peers", "--modality", "text")
        assert [r["name"] for r in answer["results"]][:1] == ["flu.txt"], answer
        target = tmp_path / "fetched"
        fetched = cli_json(b_dir, "fetch", "world", "flu.txt", "--to", str(target))
        assert Path(fetched["path"]).read_text() == (tmp_path / "a-library" / "flu.txt").read_text()
        peers = {p["peer_id"]: p for p in cli_json(b_dir, "peers")}
        assert peers[world["peer_id"]]["connection"] == "relayed", peers[world["peer_id"]]
        relayed = cli_json(relay_dir, "share", "show", "relay")["relay"]
        assert relayed["circuits"] >= 1 and relayed["bytes_relayed"] > 0, relayed
    finally:
        for daemon in daemons:
            daemon.stop()
        swarm.stdin.close()
        swarm.wait(30)
