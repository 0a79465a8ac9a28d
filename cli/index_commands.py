"""``peerlight index`` and ``peerlight models``: keeping the index current, and its models."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from peerlight.node.paths import NodePaths

from .client import ControlClient, call
from .output import Output, shown, wire_path


class FilesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="cyan")


def cmd_index(args: Namespace, paths: NodePaths, out: Output) -> int:
    if args.problems:
        problems = call(paths.control_socket, "index.problems", all=args.all, limit=args.limit)
        out.result(problems, _render_problems)
        return 0
    params = {"library": wire_path(args.library)} if args.library else {}
    with ControlClient(paths.control_socket, timeout=None) as client:
        client.call("index.run", **params)
        if not args.wait:
            out.result({"requested": True}, lambda console, _: console.print("Index update requested."))
            return 0
        if out.as_json:
            status = client.call("index.wait")
        else:
            status = _wait_with_progress(client, out.console)
    out.result(status, _render_index_summary)
    return 0


def _wait_with_progress(client: ControlClient, console: Console) -> dict[str, Any]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        FilesPerSecond(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}
    embed_start: dict[str, int] = {}

    def update(status: dict[str, Any]) -> None:
        for lib in status["libraries"]:
            key = f"lib{lib['library_id']}"
            if key not in tasks:
                tasks[key] = progress.add_task(f"scan  {escape(lib['name'])}", total=None)
            if lib["phase"] == "idle" and not lib["files_total"]:
                progress.update(tasks[key], description=f"scan  {escape(lib['name'])} (no changes)", completed=1, total=1)
            else:
                progress.update(tasks[key], completed=lib["files_done"], total=lib["files_total"] or None)
        pending = status["embeddings_pending"]
        for kind, state in status["embeddings"].items():
            key = f"embed-{kind}"
            if state["embedded"] or state["state"] == "embedding":
                if key not in tasks:
                    embed_start[key] = state["embedded"]
                    tasks[key] = progress.add_task(f"embed {kind}", total=None)
                done = state["embedded"] - embed_start[key]
                progress.update(tasks[key], completed=done, total=done + (pending if state["state"] == "embedding" else 0))

    with progress:
        final = client.call("index.wait", on_event=update)
        update(final)
        return final


def _render_index_summary(console: Console, status: dict[str, Any]) -> None:
    kinds = ", ".join(f"{n} {m}" for m, n in sorted(status["by_modality"].items())) or "no items"
    console.print(f"Index up to date: {kinds}.")
    if status["embeddings_pending"]:
        console.print(f"[yellow]{status['embeddings_pending']} items await embeddings[/] (see `peerlight models`).")
    for kind, state in status["embeddings"].items():
        if state.get("reason"):
            console.print(f"  [dim]{kind}: {escape(state['reason'])}[/]")
    if status["problems"]:
        console.print(f"[yellow]{status['problems']} files could not be indexed[/] (see `peerlight index --problems`).")


def _render_problems(console: Console, problems: dict[str, Any]) -> None:
    if not problems["skipped"] and not problems["embedding_failures"]:
        console.print("No problems: every file was indexed.")
    if problems["skipped"]:
        table = Table("kind", "file", "reason", box=None, header_style="bold")
        for row in problems["skipped"]:
            table.add_row(row["kind"], shown(row["path"]), escape(row["reason"]))
        console.print(table)
    if problems["embedding_failures"]:
        console.print("[bold]indexed, but could not be embedded[/]")
        table = Table("file", "reason", box=None, header_style="bold")
        for row in problems["embedding_failures"]:
            table.add_row(shown(row["path"]), escape(row["reason"]))
        console.print(table)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(problems["counts"].items()))
    if counts:
        console.print(f"[dim]skipped files by kind: {counts}[/]")


def cmd_models(args: Namespace, paths: NodePaths, out: Output) -> int:
    models = call(paths.control_socket, "models.list", timeout=600, check=not args.no_load)
    out.result(models, _render_models)
    return 0


def _render_models(console: Console, models: list[dict[str, Any]]) -> None:
    colours = {"loaded": "green", "unloaded": "dim", "missing": "yellow", "failed": "red"}
    for m in models:
        colour = colours.get(m["state"], "white")
        console.print(f"[bold]{m['role']}[/]  {escape(m['name'])}  [{colour}]{m['state']}[/]")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        if m.get("model_id"):
            grid.add_row("id", f"{m['model_id']} ({m['dimension']} dimensions, space {m['space']})")
        if m.get("weights"):
            grid.add_row("weights", escape(m["weights"]))
        if m.get("adapter_id"):
            grid.add_row("ordered by", f"adapter {m['adapter_id'][:16]}… over {m['base_model_id']}")
        elif m.get("model_id"):
            grid.add_row("ordered by", "no adapter yet: vectors are stored unordered")
        if m.get("adapter_training"):
            t = m["adapter_training"]
            grid.add_row("adapter", escape(f"{t['phase']} (step {t['step']} of {t['steps']})"))
        if m.get("reason"):
            grid.add_row("reason", escape(m["reason"]))
        console.print(grid)


def cmd_ordering_fit(args: Namespace, paths: NodePaths, out: Output) -> int:
    out.result(call(paths.control_socket, "models.ordering_fit", timeout=600, encoder=args.encoder), _render_ordering_fit)
    return 0


ORDERING_FIT_ADVICE = 0.9  # below this share of the library's own PCA, an ordering of its own is worth a thought


def _render_ordering_fit(console: Console, fit: dict[str, Any]) -> None:
    how = f"adapter {fit['adapter_id'][:16]}…" if fit.get("adapter_id") else "no adapter (stored unordered)"
    console.print(
        f"[bold]{fit['role']}[/] {fit['model_id']}, ordered by {how}: on {fit['vectors']:,} stored vectors "
        f"({fit['queries']} held out as queries), the {fit['prefix_len']}-value prefix finds "
        f"[bold]{fit['prefix_recall']:.1%}[/] of each one's 10 nearest; a PCA fit to this library would find "
        f"{fit['own_pca_recall']:.1%} ([bold]{fit['ratio']:.2f}×[/])."
    )
    if fit["ratio"] < ORDERING_FIT_ADVICE:
        console.print(
            escape(
                "This library is far from what the ordering was trained on. An ordering of its own "
                f"(`peerlight models train-adapter --encoder {fit['role']}`, then its id as `adapter` in [{fit['role']}_model]) "
                "would rank prefixes better here; its shares' prefixes are then comparable only by peers that fetch that adapter."
            )
        )


def cmd_train_adapter(args: Namespace, paths: NodePaths, out: Output) -> int:
    params: dict[str, Any] = {"encoder": args.encoder, "seed": args.seed}
    if args.steps is not None:
        params["steps"] = args.steps
    if args.corpus:
        params["corpus"] = wire_path(Path(args.corpus).expanduser().resolve())
    if args.align_to:
        params["align_to"] = args.align_to
    with ControlClient(paths.control_socket, timeout=None) as client:
        if out.as_json:
            result = client.call("models.train_adapter", **params)
        else:
            progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("loss {task.fields[loss]}"), console=out.console,
            )
            task = progress.add_task("preparing", total=None, loss="—")

            def update(event: dict[str, Any]) -> None:
                loss = f"{event['loss']:.4f}" if event.get("loss") is not None else "—"
                progress.update(task, description=event["phase"], completed=event["step"],
                                total=event["steps"] or None, loss=loss)

            with progress:
                result = client.call("models.train_adapter", on_event=update, **params)
    out.result(result, _render_adapter)
    return 0


def _render_adapter(console: Console, result: dict[str, Any]) -> None:
    console.print(f"Trained adapter [bold]{result['adapter_id'][:16]}…[/] for {result['role']} ({escape(result['corpus'])}).")
    console.print(f"  model id  {result['model_id']}")
    if result["space"] != result["model_id"]:
        console.print(f"  joins     {result['space']} ({result['matched']:.0%} of the corpus lands on its own text)")
    console.print(f"  saved to  {escape(result['path'])}")
