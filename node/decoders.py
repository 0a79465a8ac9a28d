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
import os
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
from peerlight.p2p import fields

log = logging.getLogger("peerlight.decoders")

HEADER = struct.Struct(">I")
MAX_ANSWER_BYTES = 512 * 1024 * 1024  # a decoded image or a 30 s waveform is far below
START_SECONDS = 30.0  # for a new worker to import its decoders and answer
ANSWER_LIMITS = {"max_bin_len": MAX_ANSWER_BYTES, "max_str_len": 1 << 20, "max_array_len": 100_000, "max_map_len": 10_000}


class DecoderFailed(DecodeError):
    """The decoder could not finish with this file: it crashed, ran out of its memory or time.

    ``kind`` is how the indexer lists the file: ``corrupt``, or ``too_large`` for memory."""

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind


class DecoderUnavailable(OSError):
    """No decoder worker could be had (none started, or none free in time): not the file's fault."""


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
        """SIGKILL, and reap it if it goes within a few seconds (a process stuck in uninterruptible
        I/O on a stalled mount may not: it is left to the kernel rather than waited for)."""
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("a decoder worker did not end after SIGKILL", extra={"pid": self.process.pid})
        self.channel.close()

    def death(self) -> str:
        """Why the worker is gone, in words."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        if code is None or code < 0:
            if code is None:
                return "the decoder stopped answering on this file"
            name = signal.Signals(-code).name
            why = {"SIGXCPU": "used up its CPU time", "SIGKILL": "was killed (out of memory?)"}.get(name, "crashed")
            return f"the decoder {why} on this file ({name})"
        return f"the decoder exited on this file (status {code})"


class DecoderPool:
    """A few decoder processes, started on first use and replaced when one dies."""

    def __init__(self, limits: DecoderLimits = DecoderLimits()) -> None:
        self.limits = limits
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()  # idle and busy: every one is killed at close
        self._count = 0
        self._lock = threading.Condition()
        self._closed = False
        self.crashes = 0  # workers lost to a file, since the start

    def close(self) -> None:
        """Kill every worker, busy ones included (their callers get DecoderFailed), and wake waiters."""
        with self._lock:
            self._closed = True
            workers, self._idle = list(self._all), []
            self._lock.notify_all()
        for worker in workers:
            worker.kill()

    def _take(self, wait: float | None = None) -> _Worker:
        """A worker: an idle one, a new one, or the next one given back within ``wait`` seconds."""
        deadline = time.monotonic() + (self.limits.deadline_seconds if wait is None else wait)
        with self._lock:
            while not self._closed and not self._idle and self._count >= self.limits.workers:
                if not self._lock.wait(max(0.0, deadline - time.monotonic())):
                    raise DecoderUnavailable("no decoder was free in time")
            if self._closed:
                raise DecoderUnavailable("the node is shutting down")
            dead: list[_Worker] = []
            found = None
            while self._idle and found is None:
                candidate = self._idle.pop()
                if candidate.alive():
                    found = candidate
                else:  # died while idle (killed from outside): replaced below
                    self._count -= 1
                    self._all.discard(candidate)
                    dead.append(candidate)
            if found is None:
                self._count += 1
        for candidate in dead:
            candidate.kill()
        if found is not None:
            return found
        worker = None
        try:
            worker = _Worker(self.limits.memory_bytes)
            with self._lock:
                self._all.add(worker)
            self._started(worker)
            return worker
        except BaseException:
            self._retire(worker)
            raise

    def _started(self, worker: _Worker) -> None:
        """Wait until a new worker has imported its decoders and answers: one that cannot start
        (too little memory for its imports, a broken install) is no fault of any file."""
        with open("/dev/null", "rb") as nothing:
            try:
                self._exchange(worker, "ping", nothing.fileno(), {}, START_SECONDS)
            except DecoderFailed as exc:
                raise DecoderUnavailable(f"a decoder worker did not start: {exc}") from None

    def _give_back(self, worker: _Worker) -> None:
        """A worker done with a file: used again while it lives (and the pool is open), else retired."""
        with self._lock:
            if worker.alive() and not self._closed:
                self._idle.append(worker)
                self._lock.notify_all()
                return
        self._retire(worker)

    def _retire(self, worker: _Worker | None) -> None:
        """Free a worker's place in the pool (``None``: one that was never started) and kill it."""
        with self._lock:
            self._count -= 1
            if worker is not None:
                self._all.discard(worker)
            self._lock.notify_all()
        if worker is not None:  # outside the lock: killing may take seconds
            worker.kill()

    def call(self, op: str, fd: int, *, seconds: float | None = None, **args: Any) -> Any:
        """Run ``op`` on the open file ``fd`` in a worker; its answer, or a :class:`DecodeError`.

        The file is duplicated at once: a caller that gives up (a deadline) and closes its own
        descriptor cannot have its number reused for another file while this call waits."""
        limit = self.limits.deadline_seconds if seconds is None else seconds
        own = os.dup(fd)
        try:
            worker = self._take(limit)  # a caller with a short deadline (a peer's preview) waits no longer
            try:
                answer = self._exchange(worker, op, own, args, limit)
                error = answer.get("error")
                if isinstance(error, dict) and error.get("type") == "memory":  # its heap is suspect now: replaced too
                    raise DecoderFailed(f"the decoder needed more than its {self.limits.memory_bytes // 2**20} MiB on this file", "too_large")
            except BaseException as exc:  # a worker that failed (or was interrupted) mid-file is not reused
                self.crashes += isinstance(exc, DecoderFailed)
                self._retire(worker)
                raise
            self._give_back(worker)
        finally:
            os.close(own)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            message, kind = str(error.get("message", "cannot be decoded"))[:2000], error.get("kind")
            raise DecoderError(message, kind if kind in ("corrupt", "too_large") else None)
        return answer.get("ok")

    def _exchange(self, worker: _Worker, op: str, fd: int, args: dict[str, Any], seconds: float) -> dict[str, Any]:
        body = msgpack.packb({"op": op, "args": args}, use_bin_type=True)
        try:
            socket.send_fds(worker.channel, [HEADER.pack(len(body)) + body], [fd])
            deadline = time.monotonic() + seconds
            (length,) = HEADER.unpack(self._read(worker, HEADER.size, deadline, seconds))
            if length > MAX_ANSWER_BYTES:
                raise DecoderFailed(f"the decoder answered {length:,} bytes")
            answer = msgpack.unpackb(self._read(worker, length, deadline, seconds), raw=False, strict_map_key=True, **ANSWER_LIMITS)
        except (EOFError, OSError):  # the worker is gone (a crash, a kill): why, from its exit status
            raise DecoderFailed(worker.death()) from None
        except (ValueError, msgpack.UnpackException):
            raise DecoderFailed("the decoder's answer is not one") from None
        if not isinstance(answer, dict):
            raise DecoderFailed("the decoder's answer is not one")
        return answer

    def _read(self, worker: _Worker, size: int, deadline: float, seconds: float) -> bytes:
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([worker.channel], [], [], left)[0]:
                raise DecoderFailed(f"decoding took longer than {seconds:g} s")
            chunk = worker.channel.recv(min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)

    def warm(self) -> None:
        """Start every worker now and wait until each has its decoders imported (they start on
        first use otherwise: a second or so of CPU each, better spent before the work begins)."""
        workers: list[_Worker] = []
        try:
            for _ in range(self.limits.workers):
                workers.append(self._take())  # each answered a ping to start
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
        return fields.plain_map(found, max_entries=64, max_key=64, max_text=4000)  # what reaches the catalog: plain and bounded

    def image(self, fd: int, *, max_side: int = 1024, min_side: int | None = None) -> Any:
        return _image(self.call("load_image", fd, max_side=max_side, min_side=min_side))

    def video_frames(self, fd: int, interval: float, max_frames: int, max_side: int = 512) -> list[tuple[float, Any]]:
        frames = self.call("video_frames", fd, interval=interval, max_frames=max_frames, max_side=max_side)
        if not isinstance(frames, list) or not frames:
            raise DecoderFailed("the decoder sent no frames")
        times = [fields.finite(entry[0], 0, 1e9) if isinstance(entry, list) and len(entry) == 2 else None for entry in frames]
        if any(t is None for t in times):
            raise DecoderFailed("the decoder's frames are not (time, image) pairs")
        return [(float(t), _image(entry[1])) for t, entry in zip(times, frames)]

    def audio(self, fd: int, sample_rate: int, max_seconds: float) -> np.ndarray:
        data = self.call("load_audio", fd, sample_rate=sample_rate, max_seconds=max_seconds)
        if not isinstance(data, bytes) or len(data) % 4 or len(data) > 4 * sample_rate * (max_seconds + 1):
            raise DecoderFailed("the decoder's samples are not float32 of the length asked for")
        return np.frombuffer(data, dtype="<f4").astype(np.float32)

    def preview(self, fd: int, modality: str, seconds: float | None = None) -> dict[str, Any]:
        """A peer's preview: with its deadline (``seconds``), waiting for a worker included."""
        found = self.call("preview", fd, seconds=seconds, modality=modality)
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
