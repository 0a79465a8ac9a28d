"""``peerlight service install | uninstall | status``: the daemon as a service of the user's session.

On Linux a systemd **user** unit (``~/.config/systemd/user/peerlight.service``), enabled and
started with ``systemctl --user``; ``--linger`` also runs ``loginctl enable-linger`` so the
daemon starts at boot and outlives logout. On macOS a launchd agent
(``~/Library/LaunchAgents/org.peerlight.node.plist``) loaded with ``launchctl``.
``--write-only`` writes the file and touches no service manager (to inspect it, or to manage
it by hand). The unit and plist themselves are in ``service_units.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from peerlight.node.lock import read_pid
from peerlight.node.paths import NodePaths, default_data_dir

from .daemon_commands import daemon_alive
from .errors import CliError
from .output import Output
from .service_units import ServiceSpec, UnitError, launchd_label, launchd_plist, launchd_plist_path, systemd_unit, systemd_unit_path

MANAGER_SECONDS = 120  # a start waits for READY=1: a cold start loads models


def default_manager() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def _spec(paths: NodePaths) -> ServiceSpec:
    return ServiceSpec(paths.root, default_node=paths.root == default_data_dir().absolute())


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _file_for(manager: str, spec: ServiceSpec) -> Path:
    return systemd_unit_path(spec, _config_home()) if manager == "systemd" else launchd_plist_path(spec, Path.home())


def _run(tool: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a service manager's tool; a missing tool or a failure is a CliError naming it."""
    if shutil.which(tool[0]) is None:
        raise CliError(f"`{tool[0]}` is not installed here: the service file is written, but nothing enabled it")
    try:
        done = subprocess.run(tool, capture_output=True, text=True, timeout=MANAGER_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise CliError(f"`{' '.join(tool)}` did not finish within {MANAGER_SECONDS} s") from None
    if check and done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise CliError(f"`{' '.join(tool)}` failed: {reason[-1] if reason else f'exit code {done.returncode}'}")
    return done


def _running_pid(paths: NodePaths) -> int | None:
    """The daemon's pid, if one runs on this node (a pid file left by a crash names no process)."""
    pid = read_pid(paths.pid_file)
    return pid if pid is not None and daemon_alive(pid, paths) else None


def _write(path: Path, data: bytes) -> bool:
    """Write ``path`` atomically; whether it changed."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    spare = path.with_name(path.name + ".tmp")
    spare.write_bytes(data)
    spare.chmod(0o644)
    spare.replace(path)
    return True


def cmd_service_install(args: Namespace, paths: NodePaths, out: Output) -> int:
    if not paths.is_initialised():
        raise CliError(f"no node in {paths.root}; run `peerlight init` first")
    spec, manager = _spec(paths), args.manager or default_manager()
    path = _file_for(manager, spec)
    try:
        data = systemd_unit(spec).encode() if manager == "systemd" else launchd_plist(spec, paths.log_dir)
    except UnitError as exc:
        raise CliError(str(exc)) from None
    changed = _write(path, data)
    running = _running_pid(paths)
    started = False
    if not args.write_only:
        # A daemon started by hand holds the node's lock: the service would fail to start now.
        start = not args.no_start and running is None
        if manager == "systemd":
            _run(["systemctl", "--user", "daemon-reload"])
            _run(["systemctl", "--user", "enable", *(["--now"] if start else []), f"{spec.name}.service"])
            if args.linger:
                _run(["loginctl", "enable-linger", os.environ.get("USER") or str(os.getuid())])
        else:
            paths.log_dir.mkdir(parents=True, exist_ok=True)
            domain = f"gui/{os.getuid()}"
            _run(["launchctl", "bootout", f"{domain}/{launchd_label(spec)}"], check=False)  # an older copy
            if start:
                _run(["launchctl", "bootstrap", domain, str(path)])
        started = start
    data_out = {"manager": manager, "file": str(path), "changed": changed, "enabled": not args.write_only, "started": started, "running_pid": running}

    def render(console: Console, data: dict[str, Any]) -> None:
        console.print(f"{'Wrote' if data['changed'] else 'Kept'} {escape(data['file'])}")
        if not data["enabled"]:
            console.print("Written only: nothing enabled it.")
        elif data["started"]:
            console.print(f"Enabled and started: the daemon now runs as a {data['manager']} service and starts at login.")
        else:
            console.print("Enabled: it starts at the next login.")
            if data["running_pid"] is not None:
                console.print(f"A daemon already runs (pid {data['running_pid']}): `peerlight stop`, then start the service.")
        if data["manager"] == "systemd" and data["enabled"] and not args.linger:
            console.print("To start it at boot and keep it after logout: `peerlight service install --linger`.")

    out.result(data_out, render)
    return 0


def cmd_service_uninstall(args: Namespace, paths: NodePaths, out: Output) -> int:
    spec, manager = _spec(paths), args.manager or default_manager()
    path = _file_for(manager, spec)
    if not args.write_only and path.is_file():
        if manager == "systemd":
            _run(["systemctl", "--user", "disable", "--now", f"{spec.name}.service"])
        else:
            _run(["launchctl", "bootout", f"gui/{os.getuid()}/{launchd_label(spec)}"], check=False)
    removed = path.is_file()
    path.unlink(missing_ok=True)
    if removed and manager == "systemd" and not args.write_only:
        _run(["systemctl", "--user", "daemon-reload"])
    out.result(
        {"manager": manager, "file": str(path), "removed": removed},
        lambda console, data: console.print(f"Removed {escape(data['file'])}" if data["removed"] else f"No service file at {escape(data['file'])}"),
    )
    return 0


def cmd_service_status(args: Namespace, paths: NodePaths, out: Output) -> int:
    spec, manager = _spec(paths), args.manager or default_manager()
    path = _file_for(manager, spec)
    status: dict[str, Any] = {"manager": manager, "file": str(path), "installed": path.is_file(), "name": spec.name, "running_pid": _running_pid(paths)}
    if manager == "systemd" and shutil.which("systemctl"):
        for field, verb in (("enabled", "is-enabled"), ("active", "is-active")):
            status[field] = _run(["systemctl", "--user", verb, f"{spec.name}.service"], check=False).stdout.strip() or "unknown"
        if shutil.which("loginctl"):
            linger = _run(["loginctl", "show-user", os.environ.get("USER") or str(os.getuid()), "--property=Linger"], check=False).stdout
            status["linger"] = linger.strip().removeprefix("Linger=") == "yes"
    elif manager == "launchd" and shutil.which("launchctl"):
        status["loaded"] = _run(["launchctl", "print", f"gui/{os.getuid()}/{launchd_label(spec)}"], check=False).returncode == 0

    def render(console: Console, data: dict[str, Any]) -> None:
        console.print(f"{data['manager']} service [bold]{escape(data['name'])}[/]: {'installed' if data['installed'] else 'not installed'} ({escape(data['file'])})")
        for field in ("enabled", "active", "linger", "loaded"):
            if field in data:
                console.print(f"  {field:8} {data[field]}")
        if data["running_pid"] is not None:
            console.print(f"  daemon   running (pid {data['running_pid']})")

    out.result(status, render)
    return 0
