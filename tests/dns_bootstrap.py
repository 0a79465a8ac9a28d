"""Resolve a ``/dnsaddr`` bootstrap entry against a DNS server of this script's own, on loopback.

Run inside a network namespace whose ``/etc/netns/NAME/resolv.conf`` names 127.0.0.1 (``ip netns
exec`` mounts it over /etc/resolv.conf): ``python tests/dns_bootstrap.py NAME PEER_ID``. Answers
``_dnsaddr.NAME`` with two TXT records (one of another peer) and prints what ``resolved`` keeps.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import dns.message
import dns.rrset
import trio

from peerlight.p2p.dht import resolved


def serve(sock: socket.socket, name: str, peer: str) -> None:
    records = [f'"dnsaddr=/ip4/10.9.0.1/tcp/4001/p2p/{peer}"', '"dnsaddr=/ip4/10.9.0.2/tcp/4001/p2p/12D3KooWSomeOtherPeerxxxxxxxxxxxxxxxxxxxxxxxxxxxx"']
    while True:
        data, client = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        answer = dns.message.make_response(query)
        asked = query.question[0].name.to_text()
        if asked == f"_dnsaddr.{name}.":
            answer.answer.append(dns.rrset.from_text(asked, 60, "IN", "TXT", *records))
        sock.sendto(answer.to_wire(), client)


def main(name: str, peer: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    threading.Thread(target=serve, args=(sock, name, peer), daemon=True).start()
    print(json.dumps(trio.run(resolved, f"/dnsaddr/{name}/p2p/{peer}")))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
