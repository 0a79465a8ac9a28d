"""Where a share listens, from its scope: loopback, the LAN interfaces, or everywhere."""

from __future__ import annotations

import ipaddress


class NoLanInterface(Exception):
    """A ``lan`` share on a machine with no private network address to listen on."""


# Interfaces of containers and virtual machines on this host: their addresses are private but
# reach no other device of the user's, so they come last (a docker0 172.17.0.1 sorted first
# sent people typing a pairing address to the wrong network).
VIRTUAL_INTERFACES = ("docker", "br-", "veth", "virbr", "vmnet", "vboxnet", "cni", "flannel", "podman", "lxc", "tun", "tap", "wg")


def _interfaces() -> list[tuple[str, ipaddress.IPv4Address]]:
    """(interface name, IPv4 address) of this machine's interfaces."""
    import ifaddr  # zeroconf's own interface lister (a dependency of zeroconf)

    return [(adapter.nice_name or adapter.name, ipaddress.IPv4Address(ip.ip)) for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]


def interface_addresses() -> list[ipaddress.IPv4Address]:
    """Every IPv4 address of this machine's interfaces."""
    return sorted({address for _, address in _interfaces()})


def lan_order(interfaces: list[tuple[str, ipaddress.IPv4Address]]) -> list[str]:
    """The private (RFC 1918) addresses among ``interfaces`` (not loopback, link-local or the
    documentation ranges Python also calls private), the likely home or office network first: physical interfaces before container and VM bridges,
    then 192.168/16, 10/8, 172.16/12."""
    ranges = [ipaddress.IPv4Network(n) for n in ("192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12")]

    def rank(entry: tuple[str, ipaddress.IPv4Address]) -> tuple[bool, int, ipaddress.IPv4Address]:
        name, address = entry
        network = next((n for n, r in enumerate(ranges) if address in r), len(ranges))
        return name.lower().startswith(VIRTUAL_INTERFACES), network, address

    private = {(name, a) for name, a in interfaces if any(a in r for r in ranges)}
    return list(dict.fromkeys(str(address) for _, address in sorted(private, key=rank)))


def lan_addresses() -> list[str]:
    """This machine's private IPv4 addresses, the likely LAN first (see :func:`lan_order`)."""
    return lan_order(_interfaces())


def common_port(addresses: list[str], attempts: int = 20) -> int:
    """A TCP port free on every one of ``addresses``: a share listening on several addresses
    uses one port, the one its ``share show`` reports (the system chose one per address before)."""
    import socket

    for _ in range(attempts):
        sockets: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(first)
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            for address in addresses[1:]:
                other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(other)
                other.bind((address, port))
            return port
        except OSError:
            continue  # taken on another address: draw again
        finally:
            for opened in sockets:
                opened.close()
    raise OSError(f"no port free on all of {', '.join(addresses)}")


def listen_multiaddrs(scope: str, port: int | None) -> list[str]:
    """The multiaddrs a share of ``scope`` listens on; ``port`` None or 0 lets the system choose once."""
    tcp = f"/tcp/{port or 0}"
    if scope == "local":
        return [f"/ip4/127.0.0.1{tcp}"]
    if scope == "lan":
        addresses = lan_addresses()
        if not addresses:
            raise NoLanInterface("no LAN interface with a private IPv4 address: a lan share has nowhere to listen")
    elif scope == "global":
        # Every interface, each by its own address (not 0.0.0.0): what it announces must be dialable.
        addresses = [str(address) for address in interface_addresses() if not address.is_link_local]
    else:
        raise ValueError(f"unknown scope {scope!r}")
    if not port and len(addresses) > 1:
        tcp = f"/tcp/{common_port(addresses)}"
    return [f"/ip4/{address}{tcp}" for address in addresses]


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
