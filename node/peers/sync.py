"""Copying a share's catalog: pages of its items and their K-prefixes, from where the last copy ended.

A hostile share cannot make a sync endless or huge: every page must move the cursor forward,
and one sync takes at most ``max_remote_items`` items, fewer when the share's manifest said
how many it holds (with room for changes meanwhile), and far fewer from a stranger. Past that
the sync ends with an error and what the share sent is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from peerlight.p2p import schema
from peerlight.p2p.errors import Malformed, TooLarge, WireError

from ..catalog import remote_items
from ..catalog.database import Catalog
from ..catalog.shares import RemoteShare
from .contact import remember_failure
from .host import PeerHost

log = logging.getLogger("peerlight.peers")

Progress = Callable[[int, int], Awaitable[None]]

SYNC_PAGE = 500  # items per catalog page
MAX_SHORT_PAGES = 200  # pages beyond the item budget's (pages of changes the share does not show us)
STRANGER_ITEMS = 100_000  # items kept of a share found by discovery that the user neither added nor joined
SYNC_SECONDS = 600.0  # one catalog sync, all its pages (an honest million-item share takes about a minute)
SYNC_PREFIX_K = 48  # the prefix length cached of each peer's vectors (D/8 for MiniLM's 384)


@dataclass
class SyncProgress:
    """How far a catalog sync has got: items received of the ``expected`` the manifest named."""

    expected: int | None
    received: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"received": self.received, "expected": self.expected}


class CatalogSync:
    def __init__(self, catalog: Catalog, host: PeerHost, query_timeout: float, max_remote_items: int = 1_000_000) -> None:
        self._catalog = catalog
        self._host = host
        self._query_timeout = query_timeout
        self.max_remote_items = max_remote_items
        self.syncing: dict[str, SyncProgress] = {}  # peer id -> the sync running now

    async def copy(self, remote: RemoteShare, expected: int | None, *, background: bool, progress: Progress | None = None) -> None:
        """Copy the share's catalog unless a copy runs already: in the background, or before this returns."""
        if remote.peer_id in self.syncing:
            return
        if background and self._host.start_soon(self.recorded, remote, expected, None):
            self.syncing[remote.peer_id] = SyncProgress(expected)
            return
        await self.recorded(remote, expected, progress)

    async def recorded(self, remote: RemoteShare, expected: int | None, progress: Progress | None) -> None:
        """:meth:`sync`, its failure remembered as the share's last error (a background sync never
        takes the client down: a defect is logged, and the next refresh tries again)."""
        try:
            with trio.fail_after(SYNC_SECONDS):
                await self.sync(remote, expected=expected, progress=progress)
        except trio.TooSlowError:  # the pages stored so far are kept: the next sync goes on from them
            await remember_failure(self._catalog, remote.peer_id, f"catalog sync: timeout: not done within {SYNC_SECONDS:g} s")
        except WireError as exc:
            await remember_failure(self._catalog, remote.peer_id, f"catalog sync: {exc.code}: {exc.message}", exc)
        except Exception:
            if progress is not None:
                raise
            log.exception("a background catalog sync failed", extra={"peer": remote.peer_id})

    async def sync(self, remote: RemoteShare, k: int = SYNC_PREFIX_K, expected: int | None = None, progress: Progress | None = None) -> int:
        """Bring our copy of the share's catalog up to date, page by page from where the last sync ended.

        When our copy's size disagrees with the share's at the end (items removed or moved out of
        it, which pages of changes cannot name without leaking what lies outside), it is rebuilt
        from scratch once. Returns the items received.
        """
        state = self.syncing.setdefault(remote.peer_id, SyncProgress(expected))
        try:
            requester = await self._host.requester()
            limit = min(self.max_remote_items, STRANGER_ITEMS) if remote.stranger else self.max_remote_items
            budget = sync_budget(expected, limit)
            received = 0
            for fresh_start in (False, True):
                if fresh_start:
                    await self._catalog.write(partial(remote_items.forget_catalog, peer_id=remote.peer_id))
                cursor = await self._catalog.read(partial(remote_items.sync_cursor, peer_id=remote.peer_id))
                taken = pages = 0  # in this pass
                while True:
                    body = remote.with_token({"cursor": cursor, "limit": SYNC_PAGE, "k": k})
                    page = await requester.request(remote.peer_id, remote.addresses, schema.CATALOG, body, timeout=self._query_timeout * 4)
                    items, next_cursor, last_page = checked_page(page, cursor)
                    taken += len(items)
                    pages += 1
                    held = await self._catalog.read(partial(remote_items.held_items, peer_id=remote.peer_id)) if pages == 1 else 0
                    if taken > budget or pages > budget // SYNC_PAGE + MAX_SHORT_PAGES or held > budget:
                        await self._catalog.write(partial(remote_items.forget_catalog, peer_id=remote.peer_id))
                        said = f"; its manifest says {expected}" if expected is not None else ""
                        raise TooLarge(f"the share's catalog goes past {budget:,} items{said}: not kept", {"limit": budget})
                    # The cursor moves with each page stored: a sync cut short goes on from here next time.
                    received += await self._catalog.write(partial(remote_items.store_page, peer_id=remote.peer_id, items=items, k=k, cursor=next_cursor))
                    state.received = received
                    if progress is not None:
                        await progress(received, expected or 0)
                    cursor = next_cursor
                    if last_page:
                        break
                if await self._catalog.write(partial(remote_items.finish_sync, peer_id=remote.peer_id, cursor=cursor, total=page.get("total"))):
                    return received
            raise Malformed("the share's catalog changed size while it was copied; try again")
        finally:
            self.syncing.pop(remote.peer_id, None)


def checked_page(page: dict[str, Any], cursor: int) -> tuple[list[dict[str, Any]], int, bool]:
    """(items, next cursor, last page?) of a catalog page asked for from ``cursor`` (its fields
    checked by the schema already), or Malformed: no more items than asked for, and a cursor
    that moves forward unless the page is the last."""
    items, next_cursor, last_page = page["items"], page["cursor"], page["last_page"]
    if len(items) > SYNC_PAGE or next_cursor < cursor:
        raise Malformed("a catalog page with more items than were asked for, or with a cursor going back")
    if not last_page and next_cursor == cursor:
        raise Malformed(f"the share's catalog makes no progress: a page ends where it began (cursor {cursor})")
    return items, next_cursor, last_page


def sync_budget(expected: int | None, maximum: int) -> int:
    """Items one sync may take: the manifest's count with room for changes made meanwhile, never past ``maximum``."""
    if expected is None:
        return maximum
    return min(maximum, expected + max(2 * SYNC_PAGE, expected // 10))
