"""Other users of the machine: the node's loopback shares serve the node's own user only.

On 127.0.0.1 every local user, container on the host network or sandboxed app reaches a
share's port. The automatic ``local`` share (the whole library) and new ``local`` shares are
``devices`` shares: served to programs that speak with the node's own identity (its key is
mode 0600 in the data directory) and to paired devices. Another user's program is refused on
every protocol, before any of the library's bytes or names leave.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from peerlight.p2p import schema

from .helpers import DaemonProcess, cli, cli_json, index_and_wait, new_node

pytestmark = pytest.mark.slow

CLIENT = Path(__file__).with_name("share_client.py")
NOTE = "Wash your hands and sleep enough to avoid the flu in winter.\n"


def _ask(namespace: str, address: str, content_hash: str, *options: str) -> dict:
    return _ask_here(address, content_hash, *options, wrapper=("ip", "netns", "exec", namespace))


def _ask_here(address: str, content_hash: str, *options: str, wrapper: tuple[str, ...] = ()) -> dict:
    """What tests/share_client.py got from the share at ``address`` (in the namespace ``wrapper`` enters)."""
    done = subprocess.run([*wrapper, sys.executable, str(CLIENT), address, content_hash, *options], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_only_the_node_s_own_user_gets_anything_from_its_loopback_shares(namespace, tmp_path) -> None:
    data_dir = new_node(tmp_path / "a")
    library = tmp_path / "library"
    library.mkdir()
    (library / "flu.txt").write_text(NOTE)
    content_hash = blake3.blake3(NOTE.encode()).hexdigest()
    daemon = DaemonProcess(data_dir, wrapper=("ip", "netns", "exec", namespace))
    try:
        assert daemon.wait_ready() == "ready"
        cli_json(data_dir, "library", "add", str(library))
        index_and_wait(data_dir)
        local = next(s for s in cli_json(data_dir, "share", "list") if s["automatic"])
        assert (local["scope"], local["permission"], local["state"]) == ("local", "devices", "serving"), local
        # A new local share is the owner's too, unless made public on purpose.
        notes = cli_json(data_dir, "share", "create", "notes", "--collection", str(library))
        assert notes["permission"] == "devices", notes

        for share in (local, notes):
            address = share["addresses"][0]
            # Another local user: cannot read the node's key, and its own identity gets nothing.
            stranger = _ask(namespace, address, content_hash, "--identity", str(data_dir / "identity.key"), "--as-uid", "65534")
            assert stranger["uid"] == 65534 and "Permission denied" in stranger["identity"], stranger
            assert stranger["answers"] == {protocol: "forbidden" for protocol in stranger["answers"]}, stranger
            assert len(stranger["answers"]) == 7 and stranger["fetched"] == 0

            # The user's own program, speaking with the node's identity: served.
            owner = _ask(namespace, address, content_hash, "--identity", str(data_dir / "identity.key"))
            assert owner["identity"] == "read", owner
            answers = owner["answers"]
            assert all(answers[p.id] == "ok" for p in (schema.MANIFEST, schema.QUERY, schema.CATALOG, schema.PREVIEW, schema.FETCH)), answers
            assert answers[schema.ADAPTER.id] == "not_found" and answers[schema.REDEEM.id] == "forbidden"  # no such model; no such invite
            assert owner["fetched"] == len(NOTE.encode())

        # Widening a public share's reach takes a word from the user.
        cli_json(data_dir, "share", "create", "open", "--permission", "public", "--collection", str(library))
        refused = cli(data_dir, "share", "edit", "open", "--scope", "global", "--json")
        assert refused.returncode != 0 and json.loads(refused.stdout)["error"]["code"] == "conflict", refused
        assert "--yes" in json.loads(refused.stdout)["error"]["message"]
        assert cli_json(data_dir, "share", "show", "open")["scope"] == "local"  # nothing changed
        widened = cli_json(data_dir, "share", "edit", "open", "--scope", "global", "--yes")
        # A global share tells the internet only of public addresses: here there are none.
        assert widened["scope"] == "global" and widened["addresses"] and widened["announced"] == [], widened
        chosen = cli_json(data_dir, "share", "edit", "notes", "--scope", "global", "--permission", "members")
        assert (chosen["scope"], chosen["permission"]) == ("global", "members")
        # Narrowing needs no confirmation; kinds and the public's capabilities can be widened back or cleared.
        cli_json(data_dir, "share", "edit", "open", "--scope", "local", "--modality", "text", "--public-can", "search")
        edited = cli_json(data_dir, "share", "edit", "open", "--modality", "all", "--public-can", "none")
        assert (edited["modalities"], edited["public_can"]) == ([], []), edited
    finally:
        daemon.stop()
