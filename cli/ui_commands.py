"""``peerlight ui``: open the web UI, logged in.

The daemon makes a one-time login URL (good for a minute, once) over the control socket,
which only this node's user can open; the browser turns it into a session cookie."""

from __future__ import annotations

import webbrowser
from argparse import Namespace

from rich.markup import escape

from peerlight.node.paths import NodePaths

from .client import call
from .output import Output


def cmd_ui(args: Namespace, paths: NodePaths, out: Output) -> int:
    reply = call(paths.control_socket, "ui.login", timeout=10)
    opened = False if args.no_browser or args.json else webbrowser.open(reply["url"], new=2)
    data = {"url": reply["url"], "address": reply["address"], "opened": opened}

    def render(console, data) -> None:  # type: ignore[no-untyped-def]
        console.print(f"Peerlight's web UI: {escape(data['address'])}")
        if data["opened"]:
            console.print("Opened in your browser (the login link works once, within a minute).")
        else:
            console.print(f"Open this link to log in (it works once, within a minute):\n{escape(data['url'])}")

    out.result(data, render)
    return 0
