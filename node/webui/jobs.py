"""Long work a page started: fetches from peers, a pairing offer. Each runs a streaming API method
(the same ``peers.fetch`` and ``devices.pair`` the CLI calls) in the UI's own nursery, and the
page follows its events over server-sent events.

At most ``RUNNING`` at once (a page asking for more is told to wait) and the newest ``KEPT``
remembered, so a page left open, or a script posting in a loop, cannot grow them without end.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ..callers import Caller
from ..control.protocol import ControlError, Unavailable
from ..control.server import Handler, Streaming

log = logging.getLogger("peerlight.webui")

RUNNING = 4
KEPT = 64


@dataclass
class Job:
    id: str
    method: str
    event: dict[str, Any] = field(default_factory=dict)  # the latest progress event
    result: Any = None
    error: str | None = None
    finished: bool = False
    version: int = 0  # moves with every change
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _changed: trio.Event = field(default_factory=trio.Event)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "result": self.result, "error": self.error, "done": self.finished and self.error is None}

    def changed_now(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def changed_since(self, version: int) -> None:
        """Return once the job has changed after ``version`` (at once if it already has)."""
        while self.version == version:
            await self._changed.wait()


class Jobs:
    def __init__(self, methods: Mapping[str, Handler | Streaming]) -> None:
        self._methods = methods
        self._nursery: trio.Nursery | None = None
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def attach(self, nursery: trio.Nursery | None) -> None:
        """The nursery jobs run in (the UI server's): they end with it."""
        self._nursery = nursery

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Stop a running job (a fetch, a pairing offer withdrawn); False if there is none such."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel_scope.cancel()
        return True

    def start(self, method: str, params: dict[str, Any]) -> Job:
        if self._nursery is None:
            raise Unavailable("the web UI is not serving")
        if sum(not job.finished for job in self._jobs.values()) >= RUNNING:
            raise Unavailable(f"{RUNNING} tasks are running: wait for one to finish")
        job = Job(secrets.token_urlsafe(12), method)
        self._jobs[job.id] = job
        while len(self._jobs) > KEPT:
            oldest = next((key for key, kept in self._jobs.items() if kept.finished), None)
            if oldest is None:
                break
            del self._jobs[oldest]
        self._nursery.start_soon(self._run, job, params)
        return job

    async def _run(self, job: Job, params: dict[str, Any]) -> None:
        method = self._methods[job.method]
        assert isinstance(method, Streaming)

        async def progress(event: Any) -> None:
            job.event = dict(event) if isinstance(event, dict) else {"value": event}
            job.changed_now()

        try:
            with job.cancel_scope:
                job.result = await method.fn(params, Caller.local(), progress)
            if job.cancel_scope.cancelled_caught:
                job.error = "cancelled"
        except ControlError as exc:
            job.error = exc.message
        except Exception as exc:  # a failure no API error names: the page says so, the UI goes on
            log.warning("web UI: a task failed", exc_info=True, extra={"method": job.method})
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = True
            job.changed_now()
