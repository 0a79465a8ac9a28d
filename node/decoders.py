"""Native decoders in worker processes: a file that crashes one takes down a worker, never the daemon.

libav (through PyAV), libheif and Pillow's C code decode files from the user's folders and,
now, from strangers' shares. A crash in one of them (a segfault, an abort, an allocation
without bound) would end the daemon if it ran inside it. :class:`DecoderPool` runs them in a
few worker processes (:mod:`.decode_worker`), each with an address-space limit, a CPU
allowance per file and a deadline. A worker that dies is replaced; the file that killed it
is reported as ``corrupt`` (or ``too_large`` when it ran out of memory) with the reason, and
indexing goes on with the next file.

The caller opens and checks the file; the worker gets the open file itself (``SCM_RIGHTS``),
never a path, so what is decoded is what was checked. Answers are plain values (msgpack),
checked here: a worker taken over by a hostile file can send lies, not code.

Blocking and thread-safe: called from the worker threads that indexing and previews use.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from peerlight.embeddings.errors import DecodeError

log = logging.getLogger("peerlight.decoders")

HEADER = struct.Struct(">I")
MAX_ANSWER_BYTES = 512 * 1024 * 1024  # a decoded image or a 30 s waveform is far below
START_SECONDS = 30.0


class DecoderFailed(DecodeError):
    """The decoder could not finish with this file: it crashed, ran out of its memory or time.

    ``kind`` is how the indexer lists the file: ``corrupt``, or ``too_large`` for memory."""

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind


class DecoderError(DecodeError):
    """The decoder answered that the file cannot be decoded (a typed refusal, not a crash)."""

    def __init__(self, message: str, kind: str | None) -> None:
        super().__init__(message)
        self.kind = kind or "corrupt"


@dataclass(frozen=True)
class DecoderLimits:
    workers: int = 2
    memory_bytes: int = 2 * 1024**3
    deadline_seconds: float = 120.0


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = parent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "peerlight.node.decode_worker", str(child.fileno()), str(memory_bytes)],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        child.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.channel.close()

    def death(self) -> str:
        """Why the worker is gone, in words."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGXCPU": "used up its CPU time", "SIGKILL": "was killed (out of memory?)"}.get(name, "crashed")
            return f"the decoder {why} on this file ({name})"
        return f"the decoder exited on this file (status {code})"


