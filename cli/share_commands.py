"""``peerlight share | peers | discover | fetch``: this node's Data Servers, and other nodes' shares."""

from __future__ import annotations

import datetime
import re
from argparse import ArgumentTypeError, Namespace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from peerlight.node.paths import NodePaths

from .client import ControlClient, call
from .output import Output, shown, table, wire_path


def _share_params(args: Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if getattr(args, "scope", None):
        params["scope"] = args.scope
    if getattr(args, "permission", None):
        params["permission"] = args.permission
    if getattr(args, "collection", None):
        params["collection"] = [wire_path(Path(c).expanduser().absolute()) for c in args.collection]
    if getattr(args, "modality", None):
        params["modality"] = [] if "all" in args.modality else args.modality
    if getattr(args, "port", None) is not None:
        params["port"] = args.port
    if getattr(args, "public_can", None):
        params["public_can"] = [c.strip() for c in args.public_can.split(",") if c.strip() and c.strip() != "none"]
    return params


def cmd_share_create(args: Namespace, paths: NodePaths, out: Output) -> int:
    share = call(paths.control_socket, "share.create", name=args.name, **_share_params(args))
    out.result(share, lambda console, s: console.print(f"Created share [bold]{escape(s['name'])}[/] ({s['scope']}, {s['permission']}).") or _render_share(console, s))
    return 0


def cmd_share_list(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "share.list"), _render_shares)
    return 0


def cmd_share_show(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "share.show", name=args.name), _render_share)
    return 0


def cmd_share_edit(args: Namespace, paths: NodePaths, out: Output) -> int:
    params = _share_params(args)
    if args.rename:
        params["new_name"] = args.rename
    if args.yes:
        params["yes"] = True
    out.result(call(paths.control_socket, "share.edit", name=args.name, **params), _render_share)
    return 0


def _share_action(method: str, message: str):  # type: ignore[no-untyped-def]
    """A command that applies ``method`` to the named share and says ``message`` (with its name)."""

    def run(args: Namespace, paths: NodePaths, out: Output) -> int:
        share = call(paths.control_socket, method, name=args.name)
        out.result(share, lambda console, s: console.print(message.format(name=f"[bold]{escape(s['name'])}[/]")))
        return 0

    return run


cmd_share_pause = _share_action("share.pause", "Paused share {name}: it no longer listens.")
cmd_share_resume = _share_action("share.resume", "Resumed share {name}.")
cmd_share_remove = _share_action("share.remove", "Removed share {name}; its peer ID is gone for good.")


DURATION = re.compile(r"^(\d+)([smhdw]?)$")
DURATION_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """Seconds of ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a plain number of seconds."""
    match = DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h, 90m or 2w")
    return int(match.group(1)) * DURATION_SECONDS[match.group(2)]


def cmd_share_grant(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"name": args.name}
    if args.to:
        params["to"] = args.to
    if args.invite:
        params["invite"] = True
    if args.can:
        params["can"] = [c.strip() for c in args.can.split(",") if c.strip()]
    if args.expires:
        params["expires_in"] = args.expires
    if args.requests_per_minute:
        params["requests_per_minute"] = args.requests_per_minute
    if args.bytes_per_day:
        params["bytes_per_day"] = args.bytes_per_day

    def render(console: Console, granted: dict[str, Any]) -> None:
        grant = granted["grant"]
        who = grant["grantee"] or "the first peer that uses this invite"
        console.print(f"Granted {', '.join(grant['capabilities'])} of [bold]{escape(granted['share'])}[/] to {escape(who)} (grant {grant['id']}).")
        if granted.get("invite"):
            console.print("Give them this invite, for `peerlight join`:")
            console.print(granted["invite"], soft_wrap=True, markup=False, highlight=False)
        else:
            console.print("[yellow]The share is not serving: no invite could be made; its token:[/]")
            console.print(granted["token"], soft_wrap=True, markup=False, highlight=False)

    out.result(call(paths.control_socket, "share.grant", **params), render)
    return 0


def cmd_share_grants(args: Namespace, paths: NodePaths, out: Output) -> int:
    def render(console: Console, grants: list[dict[str, Any]]) -> None:
        rows = [
            (
                grant["id"],
                escape(grant["grantee"] or "(open invite)"),
                ",".join(grant["capabilities"]),
                _when(grant["expires_at"], "never"),
                _when(grant["last_used_at"], "never"),
                f"{grant.get('bytes_today', 0):,} of {grant['bytes_per_day']:,}" if grant.get("bytes_per_day") else "no limit",
                grant["state"],
            )
            for grant in grants
        ]
        empty = "No grants yet; give one with `peerlight share grant NAME --to PEERID` or `--invite`."
        table(console, ("grant", "grantee", "can", "expires", "last used", "bytes today", "state"), rows, empty)

    out.result(call(paths.control_socket, "share.grants", name=args.name), render)
    return 0


