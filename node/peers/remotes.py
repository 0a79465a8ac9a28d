"""The shares this node knows: added by address, joined by invite, or found by discovery; their
manifests kept current, and their catalogs copied after each manifest read."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from peerlight.p2p import schema
from peerlight.p2p.errors import Malformed, WireError
from peerlight.p2p.host import split_peer_address
from peerlight.permissions import tokens
from peerlight.permissions.invites import Invite

from ..catalog.database import Catalog
from ..catalog.shares import RemoteShare, get_remote, list_remote, record_contact, remember_remote, set_token
from .contact import drop_if_refused
from .host import PeerHost
from .sync import CatalogSync, Progress


class Remotes:
    def __init__(self, catalog: Catalog, host: PeerHost, catalogs: CatalogSync, query_timeout: float) -> None:
        self._catalog = catalog
        self._host = host
        self._catalogs = catalogs
        self._query_timeout = query_timeout

    async def add(self, multiaddr: str, progress: Progress | None = None) -> dict[str, Any]:
        """Remember the share at ``multiaddr`` and read its manifest (a share that does not answer is
        kept, with the error). Its catalog is copied in the background (``syncing`` shows how far),
        or before this returns when ``progress`` is given (called after each page)."""
        return await self.add_at([multiaddr], progress)

    async def add_at(self, multiaddrs: list[str], progress: Progress | None = None) -> dict[str, Any]:
        """As :meth:`add`, for a share known at several addresses (a paired device's: its LAN
        addresses, its circuits through relays), tried in turn."""
        try:
            split = [split_peer_address(multiaddr) for multiaddr in multiaddrs]
        except ValueError as exc:
            raise Malformed(str(exc)) from None
        peer_ids = {peer_id for peer_id, _ in split}
        if len(peer_ids) != 1:
            raise Malformed("the addresses name more than one peer" if peer_ids else "no address given")
        (peer_id,) = peer_ids
        addresses = list(dict.fromkeys(address for _, address in split))
        remote = await self._catalog.write(partial(remember_remote, peer_id=peer_id, addresses=addresses, found_by="manual"))
        await self.refresh(remote, background=progress is None, progress=progress)
        return (await self._catalog.read(partial(get_remote, key=peer_id))).to_wire()

    async def join(self, invite: Invite) -> dict[str, Any]:
        """Remember an invite's share with our grant's token, then read its manifest with it.

        An open invite's token names no peer: the share binds it to us (``redeem``) and answers
        with a token of our own, which is the one kept."""
        try:
            addresses = [split_peer_address(address)[1] for address in invite.addresses]
        except ValueError as exc:
            raise Malformed(f"the invite's addresses are not multiaddrs: {exc}") from None
        remote = await self._catalog.write(partial(remember_remote, peer_id=invite.share, addresses=addresses, found_by="manual"))
        token = invite.token
        try:
            claims, _, _ = tokens.decode(token)
        except tokens.TokenError as exc:
            raise Malformed(f"the invite's token is not one: {exc}") from None
        if claims.share != invite.share:
            raise Malformed("the invite's token is for another share than its addresses")
        if claims.to is None:
            requester = await self._host.requester()
            reply = await requester.request(remote.peer_id, remote.addresses, schema.REDEEM, {"token": token}, timeout=self._query_timeout)
            token = reply["token"]
        await self._catalog.write(partial(set_token, peer_id=remote.peer_id, token=token))
        await self.refresh(await self._catalog.read(partial(get_remote, key=remote.peer_id)))
        return (await self._catalog.read(partial(get_remote, key=remote.peer_id))).to_wire()

    async def refresh(self, remote: RemoteShare, *, background: bool = False, progress: Progress | None = None) -> dict[str, Any] | None:
        """Ask a remote share for its manifest; remember what it said, or why it did not answer.
        Then bring our copy of its catalog up to date: before returning, or in the background."""
        requester = await self._host.requester()
        try:
            manifest = await requester.request(remote.peer_id, remote.addresses, schema.MANIFEST, remote.with_token({}), timeout=self._query_timeout)
        except WireError as exc:
            await self._catalog.write(partial(record_contact, peer_id=remote.peer_id, error=f"{exc.code}: {exc.message}"))
            await drop_if_refused(self._catalog, remote.peer_id, exc)
            return None
        manifest = {key: manifest.get(key) for key in KEPT_OF_MANIFEST}
        await self._catalog.write(partial(record_contact, peer_id=remote.peer_id, manifest=manifest, address=remote.addresses[0] if remote.addresses else None))
        if "catalog" in manifest["capabilities"]:
            await self._catalogs.copy(remote, manifest["items"], background=background, progress=progress)
        return manifest

    async def refresh_all(self) -> list[dict[str, Any]]:
        remotes = await self._catalog.read(list_remote)
        async with trio.open_nursery() as nursery:
            for remote in remotes:
                nursery.start_soon(self.refresh, remote)
        return [remote.to_wire() for remote in await self._catalog.read(list_remote)]


# What is stored of a manifest (checked by the schema): what searching and showing the share need.
KEPT_OF_MANIFEST = ("name", "scope", "permission", "public_can", "items", "counts", "models", "capabilities")

