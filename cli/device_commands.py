"""``peerlight devices``: pair this node with the user's other nodes, list and unpair them."""

from __future__ import annotations

import datetime
import json
import sys
from argparse import Namespace
from typing import Any

from rich.console import Console
from rich.markup import escape

from peerlight.node.paths import NodePaths

from .client import ControlClient, call
from .output import Output, table

PAIR_WAIT_SECONDS = 330  # the offer lasts 300 s


def cmd_devices_pair(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"scope": args.scope}
    if args.join:
        params["join"] = args.join

    def show_offer(event: dict[str, Any]) -> None:
        if out.as_json:  # stdout keeps the one result document; the offer goes to stderr as a JSON line
            print(json.dumps(event), file=sys.stderr, flush=True)
            return
        out.console.print(f"Pairing code: [bold]{escape(event['code'])}[/] (valid {int(event['expires_in'] // 60)} minutes). On your other node, run:")
        joins = event.get("joins") or [event["join"]]
        for join in joins:
            out.console.print(f"peerlight devices pair --join {join}", soft_wrap=True, markup=False, highlight=False)
        if len(joins) > 1:
            out.console.print("(one line per address of this node, the likely LAN first: use one the other node can reach)")
        if event.get("warning"):
            out.console.print(f"[yellow]{escape(event['warning'])}[/]")
        out.console.print("Waiting for it…")

    with ControlClient(paths.control_socket, timeout=PAIR_WAIT_SECONDS) as client:
        result = client.call("devices.pair", on_event=show_offer, **params)
    device = result["paired"]
    out.result(result, lambda console, r: console.print(f"Paired with [bold]{escape(device['name'])}[/] ({device['peer_id']}); its devices share is added."))
    return 0


def cmd_devices_list(args: Namespace, paths: NodePaths, out: Output) -> int:
    def render(console: Console, found: list[dict[str, Any]]) -> None:
        rows = [(escape(d["name"]), d["peer_id"], datetime.datetime.fromtimestamp(d["paired_at"]).strftime("%Y-%m-%d %H:%M")) for d in found]
        table(console, ("name", "peer id", "paired"), rows, "No paired devices; pair one with `peerlight devices pair`.")

    out.result(call(paths.control_socket, "devices.list"), render)
    return 0


def cmd_devices_unpair(args: Namespace, paths: NodePaths, out: Output) -> int:
    removed = call(paths.control_socket, "devices.unpair", device=args.device)
    out.result(removed, lambda console, d: console.print(f"Unpaired {escape(d['name'])}: its requests to this node's devices shares are refused from now on."))
    return 0
