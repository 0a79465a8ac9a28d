"""The daemon as a service: the systemd user unit and launch agent written, the service managers'
tools driven, and the sd_notify readiness and watchdog handshake with a real daemon."""

from __future__ import annotations

import configparser
import os
import plistlib
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import trio

from peerlight.node.service_notify import ServiceNotifier

from .helpers import PEERLIGHT, DaemonProcess, new_node

ODD_NAME = "my node %i $HOME \"quoted\" back\\slash"  # what systemd would expand or split, taken literally


def peerlight(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PEERLIGHT), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60, stdin=subprocess.DEVNULL)


def unit_words(exec_start: str) -> list[str]:
    """ExecStart's arguments as systemd reads them: C-style quoting, then %% and $$ as literals."""
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(exec_start)]


def test_the_user_unit_runs_this_node_with_readiness_and_a_watchdog(tmp_path) -> None:
    data_dir = new_node(tmp_path / ODD_NAME)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = peerlight("--data-dir", str(data_dir), "service", "install", "--write-only", "--json", env=env)
    assert done.returncode == 0, done.stderr
    units = list((tmp_path / "config" / "systemd" / "user").glob("peerlight-*.service"))
    assert len(units) == 1 and str(units[0]) in done.stdout
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(units[0])
    service = unit["Service"]
    assert (service["Type"], service["NotifyAccess"], service["Restart"]) == ("notify", "main", "on-failure")
    assert service["WatchdogSec"] == "60s" and unit["Install"]["WantedBy"] == "default.target"
    assert unit_words(service["ExecStart"]) == [sys.executable, "-m", "peerlight.node", "--data-dir", str(data_dir)]
    if shutil.which("systemd-analyze"):  # systemd's own parser agrees the unit is valid
        checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units[0])], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
    again = peerlight("--data-dir", str(data_dir), "service", "install", "--write-only", env=env)
    assert again.returncode == 0 and "Kept" in again.stdout  # written once; a second install changes nothing
    status = peerlight("--data-dir", str(data_dir), "service", "status", "--json", env=env | {"PATH": "/nonexistent"})
    assert '"installed": true' in status.stdout
    gone = peerlight("--data-dir", str(data_dir), "service", "uninstall", "--write-only", env=env)
    assert gone.returncode == 0 and not units[0].exists()


def _fake_tool(folder: Path, name: str, record: Path, fail: bool = False) -> None:
    script = folder / name
    script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{record}"\n' + ('echo "Failed to connect to bus" >&2\nexit 1\n' if fail else "exit 0\n"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_install_enables_and_starts_the_unit_and_uninstall_undoes_it(tmp_path) -> None:
    data_dir = new_node(tmp_path / "node")
    tools, record = tmp_path / "bin", tmp_path / "calls"
    tools.mkdir()
    for name in ("systemctl", "loginctl"):
        _fake_tool(tools, name, record)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": f"{tools}:{os.environ['PATH']}", "USER": "someone"}
    done = peerlight("--data-dir", str(data_dir), "service", "install", "--linger", env=env)
    assert done.returncode == 0, done.stderr
    (unit,) = (tmp_path / "config" / "systemd" / "user").glob("*.service")
    assert record.read_text().splitlines() == [
        "systemctl --user daemon-reload",
        f"systemctl --user enable --now {unit.name}",
        "loginctl enable-linger someone",
    ]
    record.unlink()
    assert peerlight("--data-dir", str(data_dir), "service", "uninstall", env=env).returncode == 0
    assert record.read_text().splitlines() == [f"systemctl --user disable --now {unit.name}", "systemctl --user daemon-reload"]
    assert not unit.exists()
    # No user session bus (a container, ssh without lingering): a clear error, and the file stays for later.
    _fake_tool(tools, "systemctl", record, fail=True)
    failed = peerlight("--data-dir", str(data_dir), "service", "install", env=env)
    assert failed.returncode == 1 and "Failed to connect to bus" in failed.stderr and unit.exists()


