"""Decoding media into what encoders take: RGB images, sampled video frames, audio waveforms.

These run in worker threads, overlapped with inference; each raises :class:`DecodeError`
with a readable reason for files that cannot be decoded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DecodeError


@functools.cache
def register_image_plugins() -> None:
    """Let Pillow open HEIC/HEIF photos (as phones take them) through pillow-heif."""
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


def load_image(path: str | Path, max_side: int = 1024, min_side: int | None = None):  # -> PIL.Image.Image
    """An RGB image, EXIF-rotated, shrunk so its longer side is at most ``max_side``.

    With ``min_side``, a JPEG is decoded directly at the smallest power-of-two reduction whose
    sides stay at least that long (draft mode): several times faster when the encoder only
    needs a small input anyway.
    """
    from PIL import Image, ImageOps

    register_image_plugins()
    try:
        with Image.open(path) as image:
            draft = min_side or max_side
            image.draft("RGB", (draft, draft))
            image = ImageOps.exif_transpose(image)
            image = image.convert("RGB")
            image.thumbnail((max_side, max_side))
            return image
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image too large to decode: {exc}") from None
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise DecodeError(f"cannot decode image: {exc}") from None


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the start
    image: object  # PIL.Image.Image


def sample_video_frames(path: str | Path, interval: float, max_frames: int, max_side: int = 512) -> list[Frame]:
    """One frame every ``interval`` seconds (at most ``max_frames``, spread over the whole video)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = next(iter(container.streams.video), None)
            if stream is None:
                raise DecodeError("no video stream")
            duration = (
                float(stream.duration * stream.time_base)
                if stream.duration
                else (container.duration / av.time_base if container.duration else None)
            )
            if duration:
                interval = max(interval, duration / max_frames)
                if duration > 4 * interval:
                    stream.codec_context.skip_frame = "NONKEY"  # long videos: keyframes are enough
            frames: list[Frame] = []
            next_time = 0.0
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else next_time
                if t + 1e-6 < next_time:
                    continue
                image = frame.to_image()
                image.thumbnail((max_side, max_side))
                frames.append(Frame(t, image))
                next_time = t + interval
                if len(frames) >= max_frames:
                    break
    except DecodeError:
        raise
    except Exception as exc:  # av.error.* and friends
        raise DecodeError(f"cannot decode video: {exc}") from None
    if not frames:
        raise DecodeError("the video has no decodable frames")
    return frames


def load_audio(path: str | Path, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``, at most ``max_seconds`` of them."""
    import av

    chunks, total, limit = [], 0, int(sample_rate * max_seconds)
    try:
        with av.open(str(path)) as container:
            stream = next(iter(container.streams.audio), None)
            if stream is None:
                raise DecodeError("no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    chunks.append(samples)
                    total += samples.size
                if total >= limit:
                    break
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode audio: {exc}") from None
    if not total:
        raise DecodeError("the audio has no decodable samples")
    return np.concatenate(chunks)[:limit].astype(np.float32)
