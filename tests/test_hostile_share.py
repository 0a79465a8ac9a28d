"""A client node against a malicious share (tests/hostile_share.py, its own process).

For each attack the client answers with a typed error, within bounded memory and disk, and
never hangs; the daemon keeps serving its user meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import cli, cli_json, new_node, started

pytestmark = pytest.mark.slow

HOSTILE = Path(__file__).with_name("hostile_share.py")


def _strict_json(text: str):  # type: ignore[no-untyped-def]
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Hostile:
    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HOSTILE), mode], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        assert "/p2p/" in self.address, self.address
        self.peer_id = self.address.rsplit("/p2p/", 1)[1]

    def requests(self) -> list[dict]:
        """What it was asked (after it is stopped)."""
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=30)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[tuple[Path, object]]:
    data_dir = new_node(tmp_path_factory.mktemp("client") / "node")
    daemon = started(data_dir)
    try:
        yield data_dir, daemon
    finally:
        daemon.stop()


def _remote(data_dir: Path, peer_id: str) -> dict:
    return next(r for r in cli_json(data_dir, "peers") if r["peer_id"] == peer_id)


def _still_serving(data_dir: Path, daemon) -> None:  # type: ignore[no-untyped-def]
    assert daemon.proc.poll() is None
    assert cli_json(data_dir, "status")["peer_id"]


def test_a_reply_of_many_huge_frames_is_refused_at_the_first(client) -> None:
    data_dir, daemon = client
    hostile = Hostile("many-frames")
    before = _rss_bytes(daemon.pid)
    added = cli_json(data_dir, "peers", "add", hostile.address, "--wait")
    grown = _rss_bytes(daemon.pid) - before
    assert added["last_error"].startswith("malformed") and "more than 1 frame" in added["last_error"], added
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB for a 504 MiB reply"
    hostile.requests()
    _still_serving(data_dir, daemon)


def test_a_catalog_that_makes_no_progress_ends_the_sync_at_once(client) -> None:
    data_dir, _ = client
    hostile = Hostile("repeat-cursor")
    added = cli_json(data_dir, "peers", "add", hostile.address)  # returns once the manifest is read
    assert added["name"] == "hostile"
    deadline = time.monotonic() + 30
    while "no progress" not in ((remote := _remote(data_dir, hostile.peer_id))["last_error"] or ""):  # the background sync ended
        assert time.monotonic() < deadline, remote
        time.sleep(0.1)
    assert remote["syncing"] is None
    catalog_requests = [r for r in hostile.requests() if r["protocol"].startswith("/peerlight/catalog/")]
    assert len(catalog_requests) == 1, catalog_requests


def test_a_catalog_that_grows_past_its_manifest_is_cut_and_dropped(client) -> None:
    data_dir, _ = client
    hostile = Hostile("growing-cursor")
    added = cli_json(data_dir, "peers", "add", hostile.address, "--wait")
    assert (added["last_error"] or "").startswith("catalog sync: too_large"), added
    remote = next(r for r in cli_json(data_dir, "peers") if r["peer_id"] == hostile.peer_id)
    assert remote["cached_items"] == 0, remote  # nothing of what it sent is kept
    catalog_requests = [r for r in hostile.requests() if r["protocol"].startswith("/peerlight/catalog/")]
    assert len(catalog_requests) <= 4, len(catalog_requests)  # 3 items said, room for 1,000 more: 3 pages of 500


def test_numbers_and_names_from_a_share_reach_no_database_json_or_terminal_unchecked(client) -> None:
    data_dir, _ = client
    hostile = Hostile("odd-values")
    added = cli_json(data_dir, "peers", "add", hostile.address, "--wait")
    assert added["last_error"] is None, added  # the bad items are left out, the share is kept
    remote = next(r for r in cli_json(data_dir, "peers") if r["peer_id"] == hostile.peer_id)
    assert remote["cached_items"] == 1 and remote["name"] == "[2J]0;pwnedeviltxt.exe", remote
    shown = cli(data_dir, "peers")
    assert shown.returncode == 0 and not {"\x1b", "\u202e", "\x00", "\x07"} & set(shown.stdout), repr(shown.stdout)

    found = cli(data_dir, "search", "file", "--peers", "--json")
    assert found.returncode == 0, found.stderr
    results = [r for r in _strict_json(found.stdout)["results"] if r["source"] == "peer"]
    assert {r["name"] for r in results} == {"file.bin", "[2J]0;pwnedeviltxt.exe"}, results
    human = cli(data_dir, "search", "file", "--peers")
    assert human.returncode == 0 and "Traceback" not in human.stderr, human.stderr
    assert not {"\x1b", "\u202e", "\x00"} & set(human.stdout)
    hostile.requests()


def test_a_fetch_that_announces_more_than_the_item_has_writes_nothing(client, tmp_path) -> None:
    data_dir, daemon = client
    hostile = Hostile("huge-fetch")
    cli_json(data_dir, "peers", "add", hostile.address, "--wait")
    target = tmp_path / "not-yet" / "downloads"  # made by fetch
    refused = cli_json(data_dir, "fetch", hostile.peer_id, "file.bin", "--to", str(target), expect_rc=1)
    assert "announces 1,099,511,627,776 bytes" in refused["error"]["message"], refused
    assert target.is_dir() and list(target.iterdir()) == []  # no partial file left behind
    hostile.requests()
    _still_serving(data_dir, daemon)


def test_an_adapter_that_inflates_to_gigabytes_is_refused_before_it_is_inflated(client) -> None:
    data_dir, daemon = client
    hostile = Hostile("adapter-bomb")
    cli_json(data_dir, "peers", "add", hostile.address, "--wait")
    before = _rss_bytes(daemon.pid)
    for _ in range(2):  # the refused adapter is remembered: asked for once
        found = cli_json(data_dir, "search", "winter", "--peers", "--mode", "semantic")
        assert any(p["peer_id"] == hostile.peer_id for p in found["peers"]), found["peers"]
    grown = _rss_bytes(daemon.pid) - before
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB for a 2 GiB adapter"
    adapter_requests = [r for r in hostile.requests() if r["protocol"].startswith("/peerlight/adapter/")]
    assert len(adapter_requests) == 1, adapter_requests
    _still_serving(data_dir, daemon)
