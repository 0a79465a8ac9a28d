"""An item's bytes for the browser's players, by content hash, with HTTP range requests; and its thumbnail.

The file is opened the way a share serves it (``open_indexed``: beneath its library, no links
followed, and still the file that was indexed), so a page shows only what the local user
indexed. Media types a browser could run as a page of the UI's origin (HTML, SVG, anything
not image, audio or video, PDF included) are sent as a download of ``application/octet-stream``, and
every media response carries ``Content-Security-Policy: sandbox``: a hostile file fetched from
a peer cannot run script as the UI.

Thumbnails (a JPEG of an image or a video's first frame, 256 px) are made by the same
guarded decoders as a share's previews, in worker processes when the node isolates decoders,
and kept in ``thumbnails/`` of the data directory by content hash (an item's thumbnail never changes).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import trio
from starlette.responses import Response, StreamingResponse

from peerlight.embeddings.errors import DecodeError

from ..callers import Caller
from ..catalog.database import Catalog
from ..decoders import DecoderPool
from ..files import FileChanged, open_indexed, write_atomic
from ..serving.previews import media_preview
from ..serving.share_queries import item_in_scope
from ..threads import IOTimeout, run_io

log = logging.getLogger("peerlight.webui")

CHUNK = 256 * 1024
# Not PDF: the sandbox below forbids plugins, which a browser's PDF viewer is (HTML's "sandboxed
# plugins" flag), and lifting it would run a hostile PDF's scripts; the item page shows its text.
INLINE_TYPES = re.compile(r"(image/(jpeg|png|gif|webp|avif|bmp|heic|heif)|audio/[\w.+-]+|video/[\w.+-]+)")
MEDIA_CSP = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"
THUMBNAIL_SECONDS = 20.0
FAILED_SECONDS = 3600.0  # a file no thumbnail could be made of is not decoded again for this long
MAX_FAILED = 10_000


class NoMedia(Exception):
    """No file of this item can be served (gone, changed, or never indexed here)."""


async def open_item(catalog: Catalog, content_hash: str) -> tuple[BinaryIO, int, str, str]:
    """(open file, size, modality, media type) of an indexed item's first file still as indexed."""
    found = await catalog.read(partial(item_in_scope, content_hash=content_hash, caller=Caller.local()))
    if found is None:
        raise NoMedia(f"no item {content_hash} here")
    item_id, modality, files = found
    mime = await catalog.read(lambda conn: conn.execute("SELECT mime FROM items WHERE id = ?", (item_id,)).fetchone()[0])
    for indexed in files:
        try:
            handle = await run_io(open_indexed, indexed, what="opening a file for the UI")
        except (FileChanged, OSError) as exc:
            log.info("web UI: a file cannot be served", extra={"reason": str(exc)})
            continue
        return handle, indexed.size, modality, mime or "application/octet-stream"
    raise NoMedia("the item's files are gone or changed since they were indexed")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` as (start, end exclusive); None: the whole file. ValueError: unsatisfiable."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # several ranges or a malformed header: the whole file (RFC 9110 allows ignoring Range)
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError("an empty suffix range, or a range of an empty file")
        return max(0, size - length), size
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range is ignored (RFC 9110): the whole file
    end = min(int(last) + 1, size) if last else size
    if start >= size:
        raise ValueError(f"range {header!r} is outside the file's {size} bytes")
    return start, end


def media_response(handle: BinaryIO, size: int, mime: str, range_header: str | None, head: bool = False) -> Response:
    """The file (or the asked range of it): 200 or 206, 416 for a range past its end; for HEAD, the headers alone."""
    inline = bool(INLINE_TYPES.fullmatch(mime))
    headers = {
        "accept-ranges": "bytes",
        "content-security-policy": MEDIA_CSP,
        "cache-control": "private, max-age=3600",
        "content-disposition": "inline" if inline else "attachment",
    }
    try:
        span = parse_range(range_header, size)
    except ValueError:
        handle.close()
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = span if span is not None else (0, size)
    headers["content-length"] = str(end - start)
    if span is not None:
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    if head:  # nothing read from the disk for a HEAD
        handle.close()
        response = Response(status_code=206 if span is not None else 200, headers=headers, media_type=mime if inline else "application/octet-stream")
        response.headers["content-length"] = str(end - start)
        return response
    return StreamingResponse(
        _read(handle, start, end), status_code=206 if span is not None else 200, headers=headers, media_type=mime if inline else "application/octet-stream"
    )


async def _read(handle: BinaryIO, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        position = start
        while position < end:
            chunk = await run_io(os_pread, handle, min(CHUNK, end - position), position, what="reading a file for the UI")
            if not chunk:
                break  # the file shrank since it was opened: the browser sees a short body
            position += len(chunk)
            yield chunk
    finally:
        handle.close()


def os_pread(handle: BinaryIO, length: int, offset: int) -> bytes:
    return os.pread(handle.fileno(), length, offset)


def _present(conn, content_hash: str) -> bool:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT 1 FROM items WHERE content_hash = ? AND missing_since IS NULL", (content_hash,)).fetchone() is not None


class Thumbnails:
    def __init__(self, catalog: Catalog, folder: Path, decoders: DecoderPool | None) -> None:
        self._catalog = catalog
        self._folder = folder
        self._decoders = decoders
        self._making = trio.CapacityLimiter(2)  # thumbnails made at once: a grid asks for dozens
        self._failed: dict[str, float] = {}  # hash -> when no thumbnail could be made (not tried again for an hour)
        self._pending: dict[str, trio.Lock] = {}  # one decode per hash, however many pages ask

    def _path(self, content_hash: str) -> Path:
        return self._folder / content_hash[:2] / f"{content_hash}.jpg"

    async def get(self, content_hash: str) -> bytes | None:
        """The item's thumbnail, made once and kept; None for an item that has none (audio,
        documents, a file no decoder can read)."""
        if not await self._catalog.read(partial(_present, content_hash=content_hash)):
            return None  # gone from the library: its kept thumbnail is not shown
        if time.monotonic() - self._failed.get(content_hash, -FAILED_SECONDS) < FAILED_SECONDS:
            return None
        path = self._path(content_hash)
        lock = self._pending.setdefault(content_hash, trio.Lock())
        try:
            async with lock:
                try:
                    return await run_io(path.read_bytes, what="reading a thumbnail")
                except FileNotFoundError:
                    pass
                data = await self._made(content_hash)
                if data is None:
                    self._failed[content_hash] = time.monotonic()
                    if len(self._failed) > MAX_FAILED:
                        self._failed.pop(next(iter(self._failed)))
                    return None
                path.parent.mkdir(parents=True, exist_ok=True)
                await run_io(partial(write_atomic, path, data), what="saving a thumbnail")
                return data
        finally:
            if not lock.statistics().tasks_waiting:
                self._pending.pop(content_hash, None)

    async def _made(self, content_hash: str) -> bytes | None:
        async with self._making:
            try:
                handle, _, modality, _ = await open_item(self._catalog, content_hash)
            except NoMedia:
                return None
            if modality not in ("image", "video"):
                handle.close()
                return None
            try:
                preview = await self._make(handle, modality)
            except (DecodeError, OSError, IOTimeout, ValueError) as exc:
                log.info("web UI: no thumbnail", extra={"reason": str(exc)})
                return None
            finally:
                handle.close()
        data = preview["data"]
        return data if isinstance(data, bytes) else None

    async def _make(self, handle: BinaryIO, modality: str) -> dict[str, Any]:
        if self._decoders is not None:  # a worker process decodes the very file opened above
            return await run_io(self._decoders.preview, handle.fileno(), modality, THUMBNAIL_SECONDS, timeout=THUMBNAIL_SECONDS + 5, what="making a thumbnail")
        return await run_io(media_preview, f"/proc/self/fd/{handle.fileno()}", modality, timeout=THUMBNAIL_SECONDS, what="making a thumbnail")
