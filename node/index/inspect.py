"""Inspecting one file: content hash, media type, metadata. Runs in a worker thread."""

from __future__ import annotations

import os
from pathlib import Path

import blake3

from ..catalog.items import IndexedFile, SkippedFile
from .detect import detect
from .metadata import MediaError, extract_metadata
from .scanner import FileStat

HEAD_BYTES = 8192


def content_hash(path: str) -> str:
    """BLAKE3 of the whole file (hex): the item's identity, wherever the file lives."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if os.path.getsize(path):
        hasher.update_mmap(path)
    return hasher.hexdigest()


def inspect_file(file: FileStat, *, store_gps: bool) -> IndexedFile | SkippedFile:
    path = Path(file.path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
        detected = detect(path, head)
        if detected.modality == "other":
            return SkippedFile(file.path, file.size, file.mtime_ns, "unsupported", f"not a media file ({detected.mime or 'unknown type'})")
        metadata, document = extract_metadata(path, detected.modality, detected.mime, store_gps=store_gps)
        digest = content_hash(file.path)
        # The file may have changed while we read it; its new state is picked up by the next scan.
        st = os.stat(path)
    except MediaError as exc:
        return SkippedFile(file.path, file.size, file.mtime_ns, "error", str(exc))
    except OSError as exc:
        return SkippedFile(file.path, file.size, file.mtime_ns, "error", f"cannot read: {exc.strerror or exc}")
    return IndexedFile(
        path=file.path,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        device=st.st_dev,
        content_hash=digest,
        modality=detected.modality,
        mime=detected.mime,
        metadata=metadata,
        document_text=document.text if document else None,
    )
