"""``peerlight rate | like | dislike | unrate | event | ratings | recommend | recommender``.

ITEM is an indexed file's path, a content hash, or the start of one (8 hex digits or more,
as ``recommend`` and ``search`` show them), so a peer's item can be rated before it is fetched.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from peerlight.node.paths import NodePaths

from .client import call
from .errors import CliError
from .output import Output, table, wire_path

CSV_COLUMNS = ("content_hash", "rating", "name", "source", "updated_at")
IMPORT_BATCH = 5000


def item_param(item: str) -> str | bytes:
    """A file that exists is sent by its absolute path; anything else as typed (a hash)."""
    path = Path(item).expanduser()
    if path.exists():
        return wire_path(path.resolve())
    return item


def _said(verb: str) -> Any:
    def render(console: Console, reply: dict[str, Any]) -> None:
        console.print(f"{verb} {escape(reply['name'])} ({reply['content_hash'][:12]}): {reply['rating']:g}/10.")

    return render


def cmd_rate(args: Namespace, paths: NodePaths, out: Output) -> int:
    reply = call(paths.control_socket, "feedback.rate", item=item_param(args.item), rating=args.rating)
    out.result(reply, _said("Rated"))
    return 0


def cmd_like(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "feedback.like", item=item_param(args.item)), _said("Liked"))
    return 0


def cmd_dislike(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "feedback.dislike", item=item_param(args.item)), _said("Disliked"))
    return 0


def cmd_unrate(args: Namespace, paths: NodePaths, out: Output) -> int:
    reply = call(paths.control_socket, "feedback.unrate", item=item_param(args.item))
    out.result(reply, lambda console, r: console.print(f"{escape(r['name'])}: {'rating removed' if r['removed'] else 'was not rated'}."))
    return 0


def cmd_event(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"item": item_param(args.item), "kind": args.kind}
    if args.value is not None:
        params["value"] = args.value
    reply = call(paths.control_socket, "feedback.event", **params)
    out.result(reply, lambda console, r: console.print(f"Recorded {r['kind']} for {escape(r['name'])}."))
    return 0


def cmd_ratings_list(args: Namespace, paths: NodePaths, out: Output) -> int:
    reply = call(paths.control_socket, "feedback.list", limit=args.limit)

    def render(console: Console, r: dict[str, Any]) -> None:
        rows = [
            (f"{x['rating']:g}", x["source"], x["content_hash"][:12], escape(x["name"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(x["updated_at"])))
            for x in r["ratings"]
        ]
        table(console, ("rating", "from", "hash", "item", "when"), rows, "No ratings yet: peerlight rate ITEM 0-10, like or dislike.")
        if r["total"] > len(rows):
            console.print(f"[dim]{len(rows)} of {r['total']} shown[/]")

    out.result(reply, render)
    return 0


def cmd_ratings_export(args: Namespace, paths: NodePaths, out: Output) -> int:
    if args.xmp:
        params = {"folder": wire_path(Path(args.xmp).expanduser().resolve())} if isinstance(args.xmp, str) else {}
        reply = call(paths.control_socket, "feedback.export_xmp", timeout=900, **params)
        out.result(reply, lambda console, r: console.print(
            f"Wrote {r['written']} sidecar(s)" + (f"; kept {len(r['kept'])} written by other programs" if r["kept"] else "") + "."
        ))
        return 0
    reply = call(paths.control_socket, "feedback.list", limit=1_000_000)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in reply["ratings"]:
        writer.writerow(row)
    if args.file in (None, "-"):
        sys.stdout.write(buffer.getvalue())
    else:
        Path(args.file).write_text(buffer.getvalue(), encoding="utf-8")
        out.result({"exported": len(reply["ratings"]), "file": args.file}, lambda console, r: console.print(f"Exported {r['exported']} rating(s) to {escape(r['file'])}."))
    return 0


def read_csv_rows(text: str) -> list[dict[str, Any]]:
    """Rows of a ratings CSV: a header naming ``content_hash`` or ``path``, and ``rating`` (0-10)
    or ``stars`` (0-5)."""
    reader = csv.DictReader(io.StringIO(text))
    fields = set(reader.fieldnames or ())
    if not fields & {"content_hash", "path"} or not fields & {"rating", "stars"}:
        raise CliError("the CSV needs a header with content_hash or path, and rating (0-10) or stars (0-5)")
    rows = []
    for row in reader:
        entry: dict[str, Any] = {key: row[key] for key in ("content_hash", "path") if row.get(key)}
        if row.get("rating") not in (None, ""):
            entry["rating"] = row["rating"]
        elif row.get("stars") not in (None, ""):
            try:
                entry["rating"] = 2 * float(row["stars"])
            except ValueError:
                entry["rating"] = row["stars"]
        rows.append(entry)
    return rows


def cmd_ratings_import(args: Namespace, paths: NodePaths, out: Output) -> int:
    if args.xmp:
        params = {"folder": wire_path(Path(args.file).expanduser().resolve())} if args.file else {}
        reply = call(paths.control_socket, "feedback.import_xmp", timeout=900, **params)
        out.result(reply, lambda console, r: _render_import(console, r, f"{r['sidecars']} sidecar(s) beside {r['images']} image(s)"))
        return 0
    if not args.file:
        raise CliError("give a CSV file to import (or --xmp [FOLDER] for XMP sidecars)")
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8-sig")
    rows = read_csv_rows(text)
    imported, problems = 0, []
    for start in range(0, len(rows), IMPORT_BATCH):
        reply = call(paths.control_socket, "feedback.import", timeout=300, rows=rows[start : start + IMPORT_BATCH])
        imported += reply["imported"]
        problems += [p | {"row": p["row"] + start} for p in reply["problems"]]
    out.result({"imported": imported, "problems": problems}, lambda console, r: _render_import(console, r, f"{len(rows)} row(s)"))
    return 0


def _render_import(console: Console, reply: dict[str, Any], read: str) -> None:
    console.print(f"Imported {reply['imported']} rating(s) from {read}.")
    for problem in reply["problems"][:20]:
        where = f"row {problem['row']}" if "row" in problem else escape(problem["path"])
        console.print(f"  [yellow]{where}:[/] {escape(problem['error'])}")
    if len(reply["problems"]) > 20:
        console.print(f"  … and {len(reply['problems']) - 20} more")


def cmd_recommend(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"limit": args.limit, "explain": args.explain, "include_rated": args.include_rated}
    if args.modality:
        params["modality"] = args.modality
    if args.from_peers:
        params["source"] = "peers"
    elif args.local:
        params["source"] = "local"
    for key in ("exploration", "novelty", "diversity", "temperature", "seed"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    out.result(call(paths.control_socket, "recommend.query", timeout=120, **params), _render_recommendations)
    return 0


def _render_recommendations(console: Console, reply: dict[str, Any]) -> None:
    results = reply["results"]
    if not results:
        console.print("Nothing to recommend yet: index some media, or add peers' shares.")
        return
    rows = []
    for rank, r in enumerate(results, 1):
        where = "here" if r["source"] == "local" else f"peer {escape(r.get('share') or r['peer_id'][:12])}"
        name = r.get("path") or r.get("name") or ""
        rows.append((str(rank), f"{r['predicted']:.1f} ± {r['uncertainty']:.1f}", r["modality"], r["content_hash"][:12], escape(str(name)), where))
        for reason in r.get("because", []):
            rows.append(("", "", "", "", f"[dim]{'+' if reason['moved'] >= 0 else '−'}{abs(reason['moved']):.2f} from {escape(reason['name'])} (rated {reason['rating'] if reason['rating'] is not None else 'by use'})[/]", ""))
    table(console, ("#", "predicted", "kind", "hash", "item", "from"), rows, "")
    if reply.get("unscored_peer_items"):
        console.print(f"[dim]{reply['unscored_peer_items']} peer item(s) have no vector in a space of this node and were not ranked[/]")


def cmd_recommender_status(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "recommend.status"), _render_model)
    return 0


def cmd_recommender_retrain(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "recommend.retrain", timeout=300), _render_model)
    return 0


def cmd_recommender_rollback(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "recommend.rollback"), _render_model)
    return 0


def _render_model(console: Console, reply: dict[str, Any]) -> None:
    console.print(f"Preference model version {reply['version']}: {reply['examples']} labelled item(s), user bias {reply['bias']:.2f}/10")
    for space, head in reply["spaces"].items():
        console.print(f"  {escape(space)}: {head['rated']} rated, {head['mode']}")
    for version in reply.get("versions", []):
        mark = " (active)" if version["active"] else ""
        console.print(f"  [dim]v{version['version']}: {version['examples']} item(s), {time.strftime('%Y-%m-%d %H:%M', time.localtime(version['created_at']))}{mark}[/]")
