"""mDNS on the LAN: announcing ``lan`` shares and finding other nodes' shares.

py-libp2p's own mDNS (``new_host(enable_mDNS=True)``) opens zeroconf on every interface of
the machine; a share announces itself only on the interfaces it listens on, so its pieces
(the libp2p mDNS spec's broadcaster and listener) are assembled here on a zeroconf bound to
those interfaces. Zeroconf runs its own thread: its calls go through worker threads, and what
it discovers comes back to trio through a memory channel.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import trio

log = logging.getLogger("peerlight.lan")

SERVICE_TYPE = "_p2p._udp.local."  # the libp2p mDNS discovery spec's service


class LanAnnouncement:
    """A share's host announced over mDNS on the given interfaces, until :meth:`stop`."""

    def __init__(self, host: Any, interfaces: list[str], port: int, addresses: list[str]) -> None:
        self._host = host
        self._interfaces = interfaces
        self._port = port
        self._addresses = addresses
        self._zeroconf: Any = None
        self._broadcaster: Any = None

    async def start(self) -> None:
        await trio.to_thread.run_sync(self._start)

    def _start(self) -> None:
        from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
        from zeroconf import Zeroconf

        self._zeroconf = Zeroconf(interfaces=self._interfaces)
        self._broadcaster = PeerBroadcaster(
            zeroconf=self._zeroconf,
            service_type=SERVICE_TYPE,
            service_name=f"{secrets.token_hex(16)}.{SERVICE_TYPE}",
            peer_id=str(self._host.get_id()),
            port=self._port,
            listen_addrs=[a.split("/p2p/")[0] for a in self._addresses],
            host=None,  # announce exactly the addresses given (the host's would include loopback)
        )
        self._broadcaster.register()

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._stop)

    def _stop(self) -> None:
        try:
            if self._broadcaster is not None:
                self._broadcaster.unregister()
        finally:
            if self._zeroconf is not None:
                self._zeroconf.close()


async def browse(interfaces: list[str], seconds: float) -> dict[str, list[str]]:
    """Peers announcing themselves over mDNS on ``interfaces`` within ``seconds``: peer id -> multiaddrs."""
    from libp2p.discovery.events.peerDiscovery import peerDiscovery
    from libp2p.discovery.mdns.listener import PeerListener
    from libp2p.peer.peerstore import PeerStore
    from zeroconf import Zeroconf

    found: dict[str, list[str]] = {}
    token = trio.lowlevel.current_trio_token()

    def record(info: Any) -> None:  # called in zeroconf's thread
        addresses = [str(a) for a in info.addrs]
        try:
            trio.from_thread.run_sync(found.__setitem__, str(info.peer_id), addresses, trio_token=token)
        except trio.RunFinishedError:
            pass

    def open_browser() -> tuple[Any, Any]:
        zeroconf = Zeroconf(interfaces=interfaces)
        listener = PeerListener(PeerStore(), zeroconf, SERVICE_TYPE, f"{secrets.token_hex(16)}.{SERVICE_TYPE}")
        return zeroconf, listener

    peerDiscovery.register_peer_discovered_handler(record)
    zeroconf, listener = await trio.to_thread.run_sync(open_browser)
    try:
        await trio.sleep(seconds)
    finally:
        peerDiscovery.unregister_peer_discovered_handler(record)

        def close() -> None:
            listener.stop()
            zeroconf.close()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close)
    return found
