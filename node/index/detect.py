"""What kind of media a file is, from its content (magic bytes), not only its name.

A JPEG named ``.txt`` is an image; a file whose bytes match no known media format is
a text document only if its extension says so and it decodes as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import filetype

Modality = str  # 'image' | 'audio' | 'video' | 'text' | 'other'

_IMAGE_MIMES = {
    "image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp",
    "image/heic", "image/heif", "image/avif",
}
_AUDIO_MIMES = {
    "audio/mpeg", "audio/x-flac", "audio/flac", "audio/ogg", "audio/x-wav", "audio/wav",
    "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/opus", "audio/aac", "audio/x-aiff",
}
_VIDEO_MIMES = {"video/mp4", "video/x-matroska", "video/webm", "video/quicktime", "video/x-msvideo", "video/x-m4v"}
_DOCUMENT_MIMES = {"application/pdf": "application/pdf", "application/epub+zip": "application/epub+zip"}

_TEXT_EXTENSIONS = {
    ".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
    ".rst": "text/x-rst", ".html": "text/html", ".htm": "text/html", ".xhtml": "text/html",
}
_CONTAINER_AMBIGUOUS = {".m4a": "audio/mp4", ".opus": "audio/opus", ".oga": "audio/ogg", ".ogg": "audio/ogg"}
# Extensions that claim a kind of media: a file wearing one whose bytes match nothing is broken, not "other".
CLAIMED_BY_SUFFIX = {
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".avif"), "image"),
    **dict.fromkeys((".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".m4a", ".aac", ".aif", ".aiff"), "audio"),
    **dict.fromkeys((".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi"), "video"),
    **dict.fromkeys((".pdf", ".epub"), "text"),
}


@dataclass(frozen=True)
class Detected:
    modality: Modality
    mime: str | None
    claimed: Modality | None = None  # for "other": the kind its extension claims, if any


def detect(path: Path, head: bytes) -> Detected:
    """Classify a file from its first bytes (``head``, at least 262 of them when available)."""
    kind = filetype.guess(head) if head else None
    suffix = path.suffix.lower()
    if kind is not None:
        mime = kind.mime
        # Containers shared by audio and video (MP4, Ogg) are told apart by the extension.
        if mime in ("video/mp4", "audio/mp4") and suffix in _CONTAINER_AMBIGUOUS:
            return Detected("audio", _CONTAINER_AMBIGUOUS[suffix])
        if mime == "audio/ogg" and suffix in (".ogv",):
            return Detected("video", "video/ogg")
        if mime in _IMAGE_MIMES:
            return Detected("image", mime)
        if mime in _AUDIO_MIMES:
            return Detected("audio", mime)
        if mime in _VIDEO_MIMES:
            return Detected("video", mime)
        if mime in _DOCUMENT_MIMES:
            return Detected("text", _DOCUMENT_MIMES[mime])
        if mime == "application/zip" and suffix == ".epub":
            return Detected("text", "application/epub+zip")
        return Detected("other", mime)
    if suffix in _TEXT_EXTENSIONS and _looks_like_text(head):
        return Detected("text", _TEXT_EXTENSIONS[suffix])
    return Detected("other", None, CLAIMED_BY_SUFFIX.get(suffix))


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start >= len(head) - 3
    return True
