"""Global search routed by topic, between real daemons on a DHT inside a network namespace.

24 public global shares (six in each of four daemons, each share its own libp2p host, key and
DHT server) publish their topics on a DHT entered through a mock bootstrap set of three plain
Kademlia servers (``tests/dht_swarm.py``), as a node enters the public IPFS DHT through
``network.bootstrap``. Six themes sit in three shares each, six more in one share each. A
searching node that holds every share (added by address) asks them all, then routes the same
query through the DHT: it must find the same top 10 while asking at most 10 shares. Everything
runs inside a namespace the test creates and deletes; no public bootstrap node is dialled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import DaemonProcess, cli_json, index_and_wait, new_node
from .themed_notes import QUERIES, THEMES, notes

pytestmark = pytest.mark.slow

SWARM = Path(__file__).with_name("dht_swarm.py")
DAEMONS, SHARES_EACH, NOTES_EACH = 4, 6, 6


def _config(bootstrap: list[str]) -> str:
    # Every address here is loopback: a global share announces them only when told to ("all").
    # Four daemons answer 24 shares' queries at once on two cores: answers get time (a share that
    # does not answer in time is ranked from a cached catalog, by prefix, and would rank otherwise).
    return f"[network]\nbootstrap = {json.dumps(bootstrap)}\nannounce = \"all\"\nquery_timeout_seconds = 60\n"


def _share_themes() -> list[str]:
    """24 shares: the six themes a query asks about three times each, six other themes once."""
    asked = list(QUERIES)
    others = [theme for theme in THEMES if theme not in QUERIES]
    return [theme for theme in asked for _ in range(3)] + others


def test_routed_search_finds_what_asking_every_share_finds(namespace, tmp_path) -> None:
    swarm = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, str(SWARM), "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    daemons: list[DaemonProcess] = []
    try:
        bootstrap = json.loads(swarm.stdout.readline())
        wrapper = ("ip", "netns", "exec", namespace)
        themes = _share_themes()
        holders = [new_node(tmp_path / f"node{d}", _config(bootstrap)) for d in range(DAEMONS)]
        searcher = new_node(tmp_path / "searcher", _config(bootstrap[:1]))
        for data_dir in [*holders, searcher]:
            daemons.append(DaemonProcess(data_dir, wrapper=wrapper))
        for daemon in daemons:
            assert daemon.wait_ready() == "ready", daemon.stderr()
        # Share i lives on daemon i % 4: a theme's three shares are on three daemons.
        shares: dict[str, tuple[Path, str]] = {}
        for d, data_dir in enumerate(holders):
            library = tmp_path / f"library{d}"
            for i in range(d, len(themes), DAEMONS):
                folder = library / f"share{i}"
                folder.mkdir(parents=True)
                for n, text in enumerate(notes(themes[i], NOTES_EACH, seed=i)):
                    (folder / f"{themes[i]}-{i}-{n}.txt").write_text(text)
            cli_json(data_dir, "library", "add", str(library))
        for data_dir in holders:
            index_and_wait(data_dir)
        for i in range(len(themes)):
            data_dir = holders[i % DAEMONS]
            made = cli_json(data_dir, "share", "create", f"share{i}", "--scope", "global", "--permission", "public",
                            "--collection", str(tmp_path / f"library{i % DAEMONS}" / f"share{i}"))
            assert made["state"] == "serving", made
            shares[f"share{i}"] = (data_dir, made["addresses"][0])
        # A members share publishes no topics: its items are nobody's business but its members'.
        private = cli_json(holders[0], "share", "create", "family", "--scope", "global", "--permission", "members",
                           "--collection", str(tmp_path / "library0" / "share0"))
        deadline = time.monotonic() + 120
        for name, (data_dir, _) in shares.items():
            while not ((dht := cli_json(data_dir, "share", "show", name).get("dht") or {}).get("provided") and dht.get("topics")):
                assert time.monotonic() < deadline, (name, dht)
                time.sleep(0.5)
        family = cli_json(holders[0], "share", "show", "family")
        while not (family.get("dht") or {}).get("provided"):
            assert time.monotonic() < deadline, family
            time.sleep(0.5)
            family = cli_json(holders[0], "share", "show", "family")
        assert family["dht"]["topics"] == 0, family

        for _, address in shares.values():
            cli_json(searcher, "peers", "add", address)
        asked_with_topics = set()
        for theme, query in QUERIES.items():
            everyone = cli_json(searcher, "search", query, "--peers", "--mode", "semantic", "--limit", "10")
            assert len(everyone["peers"]) == len(shares) and all(p["answered"] for p in everyone["peers"]), [
                (p["name"], p["error"]) for p in everyone["peers"] if not p["answered"]
            ]
            routed = cli_json(searcher, "search", query, "--global", "--mode", "semantic", "--limit", "10")
            # A network of 24 shares holds few of the 1,024 topics: the router looks further than 8, then lists the shares.
            assert routed["routing"]["asked"] <= 10 and routed["routing"]["lookups"] <= 25, routed["routing"]
            assert all(p["answered"] for p in routed["peers"]), routed["peers"]
            top = {r["content_hash"] for r in everyone["results"]}
            missed = [(r["name"], r.get("share"), round(r["score"], 3)) for r in everyone["results"] if r["content_hash"] not in {x["content_hash"] for x in routed["results"]}]
            extra = [(r["name"], r.get("share"), round(r["score"], 3)) for r in routed["results"] if r["content_hash"] not in top]
            assert not missed and not extra, (theme, missed, extra, [p["name"] for p in routed["peers"]], routed["routing"])
            assert {r["name"].split("-")[0] for r in everyone["results"]} == {theme}, everyone["results"]
            asked_with_topics |= {p["peer_id"] for p in routed["peers"]}
        assert private["peer_id"] not in asked_with_topics
    finally:
        for daemon in daemons:
            daemon.stop()
        swarm.stdin.close()
        swarm.wait(30)
