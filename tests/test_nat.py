"""Homes behind NATs find, search and fetch from each other: directly after a hole punch, and
through a relay where the NAT defeats punching.

The topology (``tests/nat_internet.py``) lives in namespaces this test creates and deletes: a
public side with a DHT of four nodes and two Peerlight nodes that relay
(``network.relay_service``); homes A and B behind endpoint-independent NATs, each a daemon with
a global share; home C behind a symmetric NAT, a daemon with no share. A and B learn from
AutoNAT that they are private, reserve relay slots (A from its configuration, B from the
relays' DHT records) and announce their circuit addresses. B finds A's share on the DHT,
reaches it through a relay, and the two punch a hole (DCUtR): B's connection turns direct.
C's punch fails, so C stays on the relay; the relay carrying C's long fetch dies, and the fetch
goes on through the other relay. An invite made behind A's NAT then lets C join, and A and C
pair their devices between the two homes.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from peerlight.cli.client import ControlClient

from .helpers import PEERLIGHT, DaemonProcess, cli_json, index_and_wait, new_node
from .media import tone
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


def test_homes_behind_nats_meet_directly_after_a_punch_or_through_a_relay(internet, tmp_path) -> None:
    swarm = subprocess.Popen(
        ["ip", "netns", "exec", internet.public, sys.executable, str(SWARM), "4", PUBLIC_IP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    daemons: dict[str, DaemonProcess] = {}

    def start(name: str, data_dir: Path, namespace: str) -> None:
        daemons[name] = DaemonProcess(data_dir, wrapper=("ip", "netns", "exec", namespace))
        assert daemons[name].wait_ready() == "ready", daemons[name].stderr()

    def connection(data_dir: Path, peer_id: str) -> str | None:
        return {p["peer_id"]: p for p in cli_json(data_dir, "peers")}[peer_id]["connection"]

    try:
        nodes = json.loads(swarm.stdout.readline())
        # Two public nodes relay for others (their shares hold nothing).
        relays: dict[str, dict[str, Any]] = {}
        relay_dirs: dict[str, Path] = {}
        for name in ("r1", "r2"):
            relay_dirs[name] = new_node(tmp_path / name, _config(nodes, "relay_service = true"))
            start(name, relay_dirs[name], internet.public)
            (tmp_path / f"{name}-library").mkdir()
            relays[name] = _global_share(relay_dirs[name], tmp_path / f"{name}-library", "relay")
        for name in relays:  # public: their DHT neighbours dial them back, so they offer themselves on the DHT
            _wait(f"{name} to read public", lambda name=name: cli_json(relay_dirs[name], "share", "show", "relay")["reachability"]["status"] == "public")
        relay_addresses = {name: next(a for a in share["addresses"] if PUBLIC_IP in a) for name, share in relays.items()}

        for name in ("a", "b"):
            (tmp_path / f"{name}-library").mkdir()
        (tmp_path / "a-library" / "flu.txt").write_text("Influenza spreads fast in winter: wash your hands and rest.")
        tone(tmp_path / "a-library" / "long.wav", seconds=200)  # 19 MB: long enough to lose a relay under
        (tmp_path / "b-library" / "bread.txt").write_text("Sourdough bread needs a starter, flour, water and patience.")
        a_dir = new_node(tmp_path / "a", _config(nodes, f"relays = {json.dumps(list(relay_addresses.values()))}"))
        b_dir = new_node(tmp_path / "b", _config(nodes))  # finds relays on the DHT
        c_dir = new_node(tmp_path / "c", _config(nodes))
        start("a", a_dir, internet.home_a)
        start("b", b_dir, internet.home_b)
        start("c", c_dir, internet.home_c)
        world = _global_share(a_dir, tmp_path / "a-library", "world")
        _global_share(b_dir, tmp_path / "b-library", "kitchen")

        for data_dir, name in ((a_dir, "world"), (b_dir, "kitchen")):
            shown = _wait(
                f"{name} to read private and hold reservations",
                lambda data_dir=data_dir, name=name: _private_and_reserved(cli_json(data_dir, "share", "show", name)),
                timeout=150,
            )
            assert shown["reachability"]["public_votes"] == 0, shown["reachability"]
        relay_ids = {share["peer_id"]: name for name, share in relays.items()}
        a_shown = _wait("A to hold both relays", lambda: len((s := cli_json(a_dir, "share", "show", "world"))["relays"]) == 2 and s)
        assert {r["relay"] for r in a_shown["relays"]} == set(relay_ids), a_shown["relays"]
        for address in relay_addresses.values():  # announced at the relay's public address
            assert f"{address}/p2p-circuit/p2p/{world['peer_id']}" in a_shown["announced"], a_shown["announced"]
        assert sum(cli_json(relay_dirs[name], "share", "show", "relay")["relay"]["reservations"] for name in relays) >= 3

        # Neither B nor C was told about A: the DHT gives them A's share, behind both relays.
        for data_dir in (b_dir, c_dir):
            _wait(
                "A's share on the DHT, behind both relays",
                lambda data_dir=data_dir: [
                    r for r in cli_json(data_dir, "discover", "--global") if r["peer_id"] == world["peer_id"] and sum("/p2p-circuit" in a for a in r["addresses"]) == 2
                ],
                timeout=90,
            )
            answer = cli_json(data_dir, "search", "avoid the flu", "--peers", "--modality", "text")
            assert [r["name"] for r in answer["results"]][:1] == ["flu.txt"], answer

        # B and A sit behind NATs that keep a connection's port: A punches a hole to B, and B's
        # connection to A turns direct; what B fetches then goes straight.
        _wait("B's connection to A to turn direct", lambda: connection(b_dir, world["peer_id"]) == "direct", timeout=60)
        target = tmp_path / "fetched"
        fetched = cli_json(b_dir, "fetch", "world", "flu.txt", "--to", str(target))
        assert Path(fetched["path"]).read_text() == (tmp_path / "a-library" / "flu.txt").read_text()
        assert connection(b_dir, world["peer_id"]) == "direct"

        # C's NAT gives every connection a new port: the punch cannot work, and C stays on a relay.
        fetched = cli_json(c_dir, "fetch", "world", "flu.txt", "--to", str(tmp_path / "c-fetched"))
        assert Path(fetched["path"]).read_text() == (tmp_path / "a-library" / "flu.txt").read_text()
        time.sleep(10)  # A's punches at C have had their time
        assert connection(c_dir, world["peer_id"]) == "relayed"

        # Home A's uplink is slow (32 Mbit/s): the relay carrying C's long fetch dies under it,
        # and the fetch goes on through the other relay, from where it was.
        subprocess.run(["ip", "netns", "exec", internet.router_a, "tc", "qdisc", "add", "dev", "w0", "root", "tbf", "rate", "32mbit", "burst", "64kb", "latency", "300ms"], check=True)
        target = tmp_path / "c-long"
        fetch = subprocess.Popen(
            [str(PEERLIGHT), "fetch", "world", "long.wav", "--to", str(target), "--data-dir", str(c_dir), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        partials = lambda: [p.stat().st_size for p in target.glob(".*.peerlight-partial")]  # noqa: E731
        relayed = lambda name: cli_json(relay_dirs[name], "share", "show", "relay")["relay"]["bytes_relayed"]  # noqa: E731
        _wait("the long fetch to be under way", lambda: any(size > 1_000_000 for size in partials()), timeout=60)
        before = {name: relayed(name) for name in relays}
        _wait("the long fetch to move on", lambda: any(size > 3_000_000 for size in partials()), timeout=60)
        # The relay carrying it is the one whose bytes grow (the other may still hold B's relayed
        # connection, idle since the punch, for its minute of grace).
        grown = {name: relayed(name) - before[name] for name in relays}
        carrying = [name for name, more in grown.items() if more > 1_000_000]
        assert len(carrying) == 1, grown
        daemons.pop(carrying[0]).stop(signal.SIGKILL)
        out, err = fetch.communicate(timeout=180)
        assert fetch.returncode == 0, (out, err)
        long_fetch = json.loads(out)
        assert long_fetch["attempts"] >= 2, long_fetch
        assert Path(long_fetch["path"]).read_bytes() == (tmp_path / "a-library" / "long.wav").read_bytes()
        survivor = next(name for name in relays if name != carrying[0])
        assert cli_json(relay_dirs[survivor], "share", "show", "relay")["relay"]["bytes_relayed"] > 2_000_000

        # A lost the dead relay; an invite made now names the survivor, and C joins through it.
        _wait("A to drop the dead relay", lambda: [r["relay"] for r in cli_json(a_dir, "share", "show", "world")["relays"]] == [relays[survivor]["peer_id"]])
        invite = cli_json(a_dir, "share", "grant", "world", "--invite")["invite"]
        cli_json(c_dir, "peers", "remove", world["peer_id"])
        joined = cli_json(c_dir, "join", invite)
        assert (joined["name"], joined["granted"]) == ("world", True), joined
        assert any(f"{relays[survivor]['peer_id']}/p2p-circuit" in a for a in joined["addresses"]), joined

        # A pairs with C between their homes: A's offer reaches C through a relay, and A's devices
        # share (global now, private, on the relay) serves C with no grant.
        offered: dict[str, Any] = {}
        result: dict[str, Any] = {}
        shown = threading.Event()

        def offer() -> None:
            try:
                with ControlClient(a_dir / "control.sock", timeout=240) as client:
                    result["a"] = client.call("devices.pair", scope="global", on_event=lambda e: offered.update(e) or shown.set())
            except Exception as exc:  # shown to the test below
                result["error"] = repr(exc)
                shown.set()

        worker = threading.Thread(target=offer)
        worker.start()
        assert shown.wait(60) and "error" not in result, ("no pairing code was offered", result)
        join = next(j for j in offered["joins"] if f"{relays[survivor]['peer_id']}/p2p-circuit" in j)
        a_devices = next(s for s in cli_json(a_dir, "share", "list") if s["permission"] == "devices")
        assert a_devices["scope"] == "global", a_devices
        _wait("A's devices share to hold a relay slot", lambda: _private_and_reserved(cli_json(a_dir, "share", "show", a_devices["name"])), timeout=150)
        paired = cli_json(c_dir, "devices", "pair", "--join", join, "--scope", "global")
        worker.join(60)
        assert paired["paired"]["peer_id"] == cli_json(a_dir, "status")["peer_id"] and "paired" in result["a"], (paired, result)
        _wait("C to copy A's devices share", lambda: any(r["peer_id"] == a_devices["peer_id"] and r["items"] == 2 for r in cli_json(c_dir, "peers")))
        answer = cli_json(c_dir, "search", "avoid the flu", "--peers", "--modality", "text")
        assert a_devices["peer_id"] in {r.get("peer_id") for r in answer["results"]}, answer
    finally:
        for daemon in daemons.values():
            daemon.stop()
        swarm.stdin.close()
        swarm.wait(30)
