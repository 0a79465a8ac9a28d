"""The Data Servers service: one libp2p host per active share, kept in step with the catalog.

Each share has its own Ed25519 key (``shares/<id>.key``), so its peer id cannot be linked
to the node's or to the user's other shares, and its own listening port, remembered after
the first start so peers find it again after a restart. A change of scope or port re-binds
the share's listeners; other edits (collections, kinds, permission) take effect on the next
request without dropping connections. A share that cannot start (its port is taken) is
reported in ``status`` and retried with backoff; it never stops the daemon or other shares.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from peerlight.embeddings.codebook import Codebook
from peerlight.p2p.errors import Forbidden, NotFound
from peerlight.p2p.dht import PEERLIGHT_KEY, RELAY_KEY, bootstrap, find_providers, running_dht
from peerlight.p2p import reachability
from peerlight.p2p.host import (
    announced_addresses,
    connected_peers,
    listen_addresses,
    new_host,
    observed_addresses,
    running,
    transport_address,
)
from peerlight.p2p.holepunch import hole_punching
from peerlight.p2p.relay import RelayLimits, Reservations, is_circuit, relay_service
from peerlight.p2p.resources import ResourceManager
from peerlight.p2p.listen import dialable, listen_multiaddrs
from peerlight.p2p.mdns import LanAnnouncement
from peerlight.p2p.server import Limits, Protocol, ProtocolServer
from peerlight.p2p import schema

from ..catalog import access_log
from ..catalog.database import Catalog
from ..catalog.devices import device_ids
from ..catalog.grants import Grant, all_grants, record_bytes_served, touch_grants
from ..decoders import DecoderPool
from ..catalog.shares import Share, ensure_automatic_share, list_shares, set_port
from ..identity import IdentityError, create_identity, load_identity
from ..routing.publisher import TopicPublisher
from ..search.engine import SearchEngine
from ..supervisor import describe_error
from .access import GrantUsage, InviteDesk, ShareAccess, signing_key
from .adapter_files import AdapterFiles
from .handlers import ShareService

log = logging.getLogger("peerlight.serving")

RETRY_SECONDS = (1, 5, 30, 120)
REACHABILITY_SECONDS = 600.0  # a global share asks again this often once it knows
REACHABILITY_RETRY_SECONDS = 15.0  # ... and this often while it does not (too few peers answered)
REACHABILITY_ASKED = 8  # connected peers asked to dial back at once


ACCESS_WRITE_SECONDS = 2.0  # how often a share's access log and its grants' "last used" reach the catalog


@dataclass
class RunningShare:
    share: Share
    service: ShareService
    server: ProtocolServer | None = None
    host: Any = None
    peer_id: str | None = None
    addresses: list[str] = field(default_factory=list)
    state: str = "starting"  # starting | serving | failed
    error: str | None = None
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    dht: dict[str, Any] | None = None  # a global share's standing on the DHT
    reachability: reachability.Reachability | None = None  # a global share: can peers dial it?
    access: ShareAccess | None = None  # the share's gate, while it serves
    relay: Callable[[], dict[str, int]] | None = None  # a global share relaying for others: what it holds and did
    reservations: Reservations | None = None  # a global share behind a NAT: its slots on relays
    verdict_changed: trio.Event = field(default_factory=trio.Event)  # set when the reachability verdict changes
    topics: list[TopicPublisher] = field(default_factory=list)  # a global share strangers may search: its topics per space

    def describe(self) -> dict[str, Any]:
        network = self.host.get_network() if self.host is not None and self.state == "serving" else None
        return {
            "name": self.share.name,
            "scope": self.share.scope,
            "port": self.share.port,
            "state": self.state,
            "error": self.error,
            "peer_id": self.peer_id,
            "addresses": self.addresses,
            "announced": announced_addresses(self.host) if network is not None else [],
            "connections": sum(len(c) for c in network.connections.values()) if network is not None else 0,
            **({"dht": self.dht} if self.dht is not None else {}),
            **({"reachability": self.reachability.to_wire()} if self.reachability is not None else {}),
            **({"relay": self.relay()} if self.relay is not None and network is not None else {}),
            **({"relays": self.reservations.describe()} if self.reservations is not None and network is not None else {}),
            **({"topics": sum(len(p.topics) for p in self.topics)} if self.topics else {}),
            **(self.server.describe() if self.server is not None else {}),
        }

    def reachable_addresses(self, limit: int) -> tuple[str, ...]:
        """Where a peer told of this share (an invite, a pairing) can reach it: its listen
        addresses and, behind a NAT, its circuits through the relays it holds slots on, all
        of those kept within ``limit``."""
        circuits = [f"{c}/p2p/{self.peer_id}" for c in self.reservations.circuit_addresses()] if self.reservations is not None else []
        return (*self.addresses[: max(0, limit - len(circuits))], *circuits[:limit])

    @property
    def status(self) -> str:
        return self.reachability.status if self.reachability is not None else reachability.UNKNOWN

    def set_reachability(self, found: reachability.Reachability) -> None:
        changed = self.status != found.status
        self.reachability = found
        if changed:
            self.verdict_changed.set()
            self.verdict_changed = trio.Event()


@dataclass(frozen=True)
class GlobalReach:
    """How global shares join the internet: the DHT they enter by, relaying for others, relays for themselves."""

    bootstrap: tuple[str, ...] = ()
    reprovide_seconds: float = 600.0
    relay_service: RelayLimits | None = None  # None: relay for nobody
    relays: tuple[str, ...] = ()  # relays to reserve on when behind a NAT (more are found on the DHT)
    relays_kept: int = 2
    hole_punching: bool = True  # behind a NAT, upgrade relayed connections to direct ones (DCUtR)


TOPIC_CHECK_SECONDS = 60.0  # how often a share looks whether its library changed its topics
PROVIDING_AT_ONCE = 4  # DHT keys provided at once (each provide is a lookup)


def publishes_topics(share: Share) -> bool:
    """Topics tell the world what a share holds: only a global share that lets strangers search publishes them."""
    return share.scope == "global" and share.permission == "public" and "search" in share.public_can


async def _refresh_topics(current: RunningShare) -> list[str]:
    """The share's topic keys now (none if it does not publish them); a failed refresh keeps the last ones."""
    if not publishes_topics(current.share):
        for publisher in current.topics:
            publisher.withdraw()
        return []
    keys = []
    for publisher in current.topics:
        try:
            await publisher.refresh()
        except Exception as exc:  # an unreadable catalog now: the last topics stand
            log.warning("a share's topics could not be computed", extra={"share": current.share.name, "reason": describe_error(exc)})
        keys += publisher.keys()
    return keys


