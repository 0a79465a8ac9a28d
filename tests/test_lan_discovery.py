"""mDNS discovery between two nodes on a private LAN: two network namespaces joined by a veth pair.

Nothing here touches the machine's own network: each daemon runs inside a namespace this
test creates (and always deletes), and zeroconf sees only the veth interface and loopback.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time

import pytest

from peerlight.cli.client import ControlClient

from .helpers import DaemonProcess, cli_json, index_and_wait, new_node

pytestmark = pytest.mark.slow


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def private_lan():
    """Two namespaces, 10.77.x.1 and 10.77.x.2, joined by a veth pair: (name A, name B)."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    tag = secrets.token_hex(3)
    a, b = f"plA{tag}", f"plB{tag}"
    subnet = f"10.77.{int(tag[:2], 16)}"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        _ip("link", "set", f"va{tag}", "netns", a)
        _ip("link", "set", f"vb{tag}", "netns", b)
        _ip("-n", a, "addr", "add", f"{subnet}.1/24", "dev", f"va{tag}")
        _ip("-n", b, "addr", "add", f"{subnet}.2/24", "dev", f"vb{tag}")
        for ns, dev in ((a, f"va{tag}"), (b, f"vb{tag}")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
        yield a, b, subnet
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_lan_share_is_found_over_mdns_and_searched(private_lan, tmp_path) -> None:
    ns_a, ns_b, subnet = private_lan
    a_dir, b_dir = new_node(tmp_path / "a"), new_node(tmp_path / "b")
    library = tmp_path / "library"
    library.mkdir()
    (library / "flu.txt").write_text("Influenza spreads fast in winter: wash your hands and rest.")
    a = DaemonProcess(a_dir, wrapper=("ip", "netns", "exec", ns_a))
    b = DaemonProcess(b_dir, wrapper=("ip", "netns", "exec", ns_b))
    try:
        assert a.wait_ready() == "ready" and b.wait_ready() == "ready"
        cli_json(a_dir, "library", "add", str(library))
        index_and_wait(a_dir)
        share = cli_json(a_dir, "share", "create", "family", "--scope", "lan", "--collection", str(library))
        assert share["state"] == "serving" and share["permission"] == "members", share  # members by default on the LAN
        # It listens on the LAN interface only: not on loopback, not everywhere.
        assert [address.split("/")[2] for address in share["addresses"]] == [f"{subnet}.1"]

        # Found, but a members share tells a node without a grant nothing beyond where it is.
        found = cli_json(b_dir, "discover", "--lan")
        assert [(r["peer_id"], r["found_by"], r["name"], r["items"]) for r in found] == [(share["peer_id"], "mdns", None, None)], found
        assert found[0]["addresses"][0].startswith(f"/ip4/{subnet}.1/tcp/") and found[0]["last_error"].startswith("forbidden")
        granted = cli_json(a_dir, "share", "grant", "family", "--to", cli_json(b_dir, "status")["peer_id"])
        joined = cli_json(b_dir, "join", granted["invite"])
        assert (joined["name"], joined["scope"], joined["items"]) == ("family", "lan", 1), joined

        answer = cli_json(b_dir, "search", "avoid the flu", "--peers", "--modality", "text")
        assert [r["name"] for r in answer["results"]] == ["flu.txt"]

        # A local share in the same namespace is not announced: only lan shares are.
        cli_json(a_dir, "share", "edit", "family", "--scope", "local")
        cli_json(b_dir, "peers", "remove", found[0]["peer_id"])
        assert cli_json(b_dir, "discover", "--lan") == []

        # Pairing over the LAN: each node's devices share (lan) then serves the other, no grant needed.
        offered: dict = {}
        result: dict = {}
        shown = threading.Event()

        def offer() -> None:
            with ControlClient(a_dir / "control.sock", timeout=120) as client:
                result["a"] = client.call("devices.pair", on_event=lambda e: offered.update(e) or shown.set())

        worker = threading.Thread(target=offer)
        worker.start()
        assert shown.wait(60), "no pairing code was offered"
        assert f"/ip4/{subnet}.1/tcp/" in offered["join"], offered
        paired = cli_json(b_dir, "devices", "pair", "--join", offered["join"])
        worker.join(60)
        assert paired["paired"]["peer_id"] == cli_json(a_dir, "status")["peer_id"] and "paired" in result["a"]
        a_devices = next(s for s in cli_json(a_dir, "share", "list") if s["permission"] == "devices")
        assert a_devices["scope"] == "lan"
        for _ in range(100):
            remote = next((r for r in cli_json(b_dir, "peers") if r["peer_id"] == a_devices["peer_id"]), None)
            if remote and remote["items"] == 1:
                break
            time.sleep(0.1)
        answer = cli_json(b_dir, "search", "avoid the flu", "--peers", "--modality", "text")
        assert [(r["name"], r.get("peer_id")) for r in answer["results"]] == [("flu.txt", a_devices["peer_id"])], answer
    finally:
        a.stop()
        b.stop()
