"""Pairing the user's own devices: a short code shown on one node and typed on the other.

The offering node shows a code and, for a few minutes, listens for ``/peerlight/pair/1.0.0``
with its node identity (the peer ID its client uses, which ``devices`` shares admit). The
joining node connects (Noise authenticates both peer IDs) and proves it knows the code; the
offering node checks the proof and answers with its own (see ``permissions/pairing.py``).
Then each records the other as a paired device, each has an automatic ``devices`` share of
its whole library, and each adds the other's: the devices see each other with no further step.

Between two homes (``scope = "global"``), the devices share is global, and the offering node's
listener, behind its NAT, takes a slot on a relay (the configured relays, or those its global
shares hold): the join strings then include its circuit address, and the addresses each side
sends for its devices share include the share's circuits.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from peerlight.p2p import schema
from peerlight.p2p.errors import Forbidden, WireError
from peerlight.p2p.host import listen_addresses, new_host, running, split_peer_address
from peerlight.p2p.listen import listen_multiaddrs
from peerlight.p2p.relay import Reservations
from peerlight.p2p.server import Protocol, ProtocolServer, Request
from peerlight.permissions import pairing

from .catalog.database import Catalog
from .catalog.devices import add_device, devices_share, ensure_devices_share
from .catalog.shares import SCOPES, ShareEdit, edit_share
from .peers.client import PeerClient
from .serving.servers import DataServers

log = logging.getLogger("peerlight.pairing")

OFFER_SECONDS = 300.0
MAX_ATTEMPTS = 5
SETTLE_SECONDS = 15.0
ANSWER_AGAIN_SECONDS = 10.0  # the listener stays this long after pairing: a joiner whose answer was lost asks again
JOIN_ATTEMPTS = 3
RELAY_SLOT_SECONDS = 20.0  # how long a global offer waits for a relay slot before it shows its codes
MAX_DEVICE_NAME = 100


class PairingError(Exception):
    """Pairing did not happen: no offer, a wrong or expired code, a node that did not prove itself."""


@dataclass
class _Offer:
    code: str
    expires: float
    attempts: int = 0
    ended: trio.Event = field(default_factory=trio.Event)  # paired, or failed for good
    device: dict[str, Any] | None = None
    failed: str | None = None  # why it ended without a device (too many wrong codes, replaced)
    claimed: bool = False
    answer: dict[str, Any] | None = None  # given again to the same joiner if it asks again
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)

    def fail(self, reason: str, *, close_now: bool = False) -> None:
        """End the offer: whoever waits on it hears why at once; its listener goes a little later
        (the refusal must reach the asking node first), or at once with ``close_now``."""
        if self.device is None and self.failed is None:
            self.failed = reason
        self.ended.set()
        if close_now:
            self.cancel.cancel()


class Pairing:
    def __init__(self, catalog: Catalog, seed: bytes, node_peer_id: str, servers: DataServers, peers: PeerClient) -> None:
        self._catalog = catalog
        self._seed = seed
        self._node = node_peer_id
        self._servers = servers
        self._peers = peers
        self._nursery: trio.Nursery | None = None
        self._offer: _Offer | None = None
        self._offering = trio.Lock()  # one offer starts at a time; a newer one replaces it
        self.device_name = socket.gethostname()[:100] or "a device"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the offering node's temporary listener (one offer at a time)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- the offering side ---

    async def offer(self, scope: str) -> dict[str, Any]:
        """Start offering pairing (replacing an earlier offer): the code and where to reach us."""
        if self._nursery is None:
            raise PairingError("the pairing service is not running")
        async with self._offering:
            if self._offer is not None:
                self._offer.fail("a newer pairing code replaced this one", close_now=True)
            offer = _Offer(pairing.new_code(), time.time() + OFFER_SECONDS)
            self._offer = offer
            await self._devices_share(scope)
            addresses = await self._nursery.start(self._listen, offer, scope)
        # Every address it listens on, the likely LAN first (container bridges last): the user
        # types the one their other device can reach.
        joins = [f"{offer.code}@{address}" for address in addresses]
        offered = {"code": offer.code, "addresses": addresses, "expires_in": OFFER_SECONDS, "join": joins[0], "joins": joins}
        if scope == "global" and not any("/p2p-circuit" in address for address in addresses):
            offered["warning"] = (
                "no relay gave this offer a slot (none configured in network.relays, and no global share holds one yet):"
                " a node in another home can reach it only if this one is reachable from the internet"
            )
        return offered

    async def wait(self) -> dict[str, Any]:
        """The device that paired with the current offer (PairingError when it expires first)."""
        offer = self._offer
        if offer is None:
            raise PairingError("no pairing is offered")
        try:
            with trio.move_on_at(trio.current_time() + max(0.0, offer.expires - time.time())):
                await offer.ended.wait()
        finally:
            # Expired, or whoever waited stopped (the CLI's Ctrl-C, the page's Withdraw): the code is
            # void at once; unless a joiner has already claimed it, whose pairing is then completed
            # (cutting it would leave the device recorded here and the other node unanswered), or
            # the offer ended already (its listener stays a moment for the refusal to reach the asker).
            if offer.device is None and not offer.claimed and not offer.ended.is_set():
                offer.fail("the pairing offer was withdrawn", close_now=True)
        if offer.device is None:
            raise PairingError(offer.failed or "the pairing code expired unused; offer a new one")
        return offer.device

    async def _listen(self, offer: _Offer, scope: str, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        host = new_host(self._seed)
        ProtocolServer([Protocol(schema.PAIR, partial(self._answer, offer))]).attach(host)
        with offer.cancel, trio.move_on_at(trio.current_time() + OFFER_SECONDS):
            async with running(host, listen_multiaddrs(scope, 0)), trio.open_nursery() as nursery:
                circuits = await self._relay_slot(host, nursery) if scope == "global" else []
                task_status.started(listen_addresses(host) + [f"{c}/p2p/{host.get_id()}" for c in circuits])
                await offer.ended.wait()
                await trio.sleep(ANSWER_AGAIN_SECONDS)  # a joiner whose answer was lost may ask again
                nursery.cancel_scope.cancel()
        if self._offer is offer and offer.device is None:
            self._offer = None

    async def _relay_slot(self, host: Any, nursery: trio.Nursery) -> list[str]:
        """A slot on a relay for the listener (behind a NAT, the other home reaches it only so):
        its circuit addresses, or none when no relay is known or none gave a slot in time."""
        relays = self._servers.known_relays()
        if not relays:
            return []
        reservations = Reservations(host, wanted=1)

        async def candidates() -> list[str]:
            return relays

        nursery.start_soon(reservations.keep, candidates)
        with trio.move_on_after(RELAY_SLOT_SECONDS):
            while not reservations.held:
                await reservations.changed.wait()
        return reservations.circuit_addresses()

    async def _answer(self, offer: _Offer, request: Request) -> dict[str, Any]:
        given = request.body["proof"]
        proven = pairing.matches(pairing.proof(offer.code, "join", request.peer_id, self._node), given)
        if proven and offer.answer is not None and offer.device is not None and offer.device["peer_id"] == request.peer_id:
            return offer.answer  # the same device asking again: its first answer was lost
        if offer is not self._offer or offer.ended.is_set() or time.time() > offer.expires:
            raise Forbidden("no pairing is offered now")
        offer.attempts += 1
        if offer.attempts > MAX_ATTEMPTS:
            offer.fail("too many wrong codes; offer a new one")
            raise Forbidden("too many wrong codes; offer a new one")
        if not proven:
            log.warning("a pairing attempt with a wrong code", extra={"peer": request.peer_id, "attempt": offer.attempts})
            raise Forbidden("wrong pairing code")
        name, their_share = _device_fields(request.body)
        if offer.claimed:  # checked and set with no await between: one joiner per code, even if two race
            raise Forbidden("this pairing code has been used")
        offer.claimed = True
        ours = await self._devices_share_addresses()
        offer.device = await self._paired(request.peer_id, name, their_share)
        offer.answer = {"proof": pairing.proof(offer.code, "offer", request.peer_id, self._node), "name": self.device_name, "addresses": ours}
        offer.ended.set()
        return offer.answer

    # --- the joining side ---

    async def join(self, code: str, address: str, scope: str) -> dict[str, Any]:
        """Pair with the node offering ``code`` at ``address`` (a multiaddr ending in its node ID)."""
        try:
            code = pairing.normalize(code)
            peer_id, transport = split_peer_address(address)
        except ValueError as exc:
            raise PairingError(str(exc)) from None
        await self._devices_share(scope)
        ours = await self._devices_share_addresses()
        requester = await self._peers.host.requester()
        body = {"proof": pairing.proof(code, "join", self._node, peer_id), "name": self.device_name, "addresses": ours}
        reply = await self._ask_to_pair(requester, peer_id, transport, body)
        if not pairing.matches(pairing.proof(code, "offer", self._node, peer_id), reply.get("proof")):
            raise PairingError("the other node did not prove it knows the code: nothing was paired")
        name, their_share = _device_fields(reply)
        return await self._paired(peer_id, name, their_share)

    async def _ask_to_pair(self, requester: Any, peer_id: str, transport: str, body: dict[str, Any]) -> dict[str, Any]:
        """The offering node's answer; asked again when the connection fails (the offering node
        may have paired already and answers the same device again), never after a refusal."""
        for attempt in range(JOIN_ATTEMPTS):
            try:
                return await requester.request(peer_id, [transport], schema.PAIR, body, timeout=30)
            except Forbidden as exc:
                raise PairingError(f"the other node refused: {exc.message}") from None
            except (WireError, OSError) as exc:
                if attempt == JOIN_ATTEMPTS - 1:
                    raise PairingError(f"the other node did not answer: {exc}") from None
                await trio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    # --- both sides ---

    async def _paired(self, peer_id: str, name: str, their_share: list[str]) -> dict[str, Any]:
        await self._catalog.write(partial(add_device, peer_id=peer_id, name=name, share_addresses=their_share))
        await self._servers.refresh_devices()
        log.info("paired with a device", extra={"peer": peer_id, "device": name})
        if their_share and self._nursery is not None:
            self._nursery.start_soon(self._add_their_share, their_share)
        return {"peer_id": peer_id, "name": name, "share_addresses": their_share}

    async def _add_their_share(self, addresses: list[str]) -> None:
        try:
            await self._peers.remotes.add_at(addresses)
        except (WireError, OSError) as exc:
            log.info("the paired device's share is not reachable yet", extra={"reason": str(exc)})

    async def _devices_share(self, scope: str) -> None:
        """The automatic devices share, listening at least as widely as ``scope`` (pairing between
        two homes makes a LAN one global)."""

        def ensure(conn: Any) -> Any:
            share = ensure_devices_share(conn, scope=scope)
            if SCOPES.index(share.scope) < SCOPES.index(scope):
                share = edit_share(conn, share.name, ShareEdit(scope=scope))
            return share

        share = await self._catalog.write(ensure)
        await self._servers.settled(share, SETTLE_SECONDS)

    async def _devices_share_addresses(self) -> list[str]:
        share = await self._catalog.read(devices_share)
        running = self._servers.running_share(share.name) if share is not None else None
        # At most what the pairing message carries (a machine with many interfaces lists more),
        # its circuits through relays kept among them.
        if running is None or running.state != "serving":
            return []
        return list(running.reachable_addresses(schema.PAIR.request.fields["addresses"].type.max_items))


def _device_fields(body: dict[str, Any]) -> tuple[str, list[str]]:
    """The device's name and its devices share's addresses from a pairing message (checked
    against the schema already: a name, at most 8 addresses)."""
    return device_name(body["name"]), [a for a in body["addresses"] if "/p2p/" in a]


def device_name(name: str) -> str:
    """A name another node sent for itself, safe to store and show: printable characters only
    (no escape sequences for a terminal), whitespace collapsed, at most MAX_DEVICE_NAME long."""
    printable = "".join(ch if ch.isprintable() else " " for ch in name)
    return " ".join(printable.split())[:MAX_DEVICE_NAME] or "a device"
