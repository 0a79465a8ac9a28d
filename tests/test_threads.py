"""Blocking filesystem calls leave the event loop free and fail with a typed error after their deadline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from peerlight.node.threads import IOTimeout, run_io


async def test_a_call_that_never_returns_times_out_while_others_run(tmp_path: Path) -> None:
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)  # open() for reading waits for a writer: a read that never ends
    ticks = 0

    async def meanwhile() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(meanwhile)
        with pytest.raises(IOTimeout, match="did not finish within 0.5 s"):
            await run_io(lambda: open(fifo, "rb").read(), timeout=0.5, what="reading a FIFO")
        nursery.cancel_scope.cancel()
    assert ticks > 10  # the event loop kept serving
    with open(fifo, "wb"):  # let the abandoned thread finish
        pass
    assert await run_io(lambda: 42) == 42
