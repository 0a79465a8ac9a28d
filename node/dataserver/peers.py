"""This node as a client of other nodes' shares: adding them, asking them, downloading from them.

One libp2p host with the node's own identity does the asking (grants will be bound to that
peer id). Every answer from a peer is hostile until checked: names are sanitised before they
touch the disk, each data frame is checked against its BLAKE3, and the whole file against
the content hash it was asked by before it appears under its final name.
"""

from __future__ import annotations


import errno
import logging
import os
import re
import shutil
import time
from contextlib import aclosing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import trio

from peerlight.embeddings.adapters import Adapter, AdapterError
from peerlight.embeddings.model_ids import is_ordered
from peerlight.embeddings.vectors import normalize

from peerlight.p2p import fields
from peerlight.p2p.client import Requester
from peerlight.permissions import tokens
from peerlight.permissions.invites import Invite
from peerlight.p2p.errors import Forbidden, Malformed, NotFound, Timeout, TooLarge, Unreachable, WireError
from peerlight.p2p.dht import PEERLIGHT_KEY, bootstrap, find_providers, running_dht
from peerlight.p2p.host import new_host, running, split_peer_address

from ..catalog import remote_items
from ..catalog.database import Catalog
from ..catalog.shares import (
    RemoteShare, forget_remote, get_remote, list_remote, prune_refusing, record_contact, remember_remote, set_token,
)
from ..search.engine import ROLE_MODALITIES
from ..search.filters import MODALITIES
from ..threads import run_io
from . import protocol_ids as ids
from .adapters import MAX_ADAPTER_BYTES, verified_adapter
from ..files import rename_exclusive
from .download import STAGING_BYTES, PartialDownload
from .lan import browse
from .listen import NoLanInterface, lan_addresses

log = logging.getLogger("peerlight.peers")

HASH = re.compile(r"^[0-9a-f]{64}$")
FETCH_ATTEMPTS = 5  # an interrupted or corrupted transfer is resumed this many times
RESUME_BACKOFF = (0.2, 1, 3, 10)
PREVIEW_TYPES = {"image/jpeg": ".jpg", "audio/wav": ".wav"}  # what a preview may be (and its file's suffix)
LAN_BROWSE_SECONDS = 3.0  # how long `discover --lan` listens for mDNS announcements
TYPICAL_SPREAD = 0.1  # the standard deviation of a query's cosines, when no items tell it
SPREAD_SAMPLE = 2000  # cached prefixes that estimate a query's spread in a space we hold no items of
SYNC_PAGE = 500  # items per catalog page
MAX_SHORT_PAGES = 200  # pages beyond the item budget's (pages of changes the share does not show us)
STRANGER_ITEMS = 100_000  # items kept of a share found by discovery that the user neither added nor joined
SYNC_SECONDS = 600.0  # one catalog sync, all its pages (an honest million-item share takes about a minute)
SYNC_PREFIX_K = 48  # the prefix length cached of each peer's vectors (D/8 for MiniLM's 384)
FREE_SPACE_RESERVE = 64 * 1024 * 1024  # a download never leaves its disk fuller than this
WRITE_BATCH_BYTES = STAGING_BYTES  # verified chunks are written this many at a time (one system call, one GIL hand-over)

Progress = Callable[[int, int], Awaitable[None]]


class FetchError(Exception):
    """A download that cannot complete (the partial file is kept for a later resume, unless it was wrong)."""


class NotEnoughSpace(FetchError):
    """The file would not fit on the target's disk (checked before anything is written)."""


@dataclass
class SyncProgress:
    """How far a catalog sync has got: items received of the ``expected`` the manifest named."""

    expected: int | None
    received: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"received": self.received, "expected": self.expected}


@dataclass
class PeerAnswer:
    remote: RemoteShare
    results: list[dict[str, Any]] | None = None  # the share's own answer
    error: str | None = None  # why there is none
    cached: list[dict[str, Any]] = field(default_factory=list)  # ranked from our copy of its catalog instead


