"""Fetches the web UI started: each runs ``peers.fetch`` (the same streaming API method as
``peerlight fetch``) in the UI's own nursery, and pages follow its progress.

At most ``RUNNING`` at once (a page asking for more is told to wait) and the newest ``KEPT``
remembered, so a page left open, or a script posting in a loop, cannot grow them without end.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..callers import Caller
from ..control.protocol import ControlError, Unavailable
from ..control.server import Handler, Streaming

log = logging.getLogger("peerlight.webui")

RUNNING = 4
KEPT = 64


@dataclass
class Transfer:
    id: str
    share: str
    content_hash: str
    received: int = 0
    size: int | None = None
    path: str | None = None  # where it was saved, once done
    error: str | None = None
    finished: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "received": self.received, "size": self.size, "done": self.finished and self.error is None, "error": self.error, "name": Path(self.path).name if self.path else None}

    def changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class Transfers:
    def __init__(self, methods: Mapping[str, Handler | Streaming], downloads: Path) -> None:
        self._methods = methods
        self._downloads = downloads
        self._nursery: trio.Nursery | None = None
        self._jobs: OrderedDict[str, Transfer] = OrderedDict()

    def attach(self, nursery: trio.Nursery | None) -> None:
        """The nursery fetches run in (the UI server's): they end with it."""
        self._nursery = nursery

    def get(self, job_id: str) -> Transfer | None:
        return self._jobs.get(job_id)

    def start(self, share: str, content_hash: str) -> Transfer:
        if self._nursery is None:
            raise Unavailable("the web UI is not serving")
        if sum(not job.finished for job in self._jobs.values()) >= RUNNING:
            raise Unavailable(f"{RUNNING} fetches are running: wait for one to finish")
        job = Transfer(secrets.token_urlsafe(12), share, content_hash)
        self._jobs[job.id] = job
        while len(self._jobs) > KEPT:
            oldest = next((key for key, kept in self._jobs.items() if kept.finished), None)
            if oldest is None:
                break
            del self._jobs[oldest]
        self._nursery.start_soon(self._run, job)
        return job

    async def _run(self, job: Transfer) -> None:
        method = self._methods["peers.fetch"]
        assert isinstance(method, Streaming)

        async def progress(event: Any) -> None:
            job.received, job.size = int(event.get("received", 0)), event.get("size")
            job.changed_now()

        try:
            result = await method.fn({"share": job.share, "item": job.content_hash, "to": str(self._downloads.expanduser())}, Caller.local(), progress)
            job.path = result.get("path") if isinstance(result, dict) else None
            job.received = job.size or job.received
        except ControlError as exc:
            job.error = exc.message
        except Exception as exc:  # a fetch that failed in a way no API error names: the page says so, the UI goes on
            log.warning("web UI: a fetch failed", exc_info=True, extra={"share": job.share})
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = True
            job.changed_now()
