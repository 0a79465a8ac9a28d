"""Blocking work off the event loop, with a time limit.

The event loop serves every client; one ``stat`` on a stalled network mount, or one read of
a FIFO, would freeze all of them. So every filesystem call the daemon makes on a user's
path runs in a worker thread under a deadline. A call that misses it is abandoned to its
thread (harmless: it only reads) and the caller gets :class:`IOTimeout`, a typed error the
control API reports as ``timeout``, while the daemon goes on serving.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

T = TypeVar("T")

IO_TIMEOUT_SECONDS = 10.0


class IOTimeout(OSError):
    """A filesystem call did not finish in time (a stalled disk or network mount, a FIFO, a tty)."""


async def run_io(fn: Callable[..., T], *args: Any, timeout: float = IO_TIMEOUT_SECONDS, what: str = "a file operation") -> T:
    """``fn(*args)`` in a worker thread; :class:`IOTimeout` if it takes longer than ``timeout``."""
    with trio.move_on_after(timeout):
        return await trio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)
    raise IOTimeout(f"{what} did not finish within {timeout:g} s (a stalled disk or network mount?)")
