"""Joining the public IPFS DHT (Amino) through ``network.bootstrap``: its bootstrap list and ``/dnsaddr`` names.

The topic keys and the Peerlight key are plain sha2-256 multihashes on the standard
``/ipfs/kad/1.0.0``, so a node needs no Peerlight-run infrastructure: ``network.bootstrap`` set
to Amino's bootstrap peers joins the public DHT. Those are ``/dnsaddr`` names; here one is
resolved against a DNS server of the test's own inside a namespace (its resolv.conf names
127.0.0.1): no real name server or bootstrap peer is ever asked. Joining a DHT through such a
bootstrap set and routing on it is ``tests/test_global_search.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from multiaddr import Multiaddr

from peerlight.p2p.dht import AMINO_BOOTSTRAP

SCRIPT = Path(__file__).with_name("dns_bootstrap.py")
PEER = "12D3KooWQicdvhppFqqwbcxPpV91oQ8Sbr1iPNdaiHUv8VjkZs4V"


def test_a_dnsaddr_bootstrap_entry_resolves_to_the_addresses_of_the_peer_it_names(namespace) -> None:
    config = Path("/etc/netns") / namespace
    config.mkdir(parents=True)
    try:
        (config / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, str(SCRIPT), "bootstrap.test", PEER], capture_output=True, text=True, timeout=60
        )
    finally:
        shutil.rmtree(config)
    assert done.returncode == 0, done.stderr
    # The TXT record of another peer under the same name is not kept: the entry names its peer.
    assert json.loads(done.stdout) == [f"/ip4/10.9.0.1/tcp/4001/p2p/{PEER}"]


@pytest.mark.parametrize("entry", AMINO_BOOTSTRAP)
def test_amino_s_bootstrap_list_is_made_of_multiaddrs_naming_their_peer(entry: str) -> None:
    address = Multiaddr(entry)
    assert [name for name, _ in address.items()][-1].name == "p2p"
