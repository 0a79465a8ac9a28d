"""``peerlight library add | list | remove``: the folders the node indexes."""

from __future__ import annotations

import datetime
from argparse import Namespace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peerlight.node.paths import NodePaths

from .client import call
from .output import Output, shown, wire_path


def cmd_library_add(args: Namespace, paths: NodePaths, out: Output) -> int:
    # Relative paths mean the user's working directory, which the daemon does not share.
    folder = Path(args.path).expanduser().absolute()
    params: dict[str, Any] = {"path": wire_path(folder)}
    if args.name:
        params["name"] = args.name
    library = call(paths.control_socket, "library.add", **params)
    out.result(
        library,
        lambda console, lib: console.print(f"Added library [bold]{escape(lib['name'])}[/] ({shown(lib['path'])})."),
    )
    return 0


def cmd_library_list(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "library.list"), _render_libraries)
    return 0


def cmd_library_remove(args: Namespace, paths: NodePaths, out: Output) -> int:
    library = call(paths.control_socket, "library.remove", library=wire_path(args.library))
    out.result(
        library,
        lambda console, lib: console.print(f"Removed library [bold]{escape(lib['name'])}[/] ({shown(lib['path'])})."),
    )
    return 0


def _render_libraries(console: Console, libraries: list[dict[str, Any]]) -> None:
    if not libraries:
        console.print("No libraries yet; add one with `peerlight library add PATH`.")
        return
    table = Table("id", "name", "path", "items", "last scan", box=None, header_style="bold")
    for lib in libraries:
        last_scan = (
            datetime.datetime.fromtimestamp(lib["last_scan"]).strftime("%Y-%m-%d %H:%M")
            if lib["last_scan"]
            else "never"
        )
        table.add_row(str(lib["id"]), escape(lib["name"]), shown(lib["path"]), str(lib["items"]), last_scan)
    console.print(table)
