"""Which user owns the client end of a loopback TCP connection: one exact query to the kernel
(Linux's NETLINK_SOCK_DIAG, what ``ss`` uses), not a scan of ``/proc/net/tcp``.

A scan costs milliseconds per connection and grows with every socket on the machine, which a
hostile local user can inflate; this lookup names the connection's four addresses and the
kernel answers for that one socket, in microseconds, without a thread.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
# All but TIME_WAIT, whose leftovers the kernel reports as root's (an exact lookup may still
# find one: a connection whose client closed it already, harmless either way).
TCP_LIVE_STATES = 0xFFFFFFFF & ~(1 << 6)
NO_COOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, extensions, pad, states
_SOCKID = struct.Struct(">HH16s16s")  # inet_diag_sockid: ports and addresses, network order
_SOCKID_TAIL = struct.Struct("=III")  # interface, cookie (two words)
_MESSAGE = struct.Struct("=BBBB48sIIIII")  # inet_diag_msg: ..., expires, rqueue, wqueue, uid, inode


class OwnerUnknown(Exception):
    """The kernel cannot be asked here (not Linux, or no sock_diag)."""


def client_uid(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """The uid owning the socket whose local end is ``peer`` and remote end ``ours`` (None: no
    such socket, e.g. closed already). :class:`OwnerUnknown` where the kernel cannot tell."""
    peer_ip, our_ip = ipaddress.ip_address(peer[0].split("%", 1)[0]), ipaddress.ip_address(ours[0].split("%", 1)[0])
    asks = []
    if isinstance(peer_ip, ipaddress.IPv6Address) and peer_ip.ipv4_mapped is not None and isinstance(our_ip, ipaddress.IPv6Address):
        # An IPv4 client of a dual-stack listener: its own socket is AF_INET.
        asks.append((socket.AF_INET, peer_ip.ipv4_mapped, our_ip.ipv4_mapped or our_ip))
    asks.append((socket.AF_INET6 if peer_ip.version == 6 else socket.AF_INET, peer_ip, our_ip))
    if peer_ip.version == 4:  # an IPv6 socket of the client's connected to 127.0.0.1 (mapped)
        asks.append((socket.AF_INET6, ipaddress.IPv6Address(f"::ffff:{peer_ip}"), ipaddress.IPv6Address(f"::ffff:{our_ip}")))
    for family, source, destination in asks:
        uid = _ask(family, source, peer[1], destination, ours[1])
        if uid is not None:
            return uid
    return None


def _ask(family: int, source: ipaddress._BaseAddress, sport: int, destination: ipaddress._BaseAddress, dport: int) -> int | None:
    if not hasattr(socket, "AF_NETLINK"):
        raise OwnerUnknown("no netlink here")
    sockid = _SOCKID.pack(sport, dport, source.packed.ljust(16, b"\0"), destination.packed.ljust(16, b"\0"))
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, TCP_LIVE_STATES) + sockid + _SOCKID_TAIL.pack(0, NO_COOKIE, NO_COOKIE)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as diag:
            diag.settimeout(1.0)
            diag.send(_HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + body)
            reply = diag.recv(8192)
    except OSError as exc:
        raise OwnerUnknown(f"sock_diag cannot be asked: {exc}") from None
    length, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind == NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, _HEADER.size)
        if error == 0:
            return None
        if -error in (2, 22):  # ENOENT: no such socket; EINVAL: that family has none
            return None
        raise OwnerUnknown(f"sock_diag refused: errno {-error}")
    if kind != SOCK_DIAG_BY_FAMILY or length < _HEADER.size + _MESSAGE.size:
        raise OwnerUnknown(f"sock_diag answered message type {kind}")
    fields = _MESSAGE.unpack_from(reply, _HEADER.size)
    return int(fields[8])