class PeerClient:
    def __init__(
        self,
        catalog: Catalog,
        seed: bytes,
        query_timeout: float,
        sync_interval: float = 300.0,
        bootstrap: tuple[str, ...] = (),
        max_remote_items: int = 1_000_000,
    ) -> None:
        self._catalog = catalog
        self.max_remote_items = max_remote_items
        self._bootstrap = bootstrap
        self._seed = seed
        self.query_timeout = query_timeout
        self.sync_interval = sync_interval
        self._adapters: dict[str, Adapter] = {}  # peers' ordering adapters by the model id they produce (verified: any share's will do)
        self._bad_adapters: set[tuple[str, str]] = set()  # (share, model id) whose adapter was refused: not asked again
        self.requester: Requester | None = None
        self._ready = trio.Event()
        self._background: trio.Nursery | None = None  # catalog syncs that go on after `peers add` returned
        self.syncing: dict[str, SyncProgress] = {}  # peer id -> the sync running now

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host = new_host(self._seed)
        # A client host listens on loopback only: peers it asks answer on the same connection.
        async with running(host, ["/ip4/127.0.0.1/tcp/0"]), trio.open_nursery() as background:
            self.requester = Requester(host)
            self._background = background
            self._ready.set()
            task_status.started()
            try:
                while True:  # keep manifests and cached catalogs current
                    await trio.sleep(self.sync_interval)
                    await self.refresh_all()
            finally:
                self.requester = None
                self._background = None
                self._ready = trio.Event()
                background.cancel_scope.cancel()

    async def ready_requester(self) -> Requester:
        """The node's client host, once it runs (for protocols other than a share's, e.g. pairing)."""
        return await self._requester()

    async def _requester(self) -> Requester:
        with trio.move_on_after(30):
            await self._ready.wait()
        if self.requester is None:
            raise Unreachable("the node's network client is not running")
        return self.requester

    # --- remote shares ---

    async def add(self, multiaddr: str, progress: Progress | None = None) -> dict[str, Any]:
        """Remember the share at ``multiaddr`` and read its manifest (a share that does not answer is
        kept, with the error). Its catalog is copied in the background (``syncing`` shows how far),
        or before this returns when ``progress`` is given (called after each page)."""
        try:
            peer_id, address = split_peer_address(multiaddr)
        except ValueError as exc:
            raise Malformed(str(exc)) from None
        remote = await self._catalog.write(partial(remember_remote, peer_id=peer_id, addresses=[address], found_by="manual"))
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
            requester = await self._requester()
            reply = await requester.request(remote.peer_id, remote.addresses, ids.REDEEM, {"token": token}, timeout=self.query_timeout)
            token = reply.get("token")
            if not isinstance(token, bytes) or len(token) > tokens.MAX_TOKEN_BYTES:
                raise Malformed("the share answered the invite without a token")
        await self._catalog.write(partial(set_token, peer_id=remote.peer_id, token=token))
        await self.refresh(await self._catalog.read(partial(get_remote, key=remote.peer_id)))
        return (await self._catalog.read(partial(get_remote, key=remote.peer_id))).to_wire()

    async def refresh(self, remote: RemoteShare, *, background: bool = False, progress: Progress | None = None) -> dict[str, Any] | None:
        """Ask a remote share for its manifest; remember what it said, or why it did not answer.
        Then bring our copy of its catalog up to date: before returning, or in the background."""
        requester = await self._requester()
        try:
            manifest = await requester.request(remote.peer_id, remote.addresses, ids.MANIFEST, remote.with_token({}), timeout=self.query_timeout)
        except WireError as exc:
            await self._catalog.write(partial(record_contact, peer_id=remote.peer_id, error=f"{exc.code}: {exc.message}"))
            await self._refused(remote.peer_id, exc)
            return None
        manifest = _checked_manifest(manifest)
        await self._catalog.write(partial(record_contact, peer_id=remote.peer_id, manifest=manifest, address=remote.addresses[0] if remote.addresses else None))
        if "catalog" in manifest["capabilities"] and remote.peer_id not in self.syncing:
            if background and self._background is not None:
                self.syncing[remote.peer_id] = SyncProgress(manifest["items"])
                self._background.start_soon(self._recorded_sync, remote, manifest["items"], None)
            else:
                await self._recorded_sync(remote, manifest["items"], progress)
        return manifest

    async def _recorded_sync(self, remote: RemoteShare, expected: int | None, progress: Progress | None) -> None:
        """:meth:`sync`, its failure remembered as the share's last error (a background sync never
        takes the client down: a defect is logged, and the next refresh tries again)."""
        try:
            with trio.fail_after(SYNC_SECONDS):
                await self.sync(remote, expected=expected, progress=progress)
        except trio.TooSlowError:  # the pages stored so far are kept: the next sync goes on from them
            await self._remember_failure(remote.peer_id, f"catalog sync: timeout: not done within {SYNC_SECONDS:g} s")
        except WireError as exc:
            await self._remember_failure(remote.peer_id, f"catalog sync: {exc.code}: {exc.message}", exc)
        except Exception:
            if progress is not None:
                raise
            log.exception("a background catalog sync failed", extra={"peer": remote.peer_id})

    async def _remember_failure(self, peer_id: str, error: str, cause: WireError | None = None) -> None:
        """Record why a sync failed; a catalog that cannot be written now (a full disk) is logged,
        and never takes the client down from a background task."""
        try:
            await self._catalog.write(partial(record_contact, peer_id=peer_id, error=error))
            if cause is not None:
                await self._refused(peer_id, cause)
        except Exception:
            log.exception("recording a failed sync failed", extra={"peer": peer_id, "error": error})

    async def _refused(self, peer_id: str, error: WireError) -> None:
        """A share refused us as a whole (our grant revoked, expired or unknown there; unpaired;
        made members-only): the token it no longer honours and our copy of its catalog go, so
        nothing of it is shown from cache. A refusal of one capability only changes nothing."""
        if isinstance(error, Forbidden) and "capability" not in error.data:
            log.info("a share refused us; its token and cached catalog are dropped", extra={"peer": peer_id, "reason": error.message})

            def drop(conn: Any) -> None:
                set_token(conn, peer_id, None)
                remote_items.forget_catalog(conn, peer_id)

            await self._catalog.write(drop)

    async def sync(self, remote: RemoteShare, k: int = SYNC_PREFIX_K, expected: int | None = None, progress: Progress | None = None) -> int:
        """Bring our copy of the share's catalog up to date, page by page from where the last sync ended.

        When our copy's size disagrees with the share's at the end (items removed or moved out of
        it, which pages of changes cannot name without leaking what lies outside), it is rebuilt
        from scratch once. Returns the items received.

        A hostile share cannot make it endless or huge: every page must move the cursor forward,
        and one sync takes at most ``max_remote_items`` items, fewer when the share's manifest
        said how many it holds (``expected``, with room for changes meanwhile). Past that the
        sync ends with an error and what the share sent is dropped.
        """
        state = self.syncing.setdefault(remote.peer_id, SyncProgress(expected))
        try:
            requester = await self._requester()
            # A share found by discovery (a stranger, maybe one of many a Sybil put on the DHT) gets less room.
            budget = sync_budget(expected, min(self.max_remote_items, STRANGER_ITEMS) if is_stranger(remote) else self.max_remote_items)
            received = 0
            for fresh_start in (False, True):
                if fresh_start:
                    await self._catalog.write(partial(remote_items.forget_catalog, peer_id=remote.peer_id))
                cursor = await self._catalog.read(partial(remote_items.sync_cursor, peer_id=remote.peer_id))
                taken = pages = 0  # in this pass
                while True:
                    page = await requester.request(
                        remote.peer_id, remote.addresses, ids.CATALOG, remote.with_token({"cursor": cursor, "limit": SYNC_PAGE, "k": k}), timeout=self.query_timeout * 4
                    )
                    items, next_cursor, last_page = _checked_page(page, cursor)
                    taken += len(items)
                    pages += 1
                    held = await self._catalog.read(partial(remote_items.held_items, peer_id=remote.peer_id)) if pages == 1 else 0
                    if taken > budget or pages > budget // SYNC_PAGE + MAX_SHORT_PAGES or held > budget:
                        await self._catalog.write(partial(remote_items.forget_catalog, peer_id=remote.peer_id))
                        said = f"; its manifest says {expected}" if expected is not None else ""
                        raise TooLarge(f"the share's catalog goes past {budget:,} items{said}: not kept", {"limit": budget})
                    # The cursor moves with each page stored: a sync cut short goes on from here next time.
                    received += await self._catalog.write(
                        partial(remote_items.store_page, peer_id=remote.peer_id, items=items, k=k, cursor=next_cursor)
                    )
                    state.received = received
                    if progress is not None:
                        await progress(received, expected or 0)
                    cursor = next_cursor
                    if last_page:
                        break
                total = fields.count(page.get("total"))
                if await self._catalog.write(partial(remote_items.finish_sync, peer_id=remote.peer_id, cursor=cursor, total=total)):
                    return received
            raise Malformed("the share's catalog changed size while it was copied; try again")
        finally:
            self.syncing.pop(remote.peer_id, None)

    async def discover_lan(self, seconds: float = LAN_BROWSE_SECONDS) -> int:
        """Listen for shares announced over mDNS on this machine's LAN interfaces; remember those that
        answer as Peerlight shares (other libp2p nodes announce themselves the same way). How many."""
        interfaces = lan_addresses()
        if not interfaces:
            raise NoLanInterface("no LAN interface with a private IPv4 address to listen on")
        found = await browse(interfaces, seconds)
        known = {remote.peer_id for remote in await self._catalog.read(list_remote)}
        return await self._remember_found(found, "mdns", known)

    async def discover_global(self) -> int:
        """Find global shares on the DHT (providers of the Peerlight key); remember those that answer. How many.

        The DHT is joined through the configured bootstrap nodes and the global shares already
        known (each is a DHT server), for the duration of the lookup, as a client only.
        """
        known = await self._catalog.read(list_remote)
        entry = list(self._bootstrap) + [
            f"{address}/p2p/{remote.peer_id}" for remote in known if (remote.manifest or {}).get("scope") == "global" for address in remote.addresses[:2]
        ]
        if not entry:
            raise Unreachable("no DHT node to start from: set network.bootstrap, or add a global share with `peers add`")
        requester = await self._requester()
        async with running_dht(requester.host, server=False) as dht:
            if not await bootstrap(requester.host, dht, entry):
                raise Unreachable("no bootstrap node of the DHT answered")
            found = await find_providers(dht, PEERLIGHT_KEY)
        return await self._remember_found(found, "dht", {remote.peer_id for remote in known})

    async def _refused_us(self, peer_id: str) -> bool:
        """The peer answered as a Peerlight share that needs a grant (a members or devices share)."""
        remote = await self._catalog.read(partial(get_remote, key=peer_id))
        return (remote.last_error or "").startswith(f"{Forbidden.code}:")

    async def _remember_found(self, found: dict[str, list[str]], found_by: str, known: set[str]) -> int:
        """Remember discovered peers that answer as Peerlight shares; how many."""
        remembered = 0
        for peer_id, addresses in found.items():
            transports = [a.split("/p2p/")[0] for a in addresses if a.startswith(("/ip4/", "/ip6/"))]
            if not transports:
                continue
            remote = await self._catalog.write(partial(remember_remote, peer_id=peer_id, addresses=transports, found_by=found_by))
            if await self.refresh(remote, background=True) is None and peer_id not in known and not await self._refused_us(peer_id):
                await self._catalog.write(partial(forget_remote, key=peer_id))  # not (or not now) a Peerlight share
                continue
            remembered += 1
        await self._catalog.write(partial(prune_refusing, now=time.time()))
        return remembered

    async def forget(self, peer_id: str) -> None:
        """A share was removed: its idle streams go, and so does what was remembered of its adapters."""
        if self.requester is not None:
            await self.requester.forget(peer_id)
        self._bad_adapters = {key for key in self._bad_adapters if key[0] != peer_id}

    async def refresh_all(self) -> list[dict[str, Any]]:
        remotes = await self._catalog.read(list_remote)
        async with trio.open_nursery() as nursery:
            for remote in remotes:
                nursery.start_soon(self.refresh, remote)
        return [remote.to_wire() for remote in await self._catalog.read(list_remote)]

    # --- searching ---

    async def search(
        self,
        body: dict[str, Any],
        vectors: dict[str, tuple[np.ndarray, float | None, float | None]],
        bases: dict[str, np.ndarray] | None = None,
        *,
        send_text: bool = False,
    ) -> list[PeerAnswer]:
        """Ask every known share at once; those that do not answer within the deadline are left out.

        A share whose items live in one of our models' spaces (``vectors``: model id -> this
        query's vector, and the mean and spread of its cosine over our own items) is asked by
        vector: it refines with its full vectors. If it does not answer, its items are ranked
        from our cached copy of its catalog (K-prefixes) instead, and marked ``from_cache``.
        Their cosines become z-scores against our spread, comparable with local results.
        A share whose space is our base model under another ordering adapter is joined: its
        adapter (fetched once, verified against its model id) turns our base vector (``bases``)
        into a query in its space. Other shares are asked by text, and score on their own z-scores.

        Strangers (shares found by discovery, neither added by the user nor granted to us) learn
        as little of the query as works: a K-prefix of an ordered vector, never the whole vector
        (embedding inversion turns whole vectors back into much of the text), and no text unless
        the user asks (``send_text``); they are ranked from our cached catalog instead.
        """
        requester = await self._requester()
        remotes = await self._catalog.read(list_remote)
        answers = [PeerAnswer(remote) for remote in remotes]
        k = body.get("k", 20)
        spaces = {model: await self._with_spread(model, *known) for model, known in vectors.items()}
        bases = bases or {}

        kinds = tuple(body.get("filters", {}).get("modality") or ())

        def models_of(remote: RemoteShare) -> list[str]:
            """The spaces we share with the remote share that hold the kinds of media asked for."""
            offered = [m for m in (remote.manifest or {}).get("models") or [] if m.get("id") in spaces]
            return [m["id"] for m in offered if not kinds or set(ROLE_MODALITIES.get(m.get("space") or "", ())) & set(kinds)]

        async def join_spaces(remote: RemoteShare) -> None:
            """Add the share's ordered spaces whose adapter turns one of our base vectors into a query."""
            for model in (remote.manifest or {}).get("models") or []:
                model_id = model.get("id")
                if model_id in spaces or not isinstance(model_id, str) or not is_ordered(model_id):
                    continue
                adapter = await self._adapter(requester, remote, model_id)
                if adapter is not None and adapter.base_model_id in bases:
                    vector = adapter.apply(bases[adapter.base_model_id].reshape(1, -1))[0]
                    spaces[model_id] = await self._with_spread(model_id, vector, None, None)

        async def ask(answer: PeerAnswer) -> None:
            stranger = is_stranger(answer.remote)
            if bases and not stranger:
                await join_spaces(answer.remote)
            models = models_of(answer.remote)
            if stranger:
                models = [model for model in models if is_ordered(model)]
                if not models and not send_text:
                    answer.error = "not asked: a share found by discovery gets no query text (search with --send-text to ask it)"
                    return
            requests = [(None, body)] if not models else [
                (model, {"vector": _query_vector(spaces[model][0], stranger), "model_id": model, "k": k, "filters": body.get("filters", {})})
                for model in models
            ]
            best: dict[str, dict[str, Any]] = {}
            try:
                for model, request in requests:
                    reply = await requester.request(answer.remote.peer_id, answer.remote.addresses, ids.QUERY, answer.remote.with_token(request), timeout=self.query_timeout)
                    results = reply.get("results")
                    if not isinstance(results, list):
                        raise Malformed("an answer without results")
                    for raw in results:
                        result = checked_result(raw)
                        if result is None:
                            continue
                        if model is not None:
                            result = _z_scored(result, *spaces[model][1:])
                        known = best.get(result["content_hash"])
                        if known is None or result_score(result) > result_score(known):
                            best[result["content_hash"]] = result
                answer.results = sorted(best.values(), key=result_score, reverse=True)[:k]
            except WireError as exc:
                answer.error = f"{exc.code}: {exc.message}"
                await self._refused(answer.remote.peer_id, exc)
                if isinstance(exc, Forbidden):
                    await self._catalog.write(partial(record_contact, peer_id=answer.remote.peer_id, error=answer.error))

        with trio.move_on_after(self.query_timeout + 1):
            async with trio.open_nursery() as nursery:
                for answer in answers:
                    nursery.start_soon(ask, answer)
        for answer in answers:
            if answer.results is None and answer.error is None:
                answer.error = f"timeout: no answer within {self.query_timeout:g} s"
            if answer.results is None:
                for model in models_of(answer.remote):
                    vector, mean, spread = spaces[model]
                    cached = await self._from_cache(answer.remote.peer_id, model, vector, k, kinds)
                    answer.cached += [_z_scored(r, mean, spread) for r in cached]
                answer.cached = sorted(answer.cached, key=result_score, reverse=True)[:k]
        return answers

    async def _adapter(self, requester: Requester, remote: RemoteShare, model_id: str) -> Adapter | None:
        """The share's ordering adapter for ``model_id``, fetched once and verified (None if it has none)."""
        if model_id in self._adapters or (remote.peer_id, model_id) in self._bad_adapters:
            return self._adapters.get(model_id)
        adapter = None
        try:
            reply = await requester.request(
                remote.peer_id, remote.addresses, ids.ADAPTER, remote.with_token({"model_id": model_id}), timeout=self.query_timeout, max_bytes=MAX_ADAPTER_BYTES + 1024
            )
            data = reply.get("adapter")
            if isinstance(data, bytes):
                adapter = await trio.to_thread.run_sync(verified_adapter, data, model_id)
        except (Unreachable, Timeout):
            return None  # not an answer about the adapter: ask again next time
        except (WireError, AdapterError) as exc:
            log.info("no usable adapter from a peer", extra={"peer": remote.peer_id, "model": model_id, "reason": str(exc)})
        if adapter is None:  # this share's answer is no good; another share of the space may still have one
            self._bad_adapters.add((remote.peer_id, model_id))
        else:
            self._adapters[model_id] = adapter
        return adapter

    async def _with_spread(self, model_id: str, vector: np.ndarray, mean: float | None, spread: float | None) -> tuple[np.ndarray, float, float]:
        """The query's vector with the spread of its cosines: our own items', else the cached peers' items'."""
        if mean is not None and spread is not None:
            return vector, mean, spread
        # A sample is enough for a spread (every cached prefix of a big space would cost seconds and GBs).
        _, matrix = await self._catalog.read(partial(remote_items.cached_prefixes, model_id=model_id, limit=SPREAD_SAMPLE))
        if len(matrix) < 2:
            return vector, 0.0, TYPICAL_SPREAD
        scores = normalize(matrix) @ normalize(vector[: matrix.shape[1]].reshape(1, -1))[0]
        return vector, float(scores.mean()), max(float(scores.std()), 1e-3)

    async def _from_cache(self, peer_id: str, model_id: str, vector: np.ndarray, k: int, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        """The share's items nearest to ``vector`` (of the given kinds; all if none), ranked from our
        cached K-prefixes of its catalog. (Other filters need what a cache does not hold: dates.)"""
        keys, matrix = await self._catalog.read(partial(remote_items.cached_prefixes, model_id=model_id, peer_id=peer_id))
        if not keys:
            return []
        scores = normalize(matrix) @ normalize(vector[: matrix.shape[1]].reshape(1, -1))[0]
        best = np.argsort(-scores)
        found: list[dict[str, Any]] = []
        window = max(4 * k, 200)  # details are read for the best few only, more if the kinds asked for are rare
        for start in range(0, len(best), window):
            rows = best[start : start + window]
            chosen = [keys[i] for i in rows]
            details = await self._catalog.read(partial(remote_items.cached_items, keys=chosen))
            found += [
                details[key] | {"similarity": round(float(scores[i]), 4), "from_cache": True}
                for key, i in zip(chosen, rows)
                if key in details and (not kinds or details[key]["modality"] in kinds)
            ]
            if len(found) >= k:
                break
        return found[:k]

    # --- downloading ---

    async def resolve(self, remote: RemoteShare, item: str) -> tuple[str, str, int | None]:
        """(content hash, file name, size) of ``item``: a content hash, or a file name in the share."""
        if HASH.match(item.lower()):
            return item.lower(), item.lower(), None
        requester = await self._requester()
        name = item.rsplit("/", 1)[-1]
        reply = await requester.request(remote.peer_id, remote.addresses, ids.QUERY, remote.with_token({"text": name, "mode": "text", "k": ids.MAX_QUERY_K}), timeout=self.query_timeout)
        matches = {r["content_hash"]: r for r in reply.get("results") or [] if isinstance(r, dict) and r.get("name") == name and isinstance(r.get("content_hash"), str)}
        if not matches:
            raise NotFound(f"{remote.name or remote.peer_id} has no file named {name!r}")
        if len(matches) > 1:
            raise NotFound(f"{len(matches)} different files are named {name!r} there; fetch one by its content hash: {', '.join(sorted(matches))}")
        found = next(iter(matches.values()))
        size = found.get("size") if isinstance(found.get("size"), int) else None
        return found["content_hash"], name, size

    async def preview(self, key: str, item: str, folder: Path | None) -> dict[str, Any]:
        """A share's preview of ``item``: its text, or a small file (thumbnail, snippet) saved in ``folder``."""
        remote = await self._catalog.read(partial(get_remote, key=key))
        content_hash, name, _ = await self.resolve(remote, item)
        requester = await self._requester()
        reply = await requester.request(remote.peer_id, remote.addresses, ids.PREVIEW, remote.with_token({"hash": content_hash}), timeout=self.query_timeout * 6)
        mime = reply.get("mime")
        if isinstance(reply.get("text"), str):
            return {"content_hash": content_hash, "name": name, "mime": "text/plain", "text": reply["text"][:4000]}
        data = reply.get("data")
        extension = PREVIEW_TYPES.get(mime) if isinstance(mime, str) else None
        if not isinstance(data, bytes) or extension is None:
            raise Malformed("a preview without text, or with data of an unknown type")
        result: dict[str, Any] = {"content_hash": content_hash, "name": name, "mime": mime, "size": len(data)}
        if folder is not None:
            target = folder / f"{safe_name(name, content_hash)}.preview{extension}"
            result["path"] = str(await run_io(_write_new, target, data))
        return result

    async def fetch(self, key: str, item: str, folder: Path, progress: Progress) -> dict[str, Any]:
        """Download ``item`` from the share ``key`` into ``folder``; resumes after interruptions."""
        remote = await self._catalog.read(partial(get_remote, key=key))
        content_hash, name, expected = await self.resolve(remote, item)
        if expected is None:  # by hash: the size our copy of its catalog says, if it holds the item
            expected = await self._catalog.read(partial(remote_items.cached_size, peer_id=remote.peer_id, content_hash=content_hash))
        target = folder / safe_name(name, content_hash)
        partial_path = folder / f".{content_hash}.peerlight-partial"
        requester = await self._requester()
        last_error = ""
        download = await run_io(PartialDownload, partial_path, timeout=3600, what="opening the partial download")
        try:
            for attempt in range(FETCH_ATTEMPTS):
                try:
                    size = await self._transfer(requester, remote, content_hash, download, progress, expected)
                    attempts = attempt + 1
                    break
                except (Unreachable, Timeout, ChunkCorrupted) as exc:
                    last_error = str(exc)
                    log.info("transfer interrupted; resuming", extra={"peer": remote.peer_id, "reason": last_error, "attempt": attempt + 1})
                    await trio.sleep(RESUME_BACKOFF[min(attempt, len(RESUME_BACKOFF) - 1)])
            else:
                raise FetchError(f"the transfer failed {FETCH_ATTEMPTS} times (last: {last_error}); run fetch again to resume")
            digest = download.hasher.hexdigest()
        except (Malformed, TooLarge, NotEnoughSpace) as exc:
            # The share broke the protocol (what it sent is not kept), or the file cannot fit: an empty partial goes too.
            if isinstance(exc, (Malformed, TooLarge)) or download.size == 0:
                await run_io(partial_path.unlink, True)
            raise
        finally:
            await run_io(download.close)
        if digest != content_hash:
            await run_io(partial_path.unlink)
            raise FetchError(f"the downloaded file's BLAKE3 is {digest}, not {content_hash}: it was discarded")
        final = await run_io(_place, partial_path, target)
        return {"path": str(final), "content_hash": content_hash, "size": size, "peer_id": remote.peer_id, "attempts": attempts}

    async def _transfer(
        self, requester: Requester, remote: RemoteShare, content_hash: str, partial: PartialDownload, progress: Progress, expected: int | None
    ) -> int:
        """Append the rest of the file to the partial download (all it holds was verified chunk by chunk); its size.

        The share's header must name the size we were told before (``expected``, when known),
        and the rest must fit on the disk (with room to spare) before a byte is written."""
        frames = requester.frames(
            remote.peer_id, remote.addresses, ids.FETCH, remote.with_token({"hash": content_hash, "offset": partial.size}), timeout=30, max_bytes=ids.CHUNK_BYTES + 1024
        )
        async with aclosing(frames):
            header = await frames.__anext__()
            size = fields.count(header.get("size"))
            if size is None or header.get("offset") != partial.size or size < partial.size:
                raise Malformed(f"a fetch header that does not fit the request: {header!r:.200}")
            if expected is not None and size != expected:
                raise Malformed(f"the share announces {size:,} bytes for an item it said has {expected:,}")
            free = (await run_io(shutil.disk_usage, partial.path.parent)).free
            if size - partial.size > free - FREE_SPACE_RESERVE:
                raise NotEnoughSpace(f"{size - partial.size:,} bytes more do not fit in {partial.path.parent} ({free:,} bytes free)")
            await progress(partial.size, size)
            # Receiving and writing overlap: verified chunks go to a writer task in 8 MiB batches
            # (at most two batches queued: bounded memory), which writes each batch in a thread
            # with one system call. Few trips matter: each return from a thread waits for the GIL,
            # up to 5 ms while this loop is busy receiving (per-chunk writes and hashing in the
            # thread ran at ~200 MB/s).
            send, receive = trio.open_memory_channel[list[bytes]](2)

            async def write_batches() -> None:
                async for batch in receive:
                    with trio.CancelScope(shield=True):  # a write is never abandoned halfway: the file stays consistent
                        await run_io(partial.write, batch, what="writing a download")
                    await progress(partial.size, size)

            failure: Exception | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_batches)
                async with send:
                    batch: list[bytes] = []
                    batch_bytes, received = 0, partial.size
                    try:
                        async for frame in frames:
                            if frame.get("done") is True:
                                break
                            data, digest = frame.get("data"), frame.get("hash")
                            if not isinstance(data, bytes) or not isinstance(digest, bytes):
                                raise Malformed("a data frame without data and hash")
                            if received + len(data) > size:
                                raise Malformed("more data than the file's size")
                            if blake3.blake3(data).digest() != digest:
                                raise ChunkCorrupted(f"a chunk at byte {received} does not match its BLAKE3; fetching it again")
                            partial.hasher.update(data)  # here, while the chunk is in cache; the writer only writes
                            batch.append(data)
                            batch_bytes += len(data)
                            received += len(data)
                            if batch_bytes >= WRITE_BATCH_BYTES:
                                await send.send(batch)
                                batch, batch_bytes = [], 0
                    except Exception as exc:  # what was verified is kept: a resume starts after it
                        failure = exc
                    if batch:
                        await send.send(batch)
            if failure is not None:
                raise failure
        await run_io(partial.sync)
        await progress(partial.size, size)
        if partial.size != size:
            raise Unreachable(f"the transfer stopped at {partial.size} of {size} bytes")
        return size


