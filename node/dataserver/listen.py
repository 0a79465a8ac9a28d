"""Where a share listens, from its scope: loopback, the LAN interfaces, or everywhere."""

from __future__ import annotations

import ipaddress


class NoLanInterface(Exception):
    """A ``lan`` share on a machine with no private network address to listen on."""


def interface_addresses() -> list[ipaddress.IPv4Address]:
    """Every IPv4 address of this machine's interfaces."""
    import ifaddr  # zeroconf's own interface lister (a dependency of zeroconf)

    return sorted({ipaddress.IPv4Address(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)})


def lan_addresses() -> list[str]:
    """This machine's private (RFC 1918 / unique local) IPv4 addresses, loopback and link-local excluded."""
    return [str(a) for a in interface_addresses() if a.is_private and not a.is_loopback and not a.is_link_local]


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
        # Every interface, each by its own address (not 0.0.0.0): these are the addresses the
        # share announces on the DHT, so they must be ones a peer can dial.
        return [f"/ip4/{address}{tcp}" for address in interface_addresses() if not address.is_link_local]
    raise ValueError(f"unknown scope {scope!r}")


def dialable(address: str, scope: str, announce: str = "public") -> bool:
    """Whether a multiaddr a share listens on should be announced, for peers of its ``scope``.

    A global share tells the internet only of its globally routable addresses (``announce =
    "public"``): loopback, private, link-local or a container bridge's address means nothing
    there and tells strangers about this machine's networks. ``"all"`` announces every address
    (a DHT on a private network, or a test network)."""
    try:
        ip = ipaddress.ip_address(address.split("/")[2])
    except (IndexError, ValueError):
        return False
    if scope == "local":
        return ip.is_loopback
    if scope == "lan":
        return ip.is_private and not ip.is_loopback and not ip.is_link_local
    return announce == "all" or ip.is_global
