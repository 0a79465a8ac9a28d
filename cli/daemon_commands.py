"""``peerlight init | start | stop | status``: creating a node and running its daemon."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from argparse import Namespace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peerlight.node.lock import read_pid
from peerlight.node.paths import NodePaths

from .client import DaemonNotRunning, call
from .errors import CliError
from .output import Output, human_duration
from .share_commands import reachability_line

DAEMON_MODULE = "peerlight.node"


def cmd_init(args: Namespace, paths: NodePaths, out: Output) -> int:
    from peerlight.node.identity import IdentityError
    from peerlight.node.setup import InitError, init_node

    try:
        result = init_node(paths, if_missing=args.if_missing)
    except (InitError, IdentityError) as exc:
        raise CliError(str(exc)) from None
    data = {
        "created": result.created,
        "data_dir": str(paths.root),
        "config_file": str(paths.config),
        "peer_id": result.identity.peer_id,
    }

    def render(console: Console, data: dict[str, Any]) -> None:
        verb = "Initialised a node" if data["created"] else "A node already exists"
        console.print(f"{verb} in [bold]{escape(data['data_dir'])}[/]")
        console.print(f"  peer ID  {data['peer_id']}")
        console.print(f"  config   {escape(data['config_file'])}")

    out.result(data, render)
    return 0


def _daemon_argv(args: Namespace, paths: NodePaths) -> list[str]:
    argv = [sys.executable, "-m", DAEMON_MODULE, "--data-dir", str(paths.root)]
    if args.log_level:
        argv += ["--log-level", args.log_level]
    return argv


def cmd_start(args: Namespace, paths: NodePaths, out: Output) -> int:
    if not paths.is_initialised():
        raise CliError(f"no node in {paths.root}; run `peerlight init` first")
    if not args.detach:
        # The daemon takes over this process: signals reach it directly, and its exit code is ours.
        os.execv(sys.executable, _daemon_argv(args, paths))
    return _start_detached(args, paths, out)


def _start_detached(args: Namespace, paths: NodePaths, out: Output) -> int:
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    with open(paths.log_dir / "daemon.out", "ab") as console_log:
        subprocess.Popen(
            [*_daemon_argv(args, paths), "--ready-fd", str(write_end), "--no-console-log"],
            pass_fds=(write_end,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=console_log,
            stderr=console_log,
        )
    os.close(write_end)
    message = _read_ready(read_end, args.timeout)
    if message != "ready":
        if message.startswith("error: "):
            raise CliError(message.removeprefix("error: "))
        raise CliError(f"the daemon exited during start-up (see {paths.log_dir / 'daemon.out'})")
    return _show_status(paths, out, started=True)


def _read_ready(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return f"error: the daemon did not report ready within {timeout:g} s"
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()


def cmd_stop(args: Namespace, paths: NodePaths, out: Output) -> int:
    try:
        reply = call(paths.control_socket, "daemon.stop", timeout=10)
    except DaemonNotRunning:
        out.result(
            {"stopped": False, "running": False, "data_dir": str(paths.root)},
            lambda console, _: console.print(f"No daemon is running on {escape(str(paths.root))}."),
        )
        return 0
    pid = reply["pid"]
    deadline = time.monotonic() + args.timeout
    while daemon_alive(pid, paths):
        if time.monotonic() > deadline:
            raise CliError(f"the daemon (pid {pid}) did not stop within {args.timeout:g} s")
        time.sleep(0.05)
    out.result(
        {"stopped": True, "pid": pid, "data_dir": str(paths.root)},
        lambda console, _: console.print(f"Daemon stopped (pid {pid})."),
    )
    return 0


def daemon_alive(pid: int, paths: NodePaths) -> bool:
    """The daemon is gone once its pid file is removed or the process no longer exists."""
    if read_pid(paths.pid_file) != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def cmd_status(args: Namespace, paths: NodePaths, out: Output) -> int:
    return _show_status(paths, out, started=False)


def _show_status(paths: NodePaths, out: Output, *, started: bool) -> int:
    try:
        status = call(paths.control_socket, "daemon.status", timeout=10)
    except DaemonNotRunning:
        out.result(
            {"running": False, "data_dir": str(paths.root)},
            lambda console, _: console.print(f"[bold red]●[/] not running ({escape(str(paths.root))})"),
        )
        return 3
    out.result(status, lambda console, data: _render_status(console, data, started))
    return 0


def _render_status(console: Console, status: dict[str, Any], started: bool) -> None:
    headline = "started" if started else "running"
    console.print(
        f"[bold green]●[/] {headline} — peerlight {status['version']} "
        f"(pid {status['pid']}, up {human_duration(status['uptime_seconds'])})"
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    catalog = status["catalog"]
    index = catalog["index"]
    kinds = ", ".join(f"{n} {m}" for m, n in sorted(index["by_modality"].items())) or "none yet"
    state = "indexing" if index["busy"] else "idle"
    for label, value in (
        ("name", status["name"]),
        ("peer ID", status["peer_id"]),
        ("data dir", status["data_dir"]),
        ("log file", status["log_file"]),
        ("libraries", str(catalog["libraries"])),
        ("items", f"{catalog['items']} ({kinds})"),
        ("index", f"{state}; {index['embeddings_pending']} awaiting embeddings, "
                  f"{index['embeddings_failed']} failed, {index['problems']} files could not be indexed"),
    ):
        grid.add_row(label, escape(str(value)))
    restarts = sum(service["restarts"] for service in status.get("services", []))
    if restarts:
        grid.add_row("services", f"{restarts} restarts after failures (see the log)")
    for condition in status.get("conditions", []):
        grid.add_row("[yellow]warning[/]", escape(condition["message"]))
    for index in status.get("vector_indexes", []):
        detail = f"{index['vectors']} vectors, {index['mode']}"
        if index["mode"] == "funnel":
            detail += f" (prefix {index['prefix_length']})"
        grid.add_row("vectors", escape(f"{index['model_id']}: {detail}"))
    for share in status.get("shares", []):
        if share.get("reachability"):  # a global share: can peers on the internet dial it?
            grid.add_row("reachable", f"{escape(share['name'])}: {reachability_line(share['reachability'])}")
    console.print(grid)