async def _provide(dht: Any, keys: list[str]) -> bool:
    """Provide ``keys``, a few at once; whether every one reached some DHT node."""
    results: list[bool] = []
    limiter = trio.CapacityLimiter(PROVIDING_AT_ONCE)

    async def one(key: str) -> None:
        async with limiter:
            results.append(bool(await dht.provide(key)))

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(one, key)
    return all(results)


async def _provide_forever(current: RunningShare, host: Any, dht: Any, reach: GlobalReach) -> None:
    """Join the DHT and provide the Peerlight key, again every ``reprovide_seconds`` (records
    expire) and whenever the share's relayed addresses change (the records carry them). A share
    relaying for others provides the relay key too while it is public. A share strangers may
    search provides its topics' keys; a topic it newly holds is provided within
    ``TOPIC_CHECK_SECONDS``, without waiting for the next full round.

    No key is made from the share's name: it would let anyone confirm a guessed name of a
    members-only share (and no client looks shares up by name)."""
    provided_topics: set[str] = set()
    due = 0.0
    while True:
        if dht.get_routing_table_size() == 0:
            await bootstrap(host, dht, reach.bootstrap)
        topic_keys = await _refresh_topics(current)
        full_round = time.monotonic() >= due
        relaying = current.relay is not None and current.status == reachability.PUBLIC
        keys = ([PEERLIGHT_KEY] + ([RELAY_KEY] if relaying else [])) if full_round else []
        keys += topic_keys if full_round else [k for k in topic_keys if k not in provided_topics]
        provided = current.dht is not None and current.dht.get("provided", False) and not full_round
        if keys:
            try:
                provided = await _provide(dht, keys)
                if provided:  # a key whose provide failed is tried again at the next check
                    provided_topics = set(topic_keys) if full_round else provided_topics | set(keys)
            except Exception as exc:  # no DHT peer reachable now: try again later
                provided = False
                log.info("providing on the DHT failed", extra={"share": current.share.name, "reason": describe_error(exc)})
            if full_round:
                due = time.monotonic() + (reach.reprovide_seconds if provided else min(reach.reprovide_seconds, 30))
        current.dht = {"routing_table": dht.get_routing_table_size(), "provided": provided, "topics": len(topic_keys), "at": time.time()}
        readdressed = current.reservations.changed if current.reservations is not None else trio.Event()
        with trio.move_on_after(max(0.0, min(due - time.monotonic(), TOPIC_CHECK_SECONDS))):
            await _first_of(readdressed, current.verdict_changed)  # new addresses, or now public (the relay key)
            await trio.sleep(1)  # several reservations made together: one provide
            due = 0.0


