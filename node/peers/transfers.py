"""Downloading from a peer's share: previews, and whole files by content hash or by name.

Every byte is hostile until checked: names are made safe before they touch the disk, each
data frame is checked against its BLAKE3, and the whole file against the content hash it was
asked by before it appears under its final name. An interrupted transfer resumes from the
bytes verified so far; a file that would not fit, or a share that breaks the protocol, leaves
no partial file behind.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import blake3
import trio

from peerlight.p2p import fields, schema
from peerlight.p2p.client import Requester
from peerlight.p2p.errors import Malformed, NotFound, Timeout, TooLarge, Unreachable, WireError

from ..catalog import remote_items
from ..catalog.database import Catalog
from ..catalog.shares import RemoteShare, get_remote
from ..files import rename_exclusive
from ..threads import run_io
from .download import STAGING_BYTES, PartialDownload
from .host import PeerHost

log = logging.getLogger("peerlight.peers")

FETCH_ATTEMPTS = 5  # an interrupted or corrupted transfer is resumed this many times
RESUME_BACKOFF = (0.2, 1, 3, 10)
PREVIEW_TYPES = {"image/jpeg": ".jpg", "audio/wav": ".wav"}  # what a preview may be (and its file's suffix)
FREE_SPACE_RESERVE = 64 * 1024 * 1024  # a download never leaves its disk fuller than this
WRITE_BATCH_BYTES = STAGING_BYTES  # verified chunks are written this many at a time (one system call, one GIL hand-over)

Progress = Callable[[int, int], Awaitable[None]]


class FetchError(Exception):
    """A download that cannot complete (the partial file is kept for a later resume, unless it was wrong)."""


class NotEnoughSpace(FetchError):
    """The file would not fit on the target's disk (checked before anything is written)."""


class ChunkCorrupted(WireError):
    code = "corrupted"



class Transfers:
    def __init__(self, catalog: Catalog, host: PeerHost, query_timeout: float) -> None:
        self._catalog = catalog
        self._host = host
        self.query_timeout = query_timeout

    async def resolve(self, remote: RemoteShare, item: str) -> tuple[str, str, int | None]:
        """(content hash, file name, size) of ``item``: a content hash (named and sized as our copy
        of the share's catalog says, when it holds the item), or a file name in the share."""
        content_hash = fields.content_hash(item.lower())
        if content_hash is not None:
            cached = await self._catalog.read(partial(remote_items.cached_item, peer_id=remote.peer_id, content_hash=content_hash))
            return (content_hash, *cached) if cached is not None else (content_hash, content_hash, None)
        requester = await self._host.requester()
        name = item.rsplit("/", 1)[-1]
        body = remote.with_token({"text": name, "mode": "text", "k": schema.MAX_QUERY_K})
        reply = await requester.request(remote.peer_id, remote.addresses, schema.QUERY, body, timeout=self.query_timeout)
        matches = {r["content_hash"]: r for r in reply["results"] if r["name"] == name}
        if not matches:
            raise NotFound(f"{remote.name or remote.peer_id} has no file named {name!r}")
        if len(matches) > 1:
            raise NotFound(f"{len(matches)} different files are named {name!r} there; fetch one by its content hash: {', '.join(sorted(matches))}")
        found = next(iter(matches.values()))
        return found["content_hash"], name, found.get("size")

    async def preview(self, key: str, item: str, folder: Path | None, with_data: bool = False) -> dict[str, Any]:
        """A share's preview of ``item``: its text, or a small file (thumbnail, snippet) saved in
        ``folder`` or, ``with_data``, returned as bytes (the web UI shows it)."""
        remote = await self._catalog.read(partial(get_remote, key=key))
        content_hash, name, _ = await self.resolve(remote, item)
        requester = await self._host.requester()
        reply = await requester.request(remote.peer_id, remote.addresses, schema.PREVIEW, remote.with_token({"hash": content_hash}), timeout=self.query_timeout * 6)
        mime = reply["mime"]
        if "text" in reply:
            return {"content_hash": content_hash, "name": name, "mime": "text/plain", "text": reply["text"]}
        data = reply.get("data")
        extension = PREVIEW_TYPES.get(mime)
        if data is None or extension is None:
            raise Malformed("a preview without text, or with data of an unknown type")
        result: dict[str, Any] = {"content_hash": content_hash, "name": name, "mime": mime, "size": len(data)}
        if with_data:
            result["data"] = bytes(data)
        if folder is not None:
            target = folder / f"{safe_name(name, content_hash)}.preview{extension}"
            result["path"] = str(await run_io(_write_new, target, data))
        return result

    async def fetch(self, key: str, item: str, folder: Path, progress: Progress) -> dict[str, Any]:
        """Download ``item`` from the share ``key`` into ``folder``; resumes after interruptions."""
        remote = await self._catalog.read(partial(get_remote, key=key))
        content_hash, name, expected = await self.resolve(remote, item)
        target = folder / safe_name(name, content_hash)
        partial_path = folder / f".{content_hash}.peerlight-partial"
        requester = await self._host.requester()
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
            remote.peer_id, remote.addresses, schema.FETCH, remote.with_token({"hash": content_hash, "offset": partial.size}), timeout=30
        )
        async with aclosing(frames):
            header = schema.FETCH.keep_reply(await frames.__anext__(), schema.FETCH_HEADER)
            size = header["size"]
            if header["offset"] != partial.size or size < partial.size:
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
                            checked = schema.FETCH.keep_reply(frame, schema.FETCH_DATA)
                            data, digest = checked["data"], checked["hash"]
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
