"""``share.*``, ``peers.*`` and ``fetch``: the node's Data Servers, and other nodes' shares.

All of them are for the node's own user (``local_only``): they show this machine's paths
or change what it serves. Peers reach shares through the Data Server protocols, never here.
"""

from __future__ import annotations

import base64
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from peerlight.p2p.relay import connection_kind
from peerlight.permissions.invites import MAX_ADDRESSES
from peerlight.p2p.errors import Malformed, NotFound as PeerNotFound, Unreachable, WireError
from peerlight.permissions import invites, tokens

from ..callers import Caller
from .library import existing_folder
from ..catalog import access_log, grants, remote_items, shares
from ..catalog.database import Catalog
from ..control.params import Params
from ..control.protocol import Conflict, InvalidParams, NotFound, Unavailable
from ..control.server import Emit, Handler, Streaming, local_only
from ..peers.client import PeerClient
from ..peers.transfers import FetchError
from peerlight.p2p.listen import NoLanInterface
from ..serving.access import signing_key
from ..serving.servers import DataServers, key_path, share_identity
from ..pathnames import display
from ..search.filters import MODALITIES
from ..threads import run_io


SETTLE_SECONDS = 10.0  # how long share.create/edit wait for the share's host to start listening


class ShareMethods:
    def __init__(self, catalog: Catalog, servers: DataServers | None, keys: Path) -> None:
        self._catalog = catalog
        self._servers = servers
        self._keys = keys

    def methods(self) -> dict[str, Handler | Streaming]:
        return {
            f"share.{name}": local_only(method)
            for name, method in {
                "create": self.create,
                "list": self.list,
                "show": self.show,
                "edit": self.edit,
                "pause": self.pause,
                "resume": self.resume,
                "remove": self.remove,
                "grant": self.grant,
                "grants": self.grants,
                "revoke": self.revoke,
                "log": self.log,
            }.items()
        }

    async def _changed(self, share: shares.Share | None = None) -> None:
        """Tell the Data Servers; for a share that should run, wait (briefly) until it serves or fails."""
        if self._servers is None:
            return
        if share is None:
            self._servers.changed()
            return
        await self._servers.settled(share, SETTLE_SECONDS)

    def _describe(self, share: shares.Share) -> dict[str, Any]:
        described = share.to_wire()
        running = self._servers.running_share(share.name) if self._servers is not None else None
        if running is not None:
            described.update(running.describe())
        else:
            described.update({"state": "paused" if share.paused else "off", "addresses": [], "peer_id": None})
        described["name"] = share.name
        return described

    async def create(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        name = _share_name(params.text("name", max_length=100))
        scope = params.choice("scope", shares.SCOPES, "local")
        # Public is a choice, never a default: beyond this machine strangers would reach it, and on
        # loopback every other local user and container would (a local share serves its owner).
        permission = params.choice("permission", shares.PERMISSIONS, "devices" if scope == "local" else "members")
        collections = await _collections(params)
        if not collections:
            raise InvalidParams("a share needs at least one collection (a library, or a folder in one)", data={"param": "collection"})
        modalities = params.choices("modality", MODALITIES)
        port = params.number("port", None, min=0, max=65535, integer=True)
        public_can = params.choices("public_can", tokens.CAPABILITIES) or tokens.CAPABILITIES
        params.done()
        try:
            share = await self._catalog.write(
                partial(
                    shares.create_share,
                    name=name,
                    scope=scope,
                    permission=permission,
                    collections=collections,
                    modalities=modalities,
                    port=port,
                    public_can=public_can,
                )
            )
        except shares.ShareError as exc:
            raise Conflict(str(exc)) from None
        await self._changed(share)
        return self._describe(share)

    async def list(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        Params(raw).done()
        return [self._describe(share) for share in await self._catalog.read(shares.list_shares)]

    async def show(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        name = params.text("name", max_length=100)
        params.done()
        return self._describe(await self._get(name))

    async def _get(self, name: str) -> shares.Share:
        try:
            return await self._catalog.read(partial(shares.get_share, name=name))
        except shares.ShareNotFound as exc:
            raise NotFound(str(exc)) from None

    async def edit(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        name = params.text("name", max_length=100)
        new_name = params.text("new_name", None, max_length=100)
        edit = shares.ShareEdit(
            new_name=_share_name(new_name) if new_name is not None else None,
            scope=params.choice("scope", shares.SCOPES, None),
            permission=params.choice("permission", shares.PERMISSIONS, None),
            collections=(await _collections(params)) or None,
            # Present and empty: every kind again, and nothing open to the public, respectively.
            modalities=params.choices("modality", MODALITIES) if "modality" in raw else None,
            port=params.number("port", None, min=0, max=65535, integer=True),
            public_can=params.choices("public_can", tokens.CAPABILITIES) if "public_can" in raw else None,
        )
        confirmed = params.flag("yes", False)
        params.done()
        if edit.scope is not None and edit.permission is None and not confirmed:
            _check_widening(await self._get(name), edit.scope)
        return await self._edit(name, edit)

    async def _edit(self, name: str, edit: shares.ShareEdit) -> dict[str, Any]:
        try:
            share = await self._catalog.write(partial(shares.edit_share, name=name, edit=edit))
        except shares.ShareNotFound as exc:
            raise NotFound(str(exc)) from None
        except shares.ShareError as exc:
            raise Conflict(str(exc)) from None
        await self._changed(share)
        return self._describe(share)

    async def pause(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        name = params.text("name", max_length=100)
        params.done()
        return await self._edit(name, shares.ShareEdit(paused=True))

    async def resume(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        name = params.text("name", max_length=100)
        params.done()
        return await self._edit(name, shares.ShareEdit(paused=False))

    async def remove(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        name = params.text("name", max_length=100)
        params.done()
        try:
            share = await self._catalog.write(partial(shares.remove_share, name=name))
        except shares.ShareNotFound as exc:
            raise NotFound(str(exc)) from None
        except shares.ShareError as exc:
            raise Conflict(str(exc)) from None
        await self._changed()
        # Its key goes too: a later share given the same row id must not inherit its peer id.
        await run_io(partial(key_path(self._keys, share.id).unlink, missing_ok=True))
        return share.to_wire()


    # --- grants ---

    async def grant(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Grant a peer (``to``) or whoever redeems an invite (``invite``) capabilities of a share.

        The answer carries the grant, its token and an invite string holding the share's
        addresses and the token: what the grantee pastes into ``peerlight join``."""
        params = Params(raw)
        name = params.text("name", max_length=100)
        to = params.text("to", None, max_length=100)
        open_invite = params.flag("invite", False)
        can = params.choices("can", tokens.CAPABILITIES) or tokens.CAPABILITIES
        expires_in = params.number("expires_in", None, min=1, max=100 * 365 * 86400)
        rpm = params.number("requests_per_minute", 0, min=0, max=10**6, integer=True)
        bytes_per_day = params.number("bytes_per_day", 0, min=0, max=2**62, integer=True)
        params.done()
        if (to is None) == (not open_invite):
            raise InvalidParams("grant either to a peer (to) or as an open invite (invite), one of them", data={"param": "to"})
        if to is not None and not tokens.PEER_ID.fullmatch(to):
            raise InvalidParams(f"{to!r} is not a peer ID", data={"param": "to"})
        share = await self._get(name)
        identity = await trio.to_thread.run_sync(share_identity, self._keys, share.id)
        expires_at = time.time() + expires_in if expires_in else None
        grant_id = tokens.new_grant_id()
        claims = tokens.Claims(identity.peer_id, grant_id, to, tuple(can), rpm, bytes_per_day, int(expires_at or 0))
        token = tokens.issue(signing_key(identity.seed), claims)
        grant = await self._catalog.write(
            partial(grants.add_grant, grant_id=grant_id, share_id=share.id, grantee=to, capabilities=tuple(can), rpm=rpm, bytes_per_day=bytes_per_day, expires_at=expires_at)
        )
        if self._servers is not None:
            self._servers.grant_changed(grant)  # usable from the next request on
        await self._changed(share)
        running = self._servers.running_share(share.name) if self._servers is not None else None
        addresses = running.reachable_addresses(MAX_ADDRESSES) if running is not None else ()
        return {
            "share": share.name,
            "grant": grant.to_wire(),
            "token": base64.urlsafe_b64encode(token).decode(),
            "invite": invites.encode(invites.Invite(identity.peer_id, addresses, token)) if addresses else None,
        }

    async def grants(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        params = Params(raw)
        name = params.text("name", max_length=100)
        params.done()
        share = await self._get(name)
        await self._flush_access(share)  # "last used" as of now
        return [grant.to_wire() for grant in await self._catalog.read(partial(grants.grants_of, share_id=share.id))]

    async def _flush_access(self, share: shares.Share) -> None:
        running = self._servers.running_share(share.name) if self._servers is not None else None
        if running is not None and self._servers is not None:
            await self._servers.flush_access(running)

    async def revoke(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Revoke a grant: refused from the next request on, and any transfer it runs is stopped."""
        params = Params(raw)
        name = params.text("name", max_length=100)
        grant_id = params.text("grant", max_length=64)
        params.done()
        share = await self._get(name)
        try:
            grant = await self._catalog.write(partial(grants.revoke_grant, share_id=share.id, grant_id=grant_id))
        except grants.GrantNotFound as exc:
            raise NotFound(str(exc)) from None
        if self._servers is not None:
            self._servers.revoked(grant)
            await self._changed(share)
        return grant.to_wire()


    async def log(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """The share's access log, newest first: who asked for what, allowed or denied and why."""
        params = Params(raw)
        name = params.text("name", max_length=100)
        limit = params.number("limit", 100, min=1, max=access_log.ROWS_KEPT_PER_SHARE, integer=True)
        denied = params.flag("denied", False)
        params.done()
        share = await self._get(name)
        await self._flush_access(share)  # what just happened, too
        return await self._catalog.read(partial(access_log.recent, share_id=share.id, limit=limit, denied_only=denied))


class PeerMethods:
    def __init__(self, catalog: Catalog, client: PeerClient | None) -> None:
        self._catalog = catalog
        self._client = client

    def methods(self) -> dict[str, Handler | Streaming]:
        return {
            "peers.add": local_only(Streaming(self.add)),
            "peers.join": local_only(self.join),
            "peers.list": local_only(self.list),
            "peers.remove": local_only(self.remove),
            "peers.discover": local_only(self.discover),
            "peers.fetch": local_only(Streaming(self.fetch)),
            "peers.preview": local_only(self.preview),
        }

    def _need_client(self) -> PeerClient:
        if self._client is None:
            raise Unavailable("networking is off (network.enabled = false)")
        return self._client

    async def add(self, raw: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        """Remember a share; returns once its manifest is read, its catalog copied in the background
        (``peers`` shows how far), or with ``wait``, once the copy is done, with progress events."""
        params = Params(raw)
        address = params.text("address", max_length=1000)
        wait = params.flag("wait", False)
        params.done()

        async def progress(received: int, expected: int) -> None:
            await emit({"received": received, "expected": expected})

        try:
            return await self._need_client().remotes.add(address, progress if wait else None)
        except Malformed as exc:
            raise InvalidParams(exc.message, data={"param": "address"}) from None

    async def join(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Use an invite: remember its share and our grant's token (an open invite is redeemed first)."""
        params = Params(raw)
        text = params.text("invite", max_length=invites.MAX_INVITE_CHARS)
        params.done()
        try:
            invite = invites.decode(text)
        except invites.InviteError as exc:
            raise InvalidParams(str(exc), data={"param": "invite"}) from None
        try:
            return await self._need_client().remotes.join(invite)
        except WireError as exc:
            raise Unavailable(f"the share did not accept the invite: {exc.code}: {exc.message}") from None

    async def list(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        Params(raw).done()
        cached = await self._catalog.read(remote_items.catalog_counts)
        syncing = self._client.catalogs.syncing if self._client is not None else {}
        requester = self._client.host.running_requester if self._client is not None else None
        return [
            remote.to_wire()
            | {
                "cached_items": cached.get(remote.peer_id, 0),
                "syncing": syncing[remote.peer_id].to_wire() if remote.peer_id in syncing else None,
                # direct, relayed (through a circuit relay: it sits behind a NAT) or None (not connected now)
                "connection": connection_kind(requester.host, remote.peer_id) if requester is not None else None,
            }
            for remote in await self._catalog.read(shares.list_remote)
        ]

    async def discover(self, raw: dict[str, Any], caller: Caller) -> list[dict[str, Any]]:
        """Every known share asked for its manifest now (LAN and DHT discovery add to what is known)."""
        params = Params(raw)
        source = params.choice("source", ("lan", "global", "manual"), None)
        found_by = {"lan": "mdns", "global": "dht", "manual": "manual"}.get(source)
        params.done()
        client = self._need_client()
        if source in (None, "lan"):
            try:
                await client.discovery.lan()
            except NoLanInterface as exc:
                if source == "lan":
                    raise Unavailable(str(exc)) from None
        if source in (None, "global"):
            try:
                await client.discovery.dht()
            except Unreachable as exc:
                if source == "global":
                    raise Unavailable(exc.message) from None
        remotes = await client.remotes.refresh_all()
        return [remote for remote in remotes if found_by is None or remote["found_by"] == found_by]

    async def remove(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        key = params.text("peer", max_length=200)
        params.done()
        try:
            removed = await self._catalog.write(partial(shares.forget_remote, key=key))
        except shares.ShareNotFound as exc:
            raise NotFound(str(exc)) from None
        if self._client is not None:
            await self._client.forget(removed.peer_id)
        return removed.to_wire()

    async def preview(self, raw: dict[str, Any], caller: Caller) -> dict[str, Any]:
        params = Params(raw)
        key = params.text("share", max_length=200)
        item = params.text("item", max_length=4096)
        to = params.path("to", None)
        with_data = params.flag("data", False)
        params.done()
        folder = Path(to) if to is not None else None
        if folder is not None and not await run_io(folder.is_dir):
            raise InvalidParams(f"{display(str(folder))} is not a folder", data={"param": "to"})
        try:
            return await self._need_client().transfers.preview(key, item, folder, with_data)
        except shares.ShareNotFound as exc:
            raise NotFound(str(exc)) from None
        except PeerNotFound as exc:
            raise NotFound(exc.message) from None
        except WireError as exc:
            raise Unavailable(f"{exc.code}: {exc.message}") from None

    async def fetch(self, raw: dict[str, Any], caller: Caller, emit: Emit) -> dict[str, Any]:
        params = Params(raw)
        key = params.text("share", max_length=200)
        item = params.text("item", max_length=4096)
        folder = Path(params.path("to"))
        params.done()
        if not folder.is_absolute():
            raise InvalidParams("the target folder must be an absolute path", data={"param": "to"})
        try:  # made if it does not exist yet, as wget and aria2 do
            await run_io(partial(folder.mkdir, parents=True, exist_ok=True))
        except OSError as exc:
            raise InvalidParams(f"{display(str(folder))} is not a folder that can be written to: {exc.strerror}", data={"param": "to"}) from None

        async def progress(received: int, size: int) -> None:
            await emit({"received": received, "size": size})

        try:
            return await self._need_client().transfers.fetch(key, item, folder, progress)
        except shares.ShareNotFound as exc:
            raise NotFound(str(exc)) from None
        except PeerNotFound as exc:
            raise NotFound(exc.message) from None
        except (FetchError, Unreachable) as exc:
            raise Unavailable(str(exc)) from None
        except WireError as exc:
            raise Unavailable(f"{exc.code}: {exc.message}") from None


def _check_widening(share: shares.Share, scope: str) -> None:
    """A public share moved to a wider scope (loopback -> LAN -> internet) needs a word from the
    user: a permission chosen with the move, or a confirmation. One typo must not publish a library."""
    order = shares.SCOPES  # local, lan, global: each reaches more people
    if share.permission == "public" and order.index(scope) > order.index(share.scope):
        reach = "anyone on the internet" if scope == "global" else "anyone on the LAN"
        raise Conflict(
            f"{share.name!r} is public: at scope {scope} {reach} could {', '.join(share.public_can)} it. "
            "Choose who may use it with --permission (members, devices or public), or confirm with --yes",
            data={"param": "permission", "confirm": "yes"},
        )


def _share_name(name: str) -> str:
    name = name.strip()
    if not name or any(not ch.isprintable() for ch in name):
        raise InvalidParams("a share name must be printable and not empty", data={"param": "name"})
    return name


async def _collections(params: Params) -> tuple[str, ...]:
    """The collections named in a request, resolved (they must exist and be folders)."""
    found = [await run_io(existing_folder, text, "collection", what=f"checking {display(text)}") for text in params.paths("collection")]
    return tuple(dict.fromkeys(str(folder) for folder in found))