def cmd_share_revoke(args: Namespace, paths: NodePaths, out: Output) -> int:
    grant = call(paths.control_socket, "share.revoke", name=args.name, grant=args.grant)
    out.result(grant, lambda console, g: console.print(f"Revoked grant {g['id']} ({escape(g['grantee'] or 'open invite')}): refused from now on."))
    return 0


def cmd_share_log(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"name": args.name, "limit": args.limit}
    if args.denied:
        params["denied"] = True

    def render(console: Console, entries: list[dict[str, Any]]) -> None:
        rows = [
            (
                datetime.datetime.fromtimestamp(entry["at"]).strftime("%Y-%m-%d %H:%M:%S"),
                entry["peer_id"][:16] + "…",
                entry["protocol"],
                (entry["item"] or "")[:16],
                "[green]allowed[/]" if entry["allowed"] else "[red]denied[/]",
                escape(entry["reason"] or ""),
            )
            for entry in entries
        ]
        table(console, ("time", "peer", "protocol", "item", "", "why"), rows, "Nobody has asked this share for anything yet.")

    out.result(call(paths.control_socket, "share.log", **params), render)
    return 0


def cmd_join(args: Namespace, paths: NodePaths, out: Output) -> int:
    remote = call(paths.control_socket, "peers.join", timeout=120, invite=args.invite)
    out.result(remote, lambda console, r: console.print(f"Joined {escape(r['name'] or r['peer_id'])}.") or _render_remotes(console, [r]))
    return 0


def _when(stamp: float | None, never: str) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M") if stamp else never


def cmd_peers_add(args: Namespace, paths: NodePaths, out: Output) -> int:
    """Remember a share. Its catalog is copied in the background (``peers`` shows how far), or
    with ``--wait`` before this returns, with a progress bar."""
    with ControlClient(paths.control_socket, timeout=None if args.wait else 120) as client:
        if not args.wait or out.as_json:
            remote = client.call("peers.add", address=args.address, wait=args.wait)
        else:
            progress = Progress(TextColumn("catalog"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=out.console)
            task = progress.add_task("catalog", total=None)
            with progress:
                remote = client.call(
                    "peers.add", address=args.address, wait=True,
                    on_event=lambda e: progress.update(task, completed=e["received"], total=e["expected"] or None),
                )

    def render(console: Console, r: dict[str, Any]) -> None:
        _render_remotes(console, [r])
        if not args.wait and r.get("last_error") is None:
            console.print("Its catalog is being copied in the background; `peerlight peers` shows how far.")

    out.result(remote, render)
    return 0


def cmd_peers_list(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "peers.list"), _render_remotes)
    return 0


def cmd_peers_remove(args: Namespace, paths: NodePaths, out: Output) -> int:
    remote = call(paths.control_socket, "peers.remove", peer=args.peer)
    out.result(remote, lambda console, r: console.print(f"Forgot {escape(r['name'] or r['peer_id'])}."))
    return 0


def cmd_discover(args: Namespace, paths: NodePaths, out: Output) -> int:
    source = {"source": "lan"} if args.lan else {"source": "global"} if args.global_ else {}
    out.result(call(paths.control_socket, "peers.discover", timeout=120, **source), _render_remotes)
    return 0


