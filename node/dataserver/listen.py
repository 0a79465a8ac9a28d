"""Where a share listens, from its scope: loopback, the LAN interfaces, or everywhere."""

from __future__ import annotations

import ipaddress


class NoLanInterface(Exception):
    """A ``lan`` share on a machine with no private network address to listen on."""


def lan_addresses() -> list[str]:
    """This machine's private (RFC 1918 / unique local) IPv4 addresses, loopback and link-local excluded."""
    import ifaddr  # zeroconf's own interface lister (a dependency of zeroconf)

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 (a tuple): not yet
            address = ipaddress.ip_address(ip.ip)
            if address.is_private and not address.is_loopback and not address.is_link_local:
                found.append(str(address))
    return sorted(set(found))


def listen_multiaddrs(scope: str, port: int | None) -> list[str]:
    """The multiaddrs a share of ``scope`` listens on; ``port`` None or 0 lets the system choose once."""
    tcp = f"/tcp/{port or 0}"
    if scope == "local":
        return [f"/ip4/127.0.0.1{tcp}"]
    if scope == "lan":
        addresses = lan_addresses()
        if not addresses:
            raise NoLanInterface("no LAN interface with a private IPv4 address: a lan share has nowhere to listen")
        return [f"/ip4/{address}{tcp}" for address in addresses]
    if scope == "global":
        return [f"/ip4/0.0.0.0{tcp}"]
    raise ValueError(f"unknown scope {scope!r}")