def test_the_launch_agent_restarts_a_failed_daemon_and_starts_at_login(tmp_path) -> None:
    data_dir = new_node(tmp_path / "node")
    done = peerlight("--data-dir", str(data_dir), "service", "install", "--manager", "launchd", "--write-only", env={"HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "home" / "Library" / "LaunchAgents").glob("org.peerlight.*.plist")
    agent = plistlib.loads(path.read_bytes())
    assert agent["Label"] == path.stem and agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ProgramArguments"] == [sys.executable, "-m", "peerlight.node", "--data-dir", str(data_dir)]
    assert agent["StandardErrorPath"].startswith(str(data_dir))


def _listen(address: str | bytes) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    return listener


def _messages(listener: socket.socket, until: float, wanted: int) -> list[str]:
    """Datagrams received before ``until``, or until ``wanted`` of them came."""
    received: list[str] = []
    while len(received) < wanted and time.monotonic() < until:
        listener.settimeout(max(0.01, until - time.monotonic()))
        try:
            received.append(listener.recv(4096).decode())
        except TimeoutError:
            break
    return received


def test_the_daemon_reports_ready_pings_the_watchdog_and_says_when_it_stops(tmp_path, monkeypatch) -> None:
    """A real daemon under a fake NOTIFY_SOCKET, with a 2-second watchdog: READY=1 once it
    serves (with its pid), WATCHDOG=1 every second, STOPPING=1 on SIGTERM."""
    data_dir = new_node(tmp_path / "node")
    listener = _listen(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    daemon = DaemonProcess(data_dir)
    try:
        assert daemon.wait_ready() == "ready", daemon.stderr()
        first = _messages(listener, time.monotonic() + 10, 1)
        assert first and "READY=1" in first[0].splitlines() and f"MAINPID={daemon.pid}" in first[0].splitlines(), first
        pings = _messages(listener, time.monotonic() + 3.5, 3)
        assert pings == ["WATCHDOG=1"] * 3, pings
    finally:
        assert daemon.stop() == 0, daemon.stderr()
    assert any("STOPPING=1" in m for m in _messages(listener, time.monotonic() + 5, 10))
    listener.close()


def test_a_watchdog_meant_for_another_process_or_an_abstract_socket(tmp_path) -> None:
    assert ServiceNotifier.from_environment({}) is None
    assert ServiceNotifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}) is None  # not ours to speak
    other = ServiceNotifier.from_environment({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, pid=4242)
    assert other is not None and other.watchdog_seconds is None  # the watchdog is another process's
    mine = ServiceNotifier.from_environment({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "4242"}, pid=4242)
    assert mine is not None and mine.watchdog_seconds == 5.0
    name = f"@peerlight-test-{os.getpid()}"
    listener = _listen(b"\0" + name[1:].encode())
    notifier = ServiceNotifier.from_environment({"NOTIFY_SOCKET": name})
    assert notifier is not None and notifier.notify(STATUS="indexing\n42 files")
    assert _messages(listener, time.monotonic() + 2, 1) == ["STATUS=indexing 42 files"]  # one line: no field injected
    listener.close()
    assert not notifier.notify(READY="1")  # nobody listens any more: logged, not raised


async def test_no_watchdog_ping_while_the_health_check_fails_or_hangs(tmp_path, autojump_clock) -> None:
    listener = _listen(str(tmp_path / "notify.sock"))
    notifier = ServiceNotifier(str(tmp_path / "notify.sock"), watchdog_seconds=0.4)
    verdicts = iter([True, False, None, True])  # healthy, failing, hanging, healthy again

    async def healthy() -> bool:
        verdict = next(verdicts, True)
        if verdict is None:
            await trio.sleep_forever()
        return bool(verdict)

    with trio.move_on_after(0.9):  # four checks, 0.2 s apart (virtual time)
        await notifier.keep_alive(healthy)
    listener.setblocking(False)
    received = []
    while True:
        try:
            received.append(listener.recv(100))
        except BlockingIOError:
            break
    assert received == [b"WATCHDOG=1", b"WATCHDOG=1"]
    listener.close()