async def _first_of(*events: trio.Event) -> None:
    """Return when any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


async def _watch_reachability(current: RunningShare, host: Any, autonat: Any) -> None:
    """Ask the peers the share is connected to (DHT neighbours, bootstrap nodes) to dial it back
    on the addresses it announces; keep the verdict and the addresses peers saw it at. A check
    that fails is logged and tried again: it never stops the share."""
    while True:
        try:
            peers = connected_peers(host)
            random.shuffle(peers)
            # What it announces, and where peers saw it (behind a NAT: the NAT's mapping, which a
            # dial-back from outside then fails on: "private").
            addresses = list(dict.fromkeys(transport_address(a) for a in announced_addresses(host) + observed_addresses(host) if not is_circuit(a)))
            if peers and addresses:
                found = await reachability.check(autonat, peers[:REACHABILITY_ASKED], addresses)
                found.observed, found.checked_at = observed_addresses(host), time.time()
                if found.status == reachability.UNKNOWN:
                    found.status = current.status  # an inconclusive round keeps what was known
                current.set_reachability(found)
        except Exception as exc:  # never stops the share's providing beside it
            log.info("a reachability check failed", extra={"share": current.share.name, "reason": describe_error(exc)})
        known = current.status != reachability.UNKNOWN
        await trio.sleep(REACHABILITY_SECONDS if known else REACHABILITY_RETRY_SECONDS)


async def _summary(current: RunningShare, request: Any) -> dict[str, Any]:
    """The summary protocol: the share's signed topic summary (one space's: the first that has one)."""
    value = next((p.value for p in current.topics if p.value is not None), None) if publishes_topics(current.share) else None
    if value is None:
        raise NotFound("this share publishes no topic summary")
    return {"summary": value}


def key_path(folder: Path, share_id: int) -> Path:
    return folder / f"{share_id}.key"


def share_identity(folder: Path, share_id: int):  # -> NodeIdentity
    """The share's key, created on its first start; never replaced (it is the share's peer id)."""
    path = key_path(folder, share_id)
    try:
        return load_identity(path)
    except IdentityError:
        if path.exists():
            raise
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return create_identity(path)


class DataServers:
    def __init__(
        self,
        catalog: Catalog,
        engine: SearchEngine,
        keys: Path,
        limits: Limits,
        max_connections: int = 1000,
        reach: GlobalReach = GlobalReach(),
        adapters: AdapterFiles | None = None,
        owner: str | None = None,
        on_file_changed: Callable[[int, str], None] = lambda library_id, path: None,
        announce: str = "public",
        resources: ResourceManager | None = None,
        decoders: DecoderPool | None = None,
        codebooks: tuple[Codebook, ...] = (),
    ) -> None:
        self._decoders = decoders
        self._codebooks = codebooks  # the spaces whose topics global shares publish
        # One budget for every share: peer ids cost nothing, so per-peer limits alone do not bound the node.
        self.resources = resources if resources is not None else ResourceManager()
        self._on_file_changed = on_file_changed
        self._catalog = catalog
        # The node's own peer id: its user's programs (which can read the node's identity key,
        # mode 0600) pass every ``devices`` gate, as the owner's own device.
        self._owner = frozenset({owner}) if owner else frozenset()
        self._engine = engine
        self._keys = keys
        self._limits = limits
        self._max_connections = max_connections
        self._reach = reach
        self._announce = announce
        self._adapters = adapters
        self.shares: dict[int, RunningShare] = {}
        self._changed = trio.Event()
        self._grants: list[Grant] = []
        self._changed_during_reload: dict[str, Grant] = {}  # grants changed since the reload now running began
        self._devices: frozenset[str] = frozenset()
        self._devices_lock = trio.Lock()  # one read-and-apply of the paired devices at a time
        self._usage: dict[str, GrantUsage] = {}  # every share's grants' traffic, for the node's lifetime

    def changed(self) -> None:
        """Shares were created, edited or removed: bring the running hosts in step."""
        self._changed.set()

    def describe(self) -> list[dict[str, Any]]:
        return [running.describe() for running in self.shares.values()]

    async def settled(self, share: Share, timeout: float) -> RunningShare | None:
        """After a change: wait (at most ``timeout``) until ``share`` serves or has failed to start."""
        self.changed()
        if share.paused:
            return None
        with trio.move_on_after(timeout):
            while True:
                running = self.running_share(share.name)
                settled = running is not None and running.state in ("serving", "failed")
                wanted = (share.scope, share.permission, share.public_can)
                in_step = (running.share.scope, running.share.permission, running.share.public_can) == wanted if running else False
                if settled and in_step and share.port in (None, 0, running.share.port):
                    return running
                await trio.sleep(0.02)
        return None

    async def refresh_devices(self) -> None:
        """Read the paired devices and give them to every gate, one caller at a time: a pairing and
        an unpairing that overlap would otherwise apply the older list last."""
        async with self._devices_lock:
            self.set_devices(await self._catalog.read(device_ids))

    def set_devices(self, devices: frozenset[str]) -> None:
        """The paired devices changed: every running share's gate knows at once."""
        self._devices = devices | self._owner
        for current in self.shares.values():
            if current.access is not None:
                current.access.update(current.share, self._grants, self._devices)

    def grant_changed(self, grant: Grant) -> None:
        """A grant was issued, redeemed or revoked (the catalog has it already): its share's gate
        knows before this returns, not after the next reload; later reloads keep it too."""
        self._grants = [g for g in self._grants if g.id != grant.id] + [grant]
        self._changed_during_reload[grant.id] = grant
        current = self.shares.get(grant.share_id)
        if current is not None and current.access is not None:
            current.access.update(current.share, self._grants)
        self.changed()

    def revoked(self, grant: Grant) -> None:
        """A grant was revoked: its gate refuses at once, and the requests running under it stop
        (the grantee's others, under another grant or the share's level, go on)."""
        self.grant_changed(grant)
        current = self.shares.get(grant.share_id)
        if current is not None and current.server is not None and grant.grantee is not None:
            refusal = Forbidden("the grant has been revoked", {"permission": "members", "reason": "revoked"})
            current.server.cancel_peer(grant.grantee, refusal, grant_id=grant.id)

    async def reload_grants(self) -> None:
        """Read every grant again. A grant revoked (or issued) while the read runs keeps its newer
        state: the read may have begun before the change, and must not bring a revoked grant back."""
        self._changed_during_reload = {}
        read = await self._catalog.read(all_grants)
        newer = self._changed_during_reload
        self._grants = [newer.get(grant.id, grant) for grant in read] + [g for g in newer.values() if g.id not in {r.id for r in read}]

    def known_relays(self) -> list[str]:
        """Relays (full multiaddrs) this node's global shares hold slots on, then the configured ones."""
        held = [f"{h.address}/p2p/{h.relay_id}" for r in self.shares.values() if r.reservations is not None for h in r.reservations.held.values()]
        return list(dict.fromkeys([*held, *self._reach.relays]))

    def running_share(self, name: str) -> RunningShare | None:
        return next((r for r in self.shares.values() if r.share.name == name), None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._catalog.write(ensure_automatic_share)
        async with trio.open_nursery() as nursery:
            task_status.started()
            try:
                while True:
                    self._changed = trio.Event()
                    wanted = {share.id: share for share in await self._catalog.read(list_shares) if not share.paused}
                    await self.reload_grants()
                    async with self._devices_lock:  # a pairing or unpairing meanwhile is applied after, not undone
                        self._devices = await self._catalog.read(device_ids) | self._owner
                    for share_id, current in list(self.shares.items()):
                        share = wanted.get(share_id)
                        if share is None or (share.scope, share.port) != (current.share.scope, current.share.port or share.port):
                            current.cancel.cancel()
                            del self.shares[share_id]
                        else:
                            current.share = current.service.share = share  # takes effect on the next request
                            if current.access is not None:
                                current.access.update(share, self._grants, self._devices)
                    for share_id, share in wanted.items():
                        if share_id not in self.shares:
                            current = RunningShare(share, ShareService(share, self._catalog, self._engine, self._adapters, self._on_file_changed, self._decoders))
                            self.shares[share_id] = current
                            nursery.start_soon(self._serve, current)
                    await self._changed.wait()
            finally:
                self.shares.clear()

    async def _serve(self, current: RunningShare) -> None:
        """Run the share's host until it is cancelled; retry with backoff when it cannot start."""
        attempt = 0
        with current.cancel:
            while True:
                try:
                    await self._host(current)
                except Exception as exc:  # a port in use, no LAN interface, an unreadable key...
                    current.state, current.error = "failed", describe_error(exc)
                    current.host = None
                    delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                    log.warning("a share cannot serve", extra={"share": current.share.name, "reason": current.error, "retry_in": delay})
                    attempt += 1
                    await trio.sleep(delay)

    async def _record_access(self, access: ShareAccess) -> None:
        """Write the access log, when grants were last used and their bytes of the day, in batches
        (not a write per request)."""
        try:
            while True:
                await trio.sleep(ACCESS_WRITE_SECONDS)
                await self._write_access(access)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._write_access(access)  # what the share saw before it stopped

    async def flush_access(self, current: RunningShare) -> None:
        """Write the share's pending access-log entries now (before the log is shown)."""
        if current.access is not None:
            await self._write_access(current.access)

    async def _write_access(self, access: ShareAccess) -> None:
        entries = list(access.log)
        access.log.clear()
        used, access.last_used = access.last_used, {}
        served, access.bytes_counted = access.bytes_counted, {}
        if entries or used or served:

            def write(conn: Any) -> None:
                access_log.append(conn, entries)
                touch_grants(conn, used)
                record_bytes_served(conn, served)

            await self._catalog.write_when_space(write)

    async def _announce_globally(self, current: RunningShare, host: Any, autonat: Any) -> None:
        current.reachability = reachability.Reachability()
        async with running_dht(host, server=True) as dht, trio.open_nursery() as nursery:
            nursery.start_soon(_watch_reachability, current, host, autonat)
            nursery.start_soon(self._relays_while_private, current, dht)
            await _provide_forever(current, host, dht, self._reach)

    async def _relays_while_private(self, current: RunningShare, dht: Any) -> None:
        """While the share is private (behind a NAT), hold reservations on relays and announce
        its circuit addresses; once it is public, give them up."""
        assert current.reservations is not None

        async def candidates() -> list[str]:
            """The configured relays first, then relays the DHT knows of."""
            try:
                found = await find_providers(dht, RELAY_KEY, count=20, timeout=10)
            except Exception as exc:  # no DHT now: the configured relays still count
                log.info("finding relays on the DHT failed", extra={"share": current.share.name, "reason": describe_error(exc)})
                found = {}
            from_dht = [f"{a}/p2p/{peer}" for peer, addresses in found.items() for a in addresses[:4] if not is_circuit(a)]
            return list(dict.fromkeys([*self._reach.relays, *from_dht]))

        while True:
            while current.status != reachability.PRIVATE:
                await current.verdict_changed.wait()
            async with trio.open_nursery() as nursery, self._punching(current):
                nursery.start_soon(current.reservations.keep, candidates)
                while current.status == reachability.PRIVATE:
                    await current.verdict_changed.wait()
                nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def _punching(self, current: RunningShare) -> AsyncIterator[None]:
        """Behind a NAT, a share starts a hole punch with each peer that reached it through a
        relay and may see its public IP (anyone for a public share, else devices and grantees)."""
        if not self._reach.hole_punching or current.access is None:
            yield
            return
        async with hole_punching(current.host, initiate=True, may_meet=current.access.may_meet_directly, private=self._announce == "all"):
            yield

    @asynccontextmanager
    async def _relaying(self, current: RunningShare, host: Any) -> AsyncIterator[None]:
        """A global share of a node with ``network.relay_service`` relays for others while it serves."""
        if current.share.scope != "global" or self._reach.relay_service is None:
            yield
            return
        async with relay_service(host, self._reach.relay_service) as running_relay:
            current.relay = running_relay.describe
            try:
                yield
            finally:
                current.relay = None

    async def _host(self, current: RunningShare) -> None:
        share = current.share
        identity = await trio.to_thread.run_sync(share_identity, self._keys, share.id)
        listen = listen_multiaddrs(share.scope, share.port)
        host = new_host(
            identity.seed,
            max_connections=self._max_connections,
            per_peer=3,
            announce=lambda candidates: [a for a in candidates if dialable(str(a), share.scope, self._announce)],
        )
        key = signing_key(identity.seed)
        access = ShareAccess(share, key, identity.peer_id, self._grants, self._devices, self._usage)
        desk = InviteDesk(access, self._catalog, key, on_redeemed=self.grant_changed)
        protocols = [*current.service.protocols(), Protocol(schema.REDEEM, desk.redeem), Protocol(schema.SUMMARY, partial(_summary, current))]
        if share.scope == "global":
            current.topics = [
                TopicPublisher(self._catalog, codebook, identity.peer_id, key, scope=lambda: current.share.item_scope) for codebook in self._codebooks
            ]
        server = ProtocolServer(protocols, self._limits, gate=access, resources=self.resources, name=share.name)
        server.attach(host)
        # A global share answers other hosts' dial-back requests, and asks its peers for its own.
        autonat = reachability.serve_autonat(host) if share.scope == "global" else None
        current.access = access
        if share.scope == "global":
            current.reservations = Reservations(
                host, wanted=self._reach.relays_kept, usable=lambda address: dialable(address, "global", self._announce)
            )
        async with running(host, listen), self._relaying(current, host):
            addresses = listen_addresses(host)
            if not addresses:
                raise OSError(f"could not listen on {', '.join(listen)}")
            current.host, current.server, current.peer_id = host, server, identity.peer_id
            current.addresses, current.state, current.error = addresses, "serving", None
            port = int(addresses[0].split("/tcp/")[1].split("/")[0])
            if share.port != port:
                await self._catalog.write(partial(set_port, share_id=share.id, port=port))
                current.share = current.service.share = dataclasses.replace(share, port=port)
            log.info("share serving", extra={"share": share.name, "scope": share.scope, "peer_id": identity.peer_id, "addresses": addresses})
            announcement = None
            if share.scope == "lan":  # announced over mDNS on the interfaces it listens on, and only there
                interfaces = [a.split("/")[2] for a in listen]
                announcement = LanAnnouncement(host, interfaces, port, addresses)
                await announcement.start()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._record_access, access)
                    if share.scope == "global":
                        await self._announce_globally(current, host, autonat)
                    else:
                        await trio.sleep_forever()
            finally:
                current.state = "stopped"
                if announcement is not None:
                    await announcement.stop()
                # Close the connections explicitly, so that peers learn at once that the share is gone
                # (leaving the host's context alone does not close its sockets).
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await host.close()
                    except Exception as exc:
                        log.debug("closing a share's host: %s", exc)