STRANGER_PREFIX = SYNC_PREFIX_K  # values of an ordered query vector a stranger's share is sent


def is_stranger(remote: RemoteShare) -> bool:
    """A share found by discovery that the user neither added nor joined (no grant of ours)."""
    return remote.found_by != "manual" and remote.token is None


def _query_vector(vector: np.ndarray, stranger: bool) -> bytes:
    """The query as sent: whole for a share the user chose, a K-prefix for a stranger's."""
    return (vector[:STRANGER_PREFIX] if stranger else vector).astype("<f4").tobytes()


def _checked_page(page: dict[str, Any], cursor: int) -> tuple[list[Any], int, bool]:
    """(items, next cursor, last page?) of a catalog page asked for from ``cursor``, or Malformed:
    no more items than asked for, and a cursor that moves forward unless the page is the last."""
    items, next_cursor, last_page = page.get("items"), fields.count(page.get("cursor")), page.get("last_page") is True
    if not isinstance(items, list) or len(items) > SYNC_PAGE or next_cursor is None or next_cursor < cursor:
        raise Malformed("a catalog page without items, with more than were asked for, or with a cursor going back")
    if not last_page and next_cursor == cursor:
        raise Malformed(f"the share's catalog makes no progress: a page ends where it began (cursor {cursor})")
    return items, next_cursor, last_page