def cmd_fetch(args: Namespace, paths: NodePaths, out: Output) -> int:
    folder = Path(args.to).expanduser().absolute()
    params = {"share": args.share, "item": args.item, "to": wire_path(folder)}
    with ControlClient(paths.control_socket, timeout=None) as client:
        if out.as_json:
            result = client.call("peers.fetch", **params)
        else:
            progress = Progress(TextColumn("fetch"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=out.console)
            task = progress.add_task("fetch", total=None)
            with progress:
                result = client.call(
                    "peers.fetch", on_event=lambda e: progress.update(task, completed=e["received"], total=e["size"]), **params
                )
    out.result(result, lambda console, r: console.print(f"Fetched {shown(r['path'])} ({r['size']} bytes, BLAKE3 verified)."))
    return 0


def cmd_preview(args: Namespace, paths: NodePaths, out: Output) -> int:
    folder = Path(args.to).expanduser().absolute()
    preview = call(paths.control_socket, "peers.preview", timeout=120, share=args.share, item=args.item, to=wire_path(folder))

    def render(console: Console, p: dict[str, Any]) -> None:
        if "text" in p:
            console.print(escape(p["text"]))
        else:
            console.print(f"Preview of {escape(p['name'])} ({p['mime']}, {p['size']} bytes) saved as {shown(p['path'])}.")

    out.result(preview, render)
    return 0


def _render_share(console: Console, share: dict[str, Any]) -> None:
    collections = ", ".join(shown(c["path"]) for c in share["collections"]) or "everything this node indexes"
    lines = [
        ("name", escape(share["name"])),
        ("state", share.get("state", "")),
        ("scope", share["scope"]),
        ("permission", share["permission"] + (f" (anyone may {', '.join(share['public_can'])})" if share["permission"] == "public" else "")),
        ("collections", collections),
        ("kinds", ", ".join(share["modalities"]) or "all"),
        ("peer id", share.get("peer_id") or "(not running)"),
        ("port", str(share.get("port") or "chosen at first start")),
    ]
    for key, value in lines:
        console.print(f"[bold]{key:>12}[/]  {value}")
    for address in share.get("addresses") or []:
        console.print(f"[bold]{'address':>12}[/]  {escape(address)}")
    if share.get("reachability"):
        console.print(f"[bold]{'reachable':>12}[/]  {reachability_line(share['reachability'])}")
    for held in share.get("relays") or []:  # behind a NAT: reached through these
        console.print(f"[bold]{'relayed by':>12}[/]  {escape(held['relay'])} at {escape(held['address'])}")
    if share.get("relay"):
        console.print(f"[bold]{'relaying':>12}[/]  {relay_line(share['relay'])}")
    if share.get("error"):
        console.print(f"[yellow]{'error':>12}[/]  {escape(share['error'])}")


def reachability_line(found: dict[str, Any]) -> str:
    """A global share's reachability as a line: what peers' dial-backs found, and where they saw it."""
    status = found.get("status", "unknown")
    seen = ", ".join(escape(a) for a in found.get("observed") or [])
    if status == "public":
        text = f"public (dialled back at {', '.join(escape(a) for a in found.get('reached_at') or [])})"
    elif status == "private":
        text = "private (behind NAT: peers cannot dial it)"
    else:
        text = "unknown (too few peers answered yet)"
    return text + (f"; seen from outside as {seen}" if seen else "")


def relay_line(relay: dict[str, int]) -> str:
    """What a share relaying for others holds and did."""
    return (
        f"{relay['reservations']} hosts reserved, {relay['circuits_open']} circuits open ({relay['circuits']} in all, "
        f"{relay['circuits_refused']} refused, {relay['circuits_cut']} cut at a limit), {relay['bytes_relayed'] / 2**20:,.1f} MiB relayed"
    )


def _render_shares(console: Console, shares: list[dict[str, Any]]) -> None:
    table = Table("name", "scope", "permission", "state", "collections", "connections", box=None, header_style="bold")
    for share in shares:
        collections = ", ".join(shown(c["path"]) for c in share["collections"]) or "everything"
        table.add_row(escape(share["name"]), share["scope"], share["permission"], share.get("state", ""), collections, str(share.get("connections", 0)))
    console.print(table)


def _render_remotes(console: Console, remotes: list[dict[str, Any]]) -> None:
    if not remotes:
        console.print("No peers' shares known yet; add one with `peerlight peers add MULTIADDR`.")
        return
    table = Table("name", "peer id", "scope", "access", "connection", "items", "kinds", "models", "last seen", box=None, header_style="bold")
    for remote in remotes:
        access = "[red]refused[/]" if remote.get("refused") else ("granted" if remote.get("granted") else "open")
        seen = datetime.datetime.fromtimestamp(remote["last_seen"]).strftime("%Y-%m-%d %H:%M") if remote["last_seen"] else "never"
        if remote.get("syncing"):
            sync = remote["syncing"]
            seen += f" [cyan](copying its catalog: {sync['received']:,}{' of ' + format(sync['expected'], ',') if sync['expected'] else ''})[/]"
        if remote.get("last_error"):
            seen += f" [yellow]({escape(remote['last_error'][:60])})[/]"
        table.add_row(
            escape(remote["name"] or "?"),
            remote["peer_id"][:16] + "…",
            remote["scope"] or "?",
            access,
            remote.get("connection") or "-",
            str(remote["items"] if remote["items"] is not None else "?"),
            ", ".join(remote["modalities"]),
            escape(", ".join(m[:24] for m in remote["models"])),
            seen,
        )
    console.print(table)
