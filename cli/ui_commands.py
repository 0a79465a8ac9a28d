"""``peerlight ui``: open the web UI, logged in.

The daemon makes a one-time login link (good for a minute, once) over the control socket,
which only this node's user can open. The browser is not given the link on its command line
(every local user can read a process's arguments): it opens a file in the 0700 data directory,
readable by this user alone, that sends it on to the link."""

from __future__ import annotations

import html
import os
import webbrowser
from argparse import Namespace
from pathlib import Path

from rich.markup import escape

from peerlight.node.paths import NodePaths

from .client import call
from .output import Output

LOGIN_PAGE = "ui-login.html"


def _login_page(paths: NodePaths, url: str) -> Path:
    """A page only this user can read that sends the browser on to the login link."""
    page = paths.root / LOGIN_PAGE
    body = f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={html.escape(url)}"><title>Peerlight</title><p>Opening Peerlight…</p>\n'
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(body)
    return page


def cmd_ui(args: Namespace, paths: NodePaths, out: Output) -> int:
    reply = call(paths.control_socket, "ui.login", timeout=10)
    opened = False
    if not (args.no_browser or args.json):
        opened = webbrowser.open(_login_page(paths, reply["url"]).as_uri(), new=2)
    data = {"url": reply["url"], "address": reply["address"], "opened": opened}

    def render(console, data) -> None:  # type: ignore[no-untyped-def]
        console.print(f"Peerlight's web UI: {escape(data['address'])}")
        if data["opened"]:
            console.print("Opened in your browser, logged in.")
        else:
            console.print(f"Open this link to log in (it works once, within a minute):\n{escape(data['url'])}")

    out.result(data, render)
    return 0
