"""Metadata read from media files: EXIF, audio tags, video containers, document titles.

Every extractor returns plain ``key -> str | int | float`` pairs that the catalog stores,
shows, filters on and feeds to full-text search. A file that its own format's library
cannot parse raises :class:`MediaError`: it is skipped with that reason, not half-indexed.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from .text_extract import Document, TextExtractionError, extract_document

Metadata = dict[str, Any]


# Limits on what a file may claim: beyond them decoding would exhaust memory (a
# "decompression bomb": a few kilobytes that declare gigapixels), so the file is skipped.
MAX_VIDEO_PIXELS = 8192 * 8192


class MediaError(Exception):
    """The file claims a media type but cannot be decoded as one.

    ``kind`` is ``corrupt`` (unparsable, truncated) or ``too_large`` (a bomb, absurd dimensions).
    """

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind


def extract_metadata(path: Path, modality: str, mime: str | None, *, store_gps: bool) -> tuple[Metadata, Document | None]:
    """Metadata of one file, and for text documents the extracted document itself."""
    if modality == "image":
        return image_metadata(path, store_gps=store_gps), None
    if modality == "audio":
        return audio_metadata(path), None
    if modality == "video":
        return video_metadata(path), None
    if modality == "text":
        try:
            document = extract_document(path, mime or "text/plain")
        except TextExtractionError as exc:
            raise MediaError(str(exc), exc.kind) from None
        words = len(document.text.split())
        return {"title": document.title, "characters": len(document.text), "words": words}, document
    return {}, None


_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


TEST_DECODER_HOOKS = "PEERLIGHT_TEST_DECODER_HOOKS"  # set to 1 by tests only


def _hostile_test_format(path: Path) -> None:
    """Tests only (``PEERLIGHT_TEST_DECODER_HOOKS=1``): an image marked ``PEERLIGHT-TEST-ABORT``
    crashes its decoder as a native one can (``abort``); one marked ``PEERLIGHT-TEST-HOG``
    allocates without bound. Wherever images are parsed, so the daemon's isolation of its
    decoders is tested against what it guards."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if b"PEERLIGHT-TEST-ABORT" in head:
        os.abort()
    if b"PEERLIGHT-TEST-HOG" in head:
        held = []
        while True:
            held.append(bytearray(64 << 20))


def image_metadata(path: Path, *, store_gps: bool) -> Metadata:
    from PIL import Image

    if os.environ.get(TEST_DECODER_HOOKS) == "1":
        _hostile_test_format(path)

    from peerlight.embeddings.media import register_image_plugins

    register_image_plugins()
    try:
        with Image.open(path) as image:
            image.verify()  # catches truncated and corrupt files without decoding all pixels twice
        with Image.open(path) as image:
            meta: Metadata = {"width": image.width, "height": image.height, "format": image.format}
            exif = image.getexif()
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image too large to decode: {exc}", "too_large") from None
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise MediaError(f"not a readable image: {exc}") from None
    camera = " ".join(str(exif[tag]).strip() for tag in (271, 272) if exif.get(tag))  # Make, Model
    if camera:
        meta["camera"] = camera
    if exif.get(274):
        meta["orientation"] = int(exif[274])
    sub = exif.get_ifd(_EXIF_IFD)
    taken = sub.get(36867) or exif.get(306)  # DateTimeOriginal, else DateTime
    if taken:
        try:
            meta["date"] = datetime.datetime.strptime(str(taken).strip(), "%Y:%m:%d %H:%M:%S").isoformat()
        except ValueError:
            pass
    if store_gps:
        gps = exif.get_ifd(_GPS_IFD)
        position = _gps_degrees(gps)
        if position:
            meta["gps_lat"], meta["gps_lon"] = position
    return meta


def _gps_degrees(gps: dict[int, Any]) -> tuple[float, float] | None:
    try:
        lat = sum(float(v) / 60**i for i, v in enumerate(gps[2])) * (-1 if gps[1] == "S" else 1)
        lon = sum(float(v) / 60**i for i, v in enumerate(gps[4])) * (-1 if gps[3] == "W" else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return round(lat, 6), round(lon, 6)


_AUDIO_TAGS = ("title", "artist", "album", "genre", "albumartist", "tracknumber")


def audio_metadata(path: Path) -> Metadata:
    import mutagen

    try:
        audio = mutagen.File(path, easy=True)
    except Exception as exc:  # mutagen raises format-specific errors
        raise MediaError(f"not a readable audio file: {exc}") from None
    if audio is None or audio.info is None:
        raise MediaError("not a readable audio file")
    meta: Metadata = {}
    if getattr(audio.info, "length", None):
        meta["duration"] = round(float(audio.info.length), 3)
    for attr in ("sample_rate", "channels", "bitrate"):
        if getattr(audio.info, attr, None):
            meta[attr] = int(getattr(audio.info, attr))
    tags = audio.tags or {}
    for key in _AUDIO_TAGS:
        values = tags.get(key)
        if values:
            meta[key] = str(values[0]).strip()
    date = tags.get("date") or tags.get("year")
    if date and str(date[0])[:4].isdigit():
        meta["year"] = int(str(date[0])[:4])
    return meta


def video_metadata(path: Path) -> Metadata:
    import av

    try:
        with av.open(str(path)) as container:
            meta: Metadata = {"container": container.format.name}
            if container.duration:
                meta["duration"] = round(container.duration / av.time_base, 3)
            video = next(iter(container.streams.video), None)
            if video is None:
                raise MediaError("no video stream")
            meta["width"], meta["height"] = video.codec_context.width, video.codec_context.height
            if meta["width"] * meta["height"] > MAX_VIDEO_PIXELS:
                raise MediaError(f"video frames of {meta['width']}x{meta['height']} pixels are too large to decode", "too_large")
            meta["codec"] = video.codec_context.name
            if video.average_rate:
                meta["fps"] = round(float(video.average_rate), 3)
            audio = next(iter(container.streams.audio), None)
            if audio is not None:
                meta["audio_codec"] = audio.codec_context.name
            title = container.metadata.get("title")
            if title:
                meta["title"] = title
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises av.error.* subclasses and others on bad input
        raise MediaError(f"not a readable video: {exc}") from None
    return meta
