"""``peerlight ui``: open the web UI, logged in; ``peerlight ui password``: the password of the
UI served to other machines.

The daemon makes a one-time login link (good for a minute, once) over the control socket,
which only this node's user can open. The browser is not given the link on its command line
(every local user can read a process's arguments): it opens a file in the 0700 data directory,
readable by this user alone, that sends it on to the link."""

from __future__ import annotations

import getpass
import html
import os
import sys
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
    data = {"url": reply["url"], "address": reply["address"], "opened": opened, "remote": reply.get("remote")}

    def render(console, data) -> None:  # type: ignore[no-untyped-def]
        console.print(f"Peerlight's web UI: {escape(data['address'])}")
        if data["opened"]:
            console.print("Opened in your browser, logged in.")
        else:
            console.print(f"Open this link to log in (it works once, within a minute):\n{escape(data['url'])}")
        if data["remote"]:
            console.print(f"Other machines: {escape(data['remote'])} (with the password `peerlight ui password` sets)")

    out.result(data, render)
    return 0


class PasswordsDiffer(Exception):
    pass


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password for the web UI: ")
    if getpass.getpass("Again: ") != first:
        raise PasswordsDiffer("the two passwords differ; nothing changed")
    return first


def cmd_ui_password(args: Namespace, paths: NodePaths, out: Output) -> int:
    if args.clear:
        reply = call(paths.control_socket, "ui.password", clear=True, timeout=30)
    else:
        try:
            password = _read_password(args.stdin)
        except PasswordsDiffer as exc:
            out.error(str(exc), "passwords_differ")
            return 1
        reply = call(paths.control_socket, "ui.password", password=password, timeout=30)

    def render(console, data) -> None:  # type: ignore[no-untyped-def]
        console.print("Password set: other machines log in with it." if data["password"] else "Password removed: nobody logs in from another machine.")
        console.print("Browsers logged in from other machines were logged out.")

    out.result(reply, render)
    return 0
