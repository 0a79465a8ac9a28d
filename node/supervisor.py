"""Supervised background services: a failing service is restarted, never fatal.

The daemon's services (indexer, embedder, vector index upkeep, model unloading, adapter
training) run for the daemon's lifetime. A bug or an unforeseen fault in one of them (a
full disk during a save, a library that trips a parser) must not end the node: the
exception is logged with its traceback, counted, and the service starts again after a
backoff that doubles up to ``MAX_BACKOFF`` (and resets once it has run well for a while).

Only start-up is strict: a service that fails before reporting itself started fails the
daemon's start, since the node would otherwise serve half-built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger("peerlight.daemon")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
HEALTHY_AFTER = 600.0  # a run this long resets the backoff

Service = Callable[..., Awaitable[None]]  # fn(*, task_status) as for nursery.start


@dataclass
class ServiceState:
    name: str
    state: str = "starting"  # starting | running | restarting | stopped
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self))


class Supervisor:
    """Runs services in a nursery, restarting each one that raises."""

    def __init__(self, *, first_backoff: float = FIRST_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self.services: dict[str, ServiceState] = {}

    async def start(self, nursery: trio.Nursery, name: str, service: Service) -> None:
        """Start ``service`` under supervision; returns once it reports started (its first start may fail)."""
        state = self.services[name] = ServiceState(name)
        await nursery.start(self._supervise, state, service)

    def describe(self) -> list[dict[str, Any]]:
        return [state.to_wire() for state in self.services.values()]

    @property
    def restarts(self) -> int:
        return sum(state.restarts for state in self.services.values())

    async def _supervise(self, state: ServiceState, service: Service, *, task_status: trio.TaskStatus[None]) -> None:
        await self._run_once(state, service, task_status)  # start-up failures propagate
        backoff = self._first_backoff
        while True:
            state.state = "restarting"
            log.info("restarting service in %.0f s", backoff, extra={"service": state.name, "restarts": state.restarts})
            await trio.sleep(backoff)
            started = trio.current_time()
            await self._run_once(state, service, trio.TASK_STATUS_IGNORED)
            ran = trio.current_time() - started
            backoff = self._first_backoff if ran > HEALTHY_AFTER else min(backoff * 2, self._max_backoff)

    async def _run_once(self, state: ServiceState, service: Service, task_status: Any) -> None:
        """Run the service until it returns or raises; a raise after start-up is recorded, not propagated."""
        started = False

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await service(task_status=task_status)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run)
                started = True
                state.state = "running"
                task_status.started()
        except Exception as exc:
            if not started and task_status is not trio.TASK_STATUS_IGNORED:
                raise
            state.restarts += 1
            state.last_error = describe_error(exc)
            state.last_error_at = time.time()
            log.error("service failed; it will be restarted", exc_info=True, extra={"service": state.name})
            return
        state.state = "stopped"
        # A service that returns has nothing left to do (e.g. adapter training switched off).
        await trio.sleep_forever()


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of the error itself, not of the nursery's group around it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
