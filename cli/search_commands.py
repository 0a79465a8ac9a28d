"""``peerlight search | similar | duplicates``: finding things in the local index."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peerlight.node.paths import NodePaths

from .client import call
from .output import Output, shown, wire_path

MODALITIES = ("image", "audio", "video", "text")


def add_filter_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--modality", action="append", choices=MODALITIES, help="only this kind (repeatable)")
    parser.add_argument("--limit", type=int, default=20, help="number of results (default 20)")
    parser.add_argument("--rating-min", type=float, help="lowest rating (0-10)")
    parser.add_argument("--rating-max", type=float, help="highest rating (0-10)")
    parser.add_argument("--date-from", help="made on or after (YYYY-MM-DD; EXIF date, else file time)")
    parser.add_argument("--date-to", help="made on or before (YYYY-MM-DD)")
    parser.add_argument("--size-min", type=int, help="smallest file size in bytes")
    parser.add_argument("--size-max", type=int, help="largest file size in bytes")
    parser.add_argument("--folder", help="only files under this folder")


def _filter_params(args: Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": args.limit}
    if args.modality:
        params["modality"] = args.modality
    for key in ("rating_min", "rating_max", "date_from", "date_to", "size_min", "size_max"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    if args.folder:
        params["folder"] = wire_path(Path(args.folder).expanduser().absolute())
    return params


def cmd_search(args: Namespace, paths: NodePaths, out: Output) -> int:
    params = _filter_params(args)
    if args.peers:
        params["peers"] = True
    if args.global_:
        params["global"] = True
    if args.send_text:
        params["send_text"] = True
    reply = call(paths.control_socket, "search.query", timeout=300, query=args.query, mode=args.mode, **params)
    out.result(reply, _render_results)
    return 0


def cmd_similar(args: Namespace, paths: NodePaths, out: Output) -> int:
    path = wire_path(Path(args.path).expanduser().resolve())
    reply = call(paths.control_socket, "search.similar", timeout=300, path=path, **_filter_params(args))
    out.result(reply, _render_results)
    return 0


def _render_results(console: Console, reply: dict[str, Any]) -> None:
    for warning in reply.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    results = reply["results"]
    if not results:
        console.print("No results.")
        return
    # The short hash names a result for `rate`, `like`, `dislike` and `fetch`, a peer's item included.
    table = Table("#", "kind", "hash", "file", "match", box=None, header_style="bold", show_lines=False)
    for rank, result in enumerate(results, start=1):
        match = result.get("match") or {}
        if "passage" in match:
            where = f"“{escape(_shorten(match['passage'], 160))}”"
        elif "start" in match and match.get("start") is not None:
            where = f"at {_timestamp(match['start'])}"
        else:
            meta = result["metadata"]
            where = escape(" · ".join(str(meta[k]) for k in ("title", "artist", "camera", "date") if meta.get(k)))
        if "path" in result:
            file = shown(result["path"])
        else:  # a peer's item: its share and name, never a path
            file = f"[cyan]{escape(result.get('share') or result.get('peer_id', '')[:12])}:[/] {escape(str(result.get('name')))}"
        table.add_row(str(rank), result["modality"], str(result.get("content_hash") or "")[:10], file, where)
    console.print(table)
    routing = reply.get("routing")
    if routing:
        how = f"; asked {routing['asked']} shares"
        if "candidates" in routing:
            how += f" of {routing['candidates']} found under {len(routing['topics'])} topics ({routing['lookups']} DHT lookups, {routing['summaries_fetched']} summaries fetched)"
        elif routing.get("skipped"):
            how += f", {routing['skipped']} others ranked out by their topics"
        console.print(f"[dim]{len(results)} results in {reply['took_ms']:.0f} ms{how}[/]")
        return
    console.print(f"[dim]{len(results)} results in {reply['took_ms']:.0f} ms[/]")


def cmd_duplicates(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"threshold": args.threshold}
    if args.modality:
        params["modality"] = args.modality
    out.result(call(paths.control_socket, "search.duplicates", timeout=600, **params), _render_duplicates)
    return 0


def _render_duplicates(console: Console, reply: dict[str, Any]) -> None:
    if not reply["identical"] and not reply["near"]:
        console.print("No duplicates found.")
    for group in reply["identical"]:
        console.print(f"[bold]identical[/] ({group['modality']}, {len(group['paths'])} copies)")
        for copy in group["paths"]:
            console.print(f"  {shown(copy['path'])}")
    for group in reply["near"]:
        console.print(f"[bold]near-duplicates[/] (similarity ≥ {reply['threshold']})")
        for item in group["items"]:
            console.print(f"  {shown(item['path'])}")


def _shorten(text: str, length: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def _timestamp(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def cmd_info(args: Namespace, paths: NodePaths, out: Output) -> int:
    path = wire_path(Path(args.path).expanduser().resolve())
    out.result(call(paths.control_socket, "items.info", path=path), _render_info)
    return 0


def _render_info(console: Console, info: dict[str, Any]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("kind", f"{info['modality']} ({info['mime'] or 'unknown type'}), {info['size']:,} bytes")
    grid.add_row("content hash", info["content_hash"])
    for copy in info["paths"]:
        grid.add_row("file", shown(copy["path"]))
    for key, value in sorted(info["metadata"].items()):
        grid.add_row(key, escape(str(value)))
    grid.add_row("rating", "—" if info["rating"] is None else f"{info['rating']:g}/10")
    grid.add_row("embeddings", info["embedding_state"])
    for e in info["embeddings"]:
        grid.add_row("", f"{e['model_id']}: {e['vectors']} vector(s) from {e['source']}")
    for model_id, error in info["embedding_failures"].items():
        grid.add_row("", f"[red]{model_id}: {escape(error)}[/]")
    console.print(grid)
