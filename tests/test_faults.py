"""Fault injection: a service that raises, a disk that fills up under a running daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from peerlight.node.paths import NodePaths
from peerlight.node.setup import init_node
from peerlight.node.supervisor import Supervisor

from .helpers import DaemonProcess, cli_json, fill_disk, write_config


async def test_a_service_that_raises_is_restarted_with_backoff_and_counted(autojump_clock: trio.testing.MockClock) -> None:
    # Virtual time: the backoff is checked exactly, whatever the machine's load (on real time a
    # slow first restart made the doubling look short).
    runs: list[float] = []

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        runs.append(trio.current_time())
        if len(runs) < 3:
            raise OSError(28, "No space left on device")
        await trio.sleep_forever()

    supervisor = Supervisor(first_backoff=0.05, max_backoff=1)
    async with trio.open_nursery() as nursery:
        await supervisor.start(nursery, "flaky", flaky)
        with trio.fail_after(10):
            while len(runs) < 3:
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        (state,) = supervisor.describe()
        assert state["state"] == "running" and state["restarts"] == 2
        assert state["last_error"] == "OSError: [Errno 28] No space left on device"
        assert runs[1] - runs[0] == pytest.approx(0.05) and runs[2] - runs[1] == pytest.approx(0.1)  # it doubles
        nursery.cancel_scope.cancel()


async def test_a_service_that_fails_to_start_fails_the_start() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise RuntimeError("cannot start")

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="cannot start"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await Supervisor().start(nursery, "broken", broken)


@pytest.mark.slow
def test_a_disk_that_fills_up_loses_nothing(small_disk, tmp_path: Path) -> None:
    disk = small_disk(64 << 20)
    node = NodePaths(disk / "node")
    init_node(node)
    write_config(node.root)
    library = tmp_path / "notes"
    library.mkdir()
    (library / "before.txt").write_text("A note indexed while there is space.")
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready", daemon.stop() or daemon.stderr()
    try:
        cli_json(node.root, "library", "add", str(library))
        cli_json(node.root, "index", "--wait")
        filler = fill_disk(disk)
        for i in range(20):
            (library / f"during-{i}.txt").write_text(f"Note {i}, written while the node's disk is full. " * 20)
        daemon.call("index.run")
        deadline = time.monotonic() + 60
        while not any(c["name"] == "disk_full" for c in daemon.call("daemon.status")["conditions"]):
            assert time.monotonic() < deadline, "the full disk was never reported"
            time.sleep(0.2)
        assert daemon.call("daemon.status")["catalog"]["items"] == 1  # nothing half-written
        filler.unlink()  # space returns: the waiting writes go through
        summary = cli_json(node.root, "index", "--wait")
        assert summary["items"] == 21 and summary["embeddings_pending"] == 0
        status = daemon.call("daemon.status")
        assert not status["conditions"] and all(s["state"] == "running" for s in status["services"])
        results = daemon.call("search.query", query="written while the disk is full", mode="semantic", limit=30)["results"]
        assert len(results) == 21
    finally:
        assert daemon.stop() == 0, daemon.stderr()[-4000:]
