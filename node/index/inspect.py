"""Inspecting one file: content hash, media type, metadata. Runs in a worker thread.

Any file may be hostile, so every outcome is a value, never an exception that could lose
the rest of a batch: an :class:`IndexedFile`, a :class:`SkippedFile` with its kind and
reason, :class:`Vanished` (gone before it could be read: a deletion) or :class:`Changing`
(written to while it was read: retried once it settles).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import blake3

from ..catalog.items import IndexedFile, SkippedFile
from ..files import NotRegularFile, open_regular
from .detect import detect
from ..decoders import DecoderError, DecoderFailed, DecoderPool, DecoderUnavailable
from .metadata import MediaError, extract_metadata
from .scanner import FileStat

log = logging.getLogger("peerlight.index")

HEAD_BYTES = 8192
HASH_CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class Vanished:
    path: str


@dataclass(frozen=True)
class Changing:
    path: str


Inspected = IndexedFile | SkippedFile | Vanished | Changing


def content_hash(handle: BinaryIO) -> str:
    """BLAKE3 of the whole open file (hex): the item's identity, wherever the file lives.

    Read in chunks rather than mapped: a file truncated while a mapping of it is read
    kills the process with SIGBUS; a read just returns less.
    """
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    handle.seek(0)
    buffer = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    while read := handle.readinto(buffer):
        hasher.update(view[:read])
    return hasher.hexdigest()


def inspect_file(file: FileStat, *, store_gps: bool, decoders: DecoderPool | None = None) -> Inspected:
    """What one file is: its hash, kind, metadata (or why it is skipped). With ``decoders``, the
    native parsers of images, audio and video run in a worker process on the open file."""
    def skipped(kind: str, reason: str) -> SkippedFile:
        return SkippedFile(file.path, file.size, file.mtime_ns, kind, reason)

    path = Path(file.path)
    try:
        with open_regular(path) as handle:
            before = os.fstat(handle.fileno())
            if (before.st_ino, before.st_dev) != (file.inode, file.device):
                return Changing(file.path)  # replaced since the walk (by another file, or a link elsewhere)
            head = handle.read(HEAD_BYTES)
            detected = detect(path, head)
            if detected.modality == "other" and detected.claimed and not detected.mime:
                what = "empty" if not head else "its content matches no known format"
                return skipped("corrupt", f"named like {detected.claimed} but {what}")
            if detected.modality == "other":
                return skipped("unsupported", f"not a media file ({detected.mime or 'unknown type'})")
            if decoders is not None and detected.modality in ("image", "audio", "video"):
                metadata, document = decoders.metadata(handle.fileno(), detected.modality, store_gps=store_gps), None
            else:
                metadata, document = extract_metadata(path, detected.modality, detected.mime, store_gps=store_gps)
            digest = content_hash(handle)
            after = os.fstat(handle.fileno())
            # The extractors open the file by its path: make sure that was still this file.
            now = os.stat(path)
    except FileNotFoundError:
        return Vanished(file.path)
    except NotRegularFile as exc:
        return skipped("special", f"not a regular file ({exc.kind}); never opened")
    except (MediaError, DecoderFailed, DecoderError) as exc:
        return skipped(exc.kind, str(exc))
    except DecoderUnavailable as exc:  # not the file's fault: an impossible mtime, so the next scan tries again
        return SkippedFile(file.path, file.size, -1, "unreadable", f"{exc}; tried again on the next scan")
    except OSError as exc:
        return skipped("unreadable", f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # a parser's bug on hostile input: this file is skipped, the scan goes on
        log.warning("inspecting a file failed unexpectedly", exc_info=True, extra={"path": file.path})
        return skipped("corrupt", f"cannot be parsed: {type(exc).__name__}: {exc}")
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or (now.st_ino, now.st_dev) != (
        after.st_ino,
        after.st_dev,
    ):
        return Changing(file.path)  # what was read is not what is there now
    return IndexedFile(
        path=file.path,
        size=after.st_size,
        mtime_ns=after.st_mtime_ns,
        inode=after.st_ino,
        device=after.st_dev,
        content_hash=digest,
        modality=detected.modality,
        mime=detected.mime,
        metadata=metadata,
        document_text=document.text if document else None,
    )
