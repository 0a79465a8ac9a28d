"""How commands show results: JSON for scripts (``--json``), rich for people."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from peerlight.node.pathnames import display, encode_path


class Output:
    """Renders one command's result in the mode the user asked for."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.errors = Console(stderr=True, highlight=False)

    def result(self, data: Any, render: Callable[[Console, Any], None]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, default=_json_default) + "\n")
        else:
            render(self.console, data)

    def error(self, message: str, code: str = "error", **extra: Any) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps({"error": {"code": code, "message": message, **extra}}) + "\n")
        else:
            self.errors.print(f"[bold red]error:[/] {_escape(message)}")


def table(console: Console, headers: tuple[str, ...], rows: list[tuple[str, ...]], empty: str) -> None:
    """Rows under bold headers, or ``empty`` when there are none."""
    if not rows:
        console.print(empty)
        return
    shown_rows = Table(*headers, box=None, header_style="bold")
    for row in rows:
        shown_rows.add_row(*row)
    console.print(shown_rows)


def _json_default(value: Any) -> Any:
    """Bytes (the exact names of files that are not UTF-8: ``path_bytes``) become base64 in JSON."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def shown(path: str) -> str:
    """A path as one line of rich markup: undecodable bytes as \\xNN, control characters escaped."""
    return _escape(display(path))


def wire_path(path: str | os.PathLike[str]) -> str | bytes:
    """A path as the daemon takes it: a string, or its exact bytes when the name is not UTF-8."""
    return encode_path(os.fspath(path))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(p for p in parts if p) + (f" {seconds}s" if any(parts) else f"{seconds}s")
