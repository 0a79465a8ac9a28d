"""Previews a share gives of its items: a small JPEG of an image or a video's first frame, ten
seconds of audio as WAV, or the opening of a document. Made in a worker thread with the same
guarded decoders as indexing, so hostile media cost a typed error, never the daemon."""

from __future__ import annotations

import io
import wave

import numpy as np

from peerlight.embeddings.media import load_audio, load_image, sample_video_frames

THUMBNAIL_SIDE = 256
SNIPPET_SECONDS = 10.0
SNIPPET_RATE = 16000
EXCERPT_CHARS = 600


def media_preview(path: str, modality: str) -> dict[str, object]:
    """``{"mime", "data"}`` for an image, video or audio file; raises DecodeError on media it cannot read."""
    if modality == "image":
        return _jpeg(load_image(path, max_side=THUMBNAIL_SIDE))
    if modality == "video":
        return _jpeg(sample_video_frames(path, interval=1e9, max_frames=1, max_side=THUMBNAIL_SIDE)[0].image)
    if modality == "audio":
        samples = load_audio(path, SNIPPET_RATE, SNIPPET_SECONDS)
        out = io.BytesIO()
        with wave.open(out, "wb") as snippet:
            snippet.setnchannels(1)
            snippet.setsampwidth(2)
            snippet.setframerate(SNIPPET_RATE)
            snippet.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        return {"mime": "audio/wav", "data": out.getvalue()}
    raise ValueError(f"no media preview for {modality}")


def text_preview(text: str) -> dict[str, object]:
    excerpt = text[:EXCERPT_CHARS]
    if len(text) > EXCERPT_CHARS and " " in excerpt:
        excerpt = excerpt.rsplit(" ", 1)[0] + " …"
    return {"mime": "text/plain", "text": excerpt}


def _jpeg(image) -> dict[str, object]:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=80)
    return {"mime": "image/jpeg", "data": out.getvalue()}