def sync_budget(expected: int | None, maximum: int) -> int:
    """Items one sync may take: the manifest's count with room for changes made meanwhile, never past ``maximum``."""
    if expected is None:
        return maximum
    return min(maximum, expected + max(2 * SYNC_PAGE, expected // 10))


class ChunkCorrupted(WireError):
    code = "corrupted"


def checked_result(raw: Any) -> dict[str, Any] | None:
    """A peer's search result with only the fields of the query protocol, each of its type and
    range (None if it is no result): nothing a peer sends can pass for a local path, a rating or
    our own item, and no number it sends is NaN, infinite or beyond 64 bits."""
    if not isinstance(raw, dict) or fields.content_hash(raw.get("content_hash")) is None:
        return None
    name = fields.plain_text(raw.get("name"), 255)
    if not name or raw.get("modality") not in ("image", "audio", "video", "text"):
        return None
    result: dict[str, Any] = {"content_hash": raw["content_hash"], "name": name, "modality": raw["modality"]}
    for key, value in (
        ("mime", fields.plain_text(raw.get("mime"), 100)),
        ("size", fields.count(raw.get("size"))),
        ("score", fields.finite(raw.get("score"), -1e6, 1e6)),
        ("similarity", fields.finite(raw.get("similarity"), -1.01, 1.01)),
        ("text_evidence", fields.finite(raw.get("text_evidence"), -1e6, 1e6)),
    ):
        if value is not None:
            result[key] = value
    result["metadata"] = fields.plain_map(raw.get("metadata"))
    match = raw.get("match")
    if isinstance(match, dict):
        shown = {k: v for k in ("segment", "start", "end", "chunk_start", "chunk_end") if (v := fields.finite(match.get(k), 0, 1e12)) is not None}
        passage = fields.plain_text(match.get("passage"), 2000)
        if passage is not None:
            shown["passage"] = passage
        result["match"] = shown
    return result


def result_score(result: dict[str, Any]) -> float:
    score = result.get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) and score == score else -10.0


def _z_scored(result: dict[str, Any], mean: float, spread: float) -> dict[str, Any]:
    """A peer's result scored as a z-score of its cosine against our spread for the query."""
    similarity = result.get("similarity")
    if not isinstance(similarity, (int, float)) or isinstance(similarity, bool) or not -1.01 <= similarity <= 1.01:
        return result | {"score": -10.0}
    return result | {"score": round((float(similarity) - mean) / spread, 6)}


def safe_name(name: Any, content_hash: str) -> str:
    """A file name from a peer made harmless: no folders, no hidden or special names, at most 255 bytes."""
    text = name if isinstance(name, str) else ""
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable() and ch not in "\x00")
    text = text.strip().lstrip(".")
    if not text:
        return content_hash
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) > 255:
        stem, dot, suffix = text.rpartition(".")
        suffix = suffix if dot and len(suffix) <= 16 else ""
        text = encoded[: 255 - len(suffix) - 1].decode("utf-8", "ignore") + ("." + suffix if suffix else "")
    return text


