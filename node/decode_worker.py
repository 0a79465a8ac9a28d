"""A decoder worker: one process that runs native decoders (libav, libheif, Pillow's C code) on
one untrusted file at a time, so that a file that crashes one takes this process down, not
the daemon (see :mod:`.decoders`, its parent's side).

``python -m peerlight.node.decode_worker FD MEMORY_BYTES``: FD is its end of a Unix socket
pair. Each request is a frame (4-byte big-endian length, msgpack) ``{"op", "args"}`` with the
open file it concerns attached (``SCM_RIGHTS``): the worker never opens a path of its own, it
decodes the very file its parent opened and checked, through ``/proc/self/fd``. Each answer
is a frame ``{"ok": value}`` or ``{"error": {"type", "message", "kind"}}`` made of plain
values only (images as mode, size and bytes; samples as float32 bytes): the parent never
unpickles anything a worker sends, since a worker may have been taken over by its input.

Limits, set here before anything is decoded: address space (``RLIMIT_AS``), no core files,
and for each request a CPU allowance (``RLIMIT_CPU``, raised per request).
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
CPU_SECONDS_PER_REQUEST = 60


def _image(image: Any) -> dict[str, Any]:
    return {"mode": image.mode, "width": image.width, "height": image.height, "data": image.tobytes()}


def _ops() -> dict[str, Any]:
    from peerlight.embeddings.media import load_audio, load_image, sample_video_frames

    from .serving.previews import media_preview
    from .index.metadata import audio_metadata, image_metadata, video_metadata

    return {
        "image_metadata": lambda path, store_gps: image_metadata(Path(path), store_gps=store_gps),
        "audio_metadata": lambda path: audio_metadata(Path(path)),
        "video_metadata": lambda path: video_metadata(Path(path)),
        "load_image": lambda path, max_side, min_side: _image(load_image(path, max_side=max_side, min_side=min_side)),
        "video_frames": lambda path, interval, max_frames, max_side: [
            [frame.time, _image(frame.image)] for frame in sample_video_frames(path, interval, max_frames, max_side=max_side)
        ],
        "load_audio": lambda path, sample_rate, max_seconds: load_audio(path, sample_rate, max_seconds).astype("<f4").tobytes(),
        "preview": lambda path, modality: media_preview(path, modality),
        "ping": lambda path: True,  # started and ready (its imports done)
    }


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MemoryError):
        return {"type": "memory", "message": "the decoder ran out of memory", "kind": "too_large"}
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "kind": getattr(exc, "kind", None)}


def serve(channel: socket.socket, memory_bytes: int) -> None:
    """Answer requests until the daemon closes its end of the socket (or dies: the kernel closes
    it then, so no worker outlives the daemon by more than the file it is decoding).
    (Not PR_SET_PDEATHSIG: it fires when the *thread* that started the worker ends, and the
    daemon starts workers from short-lived worker threads.)"""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    ops = _ops()
    while True:
        data, fds, _, _ = socket.recv_fds(channel, HEADER.size, 1)
        if not data:
            return
        (length,) = HEADER.unpack(_exactly(channel, data, HEADER.size))
        request = msgpack.unpackb(_exactly(channel, b"", length), raw=False)
        fd = fds[0] if fds else None
        try:
            used = resource.getrusage(resource.RUSAGE_SELF)
            spent = int(used.ru_utime + used.ru_stime) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (spent + CPU_SECONDS_PER_REQUEST, resource.RLIM_INFINITY))
            path = f"/proc/self/fd/{fd}"
            answer: dict[str, Any] = {"ok": ops[request["op"]](path, **request["args"])}
        except BaseException as exc:  # noqa: B036  reported to the parent, which decides
            answer = {"error": _error(exc)}
        finally:
            if fd is not None:
                os.close(fd)
        body = msgpack.packb(answer, use_bin_type=True)
        channel.sendall(HEADER.pack(len(body)) + body)


def _exactly(channel: socket.socket, start: bytes, size: int) -> bytes:
    data = bytearray(start)
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return bytes(data)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))
