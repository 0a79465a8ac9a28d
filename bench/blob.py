"""A test protocol for the transfer benchmarks: the asker names a size, the answer is that many random bytes."""

from __future__ import annotations

import os
import time
from typing import Any

BLOB = "/bench/blob/1.0.0"
CHUNK = 256 * 1024


async def send_blob(stream: Any) -> None:
    """The answering side (a libp2p stream handler)."""
    size = int((await stream.read(32)).decode())
    block = os.urandom(CHUNK)
    for start in range(0, size, CHUNK):
        await stream.write(block[: min(CHUNK, size - start)])
    await stream.close()


async def receive_blob(stream: Any, size: int) -> tuple[float, float]:
    """Ask for ``size`` bytes on ``stream`` and read them all: (seconds to the first byte, MB/s after it)."""
    started = time.perf_counter()
    await stream.write(str(size).encode())
    received = len(await stream.read(CHUNK))
    first_byte = time.perf_counter() - started
    flowing = time.perf_counter()
    while received < size:
        chunk = await stream.read(CHUNK)
        if not chunk:
            raise RuntimeError(f"the stream ended after {received:,} of {size:,} bytes")
        received += len(chunk)
    return first_byte, size / 1e6 / (time.perf_counter() - flowing)