def _checked_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields of a peer's manifest we keep, with their types checked."""
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
    models = [m for m in manifest.get("models") or [] if isinstance(m, dict) and fields.plain_text(m.get("id"), 200) == m.get("id")][:16]
    return {
        "name": fields.plain_text(manifest.get("name"), 200) or None,
        "scope": manifest.get("scope") if manifest.get("scope") in ("local", "lan", "global") else None,
        "permission": manifest.get("permission") if manifest.get("permission") in ("public", "members", "devices") else None,
        "items": fields.count(manifest.get("items")),
        "counts": {k: n for k, v in counts.items() if k in MODALITIES and (n := fields.count(v)) is not None},
        "models": [
            {
                "id": m["id"][:200],
                "dimension": fields.count(m.get("dimension"), ids.MAX_VECTOR_VALUES),
                "space": m.get("space") if m.get("space") in ROLE_MODALITIES else None,
            }
            for m in models
        ],
        "capabilities": [c for c in (fields.plain_text(c, 40) for c in (manifest.get("capabilities") or [])[:32]) if c],
    }


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_new(target: Path, data: bytes) -> Path:
    """Write ``data`` under ``target``'s name, or a numbered variant of it: never over an existing file."""
    stem, suffix = target.stem, target.suffix
    candidate, n = target, 1
    while True:
        try:
            with open(candidate, "xb") as out:
                out.write(data)
            return candidate
        except FileExistsError:
            candidate = target.with_name(f"{stem} ({n}){suffix}")
            n += 1


def _place(partial_path: Path, target: Path) -> Path:
    """Give the verified file its final name, never replacing an existing file (nor a link planted there).

    ``link`` fails if the name exists: no race with another writer. File systems without hard
    links (FAT, exFAT) get an exclusive rename instead (``renameat2`` with ``RENAME_NOREPLACE``)."""
    stem, suffix = target.stem, target.suffix
    candidate, n = target, 1
    while True:
        try:
            try:
                os.link(partial_path, candidate)
                partial_path.unlink()
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                rename_exclusive(partial_path, candidate)
            return candidate
        except FileExistsError:
            candidate = target.with_name(f"{stem} ({n}){suffix}")
            n += 1
