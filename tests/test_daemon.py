"""The real CLI and the real daemon, as separate processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from peerlight.cli.client import ConnectionLost, ControlClient, DaemonNotRunning
from peerlight.node.control.protocol import ControlError, ShuttingDown
from peerlight.node.paths import NodePaths

from . import media
from .helpers import PEERLIGHT, DaemonProcess, cli, cli_json, write_config


def test_cli_initialises_starts_queries_and_stops_a_daemon(data_dir: Path, tmp_path: Path) -> None:
    created = cli_json(data_dir, "init")
    assert created["created"] and created["data_dir"] == str(data_dir)
    assert cli_json(data_dir, "init", "--if-missing")["created"] is False
    assert cli(data_dir, "init").returncode == 1

    assert cli_json(data_dir, "status", expect_rc=3) == {"running": False, "data_dir": str(data_dir)}
    started = cli_json(data_dir, "start", "--detach")
    try:
        assert started["running"] and started["peer_id"] == created["peer_id"]
        status = cli_json(data_dir, "status")
        assert status["data_dir"] == str(data_dir) and status["catalog"]["schema_version"] >= 2
        assert int((data_dir / "daemon.pid").read_text()) == status["pid"]

        media = tmp_path / "media"
        media.mkdir()
        added = cli_json(data_dir, "library", "add", str(media), "--name", "home media")
        assert added["name"] == "home media" and added["path"] == str(media.resolve())
        assert cli_json(data_dir, "library", "add", str(media), expect_rc=1)["error"]["code"] == "conflict"
        assert [lib["name"] for lib in cli_json(data_dir, "library", "list")] == ["home media"]
        human = cli(data_dir, "library", "list")
        assert human.returncode == 0 and "home media" in human.stdout
        assert cli_json(data_dir, "status")["catalog"]["libraries"] == 1
        assert cli_json(data_dir, "library", "remove", "home media")["id"] == added["id"]
        assert cli_json(data_dir, "library", "remove", "home media", expect_rc=1)["error"]["code"] == "not_found"

        refused = cli(data_dir, "start", "--detach")
        assert refused.returncode == 1 and "already running" in refused.stderr
    finally:
        stopped = cli_json(data_dir, "stop")
    assert stopped["stopped"] and stopped["pid"] == status["pid"]
    assert not (data_dir / "daemon.pid").exists() and not (data_dir / "control.sock").exists()
    assert cli_json(data_dir, "stop") == {"stopped": False, "running": False, "data_dir": str(data_dir)}
    not_running = cli(data_dir, "library", "list")
    assert not_running.returncode == 3 and "no daemon is running" in not_running.stderr


def test_start_without_a_node_says_to_init(data_dir: Path) -> None:
    proc = cli(data_dir, "start")
    assert proc.returncode == 1 and "peerlight init" in proc.stderr


def test_identity_persists_across_restarts(node: NodePaths) -> None:
    peer_ids = []
    for _ in range(2):
        daemon = DaemonProcess(node.root)
        assert daemon.wait_ready() == "ready"
        peer_ids.append(daemon.call("daemon.status")["peer_id"])
        assert daemon.stop() == 0
    assert peer_ids[0] == peer_ids[1]


def test_a_second_daemon_is_refused(daemon: DaemonProcess) -> None:
    second = DaemonProcess(daemon.data_dir)
    report = second.wait_ready()
    assert second.proc.wait(30) == 1
    assert report.startswith("error:") and f"(pid {daemon.pid})" in report and "already running" in report
    assert daemon.call("daemon.status")["pid"] == daemon.pid  # the first one is untouched


def test_stale_pid_and_socket_of_a_killed_daemon_are_cleared(node: NodePaths) -> None:
    crashed = DaemonProcess(node.root)
    assert crashed.wait_ready() == "ready"
    crashed.stop(signal.SIGKILL)
    assert node.pid_file.exists() and node.control_socket.exists()
    with pytest.raises(DaemonNotRunning):
        ControlClient(node.control_socket)

    restarted = DaemonProcess(node.root)
    assert restarted.wait_ready() == "ready"
    assert restarted.call("daemon.status")["pid"] == restarted.pid
    assert restarted.stop() == 0
    log = (node.root / "logs" / "peerlight.log").read_text()
    assert f'"stale_pid": {crashed.pid}' in log


def test_sigint_in_the_foreground_exits_cleanly(node: NodePaths) -> None:
    proc = subprocess.Popen(
        [str(PEERLIGHT), "start", "--data-dir", str(node.root)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with ControlClient(node.control_socket) as client:
                    status = client.call("daemon.status")
                break
            except DaemonNotRunning:
                assert time.monotonic() < deadline and proc.poll() is None, "daemon never came up"
                time.sleep(0.1)
        assert status["pid"] == proc.pid  # `peerlight start` became the daemon (exec)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert "daemon ready" in stderr and "shutting down" in stderr and "daemon stopped" in stderr
    assert not node.pid_file.exists() and not node.control_socket.exists()


def test_a_bad_config_stops_the_daemon_before_it_serves(node: NodePaths) -> None:
    node.config.write_text(node.config.read_text() + "\n[p2p]\nlisten = []\n")
    daemon = DaemonProcess(node.root)
    report = daemon.wait_ready()
    assert daemon.proc.wait(30) == 2
    assert report.startswith("error:") and "p2p" in report and "unknown option" in report
    assert not node.control_socket.exists() and not node.pid_file.exists()


def test_a_corrupt_identity_stops_the_daemon_and_is_kept(node: NodePaths) -> None:
    node.identity.write_bytes(b"garbage")
    daemon = DaemonProcess(node.root)
    assert "corrupt" in daemon.wait_ready()
    assert daemon.proc.wait(30) == 2
    assert node.identity.read_bytes() == b"garbage"


def test_log_file_has_structured_lines(daemon: DaemonProcess) -> None:
    daemon.call("daemon.status")
    lines = [json.loads(line) for line in (daemon.data_dir / "logs" / "peerlight.log").read_text().splitlines()]
    ready = next(line for line in lines if line["msg"] == "daemon ready")
    assert ready["level"] == "info" and ready["peer_id"] and ready["pid"] == daemon.pid


def test_sigterm_during_a_burst_of_writes_loses_no_committed_write(node: NodePaths, tmp_path: Path) -> None:
    folders = []
    for i in range(400):
        folder = tmp_path / f"lib{i:03d}"
        folder.mkdir()
        folders.append(folder)
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"

    acknowledged: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def writer(batch: list[Path]) -> None:
        try:
            client = ControlClient(daemon.socket_path, timeout=30)
        except DaemonNotRunning:
            return
        with client:
            for folder in batch:
                try:
                    library = client.call("library.add", path=str(folder))
                except ShuttingDown:
                    with lock:
                        refused.append(str(folder))
                    return
                except (ConnectionLost, OSError):
                    return
                with lock:
                    acknowledged.append(library["path"])

    threads = [threading.Thread(target=writer, args=(folders[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    while True:
        with lock:
            if len(acknowledged) >= 50:
                break
        time.sleep(0.005)
    assert daemon.stop(signal.SIGTERM) == 0
    for thread in threads:
        thread.join(30)

    assert 50 <= len(acknowledged) < len(folders), "the burst should be cut short by SIGTERM"
    with sqlite3.connect(node.catalog) as conn:
        stored = {path for (path,) in conn.execute("SELECT path FROM libraries")}
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert set(acknowledged) <= stored
    assert not set(refused) & stored  # a refused write was not made behind the client's back


def test_stop_ends_a_streaming_wait_promptly(node: NodePaths, tmp_path: Path) -> None:
    library = tmp_path / "docs"
    library.mkdir()
    for i in range(40):
        (library / f"d{i}.txt").write_text(f"document {i} " * 50)
    # A grace period longer than any test: if stop waited for it (or for the text model's
    # first load), daemon.stop() below would give up first.
    write_config(node.root, "[daemon]\nshutdown_grace_seconds = 600\n")
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    daemon.call("library.add", path=str(library))
    outcome: list[object] = []

    def waiter() -> None:
        try:
            with ControlClient(daemon.socket_path, timeout=60) as client:
                outcome.append(client.call("index.wait"))
        except (ShuttingDown, ConnectionLost) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: daemon.call("index.status")["busy"])
    assert daemon.stop(timeout=30) == 0
    thread.join(30)
    assert outcome and (isinstance(outcome[0], (ShuttingDown, ConnectionLost)) or not outcome[0]["busy"])


def test_stop_does_not_wait_for_a_model_load_that_never_ends(node: NodePaths, tmp_path: Path) -> None:
    # The image model's checkpoint is a FIFO nobody writes to: torch.load waits in open() forever,
    # as a load from a stalled network mount would. Search and status keep being served meanwhile,
    # and stop abandons the load to its thread.
    checkpoint = tmp_path / "stalled.pt"
    os.mkfifo(checkpoint)
    write_config(node.root, f'[image_model]\ncheckpoint = "{checkpoint}"\n[daemon]\nshutdown_grace_seconds = 600\n')
    library = tmp_path / "photos"
    media.image(library / "red.jpg")
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    try:
        daemon.call("library.add", path=str(library))
        wait_until(lambda: {m["role"]: m["state"] for m in daemon.call("models.list", check=False)}["image"] == "loading")
        status = daemon.call("daemon.status")
        assert status["running"] and status["catalog"]["items"] == 1
        assert daemon.call("search.query", query="red", mode="text")["results"]
    finally:
        started = time.monotonic()
        code = daemon.stop(timeout=30)
    assert code == 0, daemon.stderr()[-3000:]
    print(f"stop took {time.monotonic() - started:.2f} s with a model load in progress")


def test_a_fifo_or_a_device_as_an_example_fails_at_once_and_others_are_served(daemon: DaemonProcess, tmp_path: Path) -> None:
    fifo = tmp_path / "stream.jpg"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ControlError) as caught:
            daemon.call("search.similar", path=str(path))
        assert caught.value.code == "not_found" and "not a regular file" in caught.value.message
    assert daemon.call("daemon.status")["running"]


def test_a_waiter_whose_client_hangs_up_stops(node: NodePaths, tmp_path: Path) -> None:
    # An image model whose load never ends keeps the index busy, so index.wait would stream forever.
    checkpoint = tmp_path / "stalled.pt"
    os.mkfifo(checkpoint)
    write_config(node.root, f'[image_model]\ncheckpoint = "{checkpoint}"\n')
    media.image(tmp_path / "photos" / "red.jpg")
    daemon = DaemonProcess(node.root)
    assert daemon.wait_ready() == "ready"
    try:
        daemon.call("library.add", path=str(tmp_path / "photos"))
        events: list[object] = []
        client = ControlClient(daemon.socket_path, timeout=30)
        waiting = threading.Thread(target=lambda: _wait_quietly(client, events), daemon=True)
        waiting.start()
        wait_until(lambda: bool(events))  # the wait streams progress...
        assert daemon.call("daemon.status")["requests_in_flight"] == 2  # ...while status is asked too
        client.close()  # the client hangs up mid-wait
        wait_until(lambda: daemon.call("daemon.status")["requests_in_flight"] == 1)  # only the status call itself
    finally:
        assert daemon.stop() == 0


def _wait_quietly(client: ControlClient, events: list[object]) -> None:
    try:
        client.call("index.wait", on_event=events.append)
    except (OSError, ConnectionLost, ControlError):
        pass


def wait_until(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
