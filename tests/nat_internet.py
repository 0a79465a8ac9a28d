"""A small internet of network namespaces, for the NAT tests: a public side and homes behind NATs.

    public (203.0.113.2) ──┐
                           ├── "internet" (a bridge in a namespace of its own, 203.0.113.0/24)
    router A (203.0.113.3) ┤        documentation addresses: never a real host
      └─ home A (192.168.1.2), masqueraded by router A
    router B (203.0.113.4) ┤
      └─ home B (192.168.2.2), masqueraded by router B
    router C (203.0.113.5) ┘
      └─ home C (192.168.3.2), masqueraded by router C with ``--random-fully``: a symmetric NAT
         (a new public port for every connection), which defeats hole punching

Every router drops what nobody inside asked for, as a home router's firewall does.

Every interface is made inside a namespace this module creates (``ip -n NS link add … netns
OTHER``), so nothing is ever created in, or changed of, the main namespace; :meth:`remove`
deletes the namespaces, and with them everything in them.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

PUBLIC_IP = "203.0.113.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _in(namespace: str, *command: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, *command], check=True, capture_output=True)


@dataclass
class NatInternet:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)

    def _namespace(self, role: str) -> str:
        name = f"pl{self.tag}{role}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def build(self) -> NatInternet:
        self.internet = self._namespace("i")
        _ip("-n", self.internet, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.internet, "link", "set", "br0", "up")
        self.public = self._namespace("p")
        self._wire(self.public, f"{PUBLIC_IP}/24", 0)
        self.home_a = self._home("a", 3, "192.168.1", symmetric=False)
        self.home_b = self._home("b", 4, "192.168.2", symmetric=False)
        self.home_c = self._home("c", 5, "192.168.3", symmetric=True)
        return self

    def _wire(self, namespace: str, address: str, index: int) -> None:
        """A veth pair from ``namespace`` (w0) onto the internet's bridge."""
        port = f"port{index}"
        _ip("-n", self.internet, "link", "add", port, "type", "veth", "peer", "name", "w0", "netns", namespace)
        _ip("-n", self.internet, "link", "set", port, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", address, "dev", "w0")
        _ip("-n", namespace, "link", "set", "w0", "up")

    def _home(self, name: str, public_octet: int, lan: str, symmetric: bool) -> str:
        router, home = self._namespace(f"r{name}"), self._namespace(f"h{name}")
        setattr(self, f"router_{name}", router)
        self._wire(router, f"203.0.113.{public_octet}/24", public_octet)
        _ip("-n", router, "link", "add", "l0", "type", "veth", "peer", "name", "l1", "netns", home)
        _ip("-n", router, "addr", "add", f"{lan}.1/24", "dev", "l0")
        _ip("-n", router, "link", "set", "l0", "up")
        _ip("-n", home, "addr", "add", f"{lan}.2/24", "dev", "l1")
        _ip("-n", home, "link", "set", "l1", "up")
        _ip("-n", home, "route", "add", "default", "via", f"{lan}.1")
        _in(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "w0", "-j", "MASQUERADE"]
        _in(router, *masquerade, *(["--random-fully"] if symmetric else []))
        # Like a home router's firewall: what nobody inside asked for is dropped, not answered
        # with a reset (a reset would end the other side's half of a simultaneous open).
        _in(router, "iptables", "-A", "INPUT", "-i", "w0", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
        return home

    def remove(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()