class DecoderPool:
    """A few decoder processes, started on first use and replaced when one dies."""

    def __init__(self, limits: DecoderLimits = DecoderLimits()) -> None:
        self.limits = limits
        self._idle: list[_Worker] = []
        self._count = 0
        self._lock = threading.Condition()
        self._closed = False
        self.crashes = 0  # workers lost to a file, since the start

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _take(self) -> _Worker:
        with self._lock:
            while not self._idle and self._count >= self.limits.workers:
                self._lock.wait()
            if self._closed:
                raise DecoderFailed("the node is shutting down")
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker(self.limits.memory_bytes)
        except BaseException:
            with self._lock:
                self._count -= 1
                self._lock.notify()
            raise

    def _give_back(self, worker: _Worker | None) -> None:
        with self._lock:
            if worker is not None and worker.alive() and not self._closed:
                self._idle.append(worker)
            else:
                self._count -= 1
                if worker is not None:
                    worker.kill()
            self._lock.notify()

    def call(self, op: str, fd: int, **args: Any) -> Any:
        """Run ``op`` on the open file ``fd`` in a worker; its answer, or a :class:`DecodeError`."""
        worker = self._take()
        try:
            answer = self._exchange(worker, op, fd, args)
            error = answer.get("error")
            if isinstance(error, dict) and error.get("type") == "memory":  # its heap is suspect now: replaced too
                raise DecoderFailed(f"the decoder needed more than its {self.limits.memory_bytes // 2**20} MiB on this file", "too_large")
        except DecoderFailed:
            self.crashes += 1
            worker.kill()
            self._give_back(None)
            raise
        except BaseException:
            worker.kill()
            self._give_back(None)
            raise
        self._give_back(worker)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            message, kind = str(error.get("message", "cannot be decoded"))[:2000], error.get("kind")
            raise DecoderError(message, kind if kind in ("corrupt", "too_large") else None)
        return answer.get("ok")

    def _exchange(self, worker: _Worker, op: str, fd: int, args: dict[str, Any]) -> dict[str, Any]:
        body = msgpack.packb({"op": op, "args": args}, use_bin_type=True)
        try:
            socket.send_fds(worker.channel, [HEADER.pack(len(body)) + body], [fd])
            deadline = time.monotonic() + self.limits.deadline_seconds
            (length,) = HEADER.unpack(self._read(worker, HEADER.size, deadline))
            if length > MAX_ANSWER_BYTES:
                raise DecoderFailed(f"the decoder answered {length:,} bytes")
            answer = msgpack.unpackb(self._read(worker, length, deadline), raw=False, strict_map_key=True)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise DecoderFailed(worker.death()) from None
        except (ValueError, msgpack.UnpackException):
            raise DecoderFailed("the decoder's answer is not one") from None
        if not isinstance(answer, dict):
            raise DecoderFailed("the decoder's answer is not one")
        return answer

    def _read(self, worker: _Worker, size: int, deadline: float) -> bytes:
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([worker.channel], [], [], left)[0]:
                raise DecoderFailed(f"decoding took longer than {self.limits.deadline_seconds:g} s")
            chunk = worker.channel.recv(min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)

    def warm(self) -> None:
        """Start every worker now and wait until each has its decoders imported (they start on
        first use otherwise: a second or so of CPU each, better spent before the work begins)."""
        with open("/dev/null", "rb") as nothing:
            workers = [self._take() for _ in range(self.limits.workers)]
            try:
                for worker in workers:
                    self._exchange(worker, "ping", nothing.fileno(), {})
            finally:
                for worker in workers:
                    self._give_back(worker)

    # --- what the node asks of its decoders (each on a file the caller opened) ---

    def metadata(self, fd: int, modality: str, *, store_gps: bool) -> dict[str, Any]:
        """Image, audio or video metadata (plain values)."""
        if modality == "image":
            found = self.call("image_metadata", fd, store_gps=store_gps)
        else:
            found = self.call(f"{modality}_metadata", fd)
        if not isinstance(found, dict):
            raise DecoderFailed("the decoder's metadata is not a map")
        return found

    def image(self, fd: int, *, max_side: int = 1024, min_side: int | None = None) -> Any:
        return _image(self.call("load_image", fd, max_side=max_side, min_side=min_side))

    def video_frames(self, fd: int, interval: float, max_frames: int, max_side: int = 512) -> list[tuple[float, Any]]:
        frames = self.call("video_frames", fd, interval=interval, max_frames=max_frames, max_side=max_side)
        if not isinstance(frames, list) or not frames:
            raise DecoderFailed("the decoder sent no frames")
        return [(float(time_), _image(image)) for time_, image in frames]

    def audio(self, fd: int, sample_rate: int, max_seconds: float) -> np.ndarray:
        data = self.call("load_audio", fd, sample_rate=sample_rate, max_seconds=max_seconds)
        if not isinstance(data, bytes) or len(data) % 4 or len(data) > 4 * sample_rate * (max_seconds + 1):
            raise DecoderFailed("the decoder's samples are not float32 of the length asked for")
        return np.frombuffer(data, dtype="<f4").astype(np.float32)

    def preview(self, fd: int, modality: str) -> dict[str, Any]:
        found = self.call("preview", fd, modality=modality)
        if not isinstance(found, dict) or not isinstance(found.get("mime"), str) or not isinstance(found.get("data"), bytes):
            raise DecoderFailed("the decoder's preview is not one")
        return {"mime": found["mime"], "data": found["data"]}


def _image(raw: Any) -> Any:
    """A PIL image from a worker's plain description, its size checked against its bytes."""
    from PIL import Image

    if not isinstance(raw, dict) or raw.get("mode") not in ("RGB", "L", "RGBA"):
        raise DecoderFailed("the decoder's image is not one")
    width, height, data = raw.get("width"), raw.get("height"), raw.get("data")
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[raw["mode"]]
    if not (isinstance(width, int) and isinstance(height, int) and isinstance(data, bytes)) or not (0 < width <= 65535 and 0 < height <= 65535):
        raise DecoderFailed("the decoder's image is not one")
    if len(data) != width * height * channels:
        raise DecoderFailed("the decoder's image has the wrong number of bytes")
    return Image.frombytes(raw["mode"], (width, height), data)
