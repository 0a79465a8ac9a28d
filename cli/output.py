"""How commands show results: JSON for scripts (``--json``), rich for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console


class Output:
    """Renders one command's result in the mode the user asked for."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.errors = Console(stderr=True, highlight=False)

    def result(self, data: Any, render: Callable[[Console, Any], None]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, default=str) + "\n")
        else:
            render(self.console, data)

    def error(self, message: str, code: str = "error", **extra: Any) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps({"error": {"code": code, "message": message, **extra}}) + "\n")
        else:
            self.errors.print(f"[bold red]error:[/] {_escape(message)}")


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
